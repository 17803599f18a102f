"""Native W&B sweeps of the same space: the sweep YAML, its checks, and the program `wandb agent` runs.

    python -m lakd.tune.sweep write --config tiny --out tune/sweep.yaml     # the sweep of a space and config
    python -m lakd.tune.sweep check tune/sweep.yaml                         # schema + every value vs the config
    wandb sweep tune/sweep.yaml && wandb agent ENTITY/PROJECT/SWEEP_ID       # needs a W&B server

The agent runs the default command `${env} ${interpreter} ${program} ${args}`, i.e.
`/usr/bin/env python tune/sweep_run.py --config=tiny --run_dir=runs/sweep --distill.kd_weight=0.3 ...`:
`--config` names the base config, every other `--key=value` is a config override (`key=value`). The program
makes the shared data, teachers and cache in `run_dir` once (under a file lock, so that agents side by side
wait for each other), then trains one student in `run_dir/sweep/<sweep id>/<run id>/`; its W&B run is the
agent's (WANDB_RUN_ID), with every loss term and dev metric logged against `trainer/step`. The metric,
`dev/ua`, is logged once per dev evaluation, so hyperband's iterations are evaluations.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from pathlib import Path

import yaml

from lakd.config import Config, ConfigError, load_config, parse_override
from lakd.tune.runner import pin_data
from lakd.tune.space import Param, SearchSpace, check_space, load_space

PROGRAM = "tune/sweep_run.py"
METRIC = "dev/ua"
FIXED = ("config", "run_dir")  # sweep parameters with one value that say which config and where
METHODS = ("grid", "random", "bayes")
TOP_KEYS = {"program", "method", "metric", "parameters", "early_terminate", "name", "description", "command"}
TOP_KEYS |= {"project", "entity", "run_cap"}
WANDB_KINDS = {"uniform": "uniform", "log_uniform_values": "loguniform", "int_uniform": "int"}


def sweep_config(space: SearchSpace, config: str, run_dir: str, name: str = "lakd-student") -> dict:
    """A bayes sweep on dev UA with hyperband early termination over `space` (already checked against `config`)."""
    return {
        "program": PROGRAM,
        "name": name,
        "method": "bayes",
        "metric": {"name": METRIC, "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {"config": {"value": config}, "run_dir": {"value": run_dir}, **space.wandb_parameters()},
    }


def check_sweep(sweep: dict, cfg: Config | None = None) -> SearchSpace:
    """W&B's sweep schema (the parts lakd uses) and every parameter as a lakd search-space entry checked against
    the base config (`cfg`, default: the one the sweep's fixed parameters name). Returns the space; raises
    ConfigError naming the key at fault."""
    unknown = sorted(set(sweep) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"sweep: unknown top-level key(s) {unknown}")
    if sweep.get("method") not in METHODS:
        raise ConfigError(f"sweep: method must be one of {', '.join(METHODS)}, got {sweep.get('method')!r}")
    metric = sweep.get("metric") or {}
    if sweep["method"] == "bayes" and not metric.get("name"):
        raise ConfigError("sweep: bayes needs metric.name")
    if metric and metric.get("goal", "minimize") not in ("minimize", "maximize"):
        raise ConfigError(f"sweep: metric.goal must be minimize or maximize, got {metric.get('goal')!r}")
    early = sweep.get("early_terminate")
    if early is not None:
        if early.get("type") != "hyperband" or not ({"min_iter", "max_iter"} & set(early)):
            raise ConfigError("sweep: early_terminate must be {type: hyperband, min_iter or max_iter, ...}")
        if not all(isinstance(early[k], int) and early[k] > 0 for k in ("min_iter", "max_iter", "s") if k in early):
            raise ConfigError(f"sweep: hyperband min_iter/max_iter/s must be positive integers, got {early}")
        if "eta" in early and not (isinstance(early["eta"], (int, float)) and early["eta"] > 1):
            raise ConfigError(f"sweep: hyperband eta must be > 1, got {early['eta']!r}")
    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError("sweep: parameters must be a non-empty mapping")
    searched = []
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"sweep: parameters.{key} must be a mapping, got {spec!r}")
        if "value" in spec:
            continue
        if "values" in spec:
            searched.append(Param(key, "choice", list(spec["values"])))
        elif spec.get("distribution") in WANDB_KINDS and {"min", "max"} <= set(spec):
            searched.append(Param(key, WANDB_KINDS[spec["distribution"]], [spec["min"], spec["max"]]))
        else:
            raise ConfigError(
                f"sweep: parameters.{key}: expected value, values, or distribution "
                f"({', '.join(WANDB_KINDS)}) with min and max; got {spec}"
            )
    if sweep["method"] == "grid" and any(p.kind != "choice" for p in searched):
        raise ConfigError("sweep: grid search needs values: [...] for every parameter")
    for key in FIXED:
        if "value" not in params.get(key, {}):
            raise ConfigError(f"sweep: parameters.{key} must be fixed ({{value: ...}}): the program needs it")
    space = SearchSpace(searched, source="sweep parameters")
    check_space(space, cfg if cfg is not None else base_config_of(sweep))
    return space


def base_config_of(sweep: dict) -> Config:
    params = sweep["parameters"]
    return load_config(params["config"]["value"], [f"run_dir={params['run_dir']['value']}"])


def agent_command(sweep: dict, values: dict) -> list[str]:
    """The command `wandb agent` runs for a run with `values` ({parameter: value}), built with W&B's own helpers
    (the macro expansion of wandb_agent.Agent._command_run, with its env and interpreter)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(sweep.get("command"))
    fixed = {k: v["value"] for k, v in sweep["parameters"].items() if "value" in v}
    args = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in {**fixed, **values}.items()}})
    args.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    out: list[str] = []
    for chunk in map(str, command):
        is_macro = chunk.startswith("${") and chunk.endswith("}")
        out += (args.get(chunk[2:-1]) or []) if is_macro else [chunk]
    return out


def parse_agent_args(argv: list[str]) -> tuple[str, list[str]]:
    """`--config=NAME --a.b=v ...` (what the agent passes) -> (config, ["a.b=v", ...])."""
    config, overrides = None, []
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"expected --key=value arguments (as wandb agent passes them), got {arg!r}")
        key, value = arg[2:].split("=", 1)
        if key == "config":
            config = value
        else:
            parse_override(f"{key}={value}")  # fails early on a malformed one
            overrides.append(f"{key}={value}")
    if config is None:
        raise ConfigError("missing --config=... (a fixed parameter of the sweep)")
    return config, overrides


@contextlib.contextmanager
def _without_sweep_run_env():
    """The shared teachers and cache are not the sweep's run: hide the agent's run/sweep ids while making them."""
    keys = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")
    saved = {k: os.environ.pop(k) for k in keys if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_agent_trial(argv: list[str]) -> str:
    """The program of the sweep: one student for the agent's values; returns its best checkpoint."""
    from lakd.recipes import cache as cache_recipe
    from lakd.recipes import common, distill, finetune, prepare

    config, overrides = parse_agent_args(argv)
    base = load_config(config, [o for o in overrides if o.startswith("run_dir=")])
    base.run_dir = str(Path(base.run_dir).resolve())
    trial = load_config(config, overrides + [f"run_dir={base.run_dir}"])
    searched = [o.split("=", 1)[0] for o in overrides if not o.startswith("run_dir=")]
    check_space(SearchSpace([Param(k, "choice", [config_value(trial, k)]) for k in searched], "agent arguments"), base)
    with _without_sweep_run_env(), _locked(Path(base.run_dir) / ".shared.lock"):
        prepare.run(base)
        pin_data(base)  # as lakd tune does: the teachers of a search and of a sweep are the same
        teachers = {lang: finetune.run_teacher(base, lang) for lang in base.languages}
        cache_dir = cache_recipe.run(base, teachers) if base.distill.use_cache else None
    run_id = os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]
    os.environ.setdefault("WANDB_DIR", base.run_dir)  # beside the teachers' runs, as lakd tune's trials
    trial.run_dir = str(Path(base.run_dir) / "sweep" / os.environ.get("WANDB_SWEEP_ID", "local") / run_id)
    trial.data.train, trial.data.dev, trial.data.test = base.data.train, base.data.dev, base.data.test
    trial.name = f"{base.name}-sweep-{run_id}"
    common.write_run_config(trial)
    return distill.run(trial, teachers, cache_dir, name="student")


def config_value(cfg: Config, key: str):
    obj = cfg
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lakd.tune.sweep", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write", help="write the sweep YAML of a space and config")
    w.add_argument("--config", default="tiny")
    w.add_argument("--space", default=None, help="space YAML (default: the built-in space)")
    w.add_argument("--run-dir", default=None, help="the sweep's run directory (default: the config's run_dir)")
    w.add_argument("--out", default="-")
    c = sub.add_parser("check", help="check a sweep YAML against W&B's schema and the lakd config it names")
    c.add_argument("sweep")
    args = p.parse_args(argv)
    if args.what == "write":
        cfg = load_config(args.config, [f"run_dir={args.run_dir}"] if args.run_dir else [])
        text = yaml.safe_dump(sweep_config(load_space(args.space, cfg), args.config, cfg.run_dir), sort_keys=False)
        sys.stdout.write(text) if args.out == "-" else Path(args.out).write_text(text)
        return 0
    sweep = yaml.safe_load(Path(args.sweep).read_text())
    space = check_sweep(sweep)
    print(f"{args.sweep}: valid; {len(space.params)} searched parameters: {', '.join(space.paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
