"""What one rank reads in one epoch: the shards and their languages, and the spec handed to workers.

Shard languages and sample counts come from the directories' index.json (`lakd.data.index`); shards
without an index entry are scanned once per process when training needs their languages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from lakd.config import DataConfig
from lakd.data.index import scan_shard_languages, shard_entry

log = logging.getLogger("lakd.data")


@dataclass(frozen=True)
class ShardInfo:
    url: str
    languages: dict | None  # language -> samples; None when unknown (no index entry, not scanned)
    num_samples: int | None  # from index.json: used to detect shards that end early


def shard_infos(urls: Sequence[str], scan_missing: bool = False) -> list[ShardInfo]:
    """Per shard: language counts and sample count from the directory's index.json (ours or EmoSynth's).

    Shards missing from an index get `languages=None`, or scanned counts with `scan_missing`.
    """
    out, unscanned = [], []
    for u in urls:
        entry = shard_entry(u)
        if entry is not None and entry.languages is not None:
            out.append(ShardInfo(u, entry.languages, entry.num_samples))
        elif scan_missing:
            unscanned.append(u)
            out.append(ShardInfo(u, scan_shard_languages(u), None))
        else:
            out.append(ShardInfo(u, None, None))
    if unscanned:
        log.info(
            "no index.json entry for %d shard(s) (e.g. %s): scanned them for language counts; "
            "`lakd shards index DIR` avoids this",
            len(unscanned),
            unscanned[0],
        )
    return out


@dataclass
class ReadSpec:
    """One rank's epoch: everything a worker needs, as plain picklable data (made by build_loader)."""

    shards: list  # list[ShardInfo] to read (already pruned to wanted languages where known)
    labels: list
    languages: list
    language_filter: list | None
    allow_unknown: bool
    cfg: DataConfig
    train: bool
    seed: int
    rank: int
    world_size: int
    epoch: int
    rank_samples: int  # training: samples per rank and epoch
    mix: dict  # training: language -> probability
    max_samples: int | None  # crop (train) / truncate (eval) length in samples; None = keep all


def wanted_language(spec: ReadSpec, language: str) -> bool:
    if spec.language_filter is not None and language not in spec.language_filter:
        return False
    return language in spec.languages or spec.allow_unknown
