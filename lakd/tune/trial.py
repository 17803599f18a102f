"""One Ray Tune trial: a student trained from the search's shared teachers and cache, in the trial's directory.

It reports dev metrics at each dev evaluation, after the trainer has saved it (`best/` and, here, `last/`), so a
scheduler that stops the trial on that report never loses the evaluation it judged; the last evaluation is
reported once the student's run is complete (done.json written, its W&B run closed), since ASHA stops every
trial that reaches its last evaluation on that report; `evals` (the index of the
evaluation, counted from the trainer's step so that a resumed trial continues the count) is the time unit of
ASHA and PBT whatever `eval_every` is. With PBT each report also carries a Ray checkpoint (`last/` and
`best/`), which a trial that PBT tells to copy a better one starts from. A trial whose student had finished
(the driver died before it heard) reports its final evaluation again instead of training anew.

Every trial is its own W&B run (lakd's RunLogger inside the student's training: the complete config, every loss
term, dev WA/UA overall and per language), named `<experiment>-<trial>-λ0.31-T4.2-D2-student`, grouped by search.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
import threading
from pathlib import Path

STUDENT = "student"  # the trial's run directory holds student/ as any lakd run does (best/, last/, metrics)
RAY_STATE = ("last", "best")  # what a PBT checkpoint carries of the student directory
STOP_GRACE_S = 60  # how long a stopped trial's process waits for its run to close (W&B flushes on finish)


def trial_number(trial_id: str) -> str:
    """`a1b2c_00003` -> `00003`: the part of Ray's trial id that counts trials within the search."""
    return trial_id.rsplit("_", 1)[-1]


def evaluation_index(trainer) -> int:
    """1 for the first dev evaluation, 2 for the next...: from the trainer's step, so it survives a resume."""
    per_eval = trainer.cfg.eval_every or trainer.optim_steps_per_epoch
    return max(1, math.ceil(trainer.progress.step / max(1, per_eval)))


def dev_report(metrics: dict, languages: list[str]) -> dict:
    """What Tune gets of a dev evaluation: UA and WA overall and per language (the rest stays in W&B/metrics)."""
    out = {"dev_ua": float(metrics["ua"]), "dev_wa": float(metrics["wa"])}
    for lang in languages:
        for key in ("ua", "wa"):
            if f"{key}_{lang}" in metrics:
                out[f"dev_{key}_{lang}"] = float(metrics[f"{key}_{lang}"])
    return out


def trial_config(base: dict, params: dict, trial_dir: Path, trial_id: str, search: dict):
    """The trial's complete lakd config: the search's config, the trial's values, its own run directory, a
    readable name, the search's W&B group and tags, threads matching the CPUs Ray gave it."""
    from lakd.config import config_from_dict
    from lakd.tune.space import trial_label

    cfg = config_from_dict(json.loads(json.dumps(base)), where="search config")
    cfg = cfg.copy(**params)
    cfg.name = f"{search['experiment']}-{trial_number(trial_id)}-{trial_label(params)}".rstrip("-")
    cfg.run_dir = str(trial_dir)
    cfg.launch.executor = "local"
    cfg.wandb.group = search["group"]
    cfg.wandb.tags = list(dict.fromkeys([*(cfg.wandb.tags or []), "tune", *search["tags"]]))
    cfg.threads = max(1, int(search["cpus_per_trial"]))
    if search["scheduler"] == "pbt":  # PBT continues a copied checkpoint with mutated values: not a refused change
        cfg.on_config_change = "resume"
    return cfg


def run_trial(params: dict, *, base: dict, teachers: dict, cache_dir: str | None, search: dict) -> None:
    """The function trainable (`tune.with_parameters(run_trial, base=..., ...)`)."""
    from ray import tune

    from lakd.recipes import common, distill

    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    cfg = trial_config(base, params, trial_dir, ctx.get_trial_id(), search)
    student = trial_dir / STUDENT
    pbt = search["scheduler"] == "pbt"
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # PBT copied a better trial into this one (or Ray resumed it): start from it
        with checkpoint.as_directory() as d:
            _restore_student(Path(d), student)
    common.write_run_config(cfg)
    if (student / "done.json").exists() and (student / "summary.json").exists():
        _report_finished(student, list(cfg.languages))
        return

    final: list[dict] = []
    closed = threading.Event()

    def on_eval(metrics: dict, trainer) -> None:
        if not final and not on_eval.__dict__.get("waits"):
            # A scheduler stops a trial by raising SystemExit in this thread (inside tune.report) and ending the
            # process at once; wait at exit until the run below is closed, so its W&B run reaches the disk.
            # Registered after W&B's own exit hook, so it runs first (atexit is last in, first out).
            atexit.register(closed.wait, STOP_GRACE_S)
            on_eval.waits = True
        progress = trainer.progress
        report = {**dev_report(metrics, list(cfg.languages)), "evals": evaluation_index(trainer), "step": progress.step}
        report["best_dev_ua"] = float(progress.best_metric) if progress.best_metric is not None else report["dev_ua"]
        if progress.stop_reason is not None:  # training is over: report when the whole run is saved (below)
            final.append(report)
            return
        trainer.save_checkpoint()  # a resumed trial continues from this evaluation, not from an older one
        if not pbt:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory(prefix="lakd-pbt-") as tmp:
            for name in RAY_STATE:
                if (student / name).exists():
                    shutil.copytree(student / name, Path(tmp) / name)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        distill.run(cfg, teachers, cache_dir, name=STUDENT, on_eval=on_eval)
    finally:  # also when a scheduler stops the trial (SystemExit inside a report)
        close_wandb_service()
        closed.set()
    for report in final:
        tune.report(report)


def close_wandb_service() -> None:
    """End this process's W&B service connection now: Ray ends its worker processes in ways that make W&B's own
    exit hook fail with a lost connection (noise in the log, nothing lost)."""
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def _restore_student(checkpoint_dir: Path, student: Path) -> None:
    """Replace the student's `last/` and `best/` by a Ray checkpoint's (PBT exploit, or a Ray-level resume)."""
    student.mkdir(parents=True, exist_ok=True)
    for name in RAY_STATE:
        src = checkpoint_dir / name
        if src.exists():
            dst = student / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
    (student / "done.json").unlink(missing_ok=True)


def _report_finished(student: Path, languages: list[str]) -> None:
    """Report a student that finished training before the driver recorded it: its last dev evaluation."""
    from ray import tune

    summary = json.loads((student / "summary.json").read_text())
    last = summary.get("last_dev") or {}
    steps = int(summary.get("steps") or 0)
    evals = len({r.get("step") for r in _metrics(student) if "dev/ua" in r and r.get("step", 0) <= steps}) or 1
    report = {**dev_report(last, languages), "evals": evals, "step": steps}
    report["best_dev_ua"] = float(summary.get("best_metric") or report["dev_ua"])
    tune.report(report)


def _metrics(student: Path) -> list[dict]:
    from lakd.train.logging import read_metrics

    return read_metrics(student)
