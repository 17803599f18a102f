"""Which settings change a run's result, and how the settings a run was started with differ from today's.

A rerun into an existing run directory resumes it (after a preemption, a crash, a requeue), so it must be the
same run: a changed learning rate, λ or data path would silently continue the old run or, for a finished one,
return the old model as "already trained". What counts is `result_settings(cfg, stage)`: the sections a
stage's result depends on, cumulatively (the student depends on the teachers' settings too), less the keys
that only change how a run goes (workers, checkpoint interval, where and how it is launched and logged:
name, run_dir, device, threads, launch, wandb). `synth` is left out: an existing corpus is never remade.

What happens on a change is `cfg.on_config_change` (CLI: --restart / --resume-changed): refuse (default,
`ConfigChanged` listing each `key: old -> new`), restart (start that run afresh), resume (continue it anyway).
Used by the training recipes (lakd.train.run_dir) and by `lakd launch` for every unit of the job graph.
"""

from __future__ import annotations

import json
from typing import Any

from lakd.config.schema import Config, ConfigError

_TEACHERS = ("seed", "labels", "languages", "data", "teacher", "teacher_optim")
_STUDENT = (*_TEACHERS, "student", "student_optim", "distill")
RESULT_SECTIONS = {
    "shards": (),
    "teachers": _TEACHERS,
    "cache": _TEACHERS,
    "student": _STUDENT,
    "evaluate": _STUDENT,
}
ALL_SECTIONS = _STUDENT  # a stage of another name (an experiment grid's): every result-affecting section
# keys inside those sections that change how a run goes, not what it computes
NOT_RESULT_KEYS = frozenset(
    {"data.num_workers", "data.strict", "teacher_optim.checkpoint_every", "student_optim.checkpoint_every"}
)
# data.test is only read by the evaluation
ONLY_FOR = {"data.test": "evaluate"}


class ConfigChanged(ConfigError):
    """A rerun's result-affecting settings differ from those its run directory was started with."""


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value


def result_settings(cfg: Config, stage: str) -> dict[str, Any]:
    """{dotted key: value} of every setting that changes `stage`'s result, as JSON values (lists, not tuples)."""
    full = cfg.to_dict()
    flat: dict[str, Any] = {}
    for section in RESULT_SECTIONS.get(stage, ALL_SECTIONS):
        _flatten(full[section], section, flat)
    known = stage in RESULT_SECTIONS
    keep = {
        k: v for k, v in flat.items() if k not in NOT_RESULT_KEYS and (not known or ONLY_FOR.get(k, stage) == stage)
    }
    return json.loads(json.dumps(keep, sort_keys=True, default=str))


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting that differs (`(unset)` where one side lacks the key), sorted by key."""
    unset = object()
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, unset), new.get(key, unset)
        if a != b:
            changes.append(f"{key}: {'(unset)' if a is unset else _show(a)} → {'(unset)' if b is unset else _show(b)}")
    return changes


HOW_TO_PROCEED = (
    "Rerun with --restart to start it afresh or --resume-changed to continue it with the new settings "
    "(config key on_config_change: restart | resume), or use another run directory"
)


def changed_error(what: str, changes: list[str]) -> ConfigChanged:
    """The one-line refusal: what changed since `what` was started, and how to proceed."""
    return ConfigChanged(f"{what} was started with other settings: {'; '.join(changes)}. {HOW_TO_PROCEED}")
