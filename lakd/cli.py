"""The `lakd` command line: a thin layer over recipes and the data layer (typer + rich)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler

from lakd import __version__
from lakd.cli_bench import bench_app
from lakd.cli_common import (
    ConfigOpt,
    RestartOpt,
    ResumeChangedOpt,
    RunDirOpt,
    SetOpt,
    console,
    err_console,
    fail,
    load_cfg,
    one_line_errors,
    progress_bar,
)
from lakd.cli_experiment import experiment_app
from lakd.cli_inference import evaluate_cmd, export_cmd, predict_cmd
from lakd.tune.cli import tune_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__ or "lakd")
shards_app = typer.Typer(no_args_is_help=True, help="Make, import, index and inspect audio shards.")
train_app = typer.Typer(no_args_is_help=True, help="Train teachers and baselines.")
app.add_typer(shards_app, name="shards")
app.add_typer(experiment_app, name="experiment")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")

app.command("evaluate")(evaluate_cmd)
app.command("predict")(predict_cmd)
app.command("export")(export_cmd)
app.command("tune")(tune_cmd)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"lakd {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the lakd version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)],
    )
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_rows(rows: list, title: str) -> None:
    from rich.table import Table

    if not rows:
        console.print(title)
        return
    table = Table(*[str(c) for c in rows[0]], title=title)
    for r in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()])
    console.print(table)


# ---------------------------------------------------------------------------------------------- shards


@shards_app.command("synth")
def shards_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (gets train/ dev/ test/)."),
    languages: str = typer.Option("en,fi,fr", help="Comma-separated espeak-ng language codes."),
    speakers: int = typer.Option(6, help="Speakers per language (split speaker-independently)."),
    utterances: int = typer.Option(24, help="Utterances per speaker."),
    seed: int = typer.Option(0, help="Random seed (the corpus is deterministic for a seed)."),
    labels: str = typer.Option("anger,happiness,neutral,sadness", help="Comma-separated emotion labels."),
    splits: str | None = typer.Option(
        None, help="Speakers per split, e.g. train=4,dev=1,test=1 (counts or fractions)."
    ),
    backend: str = typer.Option("auto", help="auto | lib (libespeak-ng in-process) | cli (espeak-ng program)."),
    workers: int | None = typer.Option(None, help="Parallel synthesis processes (default: CPU count)."),
    overwrite: bool = typer.Option(False, help="Replace shards already in --out."),
) -> None:
    """Synthesize a multilingual emotional-speech corpus with espeak-ng (deterministic for a seed)."""
    from lakd.data.synth import synthesize_corpus

    split_spec = None
    if splits:
        split_spec = {k: (float(v) if "." in v else int(v)) for k, v in (p.split("=") for p in splits.split(","))}
    with progress_bar("synthesizing") as advance:
        summary = synthesize_corpus(
            out,
            languages=tuple(languages.split(",")),
            speakers_per_language=speakers,
            utterances_per_speaker=utterances,
            labels=tuple(labels.split(",")),
            seed=seed,
            splits=split_spec,
            backend=backend,
            workers=workers,
            overwrite=overwrite,
            progress=advance,
        )
    _print_rows(
        summary.get("rows", []),
        f"synthetic corpus at {out} ({summary['num_samples']} utterances, "
        f"{summary['duration_s'] / 3600:.2f} h, backend {summary['backend']}, {summary['seconds']:.1f} s)",
    )


@shards_app.command("import")
def shards_import(
    corpus: str = typer.Option(..., help="iemocap | fesc | cafe | ravdess | cremad | emodb | manifest"),
    root: Path = typer.Option(..., help="Corpus root directory (or the manifest file for --corpus manifest)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (gets train/ dev/ test/)."),
    labels: str = typer.Option(
        "anger,happiness,neutral,sadness", help="Target label set; others are dropped and counted."
    ),
    fold: str | None = typer.Option(None, help="Fold to use as test (corpus specific, see docs/corpora.md)."),
    scheme: str = typer.Option("default", help="default | loso (leave-one-speaker/session-out folds)."),
    map: list[str] | None = typer.Option(
        None, "--map", help="Extra label mapping, e.g. --map calm=neutral (repeatable)."
    ),
    shard_size: int = typer.Option(200, help="Samples per shard."),
    seed: int = typer.Option(0, help="Seed for corpora whose speaker split is drawn."),
    strict: bool = typer.Option(False, help="Fail on the first unreadable file instead of a counted skip."),
) -> None:
    """Import a real corpus from its original layout into lakd shards (speaker-independent splits)."""
    from lakd.data.corpora import import_corpus

    kwargs = {
        "labels": tuple(labels.split(",")),
        "strict": strict,
        "scheme": scheme,
        "shard_size": shard_size,
        "seed": seed,
    }
    if fold is not None:
        kwargs["fold"] = fold
    if map:
        kwargs["label_map"] = dict(m.split("=", 1) for m in map)
    try:
        with progress_bar(f"importing {corpus}") as advance:
            summary = import_corpus(corpus, root, out, progress=advance, **kwargs)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(str(e))
    _print_rows(summary.rows(), f"{corpus} -> {out}")
    d = summary.as_dict()
    for what in ("dropped", "excluded", "skipped"):
        if d.get(what):
            console.print(f"{what}: {d[what]}")


@shards_app.command("index")
def shards_index(directory: Path = typer.Argument(..., help="Directory of .tar shards.")) -> None:
    """Write index.json (counts, durations, sha256 per shard) for a directory of shards made elsewhere."""
    from lakd.data.shards import ShardFormatError, write_index

    try:
        index = write_index(directory)
    except (ShardFormatError, FileNotFoundError) as e:  # names the shard (and sample) and the problem
        fail(str(e))
    console.print(f"wrote {directory / 'index.json'}: {len(index['shards'])} shards, {index['num_samples']} samples")


@shards_app.command("subset")
def shards_subset(
    src: Path = typer.Argument(..., help="A split directory of shards (e.g. .../emosynth3/train)."),
    dst: Path = typer.Argument(..., help="New directory for the copy."),
    keep: list[str] = typer.Option(..., "--keep", help="LANGUAGE=FRACTION to keep of that language (repeatable)."),
    seed: int = typer.Option(0, help="Which samples are kept (deterministic for a seed)."),
) -> None:
    """Copy a split with some languages cut to a fraction, stratified per emotion (a low-resource language)."""
    from lakd.data.shards import ShardFormatError
    from lakd.data.subset import SubsetError, parse_keep, subset_split

    try:
        record = subset_split(src, dst, parse_keep(keep), seed=seed)
    except (SubsetError, ShardFormatError, FileNotFoundError) as e:
        fail(str(e))
    for lang, by_emotion in sorted(record["counts"].items()):
        kept, total = (sum(v[i] for v in by_emotion.values()) for i in (0, 1))
        console.print(f"{lang}: kept {kept} of {total}")
    console.print(f"wrote {dst} (index.json, SUBSET.json)")


@shards_app.command("inspect")
def shards_inspect(
    spec: list[str] = typer.Argument(..., help="Directory, brace pattern or shard paths."),
    verify: bool = typer.Option(True, help="Verify sha256 checksums against index.json."),
    decode: bool = typer.Option(
        False,
        "--decode",
        help="Decode every sample's audio and check it as the loader would (and its JSON duration); "
        "exit 1 if any sample is bad.",
    ),
) -> None:
    """Print counts, durations, label distribution; verify checksums (exit 1 on a failure)."""
    from lakd.data.inspect import inspect_shards, print_inspection

    try:
        report = inspect_shards(spec if len(spec) > 1 else spec[0], verify=verify, decode=decode)
    except FileNotFoundError as e:
        fail(str(e))
    print_inspection(report, console)
    if report.get("checksum_failures") or (decode and report.get("problems")):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- training


@train_app.command("teacher")
@one_line_errors
def train_teacher(
    language: str = typer.Option(..., help="Language code, or 'multi' for one model on all languages."),
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = RunDirOpt,
    restart: bool = RestartOpt,
    resume_changed: bool = ResumeChangedOpt,
) -> None:
    """Fine-tune one teacher (FT-Mono for a language, FT-Multi with --language multi); a rerun resumes it."""
    from lakd.recipes import finetune

    cfg = load_cfg(config, set, run_dir, restart, resume_changed)
    console.print(f"teacher checkpoint: {finetune.run_teacher(cfg, language)}")


@app.command("cache")
@one_line_errors
def cache_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = RunDirOpt,
    teachers: str = typer.Option("", help="Teacher names to cache (default: one per language)."),
) -> None:
    """Run each teacher once over the training shards and store logits + embeddings (teacher knowledge cache)."""
    from lakd.distill.cache import CacheError
    from lakd.recipes import cache, common

    cfg = load_cfg(config, set, run_dir)
    names = teachers.split(",") if teachers else list(cfg.languages)
    dirs = {n: str(common.teacher_dir(cfg, n) / "best") for n in names}
    try:
        console.print(f"cache: {cache.run(cfg, dirs)}")
    except (CacheError, FileNotFoundError) as e:  # names the teacher or shard, the problem and what to do
        fail(str(e))


@app.command("distill")
@one_line_errors
def distill_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = RunDirOpt,
    teachers: str = typer.Option("", help="Teacher names (default: one per language; 'multi' for KD-Multi)."),
    name: str = typer.Option("student", help="Output name under run_dir."),
    extend: Path | None = typer.Option(
        None, "--extend", help="A trained student: add the config's new languages to it (docs/languages.md)."
    ),
    restart: bool = RestartOpt,
    resume_changed: bool = ResumeChangedOpt,
) -> None:
    """Distill the teachers into the multilingual student (or extend one with --extend); a rerun resumes it."""
    from lakd.recipes import common, distill

    cfg = load_cfg(config, set, run_dir, restart, resume_changed)
    if extend is not None:
        from lakd.distill.cache import CacheError
        from lakd.recipes.extend import ExtendError, extend_and_compare

        if teachers:
            fail("--extend: the teachers are the checkpoint's and run_dir/teachers/<new code>; drop --teachers", 2)
        try:
            best, lines = extend_and_compare(cfg, str(extend), name=name)
        except (ExtendError, CacheError, FileNotFoundError) as e:
            fail(str(e))
        console.print("\n".join([*lines, f"student checkpoint: {best}"]))
        return
    names = teachers.split(",") if teachers else list(cfg.languages)
    dirs = {n: str(common.teacher_dir(cfg, n) / "best") for n in names}
    cache_dir = str(common.run_path(cfg, "cache")) if cfg.distill.use_cache else None
    console.print(f"student checkpoint: {distill.run(cfg, dirs, cache_dir, name=name)}")


# ---------------------------------------------------------------------------------------------- pipelines


def _print_results(result: dict, title: str, saved: str) -> None:
    """UA / WA per language and overall as a terminal table; the CIs are in the saved markdown/JSON."""
    from rich.table import Table

    runs = result["results"]
    groups = list(next(iter(runs.values())))
    table = Table("run", *[f"{g}\nUA / WA" for g in groups], title=title)
    for run, by_group in runs.items():
        cells = []
        for g in groups:
            m = by_group.get(g)
            cells.append("—" if m is None else f"{100 * m['ua']:.1f} / {100 * m['wa']:.1f}")
        table.add_row(run, *cells)
    console.print(table)
    console.print(f"test split, % ; 95% bootstrap confidence intervals in {saved}")


@app.command("demo")
@one_line_errors
def demo_cmd(
    run_dir: Path = typer.Option(
        Path("runs/demo"), "--run-dir", help="Where the demo's corpus, models and results go."
    ),
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    restart: bool = RestartOpt,
    resume_changed: bool = ResumeChangedOpt,
) -> None:
    """The embedded default: synthesize a small corpus, train tiny teachers and the student, print results."""
    from lakd.cli_watch import StageWatcher
    from lakd.experiments.demo import run_demo

    cfg = load_cfg(config, set, run_dir, restart, resume_changed)
    with StageWatcher(cfg.run_dir, err_console):
        result = run_demo(cfg)
    _print_results(result, "lakd demo: FT-Mono teachers vs the LA-MTKD student", result["markdown_path"])


@app.command("launch")
@one_line_errors
def launch_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = RunDirOpt,
    executor: str | None = typer.Option(None, help="slurm | local | debug (default: launch.executor)."),
    wait: bool = typer.Option(True, help="Wait for the graph to finish."),
    restart: bool = RestartOpt,
    resume_changed: bool = ResumeChangedOpt,
) -> None:
    """Submit the whole job graph (shards -> teachers -> cache -> student -> evaluation) through submitit.
    A relaunch skips what is done; a unit whose config changed is refused unless --restart / --resume-changed."""
    from lakd.cli_watch import StageWatcher
    from lakd.launch import launch

    cfg = load_cfg(config, set, run_dir, restart, resume_changed)
    if wait:
        with StageWatcher(cfg.run_dir, err_console):
            result = launch(cfg, cfg.run_dir, executor=executor, wait=wait)
    else:
        result = launch(cfg, cfg.run_dir, executor=executor, wait=wait)
    console.print_json(json.dumps(result, default=str))


@app.command("status")
def status_cmd(
    run_dir_arg: Path | None = typer.Argument(None, metavar="[RUN_DIR]", help="The run directory (same as --run-dir)."),
    run_dir: Path | None = RunDirOpt,
    config: str | None = typer.Option(
        None, "--config", "-c", help="Config whose run_dir to show (when no run directory is given)."
    ),
    set: list[str] | None = SetOpt,
) -> None:
    """Show every stage of a launched run: state, job ids, last metric, log paths.

    The run directory is given like to the other commands (`--run-dir DIR`, or `--config`/`--set` whose run_dir
    is used) or as the one argument (`lakd status DIR`).
    """
    from lakd.launch.status import print_status, stage_status

    if run_dir_arg and run_dir and run_dir_arg != run_dir:
        fail(f"two run directories given: {run_dir_arg} and --run-dir {run_dir}", code=2)
    where = run_dir_arg or run_dir
    if where is None:
        if config is None:
            fail("which run? give its directory (lakd status DIR, or --run-dir DIR) or its --config", code=2)
        where = Path(load_cfg(config, set).run_dir)
    try:
        rows = stage_status(where)
    except FileNotFoundError as e:
        fail(str(e))
    print_status(rows, console)
    from lakd.experiments.status import print_grids

    print_grids(where, console)  # an experiment's directory: each grid's variants × seeds too


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
