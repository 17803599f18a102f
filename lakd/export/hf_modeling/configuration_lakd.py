"""Configuration of lakd's language-aware speech-emotion model (exported by `lakd export --format hf`)."""

from transformers import PretrainedConfig


class LakdConfig(PretrainedConfig):
    """The backbone's own config (a wav2vec2 / HuBERT / WavLM config dict) plus lakd's student parts.

    `languages` are the ISO codes the model was trained on; `language_ids` index them, -1 = unknown language
    (the shared "any" embedding). Labels are the usual `id2label` / `label2id`.
    """

    model_type = "lakd"

    backbone_family: str = "wav2vec2"  # wav2vec2 | hubert | wavlm
    backbone_config: dict | None = None
    languages: list | None = None
    language_embedding: bool = True
    hierarchical_attention: bool = True
    attention_depth: int = 2
    attention_dim: int = 64
    attention_stats: bool = False  # frame-level pools also take the attention-weighted std
    classifier_dropout: float = 0.1
