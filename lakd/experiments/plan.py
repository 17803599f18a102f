"""An experiment's plan: the units of the job graph for one config × grid × seeds, each with its own config.

    teachers[<lang>.s<seed>]   one per (language, seed), `multi.s<seed>` for FT-Multi: shared by every variant
    cache[s<seed>]             one per seed: the knowledge of every teacher that some distill variant reads
    student[<variant>.s<seed>] (Mono variants: student[<variant>.<lang>.s<seed>], one per language)
    evaluate[<variant>.s<seed>] the test report of one run (Mono runs: each model on its own language, merged)
    report[<grid>]             report.md, report.json and figures of the grid, in grids/<grid>/

A variant whose overrides change what the teachers learn (teacher, teacher_optim, data, labels, languages)
gets its own teachers and cache (items suffixed with a short hash); the others share them.

Every unit has a *key*: a hash of what it computes (`lakd.config.diff.result_settings` of its stage, less the
settings at their schema defaults so that a lakd upgrade adding a setting changes no key, and the keys of the
units it reads). Its outputs go to `work/<stage>/<item>-<key>/`, and experiment.json records the keys:
so does each unit's marker directory (`key.json`). A relaunch whose unit has another key sets that unit's markers
aside under `keys/<old key>/` (and takes back those of the new key if it ran before), so a changed variant
reruns only itself and what reads it, into a fresh directory (the old one stays on disk), and several grids
run into one directory share every unit they have in common without undoing each other's (lakd.experiments.markers;
a unit whose key another item finished, a renamed variant, reads that item's output). Each grid keeps its
plan and report in `grids/<grid>/` (`grid_dir`). Jobs find the experiment directory from their own
(`experiment_dir_of`), so a moved experiment directory changes no key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakd.config import Config, ConfigError, validate
from lakd.config.diff import RESULT_SECTIONS, non_default_settings, result_settings
from lakd.experiments.grids import Grid, Variant
from lakd.experiments.layout import grid_dir
from lakd.launch.graph import Stage, data_present, stage_resources
from lakd.launch.unit_graph import UnitSpec, UnitStage
from lakd.launch.units import unit_dir

log = logging.getLogger("lakd.experiments")

MULTI = "multi"  # the FT-Multi teacher's name (as lakd.recipes.common.MULTI)
KEY_JSON = "key.json"  # in each unit's marker directory: the key its done.json / state.json belong to
TEACHER_SECTIONS = RESULT_SECTIONS["teachers"]  # what a teacher's result depends on: shared when equal
JOBS = {
    "shards": "lakd.recipes.prepare:run",
    "teachers": "lakd.experiments.jobs:train_teacher",
    "cache": "lakd.experiments.jobs:make_cache",
    "student": "lakd.experiments.jobs:train_student",
    "evaluate": "lakd.experiments.jobs:evaluate_run",
    "report": "lakd.experiments.jobs:write_report",
}
ORDER = ("shards", "teachers", "cache", "student", "evaluate", "report")


@dataclass
class Statistics:
    """How the report computes its statistics (recorded in experiment.json, read by the report job)."""

    n_bootstrap: int = 1000  # per-run CIs and the paired bootstrap
    n_permutations: int = 5000  # the paired permutation test
    alpha: float = 0.05
    metric: str = "ua"


@dataclass
class Plan:
    name: str
    grid: Grid
    seeds: list[int]
    run_dir: Path
    cfg: Config  # the experiment's config: names the jobs, saved as config.yaml
    config_name: str  # the name of the config it was planned from (tiny, emosynth3, ...)
    stages: list[Stage]
    units: dict[str, dict[str, dict]]  # stage -> item ("" for a stage's only unit) -> {key, dir}
    runs: dict[str, dict[str, str]]  # variant -> seed (str) -> its evaluate item
    run_units: dict[str, dict[str, list]]  # variant -> seed -> [[stage, item], ...] every unit the run needs
    statistics: Statistics = field(default_factory=Statistics)
    teacher_trainings: dict[str, int] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        """Where this grid's experiment.json and report live."""
        return grid_dir(self.run_dir, self.grid.name)

    def record(self) -> dict:
        """experiment.json: what the report and `lakd status` read."""
        from dataclasses import asdict

        return {
            "name": self.name,
            "grid": self.grid.name,
            "grid_description": self.grid.description,
            "config": self.config_name,
            "baseline": self.grid.baseline,
            "seeds": self.seeds,
            "languages": list(self.cfg.languages),
            "labels": list(self.cfg.labels),
            "variants": [asdict(v) for v in self.grid.variants],
            "runs": self.runs,
            "run_units": self.run_units,
            "units": self.units,
            "statistics": asdict(self.statistics),
            "teacher_trainings": self.teacher_trainings,
        }


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def experiment_dir_of(cfg: Config) -> Path:
    """The experiment directory of a unit's config (its run_dir is <experiment>/work/<stage>/<label>-<key>)."""
    return Path(cfg.run_dir).parents[2]


def _absolute(spec: Any) -> Any:
    """Data specs relative to this directory, made absolute: jobs may start elsewhere."""
    if isinstance(spec, str) and Path(spec).exists():
        return str(Path(spec).resolve())
    if isinstance(spec, list):
        return [_absolute(s) for s in spec]
    return spec


class _Builder:
    def __init__(
        self, cfg: Config, grid: Grid, seeds: list[int], run_dir: Path, name: str, recipes: dict, n_bootstrap: int
    ):
        self.grid, self.seeds, self.run_dir, self.name = grid, seeds, run_dir, name
        self.n_bootstrap = n_bootstrap
        self.jobs = {**JOBS, **(recipes or {})}
        self.cfg = cfg.copy(run_dir=str(run_dir), name=name)
        self.cfg.wandb.group = name
        self.unit_base = self.cfg.copy()
        for split in ("train", "dev", "test"):
            spec = getattr(self.cfg.data, split)
            if spec is None and self.cfg.synth:
                spec = str(run_dir / "data" / split)  # made once by the shards unit, shared by every seed
            setattr(self.unit_base.data, split, _absolute(spec))
        self.unit_base.synth = {}
        self.specs: dict[str, dict[str | None, UnitSpec]] = {s: {} for s in ORDER}
        self.units: dict[str, dict[str, dict]] = {}
        self.keys: dict[tuple[str, str], str] = {}
        self._old_keys: dict[tuple[str, str], str] = {}

    # ---------------------------------------------------------------------------------------- units
    def _add(self, stage: str, item: str | None, cfg: Config, needs: dict, params: dict, tags: list) -> str:
        """Add a unit; its key hashes what the launch's settings check compares (lakd.launch.unit_settings: the
        stage's result settings and the recipe's arguments) plus the keys of the units it reads (a student: of
        its teachers, not of its cache, whose other teachers it never reads)."""
        settings = non_default_settings(result_settings(cfg, "evaluate" if stage == "report" else stage))
        reads = [(s, i) for s, items in needs.items() for i in items if (s, i) in self.keys]
        # a student's result does not depend on what else its cache holds: its own settings and its teachers' keys
        # fix the knowledge it reads, so a grid whose cache holds more teachers shares its students
        upstream = sorted(self.keys[r] for r in reads if not (stage == "student" and r[0] == "cache"))
        key = digest(stage, settings, params, upstream)
        # the key lakd gave this unit before students stopped hashing their cache (2026-12): accepted as the same
        # unit, so that existing experiment directories are not rerun
        self._old_keys[(stage, item or "")] = old = digest(
            stage, settings, params, sorted(self._old_keys[r] for r in reads)
        )
        aliases = [old] if old != key else []
        label = item if item is not None else stage
        work = self.run_dir / "work" / stage / f"{label}-{key}"
        unit_cfg = cfg.copy(run_dir=str(work), name=f"{self.name}-{label}")
        unit_cfg.wandb.group = self.name
        unit_cfg.wandb.tags = list(dict.fromkeys([*cfg.wandb.tags, self.grid.name, *tags]))
        self.specs[stage][item] = UnitSpec(unit_cfg, {s: tuple(i) for s, i in needs.items()}, params)
        self.units.setdefault(stage, {})[item or ""] = {"key": key, "dir": str(work), "aliases": aliases}
        self.keys[(stage, item or "")] = key
        return key

    def variant_config(self, v: Variant, seed: int) -> Config:
        try:
            cfg = self.unit_base.copy(**v.overrides)
            cfg.seed = seed
            validate(cfg)
        except (ConfigError, KeyError, AttributeError) as e:
            raise ConfigError(f"grid {self.grid.name}, variant {v.name}: {e}") from e
        return cfg

    def teacher_cfg(self, vcfg: Config) -> tuple[Config, str]:
        """The canonical config of a variant's teachers (only the sections they depend on) and its hash."""
        tcfg = self.unit_base.copy()
        for section in TEACHER_SECTIONS:
            setattr(tcfg, section, copy.deepcopy(getattr(vcfg, section)))
        return tcfg, digest(non_default_settings(result_settings(tcfg, "teachers")))

    def teacher(self, vcfg: Config, name: str, seed: int) -> str:
        tcfg, tkey = self.teacher_cfg(vcfg)
        item = f"{name}.s{seed}" + self._suffix(tkey, seed)
        if item not in self.specs["teachers"]:
            needs = {"shards": ()} if "shards" in self.stage_names else {}
            self._add("teachers", item, tcfg, needs, {"language": name}, [f"seed{seed}"])
        return item

    def _suffix(self, tkey: str, seed: int) -> str:
        base = self.unit_base.copy()
        base.seed = seed
        return "" if tkey == self.teacher_cfg(base)[1] else f".{tkey[:6]}"

    @staticmethod
    def teacher_names(v: Variant, vcfg: Config) -> list[str]:
        return list(vcfg.languages) if v.teacher_names == "mono" else [MULTI]

    # ---------------------------------------------------------------------------------------- build
    def build(self) -> tuple[list[Stage], dict, dict, dict]:
        self.stage_names = ["shards"] if self._needs_shards() else []
        runs: dict[str, dict[str, str]] = {}
        run_units: dict[str, dict[str, list]] = {}
        caches: dict[str, tuple[Config, set[str], int]] = {}  # cache item -> (teacher cfg, names, seed)
        planned = []
        for v in self.grid.variants:
            for seed in self.seeds:
                vcfg = self.variant_config(v, seed)
                teachers = {n: self.teacher(vcfg, n, seed) for n in self.teacher_names(v, vcfg)}
                cache = None
                if v.method == "distill" and vcfg.distill.use_cache:
                    tcfg, tkey = self.teacher_cfg(vcfg)
                    scope = vcfg.distill.cache_scope  # what the cache holds: its own unit per scope
                    tcfg.distill.cache_scope = scope
                    cache = f"s{seed}" + self._suffix(tkey, seed) + ("" if scope == "all" else f".{scope}")
                    caches.setdefault(cache, (tcfg, set(), seed))[1].update(teachers)
                planned.append((v, seed, vcfg, teachers, cache))
        for item, (tcfg, names, seed) in caches.items():
            teachers = {n: self.teacher(tcfg, n, seed) for n in sorted(names)}
            needs = {"teachers": tuple(teachers.values())}
            self._add("cache", item, tcfg, needs, {"teachers": teachers}, [f"seed{seed}"])
        for v, seed, vcfg, teachers, cache in planned:
            item, students = self._run(v, seed, vcfg, teachers, cache)
            runs.setdefault(v.name, {})[str(seed)] = item
            units = [["teachers", t] for t in teachers.values()] + ([["cache", cache]] if cache else [])
            run_units.setdefault(v.name, {})[str(seed)] = (
                units + [["student", s] for s in students] + [["evaluate", item]]
            )
        evaluations = tuple(self.specs["evaluate"])
        params = {"baseline": self.grid.baseline, "grid": self.grid.name}
        self._add("report", self.grid.name, self.cfg, {"evaluate": evaluations}, params, [])
        return self._stages(), runs, run_units, self.units

    def _run(
        self, v: Variant, seed: int, vcfg: Config, teachers: dict[str, str], cache: str | None
    ) -> tuple[str, list[str]]:
        """The student units (distill variants) and the evaluate unit of one run: (evaluate item, students)."""
        langs = list(vcfg.languages)
        per_language = [[lang] for lang in langs] if v.train == "mono" else [None]
        models = []
        for only in per_language:
            if v.method == "finetune":
                models.append({"stage": "teachers", "item": teachers[only[0] if only else MULTI], "languages": only})
                continue
            item = f"{v.name}.{only[0]}.s{seed}" if only else f"{v.name}.s{seed}"
            needs = {"teachers": tuple(teachers.values()), **({"cache": (cache,)} if cache else {})}
            params = {"teachers": teachers, "cache": cache, "languages": only}
            self._add("student", item, vcfg, needs, params, [v.name, f"seed{seed}"])
            models.append({"stage": "student", "item": item, "languages": only})
        item = f"{v.name}.s{seed}"
        needs: dict[str, list[str]] = {}
        for m in models:
            needs.setdefault(m["stage"], []).append(m["item"])
        params = {"models": models, "n_bootstrap": self.n_bootstrap}
        self._add("evaluate", item, vcfg, needs, params, [v.name, f"seed{seed}"])
        return item, [m["item"] for m in models if m["stage"] == "student"]

    def _needs_shards(self) -> bool:
        if not self.cfg.synth:
            return False
        return not data_present(self.cfg) or (unit_dir(self.run_dir, "shards") / "state.json").exists()

    def _stages(self) -> list[Stage]:
        stages: list[Stage] = []
        if "shards" in self.stage_names:
            stages.append(Stage("shards", self.jobs["shards"], resources=stage_resources(self.cfg, "shards")))
        for name in ORDER[1:]:
            specs = self.specs[name]
            if not specs:
                continue
            after = tuple(s for s in ORDER if any(s in spec.needs for spec in specs.values()))
            resources = stage_resources(self.cfg, "evaluate" if name == "report" else name)
            stages.append(UnitStage(name, self.jobs[name], after=after, resources=resources, specs=specs))
        return stages


def plan_experiment(
    cfg: Config,
    grid: Grid,
    seeds: list[int],
    run_dir: str | Path,
    *,
    name: str | None = None,
    recipes: dict | None = None,
    statistics: Statistics | None = None,
) -> Plan:
    """The job graph of `grid` × `seeds` on `cfg` in `run_dir` (nothing runs; see lakd.experiments.runner)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    run_dir = Path(run_dir).resolve()
    statistics = statistics or Statistics()
    builder = _Builder(cfg, grid, list(seeds), run_dir, name or run_dir.name, recipes or {}, statistics.n_bootstrap)
    stages, runs, run_units, units = builder.build()
    needed = sum(len(builder.teacher_names(v, builder.variant_config(v, s))) for v in grid.variants for s in seeds)
    return Plan(
        builder.name,
        grid,
        list(seeds),
        run_dir,
        builder.cfg,
        cfg.name,
        stages,
        units,
        runs,
        run_units,
        statistics,
        {"trained": len(units.get("teachers", {})), "without_sharing": needed},
    )
