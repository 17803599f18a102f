"""The search space: a YAML file whose every key is a lakd config path, checked against the config before anything
trains, and turned into what Ray Tune, PBT and W&B sweeps each want.

    distill.kd_weight: {uniform: [0.1, 0.9]}        # a float drawn uniformly
    distill.temperature: {loguniform: [1.0, 10.0]}  # a float drawn log-uniformly (low > 0)
    student.attention_depth: {int: [1, layers]}     # an integer in [low, high]; `layers` = the student's layers
    distill.weighting: {choice: [route, cosine-sample]}

A trial is a student trained from the search's shared teachers and teacher-knowledge cache, so only keys of
`student`, `student_optim` and `distill` (but not `distill.use_cache`) and the top-level `seed` can be searched.
An optional `grid: [...]` in an entry gives the points grid search takes for a range (default: `GRID_POINTS`
evenly, or log-evenly, spaced values; every integer of an `int` range).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lakd.config import Config, ConfigError, set_path, validate

KINDS = ("uniform", "loguniform", "int", "choice")
SEARCHABLE_SECTIONS = ("student.", "student_optim.", "distill.")
NOT_SEARCHABLE = ("distill.use_cache",)  # the trials share one cache: all or none use it
LAYERS = "layers"  # stands for the student's number of transformer layers in an `int` range
GRID_POINTS = 3
# PBT copies a better trial's checkpoint into a worse one and changes some values: never those that change the
# model's shape (the checkpoint would not load), nor the optimizer's (its state is resumed with the checkpoint)
PBT_FIXED = ("student.attention_depth", "student.attention_dim", "student.language_embedding", "distill.embed_weight")
PBT_FIXED_SECTIONS = ("student_optim.", "student.backbone", "student.hierarchical_attention", "student.family")

# The default space (tune/space.yaml documents the same entries; a test keeps the two equal).
DEFAULT_SPACE: dict[str, dict] = {
    "distill.kd_weight": {"uniform": [0.1, 0.9]},
    "distill.temperature": {"loguniform": [1.0, 10.0]},
    "student.attention_depth": {"int": [1, LAYERS]},
    "distill.weighting": {"choice": ["route", "cosine-sample"]},
    "distill.cosine_tau": {"loguniform": [0.05, 1.0]},
    "distill.embed_weight": {"choice": [0.0, 0.1, 0.3]},
    "student_optim.lr": {"loguniform": [1.0e-4, 3.0e-3]},
    "student.language_embedding": {"choice": [True, False]},
    "student.language_dropout": {"uniform": [0.0, 0.3]},
}

# Short labels for trial names (`<experiment>-<trial>-λ0.31-T4.2-D2`); other keys use their last part.
SHORT = {
    "distill.kd_weight": "λ",
    "distill.temperature": "T",
    "student.attention_depth": "D",
    "distill.weighting": "w",
    "distill.cosine_tau": "τ",
    "distill.embed_weight": "β",
    "student_optim.lr": "lr",
    "student.language_embedding": "LE",
    "student.language_dropout": "ld",
}


class SpaceError(ConfigError):
    """A search-space entry that cannot be searched; the message names the file and key."""


@dataclass
class Param:
    """One searched config path: kind is uniform | loguniform | int | choice; `values` are the bounds or choices."""

    path: str
    kind: str
    values: list
    grid: list | None = None

    def grid_values(self) -> list:
        if self.grid is not None:
            return list(self.grid)
        if self.kind == "choice":
            return list(self.values)
        lo, hi = self.values
        if self.kind == "int":
            return list(range(int(lo), int(hi) + 1))
        if self.kind == "loguniform":
            return [float(lo * (hi / lo) ** (i / (GRID_POINTS - 1))) for i in range(GRID_POINTS)]
        return [float(lo + (hi - lo) * i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]

    def extremes(self) -> list:
        """Values that between them exercise every bound and choice (checked against the config)."""
        return list(self.values) + list(self.grid or [])


@dataclass
class SearchSpace:
    params: list[Param] = field(default_factory=list)
    source: str = "default"

    def __iter__(self):
        return iter(self.params)

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.params]

    def as_dict(self) -> dict:
        """The space as written in a space file (after `layers` was resolved)."""
        out = {}
        for p in self.params:
            out[p.path] = {p.kind: list(p.values), **({"grid": list(p.grid)} if p.grid is not None else {})}
        return out

    # --------------------------------------------------------------------------------- Ray Tune
    def ray_space(self, algorithm: str) -> dict:
        """Ray Tune's param_space: distributions (random, tpe) or grid_search lists (grid)."""
        from ray import tune

        out = {}
        for p in self.params:
            if algorithm == "grid":
                out[p.path] = tune.grid_search(p.grid_values())
            elif p.kind == "uniform":
                out[p.path] = tune.uniform(*p.values)
            elif p.kind == "loguniform":
                out[p.path] = tune.loguniform(*p.values)
            elif p.kind == "int":
                out[p.path] = tune.randint(int(p.values[0]), int(p.values[1]) + 1)  # randint's high is exclusive
            else:
                out[p.path] = tune.choice(list(p.values))
        return out

    def pbt_mutations(self) -> dict:
        """PopulationBasedTraining's hyperparam_mutations: what a copied trial may change to (see PBT_FIXED)."""
        from ray import tune

        out = {}
        for p in self.params:
            if p.path in PBT_FIXED or p.path.startswith(PBT_FIXED_SECTIONS):
                continue
            if p.kind == "uniform":
                out[p.path] = tune.uniform(*p.values)
            elif p.kind == "loguniform":
                out[p.path] = tune.loguniform(*p.values)
            else:
                out[p.path] = p.grid_values()
        return out

    # ----------------------------------------------------------------------------- W&B sweeps
    def wandb_parameters(self) -> dict:
        """The `parameters:` of a W&B sweep for the same space (W&B's distribution names)."""
        out = {}
        for p in self.params:
            if p.kind == "uniform":
                out[p.path] = {"distribution": "uniform", "min": float(p.values[0]), "max": float(p.values[1])}
            elif p.kind == "loguniform":
                out[p.path] = {
                    "distribution": "log_uniform_values",
                    "min": float(p.values[0]),
                    "max": float(p.values[1]),
                }
            elif p.kind == "int":
                out[p.path] = {"distribution": "int_uniform", "min": int(p.values[0]), "max": int(p.values[1])}
            else:
                out[p.path] = {"values": list(p.values)}
        return out


def trial_label(params: dict) -> str:
    """`λ0.31-T4.2-D2-...`: the searched values of one trial, short enough for a W&B run name."""
    return "-".join(f"{SHORT.get(k, k.rsplit('.', 1)[-1])}{_short_value(v)}" for k, v in params.items())


def _short_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:.2g}" if v != 0 and (abs(v) < 0.01 or abs(v) >= 100) else f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def student_layers(cfg: Config) -> int:
    """Transformer layers of the student's backbone (its config only: nothing is built or loaded)."""
    backbone = dict(cfg.student.backbone or {})
    if "num_hidden_layers" in backbone:
        return int(backbone["num_hidden_layers"])
    if cfg.student.pretrained:
        config_json = Path(cfg.student.pretrained).expanduser() / "config.json"
        if not config_json.exists():
            raise SpaceError(f"student.pretrained {cfg.student.pretrained}: no config.json to count layers in")
        return int(json.loads(config_json.read_text())["num_hidden_layers"])
    from lakd.models.backbone import TINY_BACKBONE

    return int(TINY_BACKBONE["num_hidden_layers"])


def load_space(path: str | Path | None, cfg: Config) -> SearchSpace:
    """Read a space file (None: `DEFAULT_SPACE`) and check it against `cfg`; raises SpaceError naming the key."""
    where = str(path) if path else "default space"
    if path is None:
        raw = DEFAULT_SPACE
    else:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SpaceError(f"{where}: cannot read the search space ({e})") from e
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{where}: expected a mapping of config paths to {{kind: values}}")
    space = SearchSpace([_parse_param(where, k, v, cfg) for k, v in raw.items()], source=where)
    check_space(space, cfg)
    return space


def _parse_param(where: str, path: str, spec: Any, cfg: Config) -> Param:
    at = f"{where}: {path}"
    if not isinstance(spec, dict):
        raise SpaceError(f"{at}: expected {{{' | '.join(KINDS)}: ...}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    unknown = sorted(set(spec) - set(KINDS) - {"grid"})
    if unknown or len(kinds) != 1:
        raise SpaceError(f"{at}: give exactly one of {', '.join(KINDS)} (and optionally grid), got {sorted(spec)}")
    kind = kinds[0]
    values = spec[kind]
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{at}: {kind} needs a non-empty list, got {values!r}")
    if kind != "choice":
        if len(values) != 2:
            raise SpaceError(f"{at}: {kind} needs [low, high], got {values!r}")
        if kind == "int":
            values = [student_layers(cfg) if v == LAYERS else v for v in values]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise SpaceError(f"{at}: {kind} bounds must be numbers, got {values!r}")
        lo, hi = values
        if kind == "int" and not all(float(v).is_integer() for v in values):
            raise SpaceError(f"{at}: int bounds must be integers, got {values!r}")
        if not lo < hi and not (kind == "int" and lo == hi):
            raise SpaceError(f"{at}: low must be below high, got {values!r}")
        if kind == "loguniform" and lo <= 0:
            raise SpaceError(f"{at}: loguniform needs low > 0, got {values!r}")
        values = [int(v) for v in values] if kind == "int" else [float(v) for v in values]
    grid = spec.get("grid")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise SpaceError(f"{at}: grid needs a non-empty list, got {grid!r}")
    return Param(path, kind, values, grid)


def check_space(space: SearchSpace, cfg: Config) -> None:
    """Every key a searchable config path; every bound and choice a valid value of it (the config's own checks,
    the student's layers for attention depth), so that no trial fails on a value after hours of search."""
    if len(set(space.paths)) != len(space.paths):
        raise SpaceError(f"{space.source}: a key appears twice")
    for p in space:
        at = f"{space.source}: {p.path}"
        if p.path in NOT_SEARCHABLE or not (p.path.startswith(SEARCHABLE_SECTIONS) or p.path == "seed"):
            raise SpaceError(
                f"{at}: trials share the search's teachers and cache, so only student.*, student_optim.*, "
                f"distill.* (not {', '.join(NOT_SEARCHABLE)}) and seed can be searched"
            )
        for value in p.extremes():
            trial = cfg.copy()
            try:
                set_path(trial, p.path, value)
                validate(trial)
            except (ConfigError, AttributeError, KeyError, TypeError) as e:
                raise SpaceError(f"{at}: value {value!r} is not valid here: {e}") from None
            if p.path == "student.attention_depth":
                layers = student_layers(cfg)
                if not 1 <= int(value) <= layers:
                    raise SpaceError(f"{at}: depth {value} outside [1, {layers}] (the student has {layers} layers)")
            if p.path.endswith(("dropout", "language_dropout")) and not 0 <= float(value) < 1:
                raise SpaceError(f"{at}: a dropout rate must be in [0, 1), got {value!r}")
            if p.path.endswith(("temperature", "lr", "cosine_tau")) and not float(value) > 0:
                raise SpaceError(f"{at}: must be > 0, got {value!r}")
            if p.path.endswith("embed_weight") and float(value) < 0:
                raise SpaceError(f"{at}: must be >= 0, got {value!r}")
    if "student.attention_depth" in space.paths and not cfg.student.hierarchical_attention:
        raise SpaceError(
            f"{space.source}: student.attention_depth is searched but student.hierarchical_attention is off "
            "(the depth would change nothing)"
        )


def space_digest(space: SearchSpace) -> str:
    """A stable text of the space (stored with a search so that a resume with another space is refused)."""
    return json.dumps(space.as_dict(), sort_keys=True, default=str)


def grid_size(space: SearchSpace) -> int:
    return math.prod(len(p.grid_values()) for p in space)
