"""Distillation losses and teacher weighting (route / cosine-sample / cosine-batch / mean).

    loss  = (1 - lambda) * CE(student, y) + lambda * KL + beta * EMB
    KL    = T^2 * mean_b sum_k w_bk * KL_bk,   KL_bk = sum_c p_t(c) [log p_t(c) - log p_s(c)],  p = softmax(logits / T)
    EMB   = mean_b sum_k w_bk * (1 - cos(P_k s_b, t_bk))

Two KL reductions, because the published code and the textbook differ:
- ``batchmean`` (lakd's default): the KL summed over classes, averaged over the batch — the true KL per sample.
- ``mean`` (the published MTKD code, aalto-speech/mtkd4ser): ``nn.KLDivLoss(reduction="mean")`` divides by
  batch x classes, so the KL term is C times smaller for the same lambda. The paper presets use it, so their
  lambda (0.25 for MTKD, 0.75 for KD) means what it meant there.

Teacher weighting modes (`WEIGHTING_MODES`):
- ``route``: each sample learns from its own language's teacher (lakd's language-aware MTKD).
- ``cosine-batch``: the published MTKD — ONE weight vector per batch, ``c_k = mean_b cos(z_s[b], z_k[b])`` on raw
  logits, ``w = softmax_k(c / tau)`` (tau = 0.25), no gradient.
- ``cosine-sample``: lakd's per-sample variant, ``w_b = softmax_k(cos(z_s[b], z_k[b]) / tau)``.
- ``mean``: uniform ``1/K``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# the values implemented here; listed in lakd.choices so that config.validate can check them without torch
from lakd.choices import KL_REDUCTIONS, WEIGHTING_MODES
from lakd.choices import RENAMED_WEIGHTING_MODES as RENAMED_MODES


def route_matrix(teacher_languages: Sequence[str | None], languages: Sequence[str]) -> torch.Tensor:
    """`[L + 1, K]` row-stochastic routing table: row l = weights for a sample of `languages[l]`, last row = id -1.

    A language with its own teacher(s) routes to them (split evenly if several); a language without a teacher,
    and the unknown language, fall back to the uniform mixture of all teachers.
    """
    k = len(teacher_languages)
    if k == 0:
        raise ValueError("need at least one teacher")
    table = torch.zeros(len(languages) + 1, k)
    for li, lang in enumerate(languages):
        for ki, tl in enumerate(teacher_languages):
            if tl is not None and tl == lang:
                table[li, ki] = 1.0
    empty = table.sum(-1) == 0
    table[empty] = 1.0
    return table / table.sum(-1, keepdim=True)


def teacher_weights(
    mode: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    language_ids: torch.Tensor | None,
    teacher_languages: Sequence[str | None],
    languages: Sequence[str],
    tau: float = 0.25,
) -> torch.Tensor:
    """Weights over the K teachers for each sample, `[B, K]`, rows summing to 1, never carrying gradient.

    - route: one-hot on the teacher of the sample's language (see `route_matrix` for the fallbacks);
      a single teacher (KD) gets weight 1 for every sample.
    - cosine-sample: `softmax_k(cos(z_s[b], z_t^k[b]) / tau)` on logits, one row per sample.
    - cosine-batch: `softmax_k(mean_b cos(z_s[b], z_t^k[b]) / tau)`, the same row for every sample of the batch
      (the published MTKD).
    - mean: uniform `1/K`.
    """
    if mode in RENAMED_MODES:
        raise ValueError(f"teacher weighting {mode!r} was renamed: use {RENAMED_MODES[mode]}")
    if mode not in WEIGHTING_MODES:
        raise ValueError(f"teacher weighting must be one of {WEIGHTING_MODES}, got {mode!r}")
    k, b = teacher_logits.shape[0], teacher_logits.shape[1]
    if len(teacher_languages) != k:
        raise ValueError(f"{len(teacher_languages)} teacher languages for {k} teachers' logits")
    device = teacher_logits.device
    if k == 1:
        return torch.ones(b, 1, device=device)
    if mode == "mean":
        return torch.full((b, k), 1.0 / k, device=device)
    if mode == "route":
        table = route_matrix(teacher_languages, languages).to(device)
        if language_ids is None:
            ids = torch.full((b,), len(languages), dtype=torch.long, device=device)
        else:
            ids = torch.as_tensor(language_ids, device=device).long()
            ids = torch.where(ids < 0, torch.full_like(ids, len(languages)), ids)
        return table[ids]
    with torch.no_grad():
        cos = F.cosine_similarity(student_logits.detach().float().unsqueeze(0), teacher_logits.detach().float(), dim=-1)
        if mode == "cosine-batch":  # [K]: agreement over the whole batch, one weight vector for all its samples
            return torch.softmax(cos.mean(dim=1) / tau, dim=-1).unsqueeze(0).expand(b, k).contiguous()
        return torch.softmax(cos.transpose(0, 1) / tau, dim=-1)  # [B, K]


class EmbeddingProjections(nn.ModuleList):
    """One learned `Linear(student_dim, teacher_dim)` per teacher whose embedding size differs (Identity otherwise).

    These are trainable parameters of the distillation run, outside the student model: add them to the optimizer.
    """

    def __init__(self, student_dim: int, teacher_dims: Sequence[int]):
        super().__init__(nn.Linear(student_dim, d) if d != student_dim else nn.Identity() for d in teacher_dims)


def mix_teacher_logits(teacher_logits: torch.Tensor, mix, temperature: float) -> torch.Tensor:
    """Cached (clean) teacher knowledge for a mixup batch: each teacher's tempered probabilities mixed like the
    labels, p = λ·p_t(x_i) + (1 − λ)·p_t(x_partner), returned as logits T·log p so that `distillation_loss`'s
    log_softmax(· / T) gives back exactly log p. `mix` is a lakd.data.mixup.Mix; teacher_logits `[K, B, C]`."""
    t = teacher_logits.detach().float()
    p = F.softmax(t / temperature, dim=-1).transpose(0, 1)  # [B, K, C]: mix along the batch
    return temperature * mix.mix_rows(p).transpose(0, 1).clamp_min(1e-12).log()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
    kd_weight: float,
    class_weights: torch.Tensor | None = None,
    student_embed: torch.Tensor | None = None,
    teacher_embeds: Sequence[torch.Tensor] | None = None,
    embed_weight: float = 0.0,
    projections: nn.ModuleList | None = None,
    kl_reduction: str = "batchmean",
) -> dict[str, torch.Tensor]:
    """CE + temperature-scaled, teacher-weighted KL (+ optional embedding term); returns loss, ce, kl, embed.

    `kl_reduction="mean"` divides each teacher's KL by the class count as well (the published code's
    `nn.KLDivLoss(reduction="mean")`); `"batchmean"` keeps the true per-sample KL.

    Shapes: student_logits `[B, C]`, teacher_logits `[K, B, C]`, labels `[B]` (or soft targets `[B, C]` that
    sum to 1, from mixup), weights `[B, K]`,
    student_embed `[B, H]`, teacher_embeds K tensors `[B, H_k]`. Teacher inputs are treated as constants.
    Computed in float32 whatever the autocast dtype.
    """
    if teacher_logits.dim() != 3 or teacher_logits.shape[1:] != student_logits.shape:
        raise ValueError(
            f"teacher_logits {tuple(teacher_logits.shape)} must be [K, B, C] "
            f"with [B, C] = {tuple(student_logits.shape)}"
        )
    if kl_reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}")
    k = teacher_logits.shape[0]
    if weights.shape != (student_logits.shape[0], k):
        raise ValueError(f"weights {tuple(weights.shape)} must be [B, K] = {(student_logits.shape[0], k)}")
    s = student_logits.float()
    t = teacher_logits.detach().float().to(s.device)
    w = weights.detach().float().to(s.device)

    ce = F.cross_entropy(s, labels, weight=None if class_weights is None else class_weights.float().to(s.device))

    log_p_s = F.log_softmax(s / temperature, dim=-1)  # [B, C]
    log_p_t = F.log_softmax(t / temperature, dim=-1)  # [K, B, C]
    kl_kb = (log_p_t.exp() * (log_p_t - log_p_s.unsqueeze(0))).sum(-1)  # [K, B]
    if kl_reduction == "mean":
        kl_kb = kl_kb / s.shape[-1]
    kl = (temperature**2) * (w * kl_kb.transpose(0, 1)).sum(-1).mean()

    embed = s.new_zeros(())
    if teacher_embeds is not None and student_embed is not None:
        if len(teacher_embeds) != k:
            raise ValueError(f"{len(teacher_embeds)} teacher embeddings for {k} teachers")
        cos = []
        for i, te in enumerate(teacher_embeds):
            se = projections[i](student_embed) if projections is not None else student_embed
            if se.shape[-1] != te.shape[-1]:
                raise ValueError(
                    f"student embedding size {se.shape[-1]} != teacher {i}'s {te.shape[-1]}: "
                    "pass EmbeddingProjections(student_dim, teacher_dims)"
                )
            cos.append(F.cosine_similarity(se.float(), te.detach().float().to(s.device), dim=-1))
        embed = (w * (1.0 - torch.stack(cos, dim=-1))).sum(-1).mean()
    elif embed_weight > 0:
        raise ValueError("embed_weight > 0 needs student_embed and teacher_embeds")

    loss = (1.0 - kd_weight) * ce + kd_weight * kl + embed_weight * embed
    return {"loss": loss, "ce": ce, "kl": kl, "embed": embed}
