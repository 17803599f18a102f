"""Helpers shared by recipes: data specs, run-directory paths. (Device, threads and seeds: lakd.train.runtime.)"""

from __future__ import annotations

import os
from pathlib import Path

from lakd.config import Config, save_config
from lakd.data.shards import expand_urls, read_index

MULTI = "multi"  # name of the one-model-for-all-languages run (FT-Multi teacher)


def run_path(cfg: Config, *parts: str) -> Path:
    return Path(cfg.run_dir).joinpath(*parts)


def teacher_dir(cfg: Config, language: str) -> Path:
    return run_path(cfg, "teachers", language)


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
    cache: dict[str, dict] = {}
    for url in expand_urls(spec):
        d = os.path.dirname(os.path.abspath(url))
        if d not in cache:
            cache[d] = {s["path"]: set(s.get("counts", {})) for s in (read_index(d) or {}).get("shards", [])}
        langs = cache[d].get(os.path.basename(url))
        if langs is None or langs & wanted:
            keep.append(url)
    if not keep:
        raise ValueError(f"no shards of {spec!r} contain languages {languages}")
    return keep


def count_samples(spec, languages: list[str] | None = None) -> int:
    """Number of samples in `spec` (of the given languages), from index.json where present."""
    total = 0
    urls = expand_urls(spec)
    names_by_dir: dict[str, set] = {}
    for u in urls:
        names_by_dir.setdefault(os.path.dirname(os.path.abspath(u)), set()).add(os.path.basename(u))
    for d, names in names_by_dir.items():
        index = read_index(d)
        if index is None:
            from lakd.data.shards import summarize_shard

            shards = [summarize_shard(os.path.join(d, n)) for n in sorted(names)]
        else:
            shards = [s for s in index["shards"] if s["path"] in names]
        for s in shards:
            for lang, c in s.get("counts", {}).items():
                if languages is None or lang in languages:
                    total += sum(c.values())
    return total
