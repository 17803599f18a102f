"""The pipeline as a graph of stages: shards -> teachers (one unit per language) -> cache -> student -> evaluate.

`build_graph(cfg)` gives the stages a config needs, in run order; each stage names the recipe it runs
(lakd.recipes, or a replacement), the stages it waits for, its array items and its resources.
How the stages are run as jobs: lakd.launch.launcher.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakd.choices import STAGE_ALIASES, STAGES
from lakd.config import Config, ConfigError, StageResources, dataclass_from_dict
from lakd.launch.units import LaunchError, read_done, unit_dir

DEFAULT_RECIPES = {
    "shards": "lakd.recipes.prepare:run",  # run(cfg) -> data dir | None
    "teachers": "lakd.recipes.finetune:run_teacher",  # run_teacher(cfg, language) -> checkpoint dir
    "cache": "lakd.recipes.cache:run",  # run(cfg, teacher_dirs) -> cache dir
    "student": "lakd.recipes.distill:run",  # run(cfg, teacher_dirs, cache_dir | None) -> checkpoint dir
    "evaluate": "lakd.recipes.evaluate:run",  # run(cfg, checkpoint_dir) -> report dict
}

Recipe = Callable[..., Any] | str


@dataclass
class Stage:
    """One node of the graph. `items` makes it an array stage (one job per item, e.g. per language)."""

    name: str
    recipe: Recipe
    after: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    resources: StageResources = field(default_factory=StageResources)

    @property
    def units(self) -> list[str | None]:
        return list(self.items) if self.items else [None]

    def pending_units(self, run_dir: str | os.PathLike) -> list[str | None]:
        return [u for u in self.units if read_done(unit_dir(run_dir, self.name, u)) is None]

    def is_done(self, run_dir: str | os.PathLike) -> bool:
        return not self.pending_units(run_dir)


def canonical_stage(name: str) -> str:
    name = STAGE_ALIASES.get(name, name)
    if name not in STAGES:
        raise ConfigError(
            f"unknown stage {name!r}; stages are {', '.join(STAGES)} "
            f"(also accepted: {', '.join(sorted(STAGE_ALIASES))})"
        )
    return name


def stage_resources(cfg: Config, stage: str) -> StageResources:
    """Resources of a stage: launch.resources[<stage or alias>] over launch.resources['default']."""
    stage = canonical_stage(stage)
    table = cfg.launch.resources or {}
    merged: dict[str, Any] = {}
    for key in ("default", *[a for a, s in STAGE_ALIASES.items() if s == stage], stage):
        if key not in table:
            continue
        entry = table[key]
        if dataclasses.is_dataclass(entry):
            entry = dataclasses.asdict(entry)
        if not isinstance(entry, dict):
            raise ConfigError(f"launch.resources.{key}: expected a mapping of StageResources fields, got {entry!r}")
        merged.update(entry)
    for key in table:  # an unknown stage name is an error, not a silently ignored entry
        if key != "default" and STAGE_ALIASES.get(key, key) not in STAGES:
            raise ConfigError(
                f"launch.resources.{key}: unknown stage; stages are default, {', '.join(STAGES)} "
                f"(also accepted: {', '.join(sorted(STAGE_ALIASES))})"
            )
    return dataclass_from_dict(StageResources, merged, where=f"launch.resources.{stage}")


def data_present(cfg: Config) -> bool:
    """Whether every configured split (run_dir/data/<split> when the run synthesizes its corpus) has shards."""
    from lakd.data.shards import expand_urls
    from lakd.recipes.common import data_spec

    for split in ("train", "dev", "test"):
        try:
            spec = data_spec(cfg, split)
        except ValueError:  # the split is not configured
            continue
        try:
            expand_urls(spec)
        except (FileNotFoundError, ValueError):
            return False
    return True


def build_graph(
    cfg: Config, run_dir: str | os.PathLike | None = None, recipes: dict[str, Recipe] | None = None
) -> list[Stage]:
    """The stages this config needs, in run order.

    `shards` only when the config synthesizes its corpus (`synth:`) and the data is not there yet; `cache`
    only with `distill.use_cache`. `recipes` replaces stage functions (a callable or "module:function").
    """
    run_dir = Path(run_dir or cfg.run_dir)
    recipes = {**DEFAULT_RECIPES, **{canonical_stage(k): v for k, v in (recipes or {}).items()}}
    cfg_here = cfg.copy(run_dir=str(run_dir)) if str(run_dir) != str(cfg.run_dir) else cfg
    stages: list[Stage] = []
    if cfg.synth and (not data_present(cfg_here) or (unit_dir(run_dir, "shards") / "state.json").exists()):
        stages.append(Stage("shards", recipes["shards"]))  # kept once it ran, so that status shows it
    teachers_after = ("shards",) if stages else ()
    stages.append(Stage("teachers", recipes["teachers"], after=teachers_after, items=tuple(cfg.languages)))
    if cfg.distill.use_cache:
        stages.append(Stage("cache", recipes["cache"], after=("teachers",)))
    stages.append(
        Stage("student", recipes["student"], after=("teachers", "cache") if cfg.distill.use_cache else ("teachers",))
    )
    stages.append(Stage("evaluate", recipes["evaluate"], after=("student",)))
    for s in stages:
        s.resources = stage_resources(cfg, s.name)
    return stages


def downstream(stages: list[Stage], failed: set[str]) -> set[str]:
    """Stages that (transitively) need one of `failed`."""
    out: set[str] = set()
    for s in stages:  # stages are in run order
        if set(s.after) & (failed | out):
            out.add(s.name)
    return out


def recipe_args(stage: str, item: str | None, up: dict) -> tuple:
    if stage == "shards":
        return ()
    if stage == "teachers":
        return (item,)
    if stage == "cache":
        return (up["teachers"],)
    if stage == "student":
        return (up["teachers"], up.get("cache"))
    if stage == "evaluate":
        return (up["student"],)
    raise LaunchError(f"unknown stage {stage!r}")


def resolve_recipe(recipe: Recipe) -> Callable[..., Any]:
    if callable(recipe):
        return recipe
    module, _, name = str(recipe).partition(":")
    if not name:
        raise LaunchError(f"recipe {recipe!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if fn is None:
        raise LaunchError(f"recipe {recipe!r}: module {module} has no {name!r}")
    return fn
