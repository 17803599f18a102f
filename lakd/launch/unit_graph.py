"""Stages whose units are listed one by one: each unit has its own config, the exact upstream units it reads
and keyword arguments for its recipe. Experiment grids (lakd.experiments) are built from these.

The pipeline's stages (lakd.launch.graph) share one config and read every unit of the stages they wait for;
a grid cannot: the student of `la-mtkd` seed 1 reads the teachers of seed 1 only, with its own config. A
`UnitStage` still runs as one stage of the graph (one SLURM job array, `afterok` on the stages in `after`),
so the scheduler sees the same shape; only the job itself reads its own inputs:

    recipe(cfg, inputs, **params)      inputs = {upstream stage: {item: output}} of the units in `needs`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lakd.config import Config
from lakd.launch.graph import Stage


@dataclass
class UnitSpec:
    """One unit: its config (seed, variant, its own run_dir), the upstream units it reads, its recipe's kwargs.

    `needs` maps an upstream stage to the items read from it (an empty tuple: that stage's single unit).
    `params` must be picklable (they travel to the job) and are JSON-recorded in the experiment plan.
    """

    cfg: Config
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class UnitStage(Stage):
    """A stage of individually specified units (`specs`: item -> UnitSpec); `items` are the specs' keys
    (`{None: spec}` makes a stage of one unit, without items)."""

    specs: dict[str | None, UnitSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one unit keyed None is a single-unit stage (stages/<name>/, like the pipeline's cache or student)
        if None in self.specs and len(self.specs) > 1:
            raise ValueError(f"stage {self.name}: a unit without an item name must be the stage's only unit")
        self.items = () if None in self.specs else tuple(self.specs)
        for item, spec in self.specs.items():
            outside = set(spec.needs) - set(self.after)
            if outside:
                raise ValueError(
                    f"stage {self.name}[{item}] reads {sorted(outside)}, which the stage does not wait for "
                    f"(after={list(self.after)}): SLURM would start it too early"
                )


def unit_needs(stage: Stage, item: str | None, stages: list[Stage]) -> list[tuple[str, str | None]]:
    """The upstream units (stage, item) that must be done before this unit may start."""
    if isinstance(stage, UnitStage):
        spec = stage.specs[item]
        return [(s, i) for s, items in spec.needs.items() for i in (items or (None,))]
    by_name = {s.name: s for s in stages}
    return [(s, i) for s in stage.after if s in by_name for i in by_name[s].units]


def unit_config(stage: Stage, item: str | None, default: Config) -> Config:
    """The config a unit runs with: its own in a UnitStage, else the graph's."""
    return stage.specs[item].cfg if isinstance(stage, UnitStage) else default
