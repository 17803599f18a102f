"""Mixup of training batches: waveforms mixed in pairs, labels mixed into soft targets (docs/training.md#mixup).

Why at the batch and not in the loader's workers: a mixed pair must come from one batch so that the step can mix
the *targets* the same way (the soft labels, and cached teacher knowledge of the two clean crops), and pairs are
drawn within one language by default, so that the language-ID embedding and teacher routing stay meaningful
(a 50/50 mix of an English and a Finnish utterance has no one language).

Each sample i is mixed with a partner j of its batch: x = λ·x_i + (1 − λ)·x_j, target = λ·onehot(y_i) +
(1 − λ)·onehot(y_j), with λ ~ Beta(α, α) folded to λ ≥ 0.5 so that sample i stays the dominant one (its
language id, key and metadata remain true of the mix). A sample with no partner of its language keeps λ = 1.

Deterministic for a seed: the generator is seeded from (config seed, the batch's sample keys), so a resumed
run mixes the same pairs with the same λ as the run it continues, whatever the worker count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Mix:
    """Who was mixed with whom: partner[i] = j, lam[i] = λ of sample i (1.0: not mixed)."""

    partner: torch.Tensor  # [B] int64
    lam: torch.Tensor  # [B] float32

    def soft_targets(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """λ·onehot(y_i) + (1 − λ)·onehot(y_partner): [B, C] float32 rows that sum to 1."""
        onehot = torch.nn.functional.one_hot(labels.long(), num_classes).float()
        lam = self.lam.to(onehot.device).unsqueeze(1)
        return lam * onehot + (1.0 - lam) * onehot[self.partner.to(onehot.device)]

    def mix_rows(self, values: torch.Tensor) -> torch.Tensor:
        """λ·v_i + (1 − λ)·v_partner along dim 0 (waveforms [B, T], embeddings [B, H], probabilities [B, C])."""
        shape = (-1,) + (1,) * (values.dim() - 1)
        lam = self.lam.to(device=values.device, dtype=values.dtype).reshape(shape)
        return lam * values + (1.0 - lam) * values[self.partner.to(values.device)]


def _rng(seed: int, keys: list[str]) -> np.random.Generator:
    digest = hashlib.sha256(repr((int(seed), "mixup", list(keys))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw_mix(
    keys: list[str], language_ids: torch.Tensor, prob: float, alpha: float, same_language: bool, seed: int
) -> Mix | None:
    """Pairs and λ for one batch, or None when nothing is mixed (prob 0, or no sample drawn/paired)."""
    b = len(keys)
    if prob <= 0 or b < 2:
        return None
    rng = _rng(seed, keys)
    langs = language_ids.detach().cpu().long().numpy().reshape(-1)
    groups = [np.flatnonzero(langs == lang) for lang in np.unique(langs)] if same_language else [np.arange(b)]
    partner = np.arange(b)
    for idx in groups:
        if len(idx) < 2:
            continue
        order = rng.permutation(idx)  # a cyclic shift of a random order: every member gets another member
        partner[order] = np.roll(order, 1)
    lam = rng.beta(alpha, alpha, size=b)
    lam = np.maximum(lam, 1.0 - lam)
    mixed = (rng.random(b) < prob) & (partner != np.arange(b))
    lam = np.where(mixed, lam, 1.0)
    if not mixed.any():
        return None
    return Mix(torch.from_numpy(partner).long(), torch.from_numpy(lam).float())


def mix_batch(batch: dict, mix: Mix) -> dict:
    """A copy of a collated batch with mixed waveforms and the union of the two attention masks."""
    out = dict(batch)
    out["input_values"] = mix.mix_rows(batch["input_values"])
    mask = batch["attention_mask"]
    out["attention_mask"] = torch.maximum(mask, mask[mix.partner.to(mask.device)])
    return out


def maybe_mix(batch: dict, augment, seed: int) -> tuple[dict, Mix | None]:
    """The batch mixed as `augment` (a data.augment config) asks, and the Mix to apply to its targets."""
    mix = draw_mix(
        list(batch["keys"]),
        batch["language_ids"],
        augment.mixup_prob,
        augment.mixup_alpha,
        augment.mixup_pairs == "same-language",
        seed,
    )
    return (mix_batch(batch, mix), mix) if mix is not None else (batch, None)


def targets(batch: dict, mix: Mix | None, num_classes: int) -> torch.Tensor:
    """Class indices [B] when nothing was mixed, else soft targets [B, C] (both accepted by F.cross_entropy)."""
    return batch["labels"] if mix is None else mix.soft_targets(batch["labels"], num_classes)
