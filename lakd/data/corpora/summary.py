"""What an import wrote and what it left out (and why): the summary and its table rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportSummary:
    """What an import wrote and what it left out (and why)."""

    corpus: str
    root: str
    out_dir: str
    labels: list[str]
    speakers: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # split -> lang -> speakers
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> lang -> emotion -> n
    durations: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> lang -> seconds
    shards: dict[str, list[str]] = field(default_factory=dict)  # split -> shard paths
    dropped: dict[str, int] = field(default_factory=dict)  # emotion outside the label set -> n
    excluded: dict[str, int] = field(default_factory=dict)  # files the protocol leaves out (reason -> n)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable/missing: {"path", "reason"}
    protocol: dict[str, Any] = field(default_factory=dict)  # split scheme/fold that was used
    seconds: float = 0.0

    @property
    def num_samples(self) -> int:
        return sum(n for langs in self.counts.values() for emos in langs.values() for n in emos.values())

    @property
    def split_speakers(self) -> dict[str, list[str]]:
        return {s: sorted({x for spk in langs.values() for x in spk}) for s, langs in self.speakers.items()}

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    def rows(self) -> list[dict[str, Any]]:
        """One row per split x language with per-label counts, for a table."""
        return count_rows(self.counts, self.speakers, self.durations, self.labels)

    def as_dict(self) -> dict[str, Any]:
        speakers = self.split_speakers
        return {
            "corpus": self.corpus,
            "root": self.root,
            "out_dir": self.out_dir,
            "labels": list(self.labels),
            "num_samples": self.num_samples,
            "protocol": self.protocol,
            "splits": {
                s: {
                    "speakers": speakers.get(s, []),
                    "counts": self.counts.get(s, {}),
                    "duration_s": round(sum(self.durations.get(s, {}).values()), 2),
                    "shards": self.shards.get(s, []),
                }
                for s in split_order(self.counts)
            },
            "dropped": dict(self.dropped),
            "excluded": dict(self.excluded),
            "skipped": list(self.skipped),
            "num_skipped": self.num_skipped,
            "rows": self.rows(),
            "seconds": round(self.seconds, 2),
        }


def split_order(splits: Iterable[str]) -> list[str]:
    """train, dev, test first, then any other split names alphabetically."""
    order = {"train": 0, "dev": 1, "test": 2}
    return sorted(splits, key=lambda s: (order.get(s, 9), s))


def count_rows(
    counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    speakers: Mapping[str, Mapping[str, Sequence[str]]],
    durations: Mapping[str, Mapping[str, float]],
    labels: Sequence[str],
) -> list[dict[str, Any]]:
    """Rows {split, language, <label>..., total, speakers, hours} in train/dev/test order."""
    rows = []
    for split in split_order(counts):
        for lang in sorted(counts[split]):
            c = counts[split][lang]
            row: dict[str, Any] = {"split": split, "language": lang}
            row.update({lab: int(c.get(lab, 0)) for lab in labels})
            row["total"] = int(sum(c.values()))
            row["speakers"] = len(speakers.get(split, {}).get(lang, ()))
            row["hours"] = round(durations.get(split, {}).get(lang, 0.0) / 3600, 3)
            rows.append(row)
    return rows
