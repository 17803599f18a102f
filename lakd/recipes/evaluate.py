"""Recipe: evaluate a checkpoint on shards — WA/UA per language and overall, per-class recall, confusion
matrices, bootstrap confidence intervals; JSON + markdown + PNG report.

    lakd evaluate --checkpoint runs/demo/student/best --shards runs/demo/data/test
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lakd.config import Config, DataConfig

log = logging.getLogger("lakd.recipes.evaluate")


@torch.no_grad()
def predict_shards(
    model, spec, labels, languages, data_cfg: DataConfig, device, dist=None, language_filter=None
) -> dict:
    """Run `model` over every sample of `spec` once (across ranks); rank 0 gets all predictions.

    `skipped` holds the loader's skip counts plus `nonfinite_output`: a sample whose probabilities are NaN or
    inf is logged by key and left out, never scored as class 0 or written as NaN into a report."""
    from lakd.data.loader import build_loader
    from lakd.data.skips import SkipCounter

    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    was_training = model.training
    model.eval()
    keys, y_true, probs, langs, speakers = [], [], [], [], []
    loader = build_loader(
        spec,
        labels,
        languages,
        cfg=data_cfg,
        train=False,
        rank=rank,
        world_size=world,
        allow_unknown_language=True,
        language_filter=language_filter,
    )
    for batch in loader:
        out = model(
            batch["input_values"].to(device), batch["attention_mask"].to(device), batch["language_ids"].to(device)
        )
        p = torch.softmax(out.logits.float(), -1).cpu().numpy()
        finite = np.isfinite(p).all(axis=1)
        for i in np.flatnonzero(~finite):
            loader.skips.add("nonfinite_output", "model output", batch["keys"][i], "NaN/inf probabilities: not scored")
        n = len(batch["keys"])
        speakers_of = batch.get("speakers", [None] * n)
        probs.append(p[finite])
        y_true.extend(y for y, ok in zip(batch["labels"].tolist(), finite) if ok)
        keys.extend(k for k, ok in zip(batch["keys"], finite) if ok)
        langs.extend(l for l, ok in zip(batch["languages"], finite) if ok)
        speakers.extend(s for s, ok in zip(speakers_of, finite) if ok)
    model.train(was_training)
    result = {
        "keys": keys,
        "y_true": y_true,
        "probs": np.concatenate(probs) if probs else np.zeros((0, len(labels))),
        "languages": langs,
        "speakers": speakers,
    }
    skipped = loader.skips
    if world > 1 and torch.distributed.is_initialized():
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (result, skipped.as_dict()))
        result = {
            k: (
                np.concatenate([g[k] for g, _ in gathered])
                if k == "probs"
                else sum((list(g[k]) for g, _ in gathered), [])
            )
            for k in result
        }
        skipped = SkipCounter()
        for _, counts in gathered:
            skipped.merge(counts)
    result["skipped"] = skipped.as_dict()
    result["y_pred"] = result["probs"].argmax(-1).tolist() if len(result["probs"]) else []
    return result


def make_dev_eval_fn(cfg: Config, languages: list[str], device, dist, on_report=None):
    """Dev-set metrics used for model selection and early stopping (the test split is never touched).

    Returns the flat scalars of `lakd.eval.tracking.evaluation_scalars` (ua, wa, per-language UA/WA, per-class
    recall ...); `on_report(grouped_metrics, predictions)` sees the full result (the W&B views use it)."""
    from lakd.eval.metrics import grouped_metrics
    from lakd.eval.tracking import evaluation_scalars
    from lakd.recipes.common import data_spec

    spec = data_spec(cfg, "dev")

    def eval_fn(model) -> dict:
        pred = predict_shards(model, spec, cfg.labels, cfg.languages, cfg.data, device, dist, language_filter=languages)
        m = grouped_metrics(pred["y_true"], pred["y_pred"], pred["languages"], list(cfg.labels))
        if on_report is not None:
            on_report(m, pred)
        return {"ua": m["overall"]["ua"], "wa": m["overall"]["wa"], **evaluation_scalars(m)}

    return eval_fn


def evaluate_model(
    model,
    spec,
    labels,
    languages,
    data_cfg,
    device,
    out_dir: Path | None,
    n_bootstrap=1000,
    seed=0,
    title="",
    language_filter=None,
) -> dict:
    """Predict, compute the full metric set with CIs, and (if out_dir) write JSON/markdown/PNG reports."""
    from lakd.eval.report import build_report, to_markdown, write_report

    pred = predict_shards(model, spec, labels, languages, data_cfg, device, language_filter=language_filter)
    report = build_report(pred, list(labels), n_bootstrap=n_bootstrap, seed=seed, title=title)
    report["skipped"] = pred["skipped"]  # bad samples and non-finite outputs left out, by reason (metrics.json)
    if out_dir is not None:
        write_report(report, out_dir)
        report["out_dir"] = str(out_dir)
    report["markdown"] = to_markdown(report)
    return report


def evaluate_checkpoint(
    checkpoint, spec, out_dir=None, n_bootstrap=1000, device="auto", data_cfg=None, language_filter=None
) -> dict:
    """Evaluate a checkpoint on `spec`; `device` is "auto", "cpu", "cuda" or a torch.device."""
    from lakd.models.ser import SERModel
    from lakd.train.distributed import resolve_device

    checkpoint = Path(checkpoint)
    if not (checkpoint / "lakd.json").exists():
        raise FileNotFoundError(f"{checkpoint}: not a lakd checkpoint directory (no lakd.json)")
    dev = resolve_device(device)
    model = SERModel.from_pretrained(checkpoint).to(dev)
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / "eval"
    return evaluate_model(
        model,
        spec,
        model.labels,
        model.languages,
        data_cfg or DataConfig(),
        dev,
        out_dir,
        n_bootstrap=n_bootstrap,
        title=str(checkpoint),
        language_filter=language_filter,
    )


def run(cfg: Config, checkpoint_dir, split: str = "test", name: str | None = None, language_filter=None) -> dict:
    """Evaluate a trained checkpoint of this run on a split; report under run_dir/eval/<name>/<split>."""
    from lakd.recipes.common import data_spec, run_path
    from lakd.train.runtime import setup_runtime

    dist = setup_runtime(cfg)
    name = name or Path(checkpoint_dir).parent.name
    out = run_path(cfg, "eval", name, split)
    report = evaluate_checkpoint(
        checkpoint_dir,
        data_spec(cfg, split),
        out_dir=out,
        device=dist.device,
        data_cfg=cfg.data,
        language_filter=language_filter,
    )
    if dist.is_main:
        from lakd.eval.tracking import log_report_run

        log_report_run(cfg, report, out, f"{cfg.name}-eval-{name}-{split}", tags=[name, split])
    return compact(report)


def compact(report: dict) -> dict:
    """The headline numbers of a report (the full one is on disk): what a job returns and `lakd status` shows."""
    keep = ("n", "ua", "wa", "macro_f1", "ua_ci", "wa_ci")
    m = report["metrics"]
    return {
        "out_dir": report.get("out_dir"),
        "title": report.get("title"),
        "metrics": {
            "overall": {k: m["overall"][k] for k in keep if k in m["overall"]},
            "groups": {g: {k: v[k] for k in keep if k in v} for g, v in m["groups"].items()},
            "mean_ua": m.get("mean_ua"),
        },
    }
