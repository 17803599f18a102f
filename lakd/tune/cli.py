"""`lakd tune` (also `python tune/search.py`): the Ray Tune search as a command; lakd.tune.runner does the work."""

from __future__ import annotations

from pathlib import Path

import typer

from lakd.cli_common import ConfigOpt, RunDirOpt, SetOpt, console, fail


def tune_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = RunDirOpt,
    space: Path | None = typer.Option(
        None, "--space", help="Search-space YAML (default: the built-in space that tune/space.yaml documents)."
    ),
    name: str = typer.Option("search", "--name", help="The search's name: its directory is <run_dir>/tune/<name>."),
    algorithm: str = typer.Option("tpe", "--algorithm", help="tpe (Optuna TPE) | random | grid."),
    scheduler: str = typer.Option("asha", "--scheduler", help="asha | pbt (with --algorithm random) | fifo."),
    num_samples: int | None = typer.Option(
        None, "--num-samples", help="Trials (tpe, random; default 8) or repeats of the grid (grid; default 1)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the proposals (default: the config's seed)."),
    max_concurrent: int = typer.Option(0, "--max-concurrent", help="Trials at once (0 = as resources allow)."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs per trial (also its torch threads)."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs per trial; 0.5 = two trials per GPU."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join ('auto' under slurm/tune.sh); default: start a local Ray."
    ),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
    grace_evals: int = typer.Option(1, "--grace-evals", help="ASHA: dev evaluations before a trial can be stopped."),
    reduction_factor: float = typer.Option(2.0, "--reduction-factor", help="ASHA: keep 1/this of trials per rung."),
    perturbation_interval: int = typer.Option(2, "--perturbation-interval", help="PBT: evaluations between copies."),
    test: bool = typer.Option(True, "--test/--no-test", help="Evaluate the best trial once on the test split."),
    resume: str = typer.Option("auto", "--resume", help="auto (resume a search of this name) | never | must."),
) -> None:
    """Search the student's hyper-parameters with Ray Tune; write best.yaml, the trials table and plots."""
    from lakd.config import ConfigError
    from lakd.tune.runner import SearchOptions, run_search

    opts = SearchOptions(
        config=config,
        overrides=list(set or []),
        run_dir=str(run_dir) if run_dir else None,
        space=str(space) if space else None,
        name=name,
        algorithm=algorithm,
        scheduler=scheduler,
        num_samples=num_samples,
        seed=seed,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        address=address,
        num_cpus=num_cpus,
        grace_evals=grace_evals,
        reduction_factor=reduction_factor,
        perturbation_interval=perturbation_interval,
        test=test,
        resume=resume,
    )
    try:
        summary = run_search(opts)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e), code=2)
    print_summary(summary)
    if summary["best"] is None:
        fail("no trial reported a dev evaluation; see the trials' errors in " + summary["summary_path"])


def print_summary(summary: dict) -> None:
    from rich.table import Table

    from lakd.tune.space import trial_label

    rows = summary["trials"]
    table = Table("trial", "values", "dev UA", "dev WA", "evals", "status", title="lakd tune: trials (best first)")
    for r in rows:
        params = {k: v for k, v in r.items() if "." in k or k == "seed"}
        table.add_row(
            r["trial"].removeprefix("trial_"),
            trial_label(params),
            "—" if r["best_dev_ua"] is None else f"{100 * r['best_dev_ua']:.1f}",
            "—" if r["best_dev_wa"] is None else f"{100 * r['best_dev_wa']:.1f}",
            str(r["evals"]),
            r["status"],
        )
    console.print(table)
    saved = summary["savings"]
    console.print(
        f"{saved['evaluations_run']} of {saved['evaluations_if_all_finished']} dev evaluations run "
        f"({100 * saved['saved']:.0f}% saved by {summary['scheduler']})"
    )
    if summary["best"]:
        b = summary["best"]
        console.print(f"best (dev UA {100 * b['dev UA']:.1f}): {b['params']}")
        console.print(f"best config: {b['config']}   checkpoint: {b['checkpoint']}")
    if summary.get("test"):
        cells = "  ".join(
            f"{g} UA {100 * m['ua']:.1f} / WA {100 * m['wa']:.1f}" for g, m in summary["test"]["results"].items()
        )
        console.print(f"test split, best checkpoint only: {cells}")
    console.print(f"summary: {summary['summary_path']}")
