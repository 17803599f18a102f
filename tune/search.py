#!/usr/bin/env python
"""Ray Tune search over the distillation weight λ, the temperature T and the attention depth D.

Teachers and their knowledge cache are trained once (in the base run directory, reused if present); each trial
trains a student with its own hyper-parameters, reports dev UA after every dev evaluation (ASHA stops weak
trials early), and logs to W&B (one run per trial; offline unless WANDB_MODE/`wandb.mode` says otherwise).
Model selection is on dev only; the test split is never seen here.

    python tune/search.py --config tiny --num-samples 8                  # local Ray on this machine
    python tune/search.py --config my.yaml --address auto --gpus-per-trial 1  # on a Ray cluster (slurm/tune.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="YAML config or built-in name")
    p.add_argument("--set", action="append", default=[], help="config override key.path=value (repeatable)")
    p.add_argument("--run-dir", default=None, help="base run directory (teachers, cache, tune results)")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-concurrent", type=int, default=0, help="0 = as many as resources allow")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' under slurm/tune.sh)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--grace-evals", type=int, default=1, help="ASHA grace period in dev evaluations")
    p.add_argument("--kd-weight", nargs=2, type=float, default=[0.1, 0.9], metavar=("LOW", "HIGH"))
    p.add_argument("--temperature", nargs=2, type=float, default=[1.0, 10.0], metavar=("LOW", "HIGH"))
    p.add_argument("--depths", default="1,2,3", help="attention depths to try (<= student layers)")
    return p.parse_args(argv)


def search_space(args):
    from ray import tune

    return {
        "distill.kd_weight": tune.uniform(*args.kd_weight),
        "distill.temperature": tune.loguniform(*args.temperature),
        "student.attention_depth": tune.choice([int(d) for d in args.depths.split(",")]),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from lakd.config import load_config
    from lakd.recipes import cache as cache_recipe
    from lakd.recipes import common, distill, finetune, prepare

    overrides = list(args.set) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_config(args.config, overrides)
    cfg.run_dir = str(Path(cfg.run_dir).resolve())
    for split in ("train", "dev", "test"):  # trials run in other working directories
        spec = getattr(cfg.data, split)
        if isinstance(spec, str) and os.path.exists(spec):
            setattr(cfg.data, split, str(Path(spec).resolve()))
    depths = [int(d) for d in args.depths.split(",")]
    try:  # fail before any training if the student cannot take the deepest attention depth searched
        from lakd.models.ser import SERModel

        SERModel(cfg.copy(**{"student.attention_depth": max(depths)}).student, cfg.labels, cfg.languages)
    except ValueError as e:
        raise SystemExit(f"--depths {args.depths}: {e}") from None
    common.write_run_config(cfg)
    prepare.run(cfg)
    for split in ("train", "dev"):  # trials write elsewhere: pin the data (synthesized ones too) to absolute paths
        spec = common.data_spec(cfg, split)
        setattr(cfg.data, split, str(Path(spec).resolve()) if isinstance(spec, str) and os.path.exists(spec) else spec)
    teachers = {l: finetune.run_teacher(cfg, l) for l in cfg.languages}
    cache_dir = cache_recipe.run(cfg, teachers) if cfg.distill.use_cache else None

    def trainable(params: dict):
        trial_dir = Path(tune.get_context().get_trial_dir())
        tcfg = cfg.copy(**params, run_dir=str(trial_dir), **{"wandb.mode": "disabled", "launch.executor": "local"})
        distill.run(
            tcfg,
            teachers,
            cache_dir,
            name="student",
            on_eval=lambda m: tune.report({f"dev_{k}": float(v) for k, v in m.items()}),
        )

    if cfg.wandb.mode != "disabled":
        os.environ.setdefault("WANDB_MODE", cfg.wandb.mode)  # before ray.init: Ray's workers inherit it
    ray.init(
        address=args.address,
        num_cpus=None if args.address else args.num_cpus,
        include_dashboard=False,
        ignore_reinit_error=True,
    )
    callbacks = []
    if cfg.wandb.mode != "disabled":
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(
            WandbLoggerCallback(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                group=cfg.wandb.group or f"{cfg.name}-tune",
                dir=str(Path(cfg.run_dir) / "wandb"),
            )
        )
    max_t = max(1, cfg.student_optim.epochs)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}),
        param_space=search_space(args),
        tune_config=tune.TuneConfig(
            metric="dev_ua",
            mode="max",
            num_samples=args.num_samples,
            max_concurrent_trials=args.max_concurrent or None,
            scheduler=ASHAScheduler(max_t=max_t, grace_period=args.grace_evals, reduction_factor=2),
        ),
        run_config=tune.RunConfig(
            name=f"{cfg.name}-tune", storage_path=str(Path(cfg.run_dir) / "tune"), callbacks=callbacks
        ),
    )
    results = tuner.fit()
    rows = []
    for r in results:
        if r.metrics is None or "dev_ua" not in r.metrics:
            continue
        rows.append(
            {
                "params": {k: r.config[k] for k in search_space(args)},
                "dev_ua": r.metrics["dev_ua"],
                "dev_wa": r.metrics.get("dev_wa"),
                "evals": r.metrics.get("training_iteration"),
                "path": r.path,
                "error": str(r.error) if r.error else None,
            }
        )
    rows.sort(key=lambda x: -x["dev_ua"])
    if not rows:
        errors = [f"{r.path}: {r.error}" for r in results if r.error]
        print("no trial reported dev_ua; errors:\n" + "\n".join(errors), file=sys.stderr)
        return {}
    best = results.get_best_result()
    summary = {
        "best": {
            "params": {k: best.config[k] for k in search_space(args)},
            "dev_ua": best.metrics["dev_ua"],
            "path": best.path,
        },
        "trials": rows,
        "errors": sum(1 for r in results if r.error),
    }
    out = Path(cfg.run_dir) / "tune" / "summary.json"
    out.write_text(json.dumps(summary, indent=1, default=str))
    from rich.console import Console
    from rich.table import Table

    table = Table("λ (kd_weight)", "T", "depth", "dev UA", "dev WA", "evals", title="Ray Tune: distillation search")
    for r in rows:
        p = r["params"]
        table.add_row(
            f"{p['distill.kd_weight']:.3f}",
            f"{p['distill.temperature']:.2f}",
            str(p["student.attention_depth"]),
            f"{100 * r['dev_ua']:.1f}",
            f"{100 * (r['dev_wa'] or 0):.1f}",
            str(r["evals"]),
        )
    Console().print(table)
    print(f"best: {summary['best']['params']} dev UA {100 * summary['best']['dev_ua']:.1f}  ({out})")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
