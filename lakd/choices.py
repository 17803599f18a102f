"""The allowed values of the config's enumerated fields, one list each, in the lowest layer.

Why here and not in the modules that implement them: `config.validate` must check a config before anything
runs, and config is the lowest layer, so it may not import distill, models, train or launch (nor pay for
torch, transformers or submitit when `lakd status` only reads a config). Each implementing module imports
its tuple from here instead of writing its own list, so a new value is added in one place, and
tests/test_config.py checks that every implementation covers exactly the values listed here.

Owners: weighting and KL reduction -> lakd.distill.losses; online teacher modes -> lakd.recipes.distill;
model families -> lakd.models.backbone; precisions and LR schedules -> lakd.train.optim;
executors -> lakd.launch; missing shards -> lakd.data.loader.
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

MISSING_SHARDS = ("error", "skip")  # data.missing_shards: what a shard that index.json lists but the disk lacks does
