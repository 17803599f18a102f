"""`check_config(cfg)`: the values a config's types cannot check, refused at load before any work.

Each problem is one ConfigError naming the key, what is allowed and what was given. Enumerated fields take
their allowed values from lakd.choices, the one list that the implementing modules (losses, backbone, train,
launch) import as well; numeric fields are bounded here so that a value that would hang the loader
(`data.batch_size=-3`), divide by zero (`0`) or train nothing is refused at load instead of at step one.
"""

from __future__ import annotations

import os
import re
from typing import Any

from lakd import choices as C
from lakd.config.schema import (
    Config,
    ConfigError,
    ModelConfig,
    OptimConfig,
    StageResources,
    closest,
    dataclass_from_dict,
)

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}{closest(value, allowed)}"
        )


def check_number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    optional: bool = False,
    above: bool = False,
) -> None:
    """`value` is a number (an int with `integer`) in [low, high] ((low, high] with `above`); None if `optional`."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"> {low}" if above else f">= {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    wanted = f"{kind} {' and '.join(bounds)}".strip() + (" (or null)" if optional else "")
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok or value != value:  # NaN compares false with everything
        raise ConfigError(f"{key} must be {wanted}, got {value!r}")


def _check_names(key: str, values: Any, what: str) -> None:
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str) and v for v in values)
        or len(set(values)) != len(values)
    ):
        raise ConfigError(f"{key} must be a non-empty list of distinct {what} (e.g. [a, b] or a,b), got {values!r}")


def _check_data(cfg: Config) -> None:
    d = cfg.data
    check_number("data.max_seconds", d.max_seconds, 0, above=True)
    check_number("data.batch_size", d.batch_size, 1, integer=True)
    check_number("data.eval_batch_size", d.eval_batch_size, 1, integer=True)
    check_number("data.num_workers", d.num_workers, 0, integer=True)
    check_number("data.shuffle_buffer", d.shuffle_buffer, 0, integer=True)
    check_number("data.bucket_buffer", d.bucket_buffer, 1, integer=True)
    check_number("data.language_alpha", d.language_alpha, 0)
    check_number("data.epoch_samples", d.epoch_samples, 1, integer=True, optional=True)
    check_choice("data.missing_shards", d.missing_shards, C.MISSING_SHARDS)
    check_number("data.max_decoded_seconds", d.max_decoded_seconds, 0, above=True)
    _check_augment(d.augment)


def _check_range(key: str, value: Any, low: float, high: float | None = None, above: bool = False) -> None:
    """A `[low, high]` pair of numbers within bounds, low <= high."""
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{key} must be a [low, high] pair of numbers, got {value!r}")
    for i, v in enumerate(value):
        check_number(f"{key}[{i}]", v, low, high, above=above)
    if value[0] > value[1]:
        raise ConfigError(f"{key} must be [low, high] with low <= high, got {value!r}")


def _check_augment(a: Any) -> None:
    for name in ("speed", "noise", "gain", "reverb", "bandlimit"):
        check_number(f"data.augment.{name}_prob", getattr(a, f"{name}_prob"), 0, 1)
    if not isinstance(a.speed_factors, list) or not a.speed_factors:
        raise ConfigError(f"data.augment.speed_factors must be a non-empty list of numbers, got {a.speed_factors!r}")
    for i, f in enumerate(a.speed_factors):
        check_number(f"data.augment.speed_factors[{i}]", f, 0.5, 2.0)
    if not isinstance(a.noise_types, list) or not a.noise_types:
        raise ConfigError(f"data.augment.noise_types must be a non-empty list, got {a.noise_types!r}")
    for t in a.noise_types:
        check_choice("data.augment.noise_types", t, C.AUGMENT_NOISE_TYPES)
    if a.noise_prob > 0 and "file" in a.noise_types:
        if not a.noise_dir or not os.path.isdir(a.noise_dir):
            raise ConfigError(
                f"data.augment.noise_types has 'file': data.augment.noise_dir must be a directory, got {a.noise_dir!r}"
            )
    _check_range("data.augment.noise_snr_db", a.noise_snr_db, -30, 100)
    _check_range("data.augment.gain_db", a.gain_db, -60, 40)
    _check_range("data.augment.reverb_rt60", a.reverb_rt60, 0, 3.0, above=True)
    _check_range("data.augment.reverb_drr_db", a.reverb_drr_db, -20, 40)
    if not isinstance(a.bandlimit_types, list) or not a.bandlimit_types:
        raise ConfigError(f"data.augment.bandlimit_types must be a non-empty list, got {a.bandlimit_types!r}")
    for t in a.bandlimit_types:
        check_choice("data.augment.bandlimit_types", t, C.AUGMENT_BANDLIMIT_TYPES)
    _check_range("data.augment.lowpass_hz", a.lowpass_hz, 50, 7900)
    _check_range("data.augment.highpass_hz", a.highpass_hz, 10, 7900)
    check_number("data.augment.mixup_prob", a.mixup_prob, 0, 1)
    check_number("data.augment.mixup_alpha", a.mixup_alpha, 0, 100, above=True)
    check_choice("data.augment.mixup_pairs", a.mixup_pairs, C.MIXUP_PAIRS)
    if not isinstance(a.apply_to, list) or not a.apply_to:
        raise ConfigError(f"data.augment.apply_to must be a non-empty list of teachers/student, got {a.apply_to!r}")
    for role in a.apply_to:
        check_choice("data.augment.apply_to", role, C.AUGMENT_ROLES)


def check_backbone_keys(key: str, family: str, backbone: dict) -> None:
    """Every key of a `backbone:` mapping is a field of the family's transformers config class."""
    if not isinstance(backbone, dict):
        raise ConfigError(f"{key} must be a mapping of transformers config fields, got {backbone!r}")
    allowed = C.BACKBONE_KEYS[family]
    for k in backbone:
        if k not in allowed:
            raise ConfigError(
                f"{key}: unknown key {k!r}{closest(k, allowed)} for {C.BACKBONE_CONFIG_CLASSES[family]}; "
                f"valid keys: {', '.join(sorted(allowed))}"
            )


def _check_model(section: str, m: ModelConfig) -> None:
    check_choice(f"{section}.family", m.family, C.MODEL_FAMILIES)
    check_backbone_keys(f"{section}.backbone", m.family, m.backbone)
    check_number(f"{section}.freeze_layers", m.freeze_layers, 0, integer=True)
    check_number(f"{section}.dropout", m.dropout, 0, 1)
    check_number(f"{section}.language_dropout", m.language_dropout, 0, 1)
    check_number(f"{section}.attention_depth", m.attention_depth, 1, integer=True)
    check_number(f"{section}.attention_dim", m.attention_dim, 1, integer=True)
    if m.attention_stats and not m.hierarchical_attention:
        raise ConfigError(
            f"{section}.attention_stats: true needs {section}.hierarchical_attention: true (it extends that pooling)"
        )


def _check_optim(section: str, o: OptimConfig) -> None:
    check_number(f"{section}.epochs", o.epochs, 0, integer=True)
    check_number(f"{section}.max_steps", o.max_steps, 1, integer=True, optional=True)
    if not o.max_steps and o.epochs == 0:
        raise ConfigError(f"{section}.epochs is 0 and {section}.max_steps is not set: nothing would be trained")
    check_number(f"{section}.lr", o.lr, 0, above=True)
    check_number(f"{section}.weight_decay", o.weight_decay, 0)
    check_number(f"{section}.warmup_ratio", o.warmup_ratio, 0, 1)
    check_number(f"{section}.grad_clip", o.grad_clip, 0)
    check_number(f"{section}.grad_accum", o.grad_accum, 1, integer=True)
    check_number(f"{section}.eval_every", o.eval_every, 1, integer=True, optional=True)
    check_number(f"{section}.checkpoint_every", o.checkpoint_every, 0, integer=True)
    check_number(f"{section}.early_stopping_patience", o.early_stopping_patience, 1, integer=True, optional=True)
    check_choice(f"{section}.select_metric", o.select_metric, C.SELECT_METRICS)
    check_number(f"{section}.layer_lr_decay", o.layer_lr_decay, 0, 1, above=True)
    check_choice(f"{section}.precision", o.precision, ("auto", *C.PRECISIONS))
    check_choice(f"{section}.schedule", o.schedule, C.LR_SCHEDULES)


def _check_distill(cfg: Config) -> None:
    d = cfg.distill
    if d.weighting in C.RENAMED_WEIGHTING_MODES:
        raise ConfigError(
            f"distill.weighting {d.weighting!r} was renamed: use {C.RENAMED_WEIGHTING_MODES[d.weighting]}"
        )
    check_choice("distill.weighting", d.weighting, C.WEIGHTING_MODES)
    check_choice("distill.kl_reduction", d.kl_reduction, C.KL_REDUCTIONS)
    check_choice("distill.online_teacher_mode", d.online_teacher_mode, C.ONLINE_TEACHER_MODES)
    if not isinstance(d.kd_weight, (int, float)) or not 0.0 <= d.kd_weight <= 1.0:
        raise ConfigError(f"distill.kd_weight must be in [0, 1], got {d.kd_weight!r}")
    check_number("distill.temperature", d.temperature, 0, above=True)
    check_number("distill.cosine_tau", d.cosine_tau, 0, above=True)
    check_number("distill.embed_weight", d.embed_weight, 0)
    check_choice("distill.cache_scope", d.cache_scope, C.CACHE_SCOPES)
    if d.cache_scope == "own-language" and d.weighting != "route":
        raise ConfigError(
            f"distill.cache_scope own-language caches each teacher on its own language only, but distill.weighting "
            f"{d.weighting!r} weighs every teacher on every sample: use weighting route or cache_scope all"
        )


def _check_resources(table: Any) -> None:
    """launch.resources: {default | stage | alias: StageResources fields}, each entry complete and in range."""
    if not isinstance(table, dict):
        raise ConfigError(f"launch.resources must be a mapping of stage -> resources, got {table!r}")
    names = ("default", *C.STAGES, *C.STAGE_ALIASES)
    for stage, entry in table.items():
        key = f"launch.resources.{stage}"
        if stage not in names:
            raise ConfigError(f"{key}: unknown stage{closest(stage, names)}; stages are {', '.join(names)}")
        if isinstance(entry, StageResources):
            res = entry
        elif isinstance(entry, dict):
            res = dataclass_from_dict(StageResources, entry, key)
        else:
            raise ConfigError(f"{key} must be a mapping of StageResources fields, got {entry!r}")
        check_number(f"{key}.gpus", res.gpus, 0, integer=True)
        check_number(f"{key}.cpus", res.cpus, 1, integer=True)
        check_number(f"{key}.mem_gb", res.mem_gb, 0, above=True)
        check_number(f"{key}.time_min", res.time_min, 1, integer=True)
        check_number(f"{key}.nodes", res.nodes, 1, integer=True)
        check_number(f"{key}.tasks_per_node", res.tasks_per_node, 1, integer=True)


def check_config(cfg: Config) -> None:
    """Raise one ConfigError for the first value that is out of range or not among the allowed ones."""
    if not isinstance(cfg.name, str) or not cfg.name:
        raise ConfigError(f"name must be a non-empty string, got {cfg.name!r}")
    check_number("seed", cfg.seed, 0, integer=True)
    check_number("threads", cfg.threads, 1, integer=True, optional=True)
    if not isinstance(cfg.device, str) or not DEVICE.match(cfg.device):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
    check_choice("on_config_change", cfg.on_config_change, C.CONFIG_CHANGE_POLICIES)
    _check_names("labels", cfg.labels, "names")
    _check_names("languages", cfg.languages, "ISO codes")
    _check_data(cfg)
    for section in ("teacher", "student"):
        _check_model(section, getattr(cfg, section))
    for section in ("teacher_optim", "student_optim"):
        _check_optim(section, getattr(cfg, section))
    _check_distill(cfg)
    check_choice("launch.executor", cfg.launch.executor, C.EXECUTORS)
    check_choice("launch.zero_stage", cfg.launch.zero_stage, (0, 1, 2))
    _check_resources(cfg.launch.resources)
    check_choice("wandb.mode", cfg.wandb.mode, C.WANDB_MODES)
    check_number("wandb.log_every", cfg.wandb.log_every, 1, integer=True)
