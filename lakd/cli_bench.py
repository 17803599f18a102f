"""`lakd bench ...`: measurements written as JSON (bench/README.md), never part of the test suite.

lakd bench data [--augment]; lakd bench distill; lakd bench cache; lakd bench scale; lakd bench extend
"""

from __future__ import annotations

from pathlib import Path

import typer

from lakd.bench.extend import bench_extend_cmd
from lakd.cli_common import DeviceOpt

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results written as JSON).")
bench_app.command("extend")(bench_extend_cmd)


@bench_app.command("data")
def bench_data_cmd(
    shards: str = typer.Option(None, help="Shards to read (default: synthesize a small corpus)."),
    workers: str = typer.Option("0,1,2", help="Worker counts to compare."),
    out: Path = typer.Option(None, "--out", help="Results JSON (default bench/results/data[-augment].json)."),
    augment: bool = typer.Option(False, "--augment", help="Also measure with every waveform augmentation on."),
) -> None:
    """Loader throughput (samples/s, audio-s/s) by worker count (and with/without augmentation)."""
    from lakd.bench.data import all_augmentations, bench_data

    out = out or Path("bench/results/data-augment.json" if augment else "bench/results/data.json")
    workers_ = tuple(int(w) for w in workers.split(","))
    bench_data(shards, worker_counts=workers_, out_json=out, augment=all_augmentations() if augment else None)


@bench_app.command("distill")
def bench_distill_cmd(
    teachers: str = typer.Option("1,3,6", help="Teacher counts."),
    steps: int = typer.Option(10, help="Timed steps per setting."),
    device: str = DeviceOpt,
    out: Path = typer.Option(Path("bench/results/distill.json"), "--out", help="Where the results JSON goes."),
) -> None:
    """Student step time: cached teacher knowledge vs online teachers vs plain fine-tuning."""
    from lakd.bench.distill import bench_distill

    bench_distill(teacher_counts=tuple(int(t) for t in teachers.split(",")), steps=steps, device=device, out_json=out)


@bench_app.command("cache")
def bench_cache_cmd(
    samples: int = typer.Option(20_000, help="Samples at 1x (the second cache has --factor times as many)."),
    factor: int = typer.Option(10, help="Scale of the second cache."),
    teachers: int = typer.Option(3, help="Teachers per cache."),
    hidden: int = typer.Option(768, help="Embedding width H."),
    out: Path = typer.Option(Path("bench/results/cache.json"), "--out", help="Where the results JSON goes."),
) -> None:
    """Teacher cache peak RSS and lookup time, in RAM vs memory-mapped, at 1x and 10x the data."""
    from lakd.bench.cache import bench_cache

    bench_cache(n=samples, factor=factor, teachers=teachers, hidden=hidden, out_json=out)


@bench_app.command("scale")
def bench_scale_cmd(
    languages: str = typer.Option("1,3,6,9", help="Language counts to compare."),
    per_language: int = typer.Option(32, help="Training utterances per language (same for every count)."),
    teacher_steps: int = typer.Option(8, help="Training steps per teacher."),
    steps: int = typer.Option(10, help="Timed student steps."),
    out: Path = typer.Option(Path("bench/results/scale.json"), "--out", help="Where the results JSON goes."),
) -> None:
    """Cost of each stage by language count: teachers, cache, student step and memory, evaluation."""
    from lakd.bench.scale import bench_scale

    counts = tuple(int(n) for n in languages.split(","))
    bench_scale(counts, per_language=per_language, teacher_steps=teacher_steps, steps=steps, out_json=out)
