"""The speech-emotion-recognition model used for the teachers and the language-aware student.

    audio [B,T] --(normalize_audio?)--> conv feature encoder --> feature projection --(+ P e_lang)--> transformer
    teacher: last layer [B,F,H] --masked mean--> pooled [B,H] --> dropout --> linear --> logits [B,C]
    student: top-D layers --hierarchical attention (conditioned on e_lang)--> pooled [B,H] --> dropout --> linear

`e_lang` is a learned vector per language plus a shared "any" vector (language id -1 or unknown).
See docs/method.md for why the language vector is injected where it is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from lakd.checksums import ChecksumError, verify_checksums, write_checksums
from lakd.config import ModelConfig
from lakd.io import apply_umask, create_temp_dir, disk_full_error, fsync_files, replace_dir
from lakd.models.backbone import build_backbone, frame_mask, num_frames, quiet_progress, uses_attention_mask
from lakd.models.pooling import HierarchicalAttentionPool, masked_mean

log = logging.getLogger(__name__)

META_NAME = "lakd.json"
HEAD_NAME = "lakd_head.safetensors"
FORMAT = "lakd-ser/1"


class SEROutput(NamedTuple):
    logits: torch.Tensor  # [B, C]
    pooled: torch.Tensor  # [B, H] utterance embedding the head sees


class CheckpointError(ValueError):
    """A model directory cannot be loaded; the message names the directory and the problem."""


def normalize_waveform(x: torch.Tensor, attention_mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-utterance zero mean / unit variance over real samples only; padding stays zero."""
    m = attention_mask.to(x.dtype)
    n = m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = ((x - mean) ** 2 * m).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * m


class SERModel(nn.Module):
    """wav2vec2-family backbone + pooling + linear head; student parts switched on by `cfg`.

    `language_ids` index `languages`; -1 (or `None` for the whole batch) selects the shared "any" vector.
    """

    def __init__(
        self, cfg: ModelConfig, labels: list[str], languages: list[str], backbone: PreTrainedModel | None = None
    ):
        super().__init__()
        self.cfg = dataclasses.replace(cfg)
        self.labels = list(labels)
        self.languages = list(languages)
        if not self.labels or not self.languages:
            raise ValueError("SERModel needs at least one label and one language")
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        hidden = self.backbone.config.hidden_size
        self.pass_attention_mask = uses_attention_mask(self.backbone)
        self._frame_bias: torch.Tensor | None = None

        cond_dim = 0
        self.language_embedding: nn.Embedding | None = None
        self.language_projection: nn.Linear | None = None
        if cfg.language_embedding:
            cond_dim = cfg.attention_dim
            self.language_embedding = nn.Embedding(len(self.languages) + 1, cond_dim)  # last row = "any"
            nn.init.normal_(self.language_embedding.weight, std=0.02)
            # Zero-init: a pretrained backbone starts exactly as pretrained; the injection is learned from there.
            self.language_projection = nn.Linear(cond_dim, hidden)
            nn.init.zeros_(self.language_projection.weight)
            nn.init.zeros_(self.language_projection.bias)
            self.backbone.feature_projection.register_forward_hook(self._inject_language)

        self.pool: HierarchicalAttentionPool | None = None
        if cfg.hierarchical_attention:
            n_layers = self.backbone.config.num_hidden_layers
            if not 1 <= cfg.attention_depth <= n_layers:
                raise ValueError(
                    f"attention_depth={cfg.attention_depth} must be in [1, {n_layers}] (the backbone's layers)"
                )
            if getattr(self.backbone.config, "layerdrop", 0.0) > 0:
                log.warning(
                    "hierarchical attention pools fixed top layers: setting backbone layerdrop %.2f -> 0",
                    self.backbone.config.layerdrop,
                )
                self.backbone.config.layerdrop = 0.0
            self.pool = HierarchicalAttentionPool(
                hidden, cfg.attention_dim, cfg.attention_depth, cond_dim, stats=cfg.attention_stats
            )

        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(hidden, len(self.labels))

    # ------------------------------------------------------------------ forward

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def any_language_id(self) -> int:
        return len(self.languages)

    def language_id(self, code: str | None) -> int:
        """Index of an ISO code in `languages`; -1 ("any") for None or an unknown code."""
        return self.languages.index(code) if code in self.languages else -1

    def language_vector(self, language_ids: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        if language_ids is None:
            ids = torch.full((batch_size,), self.any_language_id, dtype=torch.long, device=device)
        else:
            ids = torch.as_tensor(language_ids, device=device).long().reshape(-1)
            if ids.shape[0] != batch_size:
                raise ValueError(f"language_ids has {ids.shape[0]} entries for a batch of {batch_size}")
            if bool(((ids < -1) | (ids >= len(self.languages))).any()):
                raise ValueError(f"language_ids {ids.tolist()} out of range for languages {self.languages} (-1 = any)")
            ids = torch.where(ids < 0, torch.full_like(ids, self.any_language_id), ids)
        p = float(getattr(self.cfg, "language_dropout", 0.0) or 0.0)
        if self.training and p > 0:  # train the "any" vector: randomly hide the language of some samples
            hide = torch.rand(ids.shape, device=device) < p
            ids = torch.where(hide, torch.full_like(ids, self.any_language_id), ids)
        return self.language_embedding(ids)

    def _inject_language(self, module: nn.Module, args, output):
        """Forward hook on the backbone's feature projection: add the projected language vector to every frame."""
        bias = self._frame_bias
        if bias is None:
            return None
        if isinstance(output, tuple):  # wav2vec2 / WavLM: (hidden_states, normed extract_features)
            return (output[0] + bias.to(output[0].dtype),) + tuple(output[1:])
        return output + bias.to(output.dtype)  # HuBERT

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        language_ids: torch.Tensor | None = None,
    ) -> SEROutput:
        batch, device = input_values.shape[0], input_values.device
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        if self.cfg.normalize_audio:
            full = attention_mask if attention_mask is not None else torch.ones_like(input_values, dtype=torch.long)
            input_values = normalize_waveform(input_values, full)

        lang = None
        if self.language_embedding is not None:
            lang = self.language_vector(language_ids, batch, device)
            self._frame_bias = self.language_projection(lang).unsqueeze(1)
        extra = {}
        bcfg = self.backbone.config
        if self.training and bcfg.mask_time_prob > 0:
            frames = int(num_frames(self.backbone, input_values.shape[1]))
            if frames < bcfg.mask_time_length:  # transformers' SpecAugment raises on such short batches: skip it
                extra["mask_time_indices"] = torch.zeros(batch, max(frames, 0), dtype=torch.bool, device=device)
        try:
            out = self.backbone(
                input_values,
                attention_mask=attention_mask if self.pass_attention_mask else None,
                output_hidden_states=self.pool is not None,
                **extra,
            )
        finally:
            self._frame_bias = None

        last = out.last_hidden_state
        mask = frame_mask(self.backbone, attention_mask, last.shape[1]) if attention_mask is not None else None
        if self.pool is not None:
            layers = out.hidden_states[-self.cfg.attention_depth :]
            pooled = self.pool(layers, mask, lang)
        else:
            pooled = masked_mean(last, mask)
        logits = self.head(self.dropout(pooled))
        return SEROutput(logits=logits, pooled=pooled)

    # ------------------------------------------------------------------ bookkeeping

    @staticmethod
    def embed_dim_of(directory: str | os.PathLike) -> int:
        """Size of the pooled embedding of a saved model, read from its lakd.json (no weights loaded)."""
        meta = read_metadata(directory)
        if "hidden_size" in meta:
            return int(meta["hidden_size"])
        return int(json.loads((Path(directory) / "config.json").read_text())["hidden_size"])

    @staticmethod
    def embed_dim_for(cfg: ModelConfig) -> int:
        """Size of the pooled embedding a model built from `cfg` will have (no model built)."""
        from lakd.models.backbone import TINY_BACKBONE

        overrides = cfg.backbone or {}
        if "hidden_size" in overrides:
            return int(overrides["hidden_size"])
        if cfg.pretrained:
            path = Path(cfg.pretrained) / "config.json"
            if not path.exists():
                raise CheckpointError(f"pretrained backbone {cfg.pretrained}: no config.json")
            return int(json.loads(path.read_text())["hidden_size"])
        return int(TINY_BACKBONE["hidden_size"])

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything outside the backbone: head, language embedding + projection, pooling."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def metadata(self, extra_meta: dict | None = None) -> dict:
        from lakd import __version__

        return {
            "format": FORMAT,
            "lakd_version": __version__,
            "family": self.cfg.family,
            "labels": self.labels,
            "languages": self.languages,
            "hidden_size": self.hidden_size,
            "model": dataclasses.asdict(self.cfg),
            "meta": extra_meta or {},
        }

    def save_pretrained(self, directory: str | os.PathLike, extra_meta: dict | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (backbone, loadable by transformers alone),
        `lakd_head.safetensors`, `lakd.json` and `checksums.json` (sha256 of each, checked by `from_pretrained`),
        atomically: built in a temp dir, then renamed into place. A failed write leaves no temp dir behind;
        a full disk is raised as an OSError naming the file."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_temp_dir(directory)
        writing = "model.safetensors"
        try:
            # the real labels in config.json: transformers (and the hub) read them from there, not from lakd.json
            self.backbone.config.id2label = dict(enumerate(self.labels))
            self.backbone.config.label2id = {label: i for i, label in enumerate(self.labels)}
            with quiet_progress():
                self.backbone.save_pretrained(tmp)
            writing = HEAD_NAME
            head = {k: v.detach().contiguous().cpu() for k, v in self.head_state_dict().items()}
            save_file(head, str(tmp / HEAD_NAME), metadata={"format": FORMAT})
            writing = META_NAME
            (tmp / META_NAME).write_text(
                json.dumps(self.metadata(extra_meta), indent=1, sort_keys=True, default=str) + "\n"
            )
            apply_umask(tmp)  # safetensors writes 0o600 whatever the umask; a group must be able to read them
            writing = "checksums.json"
            write_checksums(tmp)
            fsync_files(tmp)  # durable before the rename makes them visible
            replace_dir(tmp, directory)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            full = disk_full_error(e, directory / writing)
            if full is not None:
                raise full from e
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> SERModel:
        """Restore a model written by `save_pretrained` (in eval mode), its files checked against checksums.json."""
        meta = read_metadata(directory)
        directory = Path(directory)
        try:
            verify_checksums(directory)
        except ChecksumError as e:
            raise CheckpointError(str(e)) from e
        from lakd.config import ConfigError, dataclass_from_dict

        try:
            cfg = dataclass_from_dict(ModelConfig, meta["model"], f"{directory / META_NAME}:model")
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        backbone = build_backbone(dataclasses.replace(cfg, pretrained=str(directory)))
        model = cls(cfg, meta["labels"], meta["languages"], backbone=backbone)
        head_path = directory / HEAD_NAME
        if not head_path.exists():
            raise CheckpointError(f"{directory}: no {HEAD_NAME} (not a complete lakd checkpoint)")
        head = load_file(str(head_path))
        missing, unexpected = model.load_state_dict(head, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{head_path}: does not match the model in {META_NAME} "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return model.to(map_location).eval()


def read_metadata(directory: str | os.PathLike) -> dict:
    """The `lakd.json` of a model directory, with clear errors."""
    path = Path(directory) / META_NAME
    if not path.exists():
        raise CheckpointError(f"{directory}: no {META_NAME} (not a lakd model directory)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    missing = [k for k in ("format", "labels", "languages", "model") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: lacks {missing}")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{path}: format {meta['format']!r}, this lakd reads {FORMAT!r}")
    return meta


class LanguageTableError(ValueError):
    """A language list cannot extend a model's: it drops or reorders a language the model knows."""


def check_extends(old: list[str], new: list[str], where: str = "languages") -> list[str]:
    """The codes `new` appends to `old`; LanguageTableError unless `new` keeps every old code first, in order.

    Why in order: a language's id is its position, and ids index the embedding rows the model learned (and the
    ids in any data or cache made for it), so an old language must keep its position."""
    for i, code in enumerate(old):
        if code not in new:
            raise LanguageTableError(
                f"{where} {new} drops {code!r}, which the model knows ({old}); keep its languages first, in order, "
                "and append the new ones"
            )
        if new.index(code) != i:
            raise LanguageTableError(
                f"{where} {new} moves {code!r} from position {i} to {new.index(code)} (the model's order: {old}); "
                "keep its languages first, in order, and append the new ones"
            )
    added = new[len(old) :]
    if len(set(added)) != len(added):
        raise LanguageTableError(f"{where} {new} lists a language twice")
    return added


def grown_state_dict(model: SERModel, languages: list[str]) -> dict[str, torch.Tensor]:
    """`model`'s weights for a model that knows `languages` (its own codes first, in order, then new ones).

    Only the language embedding is sized by the languages (pooling and the injection are sized by
    `attention_dim` and the hidden size). Old rows are copied unchanged; each new row starts as a copy of the
    shared "any" row, which the model was trained to use when the language is hidden (`language_dropout`), so an
    extended model first treats a new language as an unknown one and learns its vector from there; the "any"
    row stays last."""
    check_extends(model.languages, list(languages))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.language_embedding is not None:
        old = state["language_embedding.weight"]  # [n_old + 1, d]; last row = "any"
        n_new = len(languages) - len(model.languages)
        state["language_embedding.weight"] = torch.cat([old[:-1], old[-1:].repeat(n_new, 1), old[-1:]])
    return state


def grow_languages(model: SERModel, languages: list[str]) -> SERModel:
    """A copy of a trained `model` that knows `languages` (see `grown_state_dict`), in `model`'s mode."""
    backbone = type(model.backbone)(model.backbone.config)  # a fresh module: the hook is registered on it anew
    grown = SERModel(model.cfg, model.labels, list(languages), backbone=backbone)
    grown.load_state_dict(grown_state_dict(model, languages))
    for p, q in zip(model.parameters(), grown.parameters()):  # freezing travels with the weights
        q.requires_grad_(p.requires_grad)
    return grown.to(next(model.parameters()).device).train(model.training)
