"""Pooling frame sequences into utterance vectors, always over valid (non-padded) frames only.

- `masked_mean`: the teachers' pooling.
- `AttentionPool`: additive (Bahdanau) attention over frames, optionally conditioned on a language vector.
- `HierarchicalAttentionPool`: the student's pooling: attention over frames inside each of the top-D layers,
  then attention over the D layer summaries; both levels see the language vector.

With `stats=True` a frame-level pool also takes the attention-weighted standard deviation (attentive statistics
pooling, Okabe et al., Interspeech 2018): how much a layer's frames vary over the utterance (pitch range, loudness
swings, pauses) is what a weighted mean averages away.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `x [B, F, H]` over frames where `mask [B, F]` is true (a row without valid frames gives 0)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax that gives exactly zero weight to masked positions (computed in float32 for bf16 safety)."""
    scores = scores.float()
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None:
        weights = weights * mask  # a row with no valid position would otherwise be uniform over padding
    return weights


class AttentionPool(nn.Module):
    """Additive attention pooling: `a_t = softmax_t(v^T tanh(W h_t + U c))`, output `sum_t a_t h_t`.

    `cond_dim > 0` adds a conditioning vector `c` (the language embedding) to every score, so the pooling
    can attend to different frames for different languages.

    `stats=True`: the output is `P [mean; std]` with `std_t = sqrt(sum_t a_t h_t^2 - mean^2)`, projected back to
    `hidden_size` so everything downstream (layer attention, head, teacher-student cosine) keeps its size. `P`
    starts as `[I 0]`: the module begins exactly as the plain attention pool and learns how much spread to use.
    """

    def __init__(self, hidden_size: int, attention_dim: int, cond_dim: int = 0, stats: bool = False):
        super().__init__()
        self.key = nn.Linear(hidden_size, attention_dim)
        self.cond = nn.Linear(cond_dim, attention_dim, bias=False) if cond_dim > 0 else None
        self.score = nn.Linear(attention_dim, 1, bias=False)
        self.stats: nn.Linear | None = None
        if stats:
            self.stats = nn.Linear(2 * hidden_size, hidden_size)
            with torch.no_grad():
                self.stats.weight.zero_()
                self.stats.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
                self.stats.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        return_weights: bool = False,
    ):
        h = self.key(x)  # [B, F, A]
        if self.cond is not None:
            if cond is None:
                raise ValueError("AttentionPool was built with cond_dim > 0 but got no conditioning vector")
            h = h + self.cond(cond).unsqueeze(1)
        weights = masked_softmax(self.score(torch.tanh(h)).squeeze(-1), mask)  # [B, F]
        w = weights.to(x.dtype).unsqueeze(1)
        pooled = torch.bmm(w, x).squeeze(1)
        if self.stats is not None:
            # clamp: rounding can make E[h^2] - E[h]^2 slightly negative, and sqrt'(0) is infinite
            spread = torch.sqrt((torch.bmm(w, x * x).squeeze(1) - pooled * pooled).clamp(min=1e-5))
            pooled = self.stats(torch.cat([pooled, spread], dim=-1))
        return (pooled, weights) if return_weights else pooled


class HierarchicalAttentionPool(nn.Module):
    """Two-level attention over the top-D transformer layers.

    Level 1: one `AttentionPool` per layer summarises that layer's frames (layers encode different things:
    lower ones more acoustic/prosodic, upper ones more linguistic). Level 2: additive attention over the D
    layer summaries picks how much each layer contributes per utterance. Both levels are conditioned on
    `cond` when `cond_dim > 0`. A LayerNorm per layer puts the layers on one scale first (pre-LN
    transformers let the residual stream grow with depth). With D = 1 level 2 is a softmax over one
    element, i.e. the identity: the module becomes a plain (normalised) attention pool. `stats=True` makes the
    frame-level pools attentive statistics pools (the layer level stays a weighted mean of D summaries).
    """

    def __init__(self, hidden_size: int, attention_dim: int, depth: int, cond_dim: int = 0, stats: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"attention_depth must be >= 1, got {depth}")
        self.depth = depth
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(depth))
        self.frame_pools = nn.ModuleList(
            AttentionPool(hidden_size, attention_dim, cond_dim, stats=stats) for _ in range(depth)
        )
        self.layer_pool = AttentionPool(hidden_size, attention_dim, cond_dim)

    def forward(
        self,
        layers: list[torch.Tensor] | tuple[torch.Tensor, ...],
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        return_weights: bool = False,
    ):
        """`layers`: the top-D hidden states, lowest first, each `[B, F, H]`; returns `[B, H]`."""
        if len(layers) != self.depth:
            raise ValueError(f"HierarchicalAttentionPool(depth={self.depth}) got {len(layers)} layers")
        summaries, frame_weights = [], []
        for x, norm, pool in zip(layers, self.norms, self.frame_pools):
            s, w = pool(norm(x), mask, cond, return_weights=True)
            summaries.append(s)
            frame_weights.append(w)
        stacked = torch.stack(summaries, dim=1)  # [B, D, H]
        pooled, layer_weights = self.layer_pool(stacked, None, cond, return_weights=True)
        if return_weights:
            return pooled, {"frames": torch.stack(frame_weights, dim=1), "layers": layer_weights}
        return pooled
