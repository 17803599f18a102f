"""Loader scaling with DataLoader workers, before vs after a change, side by side in one run.

    python -m lakd.bench.data_workers --before REV [--shards SPEC] [--workers 0,1,2] [--batches 120] [--rounds 3]

`--before` is a commit (checked out into a temporary `git worktree`, removed afterwards) or a directory holding
another checkout; "after" is this checkout. Each (checkout, worker count) runs in a fresh Python process, so
nothing warm (page cache aside) carries over from one to the next, and the runs are interleaved in rounds
(before 0, after 0, before 1, after 1, ..., then the next round) so that load from other work on a shared machine
falls on both alike; figures are medians over the rounds. Why this and not `lakd bench data`: that one measures
one checkout, all worker counts in one process; comparing two checkouts needs two processes, and a ratio is
only trustworthy when both sides ran under the same load.

Per run: samples/s and audio seconds/s over `batches` training batches from the start of iteration (worker
start-up included), the time to the first batch, and CPU milliseconds per sample in the main process and in the
workers (getrusage: CPU time is far less sensitive to other load than wall time). The consumer touches every
element of the mask once (a numpy sum, single-threaded like a copy to a device; a torch reduction would bring
its own intra-op threads into the measurement) and does nothing else: a decode-bound setting, no model;
`--step-ms` makes it also sleep per batch, a stand-in for a training step on an accelerator, to see whether
the workers decode while the consumer steps.
Results: `bench/results/data-workers.json` (docs/data-loading.md#scaling-with-workers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lakd.bench import machine_facts
from lakd.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]

# Runs inside the checkout under test (old or new code): only APIs that both sides have.
MEASURE = r"""
import json, resource, sys, time
a = json.loads(sys.argv[1])
import torch
from lakd.config import DataConfig
from lakd.data.index import directory_counts
from lakd.data.loader import build_loader
from lakd.data.shards import expand_urls

counts = directory_counts(expand_urls(a["spec"]))
labels, languages = sorted({l for c in counts.values() for l in c}), sorted(counts)
cfg = DataConfig(num_workers=a["workers"], batch_size=a["batch_size"], epoch_samples=a["batches"] * a["batch_size"])
loader = build_loader(a["spec"], labels, languages, cfg=cfg, train=True, allow_unknown_language=True)


def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


main0, workers0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
samples, audio, first = 0, 0, None
t0 = time.perf_counter()
for batch in loader:
    if first is None:
        first = time.perf_counter() - t0
    samples += len(batch["keys"])
    audio += int(batch["attention_mask"].numpy().sum())  # numpy: touches every element, adds no torch threads
    if a["step_ms"]:
        time.sleep(a["step_ms"] / 1000)  # a training step's stand-in: the loader should work meanwhile
elapsed = time.perf_counter() - t0
time.sleep(0.2)  # workers exit and are reaped: their CPU time lands in RUSAGE_CHILDREN
main, workers = cpu(resource.RUSAGE_SELF) - main0, cpu(resource.RUSAGE_CHILDREN) - workers0
print(json.dumps({
    "samples": samples, "seconds": elapsed, "first_batch_s": first, "audio_seconds": audio / 16000,
    "cpu_main_s": main, "cpu_workers_s": workers, "skipped": loader.skips.as_dict()["counts"],
    "torch_threads_main": torch.get_num_threads(),
}))
"""


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _describe(tree: Path) -> dict:
    """Commit, subject and whether the tree differs from it in lakd/data (what a data benchmark depends on)."""
    dirty = bool(_git("status", "--porcelain", "--", "lakd/data", cwd=tree))
    return {
        "commit": _git("rev-parse", "--short", "HEAD", cwd=tree),
        "subject": _git("log", "-1", "--format=%s", cwd=tree),
        "lakd_data_uncommitted_changes": dirty,
    }


def measure(tree: Path, spec: str, workers: int, batches: int, batch_size: int, step_ms: float = 0.0) -> dict:
    """One run of MEASURE in a fresh process with `tree`'s lakd first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    arg = json.dumps(
        {"spec": spec, "workers": workers, "batches": batches, "batch_size": batch_size, "step_ms": step_ms}
    )
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, arg], cwd=tree, env=env, check=True, capture_output=True, text=True
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    n = max(r["samples"], 1)
    return {
        **r,
        "samples_per_s": r["samples"] / r["seconds"],
        "audio_seconds_per_s": r["audio_seconds"] / r["seconds"],
        "cpu_ms_per_sample_main": 1000 * r["cpu_main_s"] / n,
        "cpu_ms_per_sample_workers": 1000 * r["cpu_workers_s"] / n,
    }


MEDIANS = (
    "samples_per_s",
    "audio_seconds_per_s",
    "first_batch_s",
    "cpu_ms_per_sample_main",
    "cpu_ms_per_sample_workers",
)


def summarize(runs: dict[tuple[str, int], list[dict]]) -> tuple[list[dict], dict, dict]:
    """Medians per (checkout, workers); speed-up over 0 workers within each checkout; after / before per count."""
    rows = []
    for (side, w), rs in runs.items():
        row = {"checkout": side, "num_workers": w, "samples": rs[0]["samples"], "skipped": rs[0]["skipped"]}
        row.update({k: round(statistics.median(r[k] for r in rs), 3) for k in MEDIANS})
        row["samples_per_s_rounds"] = [round(r["samples_per_s"], 1) for r in rs]
        row["torch_threads_main"] = rs[0]["torch_threads_main"]
        rows.append(row)
    by = {(r["checkout"], r["num_workers"]): r["samples_per_s"] for r in rows}
    speedup = {
        side: {str(w): round(by[(side, w)] / by[(side, 0)], 2) for s, w in by if s == side and (side, 0) in by}
        for side in ("before", "after")
    }
    after_over_before = {
        str(w): round(by[("after", w)] / by[("before", w)], 2) for s, w in by if s == "after" and ("before", w) in by
    }
    return rows, speedup, after_over_before


def print_table(rows: list[dict], speedup: dict, after_over_before: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="loader throughput by workers: before | after (medians; × = vs 0 workers of the same side)")
    for col in ("workers", "before samples/s", "×", "CPU ms/sample", "after samples/s", "×", "CPU ms/sample", "a/b"):
        table.add_column(col, justify="right")
    get = {(r["checkout"], r["num_workers"]): r for r in rows}
    for w in sorted({r["num_workers"] for r in rows}):
        cells = [str(w)]
        for side in ("before", "after"):
            r = get.get((side, w))
            cpu = f"{r['cpu_ms_per_sample_main']:.2f}+{r['cpu_ms_per_sample_workers']:.2f}" if r else "-"
            cells += [f"{r['samples_per_s']:.0f}" if r else "-", str(speedup[side].get(str(w), "-")), cpu]
        table.add_row(*cells, str(after_over_before.get(str(w), "-")))
    Console().print(table)
    print("CPU ms/sample = main process + workers (all workers together)")


def run(
    before: str,
    spec: str,
    worker_counts,
    batches: int,
    rounds: int,
    batch_size: int,
    out: Path | None,
    step_ms: float = 0.0,
) -> dict:
    """Measure before and after interleaved (see the module docstring); print the table, write `out`."""
    tmp = None
    tree = Path(before)
    if not tree.is_dir():  # a commit: a temporary worktree, removed at the end
        tmp = Path(tempfile.mkdtemp(prefix="lakd-before-")) / "tree"
        _git("worktree", "add", "--detach", str(tmp), before)
        tree = tmp
    try:
        trees = {"before": tree, "after": REPO}
        load = os.getloadavg()
        runs: dict[tuple[str, int], list[dict]] = {}
        for rnd in range(rounds):
            for w in worker_counts:
                for side, t in trees.items():
                    r = measure(t, spec, w, batches, batch_size, step_ms)
                    runs.setdefault((side, w), []).append(r)
                    print(f"round {rnd + 1}/{rounds} {side:6s} {w} workers: {r['samples_per_s']:7.1f} samples/s")
        sides = {side: _describe(t) for side, t in trees.items()}
    finally:
        if tmp is not None:
            _git("worktree", "remove", "--force", str(tmp))
            tmp.parent.rmdir()
    rows, speedup, after_over_before = summarize(runs)

    report = {
        "benchmark": "data-workers",
        "spec": spec,
        "batch_size": batch_size,
        "batches": batches,
        "rounds": rounds,
        "setting": "training loader, DataConfig defaults (max_seconds 6, bucketing, shuffle buffer 500), no model",
        "consumer_step_ms": step_ms,
        "before": sides["before"],
        "after": sides["after"],
        "results": sorted(rows, key=lambda r: (r["num_workers"], r["checkout"] != "before")),
        "speedup_vs_0_workers": speedup,
        "after_over_before": after_over_before,
        "load_average_at_start": [round(x, 2) for x in load],
        **machine_facts(),
    }
    print_table(report["results"], speedup, after_over_before)
    if out is not None:
        atomic_write_json(out, report)
        print(f"wrote {out}")
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="commit (temporary worktree) or directory of another checkout")
    p.add_argument("--shards", default=str(REPO.parent / "shared/corpora/emosynth3/train"), help="data spec")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--batches", type=int, default=120, help="training batches per run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are reported")
    p.add_argument("--step-ms", type=float, default=0.0, help="consumer sleeps this long per batch (a step)")
    p.add_argument("--out", type=Path, help="default bench/results/data-workers.json (-stepN.json with --step-ms)")
    a = p.parse_args(argv)
    workers = tuple(int(w) for w in a.workers.split(","))
    name = f"data-workers-step{a.step_ms:g}.json" if a.step_ms else "data-workers.json"
    run(
        a.before,
        a.shards,
        workers,
        a.batches,
        a.rounds,
        a.batch_size,
        a.out or REPO / "bench/results" / name,
        a.step_ms,
    )


if __name__ == "__main__":
    main()
