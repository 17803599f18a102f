"""Stages of individually specified units (lakd.launch.unit_graph), as experiment grids use them: each unit's own
config and exact inputs, failures that stop only the units that read them, and the local executor running up to
`max_parallel` jobs at once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from lakd.config import Config
from lakd.launch import LaunchError, Stage, UnitSpec, UnitStage, run_stages, stage_status
from lakd.launch.units import unit_dir

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # local jobs unpickle the stand-ins below


def _note(run_dir: str, line: str) -> None:
    with open(Path(run_dir) / "calls.log", "a") as f:
        f.write(line + "\n")


def teach(cfg, inputs, *, language, root):
    if (Path(root) / f"FAIL_{language}.s{cfg.seed}").exists():
        raise RuntimeError(f"teacher {language} seed {cfg.seed} diverged")
    start = time.time()
    time.sleep(float((Path(root) / "SLEEP").read_text()) if (Path(root) / "SLEEP").exists() else 0)
    _note(root, json.dumps({"unit": f"{language}.s{cfg.seed}", "start": start, "end": time.time()}))
    return f"{cfg.run_dir}/{language}"


def learn(cfg, inputs, *, root):
    _note(root, json.dumps({"unit": f"student.s{cfg.seed}", "inputs": inputs, "lr": cfg.student_optim.lr}))
    return f"{cfg.run_dir}/student"


def grid(root: Path, seeds=(0, 1), langs=("en", "fi")) -> list[Stage]:
    def cfg(seed: int) -> Config:
        c = Config(name="g", seed=seed, run_dir=str(root / f"s{seed}"))
        c.student_optim.lr = 0.1 * (seed + 1)
        return c

    teachers = {f"{l}.s{s}": UnitSpec(cfg(s), params={"language": l, "root": str(root)}) for s in seeds for l in langs}
    students = {
        f"student.s{s}": UnitSpec(cfg(s), {"teachers": tuple(f"{l}.s{s}" for l in langs)}, {"root": str(root)})
        for s in seeds
    }
    return [UnitStage("teachers", teach, specs=teachers), UnitStage("student", learn, ("teachers",), specs=students)]


def records(root: Path) -> list[dict]:
    p = root / "calls.log"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_each_unit_runs_with_its_own_config_and_reads_only_its_inputs(tmp_path):
    summary = run_stages(Config(name="g"), tmp_path, grid(tmp_path), "debug")
    students = {r["unit"]: r for r in records(tmp_path) if r["unit"].startswith("student")}
    assert students["student.s1"]["inputs"] == {
        "teachers": {"en.s1": f"{tmp_path}/s1/en", "fi.s1": f"{tmp_path}/s1/fi"}
    }
    assert students["student.s0"]["lr"] == pytest.approx(0.1) and students["student.s1"]["lr"] == pytest.approx(0.2)
    done = json.loads((unit_dir(tmp_path, "student", "student.s1") / "done.json").read_text())
    assert done["output"] == f"{tmp_path}/s1/student"
    assert summary["outputs"]["teachers"]["fi.s0"] == f"{tmp_path}/s0/fi"
    graph = json.loads((tmp_path / "stages" / "graph.json").read_text())
    assert graph["stages"][1] == {**graph["stages"][1], "items": ["student.s0", "student.s1"], "after": ["teachers"]}


def test_a_failure_stops_only_the_units_that_read_it(tmp_path):
    (tmp_path / "FAIL_fi.s0").write_text("")
    with pytest.raises(LaunchError, match=r"teachers\[fi.s0\] failed .*diverged"):
        run_stages(Config(name="g"), tmp_path, grid(tmp_path), "debug")
    states = {(r["stage"], r["item"]): r["state"] for r in stage_status(tmp_path)}
    assert states[("student", "student.s1")] == "done"  # seed 1 needs nothing of seed 0
    assert states[("student", "student.s0")] == "not started" and states[("teachers", "fi.s0")] == "failed"
    (tmp_path / "FAIL_fi.s0").unlink()
    again = run_stages(Config(name="g"), tmp_path, grid(tmp_path), "debug")
    assert again["jobs"] == {"teachers": [again["jobs"]["teachers"][0]], "student": [again["jobs"]["student"][0]]}
    assert [r["unit"] for r in records(tmp_path)][-2:] == ["fi.s0", "student.s0"]


def test_a_unit_must_wait_for_the_stages_it_reads():
    with pytest.raises(ValueError, match="does not wait for"):
        UnitStage("student", learn, (), specs={"x": UnitSpec(Config(), {"teachers": ("en.s0",)})})
    with pytest.raises(ValueError, match="only unit"):
        UnitStage("report", learn, (), specs={None: UnitSpec(Config()), "x": UnitSpec(Config())})
    assert UnitStage("report", learn, (), specs={None: UnitSpec(Config())}).units == [None]


def test_local_executor_runs_up_to_max_parallel_jobs_at_once(tmp_path):
    (tmp_path / "SLEEP").write_text("3")
    t0 = time.time()
    run_stages(
        Config(name="g"), tmp_path, grid(tmp_path, seeds=(0,), langs=("en", "fi", "fr")), "local", max_parallel=2
    )
    spans = {r["unit"]: (r["start"], r["end"]) for r in records(tmp_path) if "start" in r}
    assert len(spans) == 3
    overlaps = sum(1 for a in spans for b in spans if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1])
    assert overlaps >= 1  # two teachers ran at the same time ...
    starts = sorted(s for s, _ in spans.values())
    assert starts[2] >= min(e for _, e in spans.values()) - 0.05  # ... but never three
    assert time.time() - t0 < 3 * 3 + 30
    assert all(r["job_id"].isdigit() for r in stage_status(tmp_path))
