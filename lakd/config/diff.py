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


def _augment_as_teachers_see_it(full: dict) -> None:
    """The teachers' training reads data.augment only when `apply_to` names them (lakd.data.augment.augment_for):
    otherwise their result is that of an un-augmented run, and their settings say so (shared in grids)."""
    augment = full["data"]["augment"]
    if "teachers" not in augment.get("apply_to", ("teachers",)):
        full["data"]["augment"] = augment = Config().to_dict()["data"]["augment"]
    augment.pop("apply_to", None)


def result_settings(cfg: Config, stage: str) -> dict[str, Any]:
    """{dotted key: value} of every setting that changes `stage`'s result, as JSON values (lists, not tuples)."""
    full = cfg.to_dict()
    if stage in ("teachers", "cache"):
        _augment_as_teachers_see_it(full)
    flat: dict[str, Any] = {}
    for section in RESULT_SECTIONS.get(stage, ALL_SECTIONS):
        _flatten(full[section], section, flat)
    if stage == "cache":  # the one distill setting that changes what the cache holds
        flat["distill.cache_scope"] = full["distill"]["cache_scope"]
    known = stage in RESULT_SECTIONS
    keep = {
        k: v for k, v in flat.items() if k not in NOT_RESULT_KEYS and (not known or ONLY_FOR.get(k, stage) == stage)
    }
    return json.loads(json.dumps(keep, sort_keys=True, default=str))


_DEFAULTS: dict[str, Any] | None = None


def default_settings() -> dict[str, Any]:
    """Every result-affecting key at the schema's default value (JSON values), computed once."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = result_settings(Config(), "__all__")
    return _DEFAULTS


def non_default_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that differ from the schema's defaults: what an experiment unit's key hashes, so that a
    setting added by a later lakd version (at a default that keeps the old behaviour) does not change the key
    of every unit, which would retrain a whole grid after an upgrade."""
    missing = object()
    defaults = default_settings()
    return {k: v for k, v in settings.items() if defaults.get(k, missing) != v}


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting that differs (`(unset)` where one side lacks the key), sorted by key.

    A key the old run lacks is no change when its new value is the schema default: lakd added the setting
    after the run started, and its default keeps the old behaviour."""
    unset = object()
    defaults = default_settings()
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, unset), new.get(key, unset)
        if a is unset and key in defaults and b == defaults[key]:
            continue  # a setting this run predates, at the default that keeps the behaviour it ran with
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
