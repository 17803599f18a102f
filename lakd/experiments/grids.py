"""Grids: named lists of variants (runs that differ by config overrides) compared in one experiment.

Built in: `paper` (the published comparison: FT-Mono, FT-Multi, KD-Mono, KD-Multi, MTKD-Mono, MTKD-Multi,
plus lakd's LA-MTKD) and `ablation` (LA-MTKD and LA-MTKD without each of its parts). Or a YAML file:

    name: temperature                # optional (default: the file's stem)
    baseline: la-mtkd                # the variant every other one is compared with (default: the first)
    variants:
      - from: la-mtkd                # start from a built-in variant (or one earlier in this file) ...
      - name: la-mtkd-t2
        from: la-mtkd
        label: LA-MTKD, T = 2
        set: {distill.temperature: 2.0}      # ... and override config values on top of its overrides
      - name: ft-multi-long
        method: finetune             # finetune | distill
        train: multi                 # multi: one model on all languages | mono: one model per language
        set: {teacher_optim.epochs: 15}

A `distill` variant also names its `teachers`: `mono` (the per-language FT-Mono models) or `multi` (the
FT-Multi model). Mono / Multi is the student's training data, as in the published code (docs/method.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lakd.config import ConfigError
from lakd.recipes.paper_table import PLAIN_STUDENT, PUBLISHED_KD, PUBLISHED_MTKD

METHODS = ("finetune", "distill")
DATA = ("multi", "mono")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
GRIDS_DIR = Path(__file__).resolve().parents[1] / "configs" / "grids"


@dataclass(frozen=True)
class Variant:
    """One run of a grid, repeated for every seed.

    `method` finetune: the teacher model fine-tuned on labels (FT-*, no student); distill: a student distilled
    from `teachers`. `train` mono: one model per language, each trained and evaluated on its own language;
    multi: one model on all languages. `overrides` apply to the whole config ({"distill.kd_weight": 0.25}).
    """

    name: str
    label: str
    method: str
    train: str = "multi"
    teachers: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        where = f"variant {self.name!r}"
        if not NAME.match(self.name) or "." in self.name:
            raise ConfigError(f"{where}: names are lower-case letters, digits, '-' and '_'")
        if self.method not in METHODS:
            raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.train not in DATA:
            raise ConfigError(f"{where}: train must be one of {', '.join(DATA)}, got {self.train!r}")
        if self.method == "distill" and self.teachers not in DATA:
            raise ConfigError(f"{where}: a distill variant needs teachers: mono | multi, got {self.teachers!r}")
        if self.method == "finetune" and self.teachers is not None:
            raise ConfigError(f"{where}: a finetune variant has no teachers (it is one)")

    @property
    def teacher_names(self) -> str | None:
        """Which models a run reads: "mono" (per-language) or "multi"; a finetune run's own model(s)."""
        return self.train if self.method == "finetune" else self.teachers


@dataclass(frozen=True)
class Grid:
    name: str
    variants: tuple[Variant, ...]
    baseline: str
    description: str = ""

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names:
            raise ConfigError(f"grid {self.name!r} has no variants")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"grid {self.name!r}: variant names must be unique, repeated: {dupes}")
        if self.baseline not in names:
            raise ConfigError(f"grid {self.name!r}: baseline {self.baseline!r} is not one of its variants {names}")

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def select(self, names: list[str] | None = None, baseline: str | None = None) -> Grid:
        """The grid restricted to `names` (in the grid's order) and/or with another baseline."""
        variants = self.variants
        if names:
            unknown = sorted(set(names) - {v.name for v in variants})
            if unknown:
                raise ConfigError(
                    f"grid {self.name!r} has no variant(s) {unknown}; it has {[v.name for v in variants]}"
                )
            variants = tuple(v for v in variants if v.name in names)
        base = baseline or (self.baseline if self.baseline in {v.name for v in variants} else variants[0].name)
        return dataclasses.replace(self, variants=variants, baseline=base)


LA_MTKD = {"distill.weighting": "route", "student.language_embedding": True, "student.hierarchical_attention": True}


def _paper() -> Grid:
    kd = {**PLAIN_STUDENT, **PUBLISHED_KD}
    mtkd = {**PLAIN_STUDENT, **PUBLISHED_MTKD}
    published = "as published (aalto-speech/mtkd4ser): plain student, "
    return Grid(
        "paper",
        (
            Variant("ft-mono", "FT-Mono", "finetune", "mono", description="one fine-tuned model per language"),
            Variant("ft-multi", "FT-Multi", "finetune", "multi", description="one fine-tuned model, all languages"),
            Variant("kd-mono", "KD-Mono", "distill", "mono", "multi", kd, published + "FT-Multi teacher, λ=0.75"),
            Variant("kd-multi", "KD-Multi", "distill", "multi", "multi", kd, published + "FT-Multi teacher, λ=0.75"),
            Variant("mtkd-mono", "MTKD-Mono", "distill", "mono", "mono", mtkd, published + "cosine-batch, λ=0.25"),
            Variant("mtkd-multi", "MTKD-Multi", "distill", "multi", "mono", mtkd, published + "cosine-batch, λ=0.25"),
            Variant(
                "la-mtkd",
                "LA-MTKD",
                "distill",
                "multi",
                "mono",
                LA_MTKD,
                "lakd's language-aware student: language embedding, hierarchical attention, route; the config's λ/T",
            ),
        ),
        baseline="ft-multi",
        description="the published comparison (Mono/Multi = the student's training data) plus LA-MTKD",
    )


def _ablation() -> Grid:
    def without(name: str, label: str, change: dict, description: str) -> Variant:
        return Variant(name, label, "distill", "multi", "mono", {**LA_MTKD, **change}, description)

    return Grid(
        "ablation",
        (
            without("la-mtkd", "LA-MTKD", {}, "the full language-aware student"),
            without("no-lang-emb", "− language embedding", {"student.language_embedding": False}, ""),
            without("no-hier-att", "− hierarchical attention", {"student.hierarchical_attention": False}, ""),
            without("cosine-batch", "cosine-batch, not route", {"distill.weighting": "cosine-batch"}, ""),
            without("no-kd", "λ = 0 (no distillation)", {"distill.kd_weight": 0.0}, "CE only, same student"),
            without("embed-loss", "+ embedding loss β=0.1", {"distill.embed_weight": 0.1}, ""),
        ),
        baseline="la-mtkd",
        description="LA-MTKD without each of its parts",
    )


BUILTIN = {"paper": _paper, "ablation": _ablation}


def builtin_variants() -> dict[str, Variant]:
    out: dict[str, Variant] = {}
    for make in BUILTIN.values():
        for v in make().variants:
            out.setdefault(v.name, v)
    return out


def load_grid(spec: str | Path | Grid) -> Grid:
    """A built-in grid by name (`paper`, `ablation`), a YAML file, or a Grid."""
    if isinstance(spec, Grid):
        return spec
    if str(spec) in BUILTIN:
        return BUILTIN[str(spec)]()
    path = Path(spec)
    if not path.exists() and (GRIDS_DIR / f"{spec}.yaml").exists():
        path = GRIDS_DIR / f"{spec}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"grid {spec!r}: not a built-in grid ({', '.join(BUILTIN)}) nor a YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    return grid_from_dict(raw, default_name=path.stem, where=str(path))


def grid_from_dict(raw: dict, default_name: str = "grid", where: str = "grid") -> Grid:
    unknown = sorted(set(raw) - {"name", "baseline", "description", "variants"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a grid has name, baseline, description, variants")
    entries = raw.get("variants")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: `variants` must be a non-empty list")
    known = builtin_variants()
    variants: list[Variant] = []
    for i, entry in enumerate(entries):
        variants.append(_variant_from_dict(entry, known, f"{where}: variants[{i}]"))
        known[variants[-1].name] = variants[-1]
    return Grid(
        str(raw.get("name") or default_name),
        tuple(variants),
        baseline=str(raw.get("baseline") or variants[0].name),
        description=str(raw.get("description") or ""),
    )


def _variant_from_dict(entry: Any, known: dict[str, Variant], where: str) -> Variant:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
    keys = {"name", "from", "label", "method", "train", "teachers", "set", "description"}
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(keys)}")
    fields: dict[str, Any] = {}
    if "from" in entry:
        parent = known.get(str(entry["from"]))
        if parent is None:
            raise ConfigError(f"{where}: from {entry['from']!r} is not a built-in or earlier variant ({sorted(known)})")
        fields = dataclasses.asdict(parent)
        if "name" in entry and "label" not in entry:
            fields["label"] = str(entry["name"])
    overrides = entry.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: `set` must map config keys to values, got {overrides!r}")
    fields["overrides"] = {**fields.get("overrides", {}), **{str(k): v for k, v in overrides.items()}}
    for key in ("name", "label", "method", "train", "teachers", "description"):
        if key in entry:
            fields[key] = entry[key]
    if "name" not in fields:
        raise ConfigError(f"{where}: a variant needs a name (or `from:` a known one)")
    fields.setdefault("label", fields["name"])
    fields.setdefault("method", "distill")
    try:
        return Variant(**fields)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e
