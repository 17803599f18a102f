"""Speaker-independent splits: assigning speakers to train/dev/test, group folds, and leak checks.

Emotion models learn speaker identity quickly, so a score is only meaningful when no test (or
dev) speaker was heard in training. Every helper here works on *speakers* (or groups of speakers,
e.g. IEMOCAP sessions), never on utterances, and `validate_speaker_splits` refuses any overlap.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lakd.data.index import ShardIndex
from lakd.data.shards import ShardFormatError

SPLITS = ("train", "dev", "test")


class SplitLeakError(ValueError):
    """Two splits share a speaker (or a split definition is impossible); the message names them."""


def natural_sorted(items: Iterable[str]) -> list[str]:
    """Unique items, sorted so that "9" comes before "10" (ids of equal width sort as usual)."""
    return sorted(set(items), key=lambda s: (len(s), s) if s.isdigit() else (0, s))


def resolve_split_sizes(n: int, spec: Mapping[str, int | float]) -> dict[str, int]:
    """Turn per-split speaker counts or fractions into counts that sum to `n`.

    Integers are counts and must sum to `n`; floats are fractions and must sum to 1 (largest
    remainder rounding, and every split with a fraction > 0 gets at least one speaker when `n`
    allows). Mixing both kinds is an error, because its meaning would be ambiguous.
    """
    if not spec:
        raise SplitLeakError("split spec is empty; give e.g. {'train': 4, 'dev': 1, 'test': 1}")
    values = list(spec.values())
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
        raise SplitLeakError(f"split sizes must be non-negative numbers, got {dict(spec)}")
    if all(isinstance(v, int) for v in values):
        if sum(values) != n:
            raise SplitLeakError(f"split speaker counts {dict(spec)} sum to {sum(values)}, but there are {n} speakers")
        return {k: int(v) for k, v in spec.items()}
    if any(isinstance(v, int) and v > 1 for v in values):
        raise SplitLeakError(f"split sizes {dict(spec)} mix counts and fractions; use all integers or all fractions")
    fractions = {k: float(v) for k, v in spec.items()}
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitLeakError(f"split fractions {dict(spec)} sum to {total:.4f}, not 1")
    wanted = [k for k, f in fractions.items() if f > 0]
    if n < len(wanted):
        raise SplitLeakError(f"{n} speaker(s) cannot fill {len(wanted)} non-empty splits {wanted}")
    raw = {k: f * n for k, f in fractions.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in wanted:  # a split asked for is never left empty
        counts[k] = max(counts[k], 1)
    order = sorted(fractions, key=lambda k: (raw[k] - int(raw[k]), fractions[k]), reverse=True)
    while sum(counts.values()) < n:
        for k in order:
            if sum(counts.values()) >= n:
                break
            if fractions[k] > 0:
                counts[k] += 1
    while sum(counts.values()) > n:  # the minimum-one rule overshot: take from the largest split
        k = max((k for k in counts if counts[k] > 1), key=lambda k: counts[k])
        counts[k] -= 1
    return counts


def assign_speaker_splits(
    speakers: Iterable[str],
    dev: int | float = 0.1,
    test: int | float = 0.1,
    seed: int = 0,
    genders: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Randomly assign each speaker to exactly one of train/dev/test; returns {speaker: split}.

    `dev`/`test` are speaker counts (int) or fractions (float). With `genders`, speakers are
    dealt out gender by gender so each split gets a similar gender mix.
    """
    spk = natural_sorted(speakers)
    if not spk:
        raise SplitLeakError("no speakers to split")
    if isinstance(dev, int) and isinstance(test, int) and not isinstance(dev, bool):
        sizes = {"train": len(spk) - dev - test, "dev": dev, "test": test}
        if sizes["train"] < 1:
            raise SplitLeakError(f"dev={dev} + test={test} speakers leave no training speaker out of {len(spk)}")
    else:
        fractions = {"train": 1.0 - float(dev) - float(test), "dev": float(dev), "test": float(test)}
        sizes = resolve_split_sizes(len(spk), fractions)
    rng = random.Random(seed)
    order = list(spk)
    rng.shuffle(order)
    if genders:
        # round-robin over genders so that consecutive picks alternate
        by_gender: dict[str, list[str]] = {}
        for s in order:
            by_gender.setdefault(genders.get(s, "u"), []).append(s)
        order = []
        pools = [by_gender[g] for g in sorted(by_gender)]
        while any(pools):
            for p in pools:
                if p:
                    order.append(p.pop(0))
    out: dict[str, str] = {}
    i = 0
    for split in ("test", "dev", "train"):
        for s in order[i : i + sizes[split]]:
            out[s] = split
        i += sizes[split]
    return out


def contiguous_folds(groups: Iterable[str], n_folds: int, sort: bool = True) -> list[list[str]]:
    """Split groups into `n_folds` contiguous, near-equal folds (sorted first unless `sort=False`)."""
    g = natural_sorted(groups) if sort else list(dict.fromkeys(groups))
    if not 1 <= n_folds <= len(g):
        raise SplitLeakError(f"cannot make {n_folds} folds from {len(g)} group(s)")
    base, extra = divmod(len(g), n_folds)
    folds, i = [], 0
    for k in range(n_folds):
        size = base + (1 if k < extra else 0)
        folds.append(g[i : i + size])
        i += size
    return folds


def fold_assignment(folds: Sequence[Sequence[str]], fold: int, dev: bool = True) -> dict[str, list[str]]:
    """Fold k (1-based): test = folds[k], dev = the fold before it (wrapping), train = the rest.

    Using the *previous* fold for dev makes the last fold the default test set with the one
    before it as dev (e.g. IEMOCAP: test Session5, dev Session4).
    """
    n = len(folds)
    if n < (3 if dev else 2):
        raise SplitLeakError(f"need at least {3 if dev else 2} folds for train/{'dev/' if dev else ''}test, got {n}")
    if not 1 <= fold <= n:
        raise SplitLeakError(f"fold must be in 1..{n}, got {fold}")
    test_i = fold - 1
    dev_i = (test_i - 1) % n if dev else None
    out = {"train": [], "dev": [], "test": list(folds[test_i])}
    for i, f in enumerate(folds):
        if i == test_i:
            continue
        out["dev" if i == dev_i else "train"].extend(f)
    return out


def leave_one_group_out(groups: Iterable[str], dev: bool = True) -> list[dict[str, list[str]]]:
    """One fold per group: test = that group, dev = the previous group (wrapping), train = the rest.

    Returns `[{"fold": 1, "train": [...], "dev": [...], "test": [...]}, ...]` in sorted group order.
    """
    g = natural_sorted(groups)
    folds = [[x] for x in g]
    return [{"fold": k, **fold_assignment(folds, k, dev=dev)} for k in range(1, len(g) + 1)]


def validate_speaker_splits(split_speakers: Mapping[str, Iterable[str]], where: str = "") -> None:
    """Raise SplitLeakError if any speaker appears in more than one split (names splits and speakers)."""
    seen: dict[str, str] = {}
    problems: dict[tuple[str, str], list[str]] = {}
    for split, speakers in split_speakers.items():
        for s in set(speakers):
            if s in seen and seen[s] != split:
                problems.setdefault((seen[s], split), []).append(s)
            else:
                seen[s] = split
    if problems:
        parts = [
            f"{a} and {b} share {len(v)} speaker(s): {', '.join(sorted(v)[:10])}" + (" ..." if len(v) > 10 else "")
            for (a, b), v in sorted(problems.items())
        ]
        prefix = f"{where}: " if where else ""
        raise SplitLeakError(prefix + "splits are not speaker-independent: " + "; ".join(parts))


def check_shard_dirs(root: str | os.PathLike, splits: Sequence[str] = SPLITS) -> dict[str, list[str]]:
    """Validate speaker independence of `{root}/{split}/index.json`; returns {split: speakers}."""
    root = Path(root)
    found: dict[str, list[str]] = {}
    for split in splits:
        try:
            index = ShardIndex.load(root / split)
        except ShardFormatError as e:
            raise SplitLeakError(str(e)) from e
        if index is not None:
            found[split] = index.speakers
    validate_speaker_splits(found, where=str(root))
    return found
