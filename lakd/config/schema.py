"""The config's schema: one dataclass per section, ConfigError, and the coercion of YAML values to field types.

Kept apart from loading (lakd.config) so that the checks (lakd.config.checks) and the settings diff
(lakd.config.diff) can use the types without importing the loader that calls them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from lakd import DEFAULT_LABELS


@dataclass
class AugmentConfig:
    """Waveform augmentation of training crops (lakd.data.augment, docs/training.md#augmentation); all off by
    default. Each transform fires with its `*_prob`; a `[low, high]` pair is a range drawn from uniformly."""

    speed_prob: float = 0.0  # resample by a factor of speed_factors (shifts pitch too)
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    noise_prob: float = 0.0  # additive noise of a type from noise_types at an SNR (dB) in noise_snr_db
    noise_types: list = field(default_factory=lambda: ["white", "pink", "brown", "babble"])  # + file (noise_dir)
    noise_snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])
    noise_dir: str | None = None  # directory of .wav/.flac/.ogg noise files (e.g. MUSAN) for noise type `file`
    gain_prob: float = 0.0  # random gain in gain_db
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    reverb_prob: float = 0.0  # synthetic room impulse response, RT60 (s) and direct-to-reverberant ratio (dB)
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])
    reverb_drr_db: list[float] = field(default_factory=lambda: [0.0, 10.0])
    bandlimit_prob: float = 0.0  # a filter from bandlimit_types: lowpass | highpass | telephone
    bandlimit_types: list = field(default_factory=lambda: ["lowpass", "highpass", "telephone"])
    lowpass_hz: list[float] = field(default_factory=lambda: [3000.0, 7000.0])
    highpass_hz: list[float] = field(default_factory=lambda: [100.0, 400.0])
    mixup_prob: float = 0.0  # a training sample is mixed with another of its batch (lakd.data.mixup), soft labels
    mixup_alpha: float = 0.4  # λ ~ Beta(α, α), folded to λ >= 0.5 (the sample stays the dominant one)
    mixup_pairs: str = "same-language"  # same-language | any: where a sample's partner comes from
    # which trainings augment: teachers (FT-Mono/FT-Multi models) and/or the student; [student] keeps the
    # teachers (and their cache) those of an un-augmented run, shared with it in experiment grids
    apply_to: list = field(default_factory=lambda: ["teachers", "student"])


@dataclass
class DataConfig:
    train: Any = None  # data spec: directory, brace pattern, or list of them
    dev: Any = None
    test: Any = None
    max_seconds: float = 6.0  # random crop (train) / truncate (eval) to this duration
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0
    shuffle_buffer: int = 500
    bucket: bool = True  # length-bucketed batching to cut padding
    bucket_buffer: int = 256  # samples gathered before bucketing into batches
    language_alpha: float = 1.0  # temperature sampling p_l ~ n_l^alpha (1 = natural, 0 = uniform)
    epoch_samples: int | None = None  # samples per epoch per rank (default: the training set size)
    strict: bool = False  # fail fast on bad data instead of counted skips
    missing_shards: str = "error"  # a shard index.json lists but the disk lacks: error | skip (counted, reported)
    max_decoded_seconds: float = 600.0  # longer audio (by its header) is skipped as too_long, never decoded
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training crops only


@dataclass
class ModelConfig:
    family: str = "wav2vec2"  # wav2vec2 | hubert | wavlm
    pretrained: str | None = None  # local directory for from_pretrained; None = build from `backbone`
    backbone: dict = field(default_factory=dict)  # transformers config kwargs for random-init models
    freeze_feature_encoder: bool = True
    freeze_layers: int = 0  # freeze the N lowest transformer layers
    normalize_audio: bool = False  # per-utterance zero-mean/unit-variance (drops loudness cues)
    dropout: float = 0.1
    # student-only parts (each switchable for ablations)
    language_embedding: bool = False
    language_dropout: float = 0.1  # train the shared "any" vector: replace a sample's language with it at this rate
    hierarchical_attention: bool = False
    attention_depth: int = 2  # D top transformer layers pooled by attention
    attention_dim: int = 64
    attention_stats: bool = False  # frame-level pools add the attention-weighted std (attentive statistics pooling)


@dataclass
class OptimConfig:
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "cosine"  # learning-rate decay after warmup: cosine | linear | constant
    grad_clip: float = 1.0
    grad_accum: int = 1
    class_weighted_ce: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    eval_every: int | None = None  # steps; None = end of every epoch
    checkpoint_every: int = 200  # steps
    early_stopping_patience: int | None = None  # evaluations without dev UA improvement
    select_metric: str = "ua"  # dev metric for model selection: ua | wa
    layer_lr_decay: float = 1.0  # lr x decay^depth per backbone layer (top 0: head/pooling); 1 = one lr for all


@dataclass
class DistillConfig:
    weighting: str = "route"  # route | cosine-batch (published MTKD) | cosine-sample | mean
    temperature: float = 5.0
    kd_weight: float = 0.25  # lambda: loss = (1-lambda) CE + lambda KL
    kl_reduction: str = "batchmean"  # batchmean: KL per sample | mean: also / classes (published code)
    cosine_tau: float = 0.25
    online_teacher_mode: str = "eval"  # eval | train (dropout on, as the published code); cached knowledge is eval
    embed_weight: float = 0.0  # beta: beta * (1 - cos) on pooled embeddings
    use_cache: bool = True  # read teacher knowledge from the cache instead of running teachers
    # all: every teacher's knowledge of every sample (N teachers x all data); own-language: a per-language
    # teacher's of its own language only (linear in N; route weighting only, which needs no more)
    cache_scope: str = "all"


@dataclass
class StageResources:
    gpus: int = 0
    cpus: int = 1
    mem_gb: float = 4
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    # shell lines run before the job (module load, venv); one string is one line (never split at commas)
    setup: list = field(default_factory=list, metadata={"split_commas": False})


@dataclass
class LaunchConfig:
    executor: str = "local"  # slurm | local | debug
    resources: dict = field(default_factory=dict)  # stage name -> StageResources fields
    deepspeed: bool = False
    zero_stage: int = 0


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "lakd"
    entity: str | None = None
    group: str | None = None
    tags: list = field(default_factory=list)
    log_every: int = 10  # optimizer steps between training-metric lines (metrics.jsonl, console, W&B)
    log_checkpoint: bool = False  # upload each run's best checkpoint as a W&B model artifact


@dataclass
class Config:
    name: str = "lakd"
    run_dir: str = "runs/lakd"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads (None = torch default)
    # a rerun whose result-affecting settings changed (lakd.config.diff): refuse | restart | resume
    on_config_change: str = "refuse"
    labels: list = field(default_factory=lambda: list(DEFAULT_LABELS))
    languages: list = field(default_factory=lambda: ["en", "fi", "fr"])
    data: DataConfig = field(default_factory=DataConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    teacher_optim: OptimConfig = field(default_factory=OptimConfig)
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(language_embedding=True, hierarchical_attention=True)
    )
    student_optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    synth: dict = field(default_factory=dict)  # `lakd shards synth` options when the run makes its own corpus

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def copy(self, **changes) -> Config:
        c = copy.deepcopy(self)
        for k, v in changes.items():
            set_path(c, k, v)
        return c


class ConfigError(ValueError):
    """A config value or key is wrong; the message is one line naming the file or key and what is allowed."""


def closest(name: str, options) -> str:
    """ " (did you mean 'x'?)" for the option nearest to a misspelt `name`, or "" when none is near."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_key_error(where: str, key: str, options) -> ConfigError:
    return ConfigError(f"{where}: unknown key {key!r}{closest(key, options)}; valid keys: {', '.join(sorted(options))}")


def _coerce_list(value: Any, where: str, split_commas: bool) -> list:
    """A list setting: YAML lists as they are; one string becomes a list of its comma-separated items
    (`languages=en,fi` -> [en, fi], `labels=anger` -> [anger]) or, for shell lines, a list of that one string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] if split_commas else [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(f"{where}: expected a list (e.g. [a, b] or a,b), got {value!r}")


def _coerce(value: Any, typ: Any, where: str, split_commas: bool = True) -> Any:
    if dataclasses.is_dataclass(typ):
        if isinstance(value, typ):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dataclass_from_dict(typ, value, where)
    if typ is list or get_origin(typ) is list:
        item_type = (get_args(typ) or (None,))[0]
        if item_type in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `speed_factors=1.1`: a list of one number
        items = _coerce_list(value, where, split_commas)
        if item_type in (int, float):  # list[float]: `0.9,1.1` from the command line are numbers too
            return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(items)]
        return items
    if value is None:
        return None
    if typ is dict or get_origin(typ) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping (key: value), got {value!r}")
        return value
    origin = get_origin(typ)
    args = [a for a in get_args(typ) if a is not type(None)]
    if origin is None and typ in (int, float, bool, str):
        target = typ
    elif args and all(a in (int, float, bool, str) for a in args):
        target = args[0]
    else:
        return value
    try:
        if target is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target is bool and not isinstance(value, bool) and value not in (0, 1):
            raise ValueError(value)
        if target is int and isinstance(value, (float, bool)) and not (isinstance(value, float) and value.is_integer()):
            raise ValueError(value)
        if target in (int, float) and isinstance(value, (list, dict)):
            raise ValueError(value)
        return target(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: cannot read {value!r} as {target.__name__}") from e


def _coerce_field(cls, name: str, value: Any, where: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _coerce(value, get_type_hints(cls)[name], where, f.metadata.get("split_commas", True))


def dataclass_from_dict(cls, d: dict, where: str):
    """Build dataclass `cls` from a mapping; unknown keys and uncoercible values raise ConfigError naming `where`."""
    names = [f.name for f in dataclasses.fields(cls)]
    for k in d:
        if k not in names:
            raise unknown_key_error(where, k, names)
    kwargs = {k: _coerce_field(cls, k, v, f"{where}.{k}") for k, v in d.items()}
    base = cls()
    for k, v in kwargs.items():
        setattr(base, k, v)
    return base


def set_path(cfg: Config, dotted: str, value: Any) -> None:
    """Set `a.b.c` to `value` (coerced to the field's type). Inside a mapping setting (backbone, resources,
    synth) missing levels are created; an unknown or misspelt key is a ConfigError naming it."""
    obj: Any = cfg
    parts = dotted.split(".")
    for depth, p in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(obj, dict):
            if last:
                obj[p] = value
                return
            if obj.get(p) is None:
                obj[p] = {}
            obj = obj[p]
        elif dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            if p not in names:
                raise unknown_key_error(f"override {dotted}", p, names)
            if last:
                setattr(obj, p, _coerce_field(type(obj), p, value, dotted))
                return
            obj = getattr(obj, p)
        else:
            raise ConfigError(f"override {dotted}: {'.'.join(parts[:depth])} is a value ({obj!r}), not a section")
