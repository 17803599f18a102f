"""Recipe: distill teachers into the multilingual student (KD, MTKD as published, LA-MTKD).

    loss = (1 - λ)·CE(labels) + λ·Σ_k w_k·T²·KL(p_t_k ‖ p_s) [+ β·(1 - cos(embeddings))]

Teacher knowledge comes from the cache (`lakd cache`, default) or from teachers run online.

    lakd distill --config tiny                       # LA-MTKD with the config's settings
    lakd distill --set distill.weighting=cosine-batch --set distill.kl_reduction=mean ...  # published MTKD
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from lakd.choices import ONLINE_TEACHER_MODES
from lakd.config import Config
from lakd.recipes import common
from lakd.recipes.finetune import class_weights_for, train_classifier

log = logging.getLogger("lakd.recipes.distill")


class OnlineTeachers(nn.Module):
    """Frozen teachers run in the loop (no cache), never updated.

    `mode="eval"` (lakd's default) keeps dropout off, so the targets are those the cache would hold;
    `mode="train"` keeps the teachers' dropout (and SpecAugment) on, as the published MTKD code does
    (`teacher.train()` while distilling): the targets are then noisy, a different sample each step.
    """

    def __init__(self, teacher_dirs: dict[str, str], device, mode: str = "eval"):
        super().__init__()
        from lakd.models.ser import SERModel

        if mode not in ONLINE_TEACHER_MODES:
            raise ValueError(f"online teacher mode must be one of {', '.join(ONLINE_TEACHER_MODES)}, got {mode!r}")
        self.names = list(teacher_dirs)
        self.models = nn.ModuleList([SERModel.from_pretrained(teacher_dirs[n]) for n in self.names]).to(device)
        self.teacher_mode = mode
        for m in self.models:
            m.requires_grad_(False)
        self.train(True)

    def train(self, mode: bool = True):  # the student's train()/eval() never changes the teachers' chosen mode
        return super().train(self.teacher_mode == "train")

    @torch.no_grad()
    def forward(self, input_values, attention_mask, language_ids):
        outs = [m(input_values, attention_mask, None) for m in self.models]
        return torch.stack([o.logits.float() for o in outs]), [o.pooled.float() for o in outs]


def run(
    cfg: Config,
    teacher_dirs: dict[str, str],
    cache_dir: str | None,
    name: str = "student",
    on_eval=None,
    languages: list[str] | None = None,
) -> str:
    """Train the student from `teacher_dirs` ({name: checkpoint}); returns the best student checkpoint dir.

    `languages`: the student's training (and dev-selection) languages, default all of cfg.languages; one
    language gives a "Mono" student as in the paper's KD-Mono / MTKD-Mono (the model still knows every code).
    A rerun resumes it, or returns it when it is done, as long as its result-affecting settings are those it was
    started with; otherwise `cfg.on_config_change` decides (refuse / restart / resume, lakd.train.run_dir)."""
    out = common.run_path(cfg, name)
    train_languages = list(languages) if languages is not None else list(cfg.languages)
    if set(train_languages) - set(cfg.languages):
        raise ValueError(f"student languages {train_languages} are not all in the config's {cfg.languages}")
    # one run at a time; a changed config (a new λ, other teachers) is refused, not answered "already trained"
    with common.claim_output(cfg, out, "student", teachers=list(teacher_dirs), student_languages=train_languages):
        return _distill(cfg, teacher_dirs, cache_dir, name, on_eval, out, train_languages)


def _distill(
    cfg: Config,
    teacher_dirs,
    cache_dir,
    name: str,
    on_eval,
    out,
    train_languages: list[str],
    open_knowledge=None,
    init_model=None,
    extra_meta: dict | None = None,
) -> str:
    """Train the student. `open_knowledge()` -> `lookup(batch) -> (logits [K,B,C], K embeddings [B,H_k])` replaces
    the one cache at `cache_dir` (an extension reads several, lakd.recipes.extend); `init_model(model)` fills the
    student before training (default: fresh weights)."""
    from lakd.data.augment import augment_for
    from lakd.data.mixup import maybe_mix
    from lakd.data.mixup import targets as mix_targets
    from lakd.distill.cache import teacher_language
    from lakd.distill.losses import EmbeddingProjections, distillation_loss, mix_teacher_logits, teacher_weights

    if (out / "done.json").exists() and (out / "best" / "lakd.json").exists():
        log.info("student %s already trained: %s", name, out / "best")
        return str(out / "best")
    names = list(teacher_dirs)
    t_langs = [teacher_language(n, list(cfg.languages)) for n in names]
    d = cfg.distill
    if d.weighting == "route" and all(l is None for l in t_langs) and len(names) > 1:
        raise ValueError("distill.weighting=route needs teachers named by language (en, fi, ...)")

    def loss_factory(model, device, dist):
        cache = None
        online = None
        if d.use_cache and open_knowledge is not None:
            cache = open_knowledge()
        elif d.use_cache:
            if cache_dir is None:
                raise ValueError("distill.use_cache is true but no cache directory was given (run `lakd cache`)")
            from lakd.distill.cache import TeacherCache

            teacher_cache = TeacherCache(cache_dir, teacher_dirs=teacher_dirs)

            def cache(clean_batch):
                return teacher_cache.lookup(clean_batch["keys"], clean_batch["languages"])
        else:
            online = OnlineTeachers(teacher_dirs, device, mode=d.online_teacher_mode)
        class_weights = (
            class_weights_for(cfg, common.data_spec(cfg, "train"), train_languages).to(device)
            if cfg.student_optim.class_weighted_ce
            else None
        )
        projections = extra["projections"]

        def loss_fn(m, batch):
            clean = batch  # the cache holds knowledge of the clean samples, found by their keys
            batch, mix = maybe_mix(batch, augment_for(cfg.data, "student").augment, cfg.seed)  # off when 0
            x, mask, lang = (
                batch["input_values"].to(device),
                batch["attention_mask"].to(device),
                batch["language_ids"].to(device),
            )
            s = m(x, mask, lang)
            if cache is not None:
                t_logits, t_embeds = cache(clean)
                t_logits = torch.as_tensor(t_logits, device=device)
                t_embeds = [torch.as_tensor(e, device=device) for e in t_embeds]
                if mix is not None:  # cached knowledge is of the clean crops: mix it like the labels
                    t_logits = mix_teacher_logits(t_logits, mix, d.temperature)
                    t_embeds = [mix.mix_rows(e) for e in t_embeds]
            else:  # online teachers hear the same (augmented, mixed) audio as the student
                t_logits, t_embeds = online(x, mask, lang)
            w = teacher_weights(d.weighting, s.logits, t_logits, lang, t_langs, list(cfg.languages), tau=d.cosine_tau)
            terms = distillation_loss(
                s.logits,
                t_logits,
                mix_targets(batch, mix, len(cfg.labels)).to(device),
                w,
                d.temperature,
                d.kd_weight,
                class_weights=class_weights,
                student_embed=s.pooled,
                teacher_embeds=t_embeds if d.embed_weight > 0 else None,
                embed_weight=d.embed_weight,
                projections=projections,
                kl_reduction=d.kl_reduction,
            )
            logged = {k: v.detach() for k, v in terms.items() if k != "loss" and torch.is_tensor(v)}
            for k, n in enumerate(names):
                logged[f"w_{n}"] = w[:, k].mean().detach()
            return terms["loss"], logged

        return loss_fn

    extra = {"projections": None}
    extra_modules = None
    if d.embed_weight > 0:
        from lakd.models.ser import SERModel

        t_dims = [SERModel.embed_dim_of(teacher_dirs[n]) for n in names]
        s_dim = SERModel.embed_dim_for(cfg.student)
        extra["projections"] = EmbeddingProjections(s_dim, t_dims)
        extra_modules = {"projections": extra["projections"]}
    meta = {"teachers": {n: str(p) for n, p in teacher_dirs.items()}, "distill": vars(d).copy(), "cache_dir": cache_dir}
    meta.update(extra_meta or {})
    best = train_classifier(
        cfg,
        cfg.student,
        cfg.student_optim,
        train_languages,
        out,
        kind=f"distill-{d.weighting}",
        loss_factory=loss_factory,
        extra_modules=extra_modules,
        extra_meta=meta,
        on_eval=on_eval,
        init_model=init_model,
    )
    from lakd.io import atomic_write_json

    atomic_write_json(out / "done.json", {"checkpoint": str(best), "teachers": names})
    return str(best)
