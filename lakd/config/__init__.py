"""Typed run configuration: nested dataclasses loaded from YAML, with `a.b.c=value` overrides.

One config file describes a whole experiment (data, teachers, student, distillation, launch);
each recipe reads the sections it needs. Unknown keys are an error that names the file and key,
so a typo never silently falls back to a default.

    schema.py   the sections as dataclasses, ConfigError, coercion of YAML values
    checks.py   every value checked at load (one ConfigError naming the key and the allowed values)
    diff.py     which settings change a stage's result, and how two runs' settings differ
    here        load_config (YAML + overrides + checks), save_config, config_hash
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from lakd.config.checks import check_config
from lakd.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    DistillConfig,
    LaunchConfig,
    ModelConfig,
    OptimConfig,
    StageResources,
    WandbConfig,
    closest,
    dataclass_from_dict,
    set_path,
    unknown_key_error,
)
from lakd.io import atomic_write_bytes

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "LaunchConfig",
    "ModelConfig",
    "OptimConfig",
    "StageResources",
    "WandbConfig",
    "closest",
    "config_from_dict",
    "config_hash",
    "dataclass_from_dict",
    "load_config",
    "parse_override",
    "resolve_config_path",
    "save_config",
    "set_path",
    "unknown_key_error",
    "validate",
]


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from e


def config_from_dict(d: dict, where: str = "config") -> Config:
    return dataclass_from_dict(Config, d or {}, where)


BUILTIN_DIR = Path(__file__).parent.parent / "configs"


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config path, or the name of a built-in config (`tiny`, `emosynth3`, ...)."""
    p = Path(path)
    if p.exists():
        return p
    builtin = BUILTIN_DIR / f"{path}.yaml"
    if builtin.exists():
        return builtin
    raise FileNotFoundError(
        f"config {path!r} not found (built-in configs: {', '.join(sorted(x.stem for x in BUILTIN_DIR.glob('*.yaml')))})"
    )


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a path or a built-in name); apply `key.path=value` overrides."""
    if path is None:
        cfg = Config()
    else:
        p = resolve_config_path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from e
        cfg = config_from_dict(raw, where=str(p))
    for o in overrides or []:
        set_path(cfg, *parse_override(o))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check values the dataclass types cannot (lakd.config.checks): one ConfigError naming the key."""
    check_config(cfg)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def config_hash(cfg: Config) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
