"""Helpers shared by recipes: data specs, run-directory paths. (Device, threads and seeds: lakd.train.runtime.)"""

from __future__ import annotations

import os
from pathlib import Path

from lakd.config import Config, save_config
from lakd.data.index import ShardIndex, shard_entry
from lakd.data.shards import expand_urls, summarize_shard

MULTI = "multi"  # name of the one-model-for-all-languages run (FT-Multi teacher)


def run_path(cfg: Config, *parts: str) -> Path:
    return Path(cfg.run_dir).joinpath(*parts)


def teacher_dir(cfg: Config, language: str) -> Path:
    return run_path(cfg, "teachers", language)


def claim_output(cfg: Config, out_dir: str | os.PathLike, stage: str, **extra):
    """Context manager: hold `out_dir` for this run (its run lock; another run gets RunDirBusy) and settle the
    settings it was started with (lakd.train.run_dir): on a change, refuse / restart / resume as
    `cfg.on_config_change` says. `stage` picks the settings that matter (lakd.config.diff); `extra` adds
    recipe arguments that change the result (e.g. which teachers a student learns from)."""
    from lakd.config.diff import result_settings
    from lakd.train.run_dir import claim_run_dir

    return claim_run_dir(out_dir, {**result_settings(cfg, stage), **extra}, cfg.on_config_change)


def write_run_config(cfg: Config) -> None:
    run_path(cfg).mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_path(cfg, "config.yaml"))


def data_spec(cfg: Config, split: str):
    """The configured spec of a split; synthesized runs default to run_dir/data/<split>."""
    spec = getattr(cfg.data, split)
    if spec is None and cfg.synth:
        spec = str(run_path(cfg, "data", split))
    if spec is None:
        raise ValueError(f"config has no data.{split} (a directory, brace pattern or list of shards)")
    return spec


def shards_for_languages(spec, languages: list[str]) -> list[str]:
    """Shards of `spec` that hold samples of the given languages, judged by each directory's index.json.

    Shards without an index entry are kept (the loader's language filter drops other languages).
    """
    keep = []
    wanted = set(languages)
    for url in expand_urls(spec):
        entry = shard_entry(url)
        langs = set(entry.counts or {}) if entry is not None else None
        if langs is None or langs & wanted:
            keep.append(url)
    if not keep:
        raise ValueError(f"no shards of {spec!r} contain languages {languages}")
    return keep


def count_samples(spec, languages: list[str] | None = None) -> int:
    """Number of samples in `spec` (of the given languages), from index.json where present."""
    total = 0
    for url in dict.fromkeys(os.path.abspath(u) for u in expand_urls(spec)):  # each shard once
        index = ShardIndex.of_shard(url)
        if index is None:  # no index.json: read the shard (shards missing from an index count 0)
            per_language = {lang: sum(c.values()) for lang, c in summarize_shard(url)["counts"].items()}
        else:
            entry = index.entry(url)
            per_language = (entry.languages or {}) if entry is not None else {}
        total += sum(n for lang, n in per_language.items() if languages is None or lang in languages)
    return total
