"""`lakd experiment ...`: grids of variants × seeds through the job graph, with one report per experiment.

lakd experiment run --config emosynth3 --grid paper --seeds 0,1,2 --executor slurm
lakd experiment run --config tiny --grid ablation --seeds 0,1 --max-parallel 2
lakd experiment paper-table --config emosynth3      # alias: the paper grid with the config's seed
lakd experiment report runs/emosynth3-paper         # rebuild the report from the finished evaluations
lakd experiment grids [--grid ablation]             # the variants of a grid and their overrides
"""

from __future__ import annotations

from pathlib import Path

import typer

from lakd.cli_common import ConfigOpt, SetOpt, console, err_console, fail, load_cfg

experiment_app = typer.Typer(
    no_args_is_help=True,
    help="Experiments: grids of variants × seeds run through the job graph, one report with paired statistics.",
)

GridOpt = typer.Option("paper", "--grid", "-g", help="paper | ablation | a grid YAML file (docs/experiments.md).")
ExecutorOpt = typer.Option(None, "--executor", help="slurm | local | debug (default: launch.executor).")
MaxParallelOpt = typer.Option(1, "--max-parallel", min=1, help="Local jobs at once (the local executor).")
ExpDirOpt = typer.Option(None, "--run-dir", help="The experiment's directory (default: <config run_dir>-<grid>).")
VariantsOpt = typer.Option("", "--variants", help="Only these variants of the grid (comma-separated names).")
BaselineOpt = typer.Option(None, "--baseline", help="Variant the others are compared with (default: the grid's).")


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds must be comma-separated integers, got {text!r}", code=2)


def _run(cfg, grid: str, seeds: list[int], run_dir, executor, max_parallel, variants, baseline, wait, stats) -> None:
    from lakd.cli_watch import StageWatcher
    from lakd.config import ConfigError
    from lakd.experiments import prepare_experiment
    from lakd.experiments.runner import run_plan
    from lakd.experiments.status import grid_status, print_grid
    from lakd.launch import LaunchError

    kwargs = dict(variants=[v for v in variants.split(",") if v] or None, baseline=baseline, statistics=stats)
    try:
        plan, _ = prepare_experiment(cfg, grid, seeds, run_dir, **kwargs)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e), code=2)
    tt = plan.teacher_trainings
    err_console.print(
        f"experiment {plan.name}: {len(plan.grid.variants)} variants × {len(seeds)} seed(s) in {plan.run_dir}; "
        f"{tt['trained']} teacher trainings shared by all ({tt['without_sharing']} without sharing)"
    )
    try:
        if wait:
            with StageWatcher(plan.run_dir, err_console):
                result = run_plan(plan, executor=executor, max_parallel=max_parallel)
        else:
            result = run_plan(plan, executor=executor, wait=False)
    except LaunchError as e:
        print_grid(grid_status(plan.run_dir, plan.grid.name), console)
        fail(f"{e}\n(fix it and run the same command again: finished units are kept)")
    except (ConfigError, ValueError) as e:
        fail(str(e), code=2)
    if not wait:
        console.print(f"submitted; follow it with: lakd status {plan.run_dir}")
        return
    if result["report"]:
        print_summary(result["report"]["json"])


def print_summary(report_json: str | Path) -> None:
    """UA mean ± sd per variant and the paired difference against the baseline, from a grid's report.json."""
    import json

    from rich.table import Table

    from lakd.experiments.markdown import _diff, _ms

    report = json.loads(Path(report_json).read_text())
    label = {v["name"]: v["label"] for v in report["variants"]}
    base = label.get(report["baseline"], report["baseline"])
    table = Table("variant", *[f"{g} UA" for g in report["languages"]], "overall UA", f"Δ UA vs {base} (pp)")
    for v in [v["name"] for v in report["variants"] if v["name"] in report["summary"]]:
        s = report["summary"][v]
        cmp = report["comparisons"].get(v, {}).get("overall")
        table.add_row(
            label[v],
            *[_ms(s[g]["ua"]) for g in report["languages"]],
            _ms(s["overall"]["ua"]),
            "baseline" if v == report["baseline"] else _diff(cmp).replace("**", ""),
        )
    console.print(table)
    if report["missing"]:
        console.print(f"missing runs: {', '.join(report['missing'])}")
    where = Path(report_json).parent / "report.md"
    console.print(f"test split, %, mean ± sd over seeds; * = significant (Holm). {where}")


def _statistics(bootstrap: int, permutations: int):
    from lakd.experiments import Statistics

    return Statistics(n_bootstrap=bootstrap, n_permutations=permutations)


@experiment_app.command("run")
def run_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    grid: str = GridOpt,
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2 (every variant runs each)."),
    executor: str | None = ExecutorOpt,
    max_parallel: int = MaxParallelOpt,
    run_dir: Path | None = ExpDirOpt,
    variants: str = VariantsOpt,
    baseline: str | None = BaselineOpt,
    wait: bool = typer.Option(True, help="Wait for the grid (--no-wait: SLURM only; the report is a job too)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples (per-run CIs and the paired CI)."),
    permutations: int = typer.Option(5000, help="Permutations of the paired test."),
) -> None:
    """Run a grid of variants × seeds as jobs of the graph; shared teachers; one report with paired statistics."""
    cfg = load_cfg(config, set)
    stats = _statistics(bootstrap, permutations)
    _run(cfg, grid, _seeds(seeds), run_dir, executor, max_parallel, variants, baseline, wait, stats)


@experiment_app.command("paper-table")
def paper_table_cmd(
    config: str = ConfigOpt,
    set: list[str] | None = SetOpt,
    run_dir: Path | None = ExpDirOpt,
    runs: str = typer.Option("", "--runs", help="Only these variants of the paper grid (default: all seven)."),
    executor: str | None = ExecutorOpt,
    max_parallel: int = MaxParallelOpt,
) -> None:
    """The paper's comparison with the config's seed: `lakd experiment run --grid paper --seeds <seed>`."""
    cfg = load_cfg(config, set)
    _run(cfg, "paper", [cfg.seed], run_dir, executor, max_parallel, runs, None, True, _statistics(1000, 5000))


@experiment_app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="The experiment's directory."),
    grid: str | None = typer.Option(None, "--grid", "-g", help="Which grid run there (needed when several were)."),
    baseline: str | None = typer.Option(
        None, help="Pair the runs against this variant instead (written to grids/<grid>/vs-<variant>/)."
    ),
    wandb: bool = typer.Option(False, help="Also log the W&B summary run (with the experiment's wandb settings)."),
) -> None:
    """Rebuild a grid's report.md / report.json / figures from the evaluations that finished (missing runs are
    listed), or pair them against another baseline without rerunning anything."""
    from lakd.experiments import build_experiment_report

    wandb_cfg = None
    if wandb:
        wandb_cfg = load_cfg(str(run_dir / "config.yaml"), None).wandb
    try:
        out = build_experiment_report(run_dir, grid, baseline=baseline, wandb_cfg=wandb_cfg)
    except FileNotFoundError as e:
        fail(str(e))
    except ValueError as e:
        fail(str(e), code=2)
    print_summary(out["json"])


@experiment_app.command("grids")
def grids_cmd(grid: str | None = typer.Option(None, "--grid", "-g", help="One grid (name or YAML file).")) -> None:
    """List the built-in grids, or one grid's variants: method, training data, teachers, overrides."""
    from rich.table import Table

    from lakd.config import ConfigError
    from lakd.experiments.grids import BUILTIN, load_grid

    try:
        grids = [load_grid(grid)] if grid else [load_grid(name) for name in BUILTIN]
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e), code=2)
    for g in grids:
        table = Table("variant", "label", "method", "train", "teachers", title=f"{g.name}: {g.description}")
        table.add_column("overrides", overflow="fold")
        for v in g.variants:
            overrides = "\n".join(f"{k}={val}" for k, val in v.overrides.items())
            name = v.name + (" (baseline)" if v.name == g.baseline else "")
            table.add_row(name, v.label, v.method, v.train, v.teachers or "—", overrides)
        console.print(table)
