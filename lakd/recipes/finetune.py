"""Recipe: fine-tune a wav2vec2-family classifier — a per-language teacher (FT-Mono) or one model on all
languages (FT-Multi, `language="multi"`).

    lakd train teacher --language fi --config tiny
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from lakd.config import Config, ModelConfig, OptimConfig
from lakd.data.augment import augment_for
from lakd.data.mixup import maybe_mix
from lakd.data.mixup import targets as mix_targets
from lakd.recipes import common
from lakd.recipes.evaluate import make_dev_eval_fn

log = logging.getLogger("lakd.recipes.finetune")


def class_weights_for(cfg: Config, spec, languages: list[str]) -> torch.Tensor:
    """Inverse-frequency class weights from the shards' index (mean 1), for imbalanced corpora."""
    from lakd.data.index import directory_counts
    from lakd.data.shards import expand_urls

    counts = torch.zeros(len(cfg.labels))
    for lang, c in directory_counts(expand_urls(spec)).items():
        if lang in languages:
            for label, n in c.items():
                if label in cfg.labels:
                    counts[cfg.labels.index(label)] += n
    counts = counts.clamp(min=1)
    w = counts.sum() / counts
    return w / w.mean()


def train_classifier(
    cfg: Config,
    model_cfg: ModelConfig,
    optim_cfg: OptimConfig,
    languages: list[str],
    out_dir: Path,
    kind: str,
    loss_factory=None,
    extra_modules=None,
    extra_meta=None,
    on_eval=None,
    init_model=None,
) -> Path:
    """Train an SERModel on the training shards of `languages`, select on dev, return the best checkpoint dir.

    `loss_factory(model, device, dist) -> loss_fn(model, batch) -> (loss, terms)` lets the distillation recipe
    reuse this loop; by default the loss is cross-entropy on the labels. `init_model(model)` fills the freshly built
    model before training (extending a student: its trained weights, lakd.recipes.extend); a resumed run then
    loads its last/ checkpoint over it. `on_eval(metrics, trainer)` sees every
    dev evaluation once the trainer is done with it, its best/ checkpoint written (Ray Tune reports through it,
    and a scheduler may end the process inside the call): the trainer calls eval_fn before it saves, so the
    call is deferred to the start of the next training step, or to the end of training for the last one.
    """
    from lakd.data.loader import build_loader
    from lakd.models.ser import SERModel
    from lakd.train.engine import Trainer
    from lakd.train.logging import RunLogger
    from lakd.train.runtime import setup_runtime

    dist = setup_runtime(cfg)
    device = dist.device
    out_dir = Path(out_dir)
    train_spec = common.shards_for_languages(common.data_spec(cfg, "train"), languages)
    n_train = common.count_samples(train_spec, languages)
    if n_train == 0:
        raise ValueError(f"{kind}: no training samples for languages {languages} in {common.data_spec(cfg, 'train')}")
    per_rank = cfg.data.epoch_samples or math.ceil(n_train / dist.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.data.batch_size))

    # the student's config or a teacher's (FT-Mono/FT-Multi): data.augment.apply_to says which ones augment
    data_cfg = augment_for(cfg.data, "student" if model_cfg is cfg.student else "teachers")
    model = SERModel(model_cfg, list(cfg.labels), list(cfg.languages)).to(device)
    if init_model is not None:
        init_model(model)
    class_weights = class_weights_for(cfg, train_spec, languages).to(device) if optim_cfg.class_weighted_ce else None

    def loader_factory(epoch: int):
        return build_loader(
            train_spec,
            cfg.labels,
            cfg.languages,
            cfg=data_cfg,
            train=True,
            seed=cfg.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            epoch=epoch,
            language_filter=languages,
        )

    if loss_factory is None:

        def loss_fn(m, batch):
            batch, mix = maybe_mix(batch, data_cfg.augment, cfg.seed)  # training batches only: off when 0
            out = m(
                batch["input_values"].to(device), batch["attention_mask"].to(device), batch["language_ids"].to(device)
            )
            target = mix_targets(batch, mix, len(cfg.labels)).to(device)
            ce = F.cross_entropy(out.logits, target, weight=class_weights)
            return ce, {"ce": ce.detach()}
    else:
        loss_fn = loss_factory(model, device, dist)

    def log_dev_views(metrics, pred):  # W&B: confusion image, per-class table and chart of each dev evaluation
        from lakd.eval.tracking import log_evaluation

        log_evaluation(logger, metrics, cfg.labels, "dev", trainer.step, predictions=pred, groups=False, scalars=False)

    dev_eval = make_dev_eval_fn(cfg, languages, device, dist, on_report=log_dev_views)

    unreported: list[dict] = []  # dev evaluations not yet handed to on_eval (see the docstring)

    def eval_fn(m):
        metrics = dev_eval(m)
        if on_eval is not None:
            unreported.append(metrics)
        return metrics

    def report_evaluations():
        while unreported:
            on_eval(unreported.pop(0), trainer)

    if on_eval is not None:
        step_loss = loss_fn

        def loss_fn(m, batch):
            report_evaluations()
            return step_loss(m, batch)

    meta = {
        "kind": kind,
        "languages_trained": languages,
        "train_spec": [str(u) for u in train_spec],
        "config": cfg.to_dict(),
        **(extra_meta or {}),
    }
    logger = RunLogger(
        out_dir,
        cfg.to_dict(),
        cfg.wandb,
        name=f"{cfg.name}-{out_dir.name}",
        group=cfg.wandb.group or cfg.name,
        enabled_on_rank0=dist.is_main,
        job_type=kind,
        tags=[kind],
        wandb_dir=cfg.run_dir,
    )
    trainer = Trainer(
        model,
        optim_cfg,
        loss_fn=loss_fn,
        train_loader_factory=loader_factory,
        eval_fn=eval_fn,
        out_dir=out_dir,
        dist=dist,
        logger=logger,
        steps_per_epoch=steps_per_epoch,
        use_deepspeed=cfg.launch.deepspeed,
        zero_stage=cfg.launch.zero_stage,
        extra_meta=meta,
        seed=cfg.seed,
        extra_modules=extra_modules,
        micro_batch_size=cfg.data.batch_size,
        log_every=cfg.wandb.log_every,
    )
    try:
        summary = trainer.fit()
        report_evaluations()
        if cfg.wandb.log_checkpoint and (out_dir / "best").exists():
            logger.log_artifact(out_dir / "best", f"{cfg.name}-{out_dir.name}", metadata=summary)
    finally:
        logger.close()
    log.info("%s done: %s", kind, {k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    return out_dir / "best"


def run_teacher(cfg: Config, language: str) -> str:
    """Train the teacher of one language (or all with 'multi') under run_dir/teachers/<language>/.

    A rerun resumes it, or returns it when it is done, as long as its result-affecting settings are those it
    was started with; otherwise `cfg.on_config_change` decides (refuse / restart / resume, lakd.train.run_dir)."""
    if language == common.MULTI:
        languages, kind = list(cfg.languages), "ft-multi"
    elif language in cfg.languages:
        languages, kind = [language], "ft-mono"
    else:
        raise ValueError(f"language {language!r} is not in the config's languages {cfg.languages} (or use 'multi')")
    out = common.teacher_dir(cfg, language)
    with common.claim_output(cfg, out, "teachers"):  # one run at a time; a changed config is refused
        done = out / "best" / "lakd.json"
        if done.exists() and (out / "done.json").exists():
            log.info("teacher %s already trained: %s", language, out / "best")
            return str(out / "best")
        best = train_classifier(cfg, cfg.teacher, cfg.teacher_optim, languages, out, kind)
        from lakd.io import atomic_write_json

        atomic_write_json(out / "done.json", {"checkpoint": str(best), "kind": kind})
    return str(best)
