"""lakd's language-aware speech-emotion model for transformers (`trust_remote_code=True`).

    audio --feature extractor (16 kHz, normalisation)--> conv encoder --> feature projection (+ P e_lang)
          --> transformer --> [top-D layers: hierarchical attention conditioned on e_lang | last layer: masked mean]
          --> linear head --> logits

A standalone copy of lakd.models (ser.py, pooling.py and backbone.frame_mask): module and parameter names are
lakd's, so a lakd state dict loads as is, and lakd's tests check that both give the same probabilities.
`language_ids` index `config.languages`; -1 or None selects the shared "any" vector (language not known).
"""

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_lakd import LakdConfig

FAMILIES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
}
UNKNOWN = (None, "", "unknown", "any")


def masked_mean(x, mask):
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def masked_softmax(scores, mask, dim=-1):
    scores = scores.float()
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None:
        weights = weights * mask
    return weights


class AttentionPool(nn.Module):
    """Additive attention over frames, `a_t = softmax_t(v^T tanh(W h_t + U c))`, conditioned on `c`;
    with `stats`, the attention-weighted std too, `P [mean; std]` (attentive statistics pooling)."""

    def __init__(self, hidden_size, attention_dim, cond_dim=0, stats=False):
        super().__init__()
        self.key = nn.Linear(hidden_size, attention_dim)
        self.cond = nn.Linear(cond_dim, attention_dim, bias=False) if cond_dim > 0 else None
        self.score = nn.Linear(attention_dim, 1, bias=False)
        self.stats = nn.Linear(2 * hidden_size, hidden_size) if stats else None

    def forward(self, x, mask=None, cond=None):
        h = self.key(x)
        if self.cond is not None:
            h = h + self.cond(cond).unsqueeze(1)
        weights = masked_softmax(self.score(torch.tanh(h)).squeeze(-1), mask)
        w = weights.to(x.dtype).unsqueeze(1)
        pooled = torch.bmm(w, x).squeeze(1)
        if self.stats is not None:
            spread = torch.sqrt((torch.bmm(w, x * x).squeeze(1) - pooled * pooled).clamp(min=1e-5))
            pooled = self.stats(torch.cat([pooled, spread], dim=-1))
        return pooled


class HierarchicalAttentionPool(nn.Module):
    """Attention over the frames of each of the top-D layers (after a LayerNorm), then over the D summaries."""

    def __init__(self, hidden_size, attention_dim, depth, cond_dim=0, stats=False):
        super().__init__()
        self.depth = depth
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(depth))
        self.frame_pools = nn.ModuleList(
            AttentionPool(hidden_size, attention_dim, cond_dim, stats) for _ in range(depth)
        )
        self.layer_pool = AttentionPool(hidden_size, attention_dim, cond_dim)

    def forward(self, layers, mask=None, cond=None):
        summaries = [pool(norm(x), mask, cond) for x, norm, pool in zip(layers, self.norms, self.frame_pools)]
        return self.layer_pool(torch.stack(summaries, dim=1), None, cond)


class LakdPreTrainedModel(PreTrainedModel):
    config_class = LakdConfig
    base_model_prefix = "lakd"
    main_input_name = "input_values"


class LakdForAudioClassification(LakdPreTrainedModel):
    """Utterance-level emotion classification; `language_ids` (one per utterance, -1 = unknown) is optional."""

    def __init__(self, config):
        super().__init__(config)
        config_cls, model_cls = FAMILIES[config.backbone_family]
        self.backbone = model_cls(config_cls.from_dict(dict(config.backbone_config)))
        hidden = self.backbone.config.hidden_size
        self.pass_attention_mask = self.backbone.config.feat_extract_norm == "layer"
        self._frame_bias = None
        cond_dim = 0
        self.language_embedding = self.language_projection = None
        if config.language_embedding:
            cond_dim = config.attention_dim
            self.language_embedding = nn.Embedding(len(config.languages) + 1, cond_dim)  # last row = "any"
            self.language_projection = nn.Linear(cond_dim, hidden)
            self.backbone.feature_projection.register_forward_hook(self._inject_language)
        self.pool = None
        if config.hierarchical_attention:
            self.pool = HierarchicalAttentionPool(
                hidden, config.attention_dim, config.attention_depth, cond_dim, config.attention_stats
            )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.head = nn.Linear(hidden, config.num_labels)
        self.post_init()

    def language_id(self, language):
        """Index of an ISO code in `config.languages`; -1 for None / "unknown" / "any"; other codes are an error."""
        if language in UNKNOWN:
            return -1
        if language in self.config.languages:
            return self.config.languages.index(language)
        raise ValueError(
            f"unknown language {language!r}: this model knows {', '.join(self.config.languages)} "
            "(use None or 'unknown' when the language is not known)"
        )

    def _inject_language(self, module, args, output):
        if self._frame_bias is None:
            return None
        if isinstance(output, tuple):  # wav2vec2 / WavLM: (hidden_states, normed extract_features)
            return (output[0] + self._frame_bias.to(output[0].dtype),) + tuple(output[1:])
        return output + self._frame_bias.to(output.dtype)  # HuBERT

    def _frame_mask(self, attention_mask, frames):
        lengths = self.backbone._get_feat_extract_output_lengths(attention_mask.long().sum(-1)).clamp(min=0)
        return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]

    def forward(self, input_values, attention_mask=None, language_ids=None, labels=None, **kwargs):
        batch, device = input_values.shape[0], input_values.device
        lang = None
        if self.language_embedding is not None:
            any_id = len(self.config.languages)
            if language_ids is None:
                ids = torch.full((batch,), any_id, dtype=torch.long, device=device)
            else:
                ids = torch.as_tensor(language_ids, device=device).long().reshape(-1).expand(batch)
                if bool(((ids < -1) | (ids >= any_id)).any()):
                    raise ValueError(f"language_ids {ids.tolist()} out of range for {self.config.languages}")
                ids = torch.where(ids < 0, torch.full_like(ids, any_id), ids)
            lang = self.language_embedding(ids)
            self._frame_bias = self.language_projection(lang).unsqueeze(1)
        try:
            out = self.backbone(
                input_values,
                attention_mask=attention_mask if self.pass_attention_mask else None,
                output_hidden_states=self.pool is not None,
            )
        finally:
            self._frame_bias = None
        last = out.last_hidden_state
        mask = self._frame_mask(attention_mask, last.shape[1]) if attention_mask is not None else None
        if self.pool is not None:
            pooled = self.pool(out.hidden_states[-self.config.attention_depth :], mask, lang)
        else:
            pooled = masked_mean(last, mask)
        logits = self.head(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device).view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)
