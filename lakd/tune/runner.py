"""The Ray Tune search driver: check the space, make the shared data, teachers and cache once, run (or resume) the
trials, write the results (lakd.tune.results).

    from lakd.tune.runner import SearchOptions, run_search
    summary = run_search(SearchOptions(config="tiny", algorithm="tpe", scheduler="asha", num_samples=8, seed=0))

A search lives in `<run_dir>/tune/<name>/` (Ray's experiment directory). Running the same command again resumes
it with `Tuner.restore`: finished trials are kept, unfinished ones continue from their last reported evaluation,
the searcher's state (Optuna's study) is restored. A resume with another space, algorithm, scheduler or seed
is refused (use another --name). Ray keeps the searcher's state but not ASHA's rungs: after a resume ASHA judges
the remaining trials against the results it sees from then on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lakd.config import Config, ConfigError, load_config
from lakd.tune import results as R
from lakd.tune.space import SearchSpace, load_space, space_digest

log = logging.getLogger("lakd.tune")

ALGORITHMS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "pbt", "fifo")
METRIC = "dev_ua"  # selection and early stopping on dev UA only; the test split is never seen by the search
SEARCH_FILE = "search.json"


@dataclass
class SearchOptions:
    config: str = "tiny"
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None
    space: str | None = None  # a space YAML; None = lakd.tune.space.DEFAULT_SPACE (tune/space.yaml documents it)
    name: str = "search"
    algorithm: str = "tpe"
    scheduler: str = "asha"
    num_samples: int | None = None  # trials (random, tpe; default 8) or repeats of the grid (grid; default 1)
    seed: int | None = None  # default: the config's seed
    max_concurrent: int = 0  # 0 = as many as the resources allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share a GPU (0.5 = two trials per GPU)
    address: str | None = None  # a running Ray cluster ("auto" under slurm/tune.sh); None = start a local Ray
    num_cpus: int | None = None  # CPUs of a local Ray (default: all)
    grace_evals: int = 1  # ASHA: evaluations every trial gets before it can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the best 1/reduction_factor at each rung
    perturbation_interval: int = 2  # PBT: evaluations between exploit/explore steps
    test: bool = True  # evaluate the best trial's checkpoint on the test split (once)
    resume: str = "auto"  # auto: resume a search of this name if there is one | never | must


def prepare_config(opts: SearchOptions) -> Config:
    """The search's base config with absolute paths (trials run in other working directories)."""
    overrides = list(opts.overrides) + ([f"run_dir={opts.run_dir}"] if opts.run_dir else [])
    cfg = load_config(opts.config, overrides)
    cfg.run_dir = str(Path(cfg.run_dir).resolve())
    for split in ("train", "dev", "test"):
        spec = getattr(cfg.data, split)
        if isinstance(spec, str) and os.path.exists(spec):
            setattr(cfg.data, split, str(Path(spec).resolve()))
        elif isinstance(spec, list):
            setattr(cfg.data, split, [str(Path(s).resolve()) if os.path.exists(s) else s for s in spec])
    return cfg


def check_options(opts: SearchOptions, space: SearchSpace) -> None:
    if opts.algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {opts.algorithm!r}")
    if opts.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {opts.scheduler!r}")
    if opts.scheduler == "pbt" and opts.algorithm != "random":
        raise ConfigError("--scheduler pbt mutates the values itself: use it with --algorithm random")
    if opts.scheduler == "pbt" and not space.pbt_mutations():
        raise ConfigError(
            "--scheduler pbt: nothing in the space can change during training (λ, T, τ, weighting, language "
            "dropout can; the model's shape and the optimizer's settings cannot)"
        )
    if opts.resume not in ("auto", "never", "must"):
        raise ConfigError(f"--resume must be auto, never or must, got {opts.resume!r}")
    if opts.cpus_per_trial <= 0 or opts.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if opts.gpus_per_trial > 1 and not float(opts.gpus_per_trial).is_integer():
        raise ConfigError("--gpus-per-trial above 1 must be a whole number of GPUs")


def evaluations_per_trial(cfg: Config, space: SearchSpace) -> int:
    """Dev evaluations of a trial that runs to the end (ASHA's max_t): the trainer's arithmetic on the training set
    size, at the largest epochs/max_steps and the smallest eval_every the space can give."""
    from lakd.recipes import common

    langs = list(cfg.languages)
    n_train = common.count_samples(common.shards_for_languages(common.data_spec(cfg, "train"), langs), langs)
    batches = max(1, math.ceil((cfg.data.epoch_samples or n_train) / cfg.data.batch_size))
    variants = [cfg]
    for p in space:
        if p.path in ("student_optim.epochs", "student_optim.max_steps", "student_optim.eval_every"):
            variants += [cfg.copy(**{p.path: v}) for v in p.grid_values()]
    most = 1
    for c in variants:
        o = c.student_optim
        per_epoch = max(1, batches // o.grad_accum)
        total = o.max_steps or o.epochs * per_epoch
        most = max(most, math.ceil(total / (o.eval_every or per_epoch)))
    return most


def _search_record(opts: SearchOptions, cfg: Config, space: SearchSpace, seed: int) -> dict:
    return {
        "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
        "space": json.loads(space_digest(space)),
        "algorithm": opts.algorithm,
        "scheduler": opts.scheduler,
        "seed": seed,
    }


def _check_resumable(search_dir: Path, record: dict) -> None:
    path = search_dir / SEARCH_FILE
    if not path.exists():
        return
    earlier = json.loads(path.read_text())
    changed = [k for k in record if k != "config" and earlier.get(k) != record[k]]
    old, new = _flat(earlier.get("config", {})), _flat(record["config"])
    changed += [f"config {k}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]  # fields lakd added since: ok
    if changed:
        raise ConfigError(
            f"search {search_dir} was started with another {', '.join(changed)}; resuming it would mix two "
            "searches. Give this one another --name (or delete that directory)."
        )


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def pin_data(cfg: Config) -> None:
    """Write the data specs (a synthesized corpus's too) as absolute paths into `cfg`: trials, sweep runs and
    best.yaml run in other directories, and the teachers are trained with exactly these settings."""
    from lakd.recipes import common

    for split in ("train", "dev", "test"):
        spec = common.data_spec(cfg, split)
        setattr(cfg.data, split, str(Path(spec).resolve()) if isinstance(spec, str) and os.path.exists(spec) else spec)


def _prepare_shared(cfg: Config, opts: SearchOptions) -> tuple[dict, str | None]:
    """Data (synthesized if the config says so), one teacher per language (Ray tasks, in parallel, with the trials'
    resources) and the teacher-knowledge cache: once, reused by every trial and by later searches."""
    import ray

    from lakd.recipes import common, prepare

    common.write_run_config(cfg)
    prepare.run(cfg)
    pin_data(cfg)
    res = {"num_cpus": opts.cpus_per_trial, "num_gpus": opts.gpus_per_trial}
    work = cfg.copy(threads=max(1, int(opts.cpus_per_trial)))
    teacher_task, cache_task = ray.remote(_teacher_task), ray.remote(_cache_task)
    refs = [teacher_task.options(**res).remote(work, lang) for lang in cfg.languages]
    teachers = dict(zip(cfg.languages, ray.get(refs)))
    cache_dir = ray.get(cache_task.options(**res).remote(work, teachers)) if cfg.distill.use_cache else None
    return teachers, cache_dir


def _teacher_task(cfg: Config, language: str) -> str:
    from lakd.recipes import finetune
    from lakd.tune.trial import close_wandb_service

    try:
        return finetune.run_teacher(cfg, language)
    finally:
        close_wandb_service()


def _cache_task(cfg: Config, teachers: dict) -> str:
    from lakd.recipes import cache

    return cache.run(cfg, teachers)


def _init_ray(opts: SearchOptions, cfg: Config) -> None:
    """A local Ray (or the cluster at --address) whose workers see W&B's environment: the variables the user set,
    and WANDB_DIR defaulting to the run directory, so every trial's offline run lands in `<run_dir>/wandb/`."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # A trial stopped by the scheduler closes its W&B run while its process ends; Ray would kill the process's
    # children (W&B's service) at once and lose the run's last records (slurm/tune.sh sets the same for its Ray).
    os.environ.setdefault("RAY_kill_child_processes_on_worker_exit", "0")
    os.environ.setdefault("WANDB_DIR", cfg.run_dir)
    env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    ray.init(
        address=opts.address,
        num_cpus=None if opts.address else opts.num_cpus,
        include_dashboard=False,
        ignore_reinit_error=True,
        runtime_env={"env_vars": env},
        log_to_driver=True,
    )


def trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _searcher(opts: SearchOptions, seed: int):
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if opts.algorithm == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=METRIC, mode="max", seed=seed)
        return ConcurrencyLimiter(searcher, max_concurrent=opts.max_concurrent) if opts.max_concurrent else searcher
    return BasicVariantGenerator(random_state=seed, max_concurrent=opts.max_concurrent)


def _scheduler(opts: SearchOptions, space: SearchSpace, max_evals: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if opts.scheduler == "asha":
        return ASHAScheduler(
            time_attr="evals", max_t=max_evals, grace_period=opts.grace_evals, reduction_factor=opts.reduction_factor
        )
    if opts.scheduler == "pbt":
        return PopulationBasedTraining(
            time_attr="evals",
            perturbation_interval=opts.perturbation_interval,
            hyperparam_mutations=space.pbt_mutations(),
        )
    return FIFOScheduler()


def run_search(opts: SearchOptions) -> dict:
    """Run or resume the search; returns the summary (also in `<search dir>/summary.json`)."""
    from ray import tune

    from lakd.tune.trial import run_trial

    cfg = prepare_config(opts)
    space = load_space(opts.space, cfg)  # every range checked before anything trains
    check_options(opts, space)
    seed = cfg.seed if opts.seed is None else opts.seed
    storage = Path(cfg.run_dir) / "tune"
    search_dir = storage / opts.name
    record = _search_record(opts, cfg, space, seed)
    resume = tune.Tuner.can_restore(str(search_dir))
    if resume and opts.resume == "never":
        raise ConfigError(f"search {search_dir} exists (--resume never): give another --name")
    if not resume and opts.resume == "must":
        raise ConfigError(f"no search to resume at {search_dir}")
    if resume:
        _check_resumable(search_dir, record)
    _init_ray(opts, cfg)
    teachers, cache_dir = _prepare_shared(cfg, opts)
    max_evals = evaluations_per_trial(cfg, space)
    search = {
        "experiment": cfg.name,
        "group": f"{cfg.name}-{opts.name}",
        "tags": [opts.name, opts.algorithm, opts.scheduler],
        "scheduler": opts.scheduler,
        "cpus_per_trial": opts.cpus_per_trial,
    }
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg.to_dict(), teachers=teachers, cache_dir=cache_dir, search=search),
        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
    )
    random.seed(seed)  # PBT's explore draws from Python's random module
    if resume:
        log.warning("resuming the search in %s (finished trials are kept)", search_dir)
        tuner = tune.Tuner.restore(str(search_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        num_samples = opts.num_samples or (1 if opts.algorithm == "grid" else 8)
        tuner = tune.Tuner(
            trainable,
            param_space=space.ray_space(opts.algorithm),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                search_alg=_searcher(opts, seed),
                scheduler=_scheduler(opts, space, max_evals),
                num_samples=num_samples,
                max_concurrent_trials=opts.max_concurrent or None,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=opts.name,
                storage_path=str(storage),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=4),  # PBT copies from other trials' latest
            ),
        )
        search_dir.mkdir(parents=True, exist_ok=True)
        (search_dir / SEARCH_FILE).write_text(json.dumps({**record, "options": asdict(opts)}, indent=1))
    grid = tuner.fit()
    return write_results(cfg, opts, space, grid, search_dir, max_evals)


def write_results(cfg: Config, opts: SearchOptions, space: SearchSpace, grid, search_dir: Path, max_evals) -> dict:
    """Tables, plots, best.yaml, the one test evaluation and summary.json from Ray's ResultGrid."""
    rows = R.trial_rows(grid, space.paths, list(cfg.languages))
    R.write_tables(rows, search_dir)
    R.write_plots(rows, space.paths, search_dir)
    summary: dict = {
        "search_dir": str(search_dir),
        "algorithm": opts.algorithm,
        "scheduler": opts.scheduler,
        "max_evals_per_trial": max_evals,
        "savings": R.asha_savings(rows, max_evals),
        "errors": sum(1 for r in rows if r["status"] == "error"),
        "trials": rows,
        "best": None,
        "test": None,
    }
    scored = [r for r in rows if r["best_dev_ua"] is not None and r["checkpoint"]]
    if scored:
        best = scored[0]
        params = {p: best[p] for p in space.paths}
        note = {"trial": best["trial"], "dev UA": best["best_dev_ua"], "checkpoint": best["checkpoint"]}
        best_yaml = R.write_best_config(cfg, params, search_dir, note)
        summary["best"] = {**note, "params": params, "config": str(best_yaml)}
        if opts.test:
            summary["test"] = R.evaluate_best_on_test(cfg, best["checkpoint"], search_dir)
    summary["summary_path"] = str(R.write_summary(search_dir, summary))
    return summary
