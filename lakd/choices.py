"""The allowed values of the config's enumerated fields, one list each, in the lowest layer.

Why here and not in the modules that implement them: `config.validate` must check a config before anything
runs, and config is the lowest layer, so it may not import distill, models, train or launch (nor pay for
torch, transformers or submitit when `lakd status` only reads a config). Each implementing module imports
its tuple from here instead of writing its own list, so a new value is added in one place, and
tests/test_config.py checks that every implementation covers exactly the values listed here.

Owners: weighting and KL reduction -> lakd.distill.losses; online teacher modes -> lakd.recipes.distill;
model families -> lakd.models.backbone; precisions and LR schedules -> lakd.train.optim;
executors and stages -> lakd.launch; missing shards -> lakd.data.loader; backbone keys -> lakd.models.backbone
(the transformers config classes).
"""

from __future__ import annotations

WEIGHTING_MODES = ("route", "cosine-batch", "cosine-sample", "mean")
# `cosine` was lakd's name for the per-sample variant before the published per-batch one was added; a config
# that still says it is refused with this hint rather than silently picking one of the two.
RENAMED_WEIGHTING_MODES = {
    "cosine": "cosine-sample (per sample, lakd's former 'cosine') or cosine-batch (the published MTKD)"
}
KL_REDUCTIONS = ("batchmean", "mean")
ONLINE_TEACHER_MODES = ("eval", "train")

MODEL_FAMILIES = ("wav2vec2", "hubert", "wavlm")

PRECISIONS = ("fp32", "bf16", "fp16")  # what `optim.precision: auto` resolves to, per device
LR_SCHEDULES = ("cosine", "linear", "constant")

EXECUTORS = ("slurm", "local", "debug")
STAGES = ("shards", "teachers", "cache", "student", "evaluate")  # the job graph's stages, in run order
# other names accepted as keys of launch.resources (the built-in configs say "teacher")
STAGE_ALIASES = {"prepare": "shards", "data": "shards", "teacher": "teachers", "distill": "student", "eval": "evaluate"}

MISSING_SHARDS = ("error", "skip")  # data.missing_shards: what a shard that index.json lists but the disk lacks does
# data.augment: the noise kinds (lakd.data.augment: coloured noises, babble of other utterances, files of
# noise_dir) and the band-limiting filters
AUGMENT_NOISE_TYPES = ("white", "pink", "brown", "babble", "file")
AUGMENT_BANDLIMIT_TYPES = ("lowpass", "highpass", "telephone")
MIXUP_PAIRS = ("same-language", "any")
AUGMENT_ROLES = ("teachers", "student")  # data.augment.apply_to
SELECT_METRICS = ("ua", "wa")  # optim.select_metric: the dev metric that picks best/
WANDB_MODES = ("online", "offline", "disabled")
# on_config_change: what rerunning a run whose result-affecting settings changed does (lakd.config.diff)
CONFIG_CHANGE_POLICIES = ("refuse", "restart", "resume")

# The keys a `backbone:` section may set: the fields of each family's transformers config class (a default
# instance's to_dict(), less _name_or_path, transformers_version and model_type). transformers itself would
# accept any key and silently ignore a misspelt one. Listed here rather than read from transformers so that
# loading a config never imports torch; tests/test_config.py checks them against the installed classes.
BACKBONE_CONFIG_CLASSES = {"wav2vec2": "Wav2Vec2Config", "hubert": "HubertConfig", "wavlm": "WavLMConfig"}
_BACKBONE_COMMON = (
    "activation_dropout", "apply_spec_augment", "architectures", "attention_dropout", "bos_token_id",
    "chunk_size_feed_forward", "classifier_proj_size", "conv_bias", "conv_dim", "conv_kernel", "conv_stride",
    "ctc_loss_reduction", "ctc_zero_infinity", "do_stable_layer_norm", "dtype", "eos_token_id",
    "feat_extract_activation", "feat_extract_norm", "feat_proj_dropout", "final_dropout", "hidden_act",
    "hidden_dropout", "hidden_size", "id2label", "initializer_range", "intermediate_size", "is_encoder_decoder",
    "label2id", "layer_norm_eps", "layerdrop", "mask_feature_length", "mask_feature_prob", "mask_time_length",
    "mask_time_min_masks", "mask_time_prob", "num_attention_heads", "num_conv_pos_embedding_groups",
    "num_conv_pos_embeddings", "num_feat_extract_layers", "num_hidden_layers", "output_attentions",
    "output_hidden_states", "pad_token_id", "problem_type", "return_dict", "use_weighted_layer_sum", "vocab_size",
)  # fmt: skip
_PRETRAINING_HEADS = (
    "adapter_kernel_size", "adapter_stride", "add_adapter", "codevector_dim", "contrastive_logits_temperature",
    "diversity_loss_weight", "num_adapter_layers", "num_codevector_groups", "num_codevectors_per_group",
    "num_negatives", "output_hidden_size", "proj_codevector_dim", "tdnn_dilation", "tdnn_dim", "tdnn_kernel",
    "xvector_output_dim",
)  # fmt: skip
BACKBONE_KEYS = {
    "wav2vec2": _BACKBONE_COMMON + _PRETRAINING_HEADS
    + ("adapter_attn_dim", "feat_quantizer_dropout", "mask_feature_min_masks"),
    "hubert": _BACKBONE_COMMON + ("conv_pos_batch_norm", "feat_proj_layer_norm", "mask_feature_min_masks"),
    "wavlm": _BACKBONE_COMMON + _PRETRAINING_HEADS + ("max_bucket_distance", "num_buckets", "num_ctc_classes"),
}  # fmt: skip
CACHE_SCOPES = ("all", "own-language")  # what a per-language teacher's cached knowledge covers (distill.cache_scope)
