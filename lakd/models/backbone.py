"""wav2vec2-family backbones (wav2vec2, HuBERT, WavLM) from a local checkpoint or a random-init config.

Padding: a batch is zero-padded audio plus `attention_mask` (1 = real sample). What the backbone does
with padding depends on its feature encoder:

- `feat_extract_norm="layer"` (wav2vec2-large/-lv60, HuBERT-large, WavLM-large, and `TINY_BACKBONE`): we pass
  `attention_mask`; every valid frame's conv receptive field lies inside the real audio, padded frames are
  zeroed before the positional conv and excluded from self-attention, so valid frames are independent of padding.
- `feat_extract_norm="group"` (wav2vec2-base, HuBERT-base, WavLM-base): the first conv layer's GroupNorm
  normalises over the whole (padded) time axis, so padding leaks into every frame whatever we do. These models
  were pre-trained without an attention mask and must not receive one (HF's own advice; passing it degrades
  them). We pass none; pooling still ignores padded frames via `frame_mask`. Length-bucketed batches keep the
  leak small; evaluate with batch size 1 where exact per-utterance outputs matter.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import (
    HubertConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)
from transformers.utils import logging as hf_logging

from lakd.choices import MODEL_FAMILIES
from lakd.config import ModelConfig

# the config classes of every family in lakd.choices.MODEL_FAMILIES (tests/test_config.py checks they agree)
FAMILIES: dict[str, tuple[type, type]] = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
}

# A CPU-friendly random-init backbone with the real wav2vec2 frame rate (conv stride 320 = 50 frames/s).
TINY_BACKBONE: dict = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "conv_dim": (32, 32, 32, 32),
    "conv_stride": (5, 4, 4, 4),
    "conv_kernel": (10, 8, 4, 4),
    "conv_bias": True,
    "feat_extract_norm": "layer",  # so attention_mask is honoured (see module docstring)
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "layerdrop": 0.0,  # dropping 1 of 4 layers is harsh, and skipped layers break DDP's used-parameter check
}

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


class BackboneError(ValueError):
    """A backbone cannot be built; the message names the directory or option at fault."""


def _check_pretrained_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise BackboneError(
            f"pretrained backbone {str(p)!r} is not a local directory (lakd never downloads from the hub; "
            "download it once, e.g. `huggingface-cli download facebook/wav2vec2-base --local-dir DIR`)"
        )
    if not (p / "config.json").exists():
        raise BackboneError(f"pretrained backbone {p}: no config.json")
    if not any((p / w).exists() for w in WEIGHT_FILES):
        raise BackboneError(f"pretrained backbone {p}: no weights (expected one of {', '.join(WEIGHT_FILES)})")
    return p


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-call "Loading weights" / "Writing model shards" bars (they flood job logs)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_backbone(cfg: ModelConfig) -> PreTrainedModel:
    """The backbone of `cfg.family`: `from_pretrained(cfg.pretrained)` (local only), else random init.

    `cfg.backbone` holds transformers config kwargs: for random init they update `TINY_BACKBONE`; for a
    pretrained directory they override its config (e.g. `layerdrop: 0.0`, `mask_time_prob: 0.0`).
    Freezing (`freeze_feature_encoder`, `freeze_layers`) is applied here.
    """
    if cfg.family not in MODEL_FAMILIES:
        raise BackboneError(f"model family must be one of {', '.join(MODEL_FAMILIES)}, got {cfg.family!r}")
    config_cls, model_cls = FAMILIES[cfg.family]
    overrides = dict(cfg.backbone or {})
    if cfg.pretrained:
        path = _check_pretrained_dir(cfg.pretrained)
        try:
            config = config_cls.from_pretrained(path, local_files_only=True, **overrides)
            with quiet_progress():
                model = model_cls.from_pretrained(path, config=config, local_files_only=True)
        except (OSError, ValueError) as e:
            raise BackboneError(f"pretrained backbone {path}: cannot load as {model_cls.__name__} ({e})") from e
    else:
        try:
            config = config_cls(**{**TINY_BACKBONE, **overrides})
        except (TypeError, ValueError) as e:
            raise BackboneError(f"model.backbone {overrides}: invalid {config_cls.__name__} ({e})") from e
        model = model_cls(config)
    freeze(model, feature_encoder=cfg.freeze_feature_encoder, layers=cfg.freeze_layers)
    return model


def freeze(backbone: PreTrainedModel, feature_encoder: bool = True, layers: int = 0) -> None:
    """Freeze the conv feature encoder and/or everything below transformer layer `layers`.

    Freezing N > 0 layers also freezes what feeds them (feature projection, positional conv, the input
    layer norm of post-LN models, the SpecAugment mask vector): a frozen layer with moving inputs is not frozen.
    """
    if feature_encoder:  # HubertModel has no freeze_feature_encoder(); its feature encoder has _freeze_parameters()
        encoder = backbone.feature_extractor
        if hasattr(encoder, "_freeze_parameters"):
            encoder._freeze_parameters()
        else:  # pragma: no cover - future transformers
            encoder.requires_grad_(False)
    n_layers = len(backbone.encoder.layers)
    if not 0 <= layers <= n_layers:
        raise BackboneError(f"freeze_layers={layers} but the backbone has {n_layers} transformer layers")
    if layers == 0:
        return
    below = [backbone.feature_projection, backbone.encoder.pos_conv_embed, *backbone.encoder.layers[:layers]]
    if not backbone.config.do_stable_layer_norm:  # post-LN: encoder.layer_norm sits below layer 0
        below.append(backbone.encoder.layer_norm)
    for module in below:
        for p in module.parameters():
            p.requires_grad_(False)
    if getattr(backbone, "masked_spec_embed", None) is not None:
        backbone.masked_spec_embed.requires_grad_(False)


def uses_attention_mask(backbone: PreTrainedModel) -> bool:
    """Whether the backbone should receive `attention_mask` (False for group-norm feature encoders)."""
    return backbone.config.feat_extract_norm == "layer"


def num_frames(backbone: PreTrainedModel, num_samples: int | torch.Tensor) -> int | torch.Tensor:
    """Frames the conv feature encoder produces from `num_samples` audio samples."""
    return backbone._get_feat_extract_output_lengths(num_samples)


def frame_mask(backbone: PreTrainedModel, attention_mask: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """`[B, T]` sample mask -> `[B, F]` bool mask of frames computed from real audio only.

    Same result as HF's `_get_feature_vector_attention_mask` for right-padded masks, except that an
    utterance shorter than the conv receptive field gets no valid frame (HF's index arithmetic would
    wrap around and mark every frame valid).
    """
    if frames is None:
        frames = int(num_frames(backbone, attention_mask.shape[1]))
    lengths = num_frames(backbone, attention_mask.long().sum(-1)).clamp(min=0)
    return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]
