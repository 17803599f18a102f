"""Speaker-independent folds: which speakers (or sessions) are test, dev and train for a fold.

Each corpus defines its default folds (a `FoldsFn`, often one of the factories at the end of this
file); "loso" makes one fold per speaker. Fold k tests on fold k
and uses fold k-1 (wrapping) as dev, so the dev set is never the test set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from lakd.data.corpora.utterances import Utterance
from lakd.data.splits import SplitLeakError, contiguous_folds, fold_assignment, natural_sorted

SCHEMES = ("default", "loso")

# (utterances, seed) -> a corpus's default folds of fold units (Utterance.group, else the speaker).
# The seed is for corpora whose folds are drawn (FESC, manifests); fixed protocols ignore it.
FoldsFn = Callable[[Sequence[Utterance], int], list[list[str]]]


def resolve_fold(fold: int | str | None, folds: Sequence[Sequence[str]], corpus: str) -> int:
    """A 1-based fold number from a number, a numeric string, or the name of a group in a fold
    (e.g. "Session3" for IEMOCAP, "ravdess_21"); None means the last fold."""
    if fold is None:
        return len(folds)
    if isinstance(fold, int) or str(fold).strip().isdigit():
        return int(fold)
    name = str(fold).strip()
    for k, groups in enumerate(folds, start=1):
        if name in groups or f"{corpus}_{name}" in groups:
            return k
    raise ValueError(
        f"{corpus}: fold {fold!r} is neither a fold number (1..{len(folds)}) nor a group in a fold "
        f"({', '.join(g for f in folds for g in f)[:300]})"
    )


def fold_protocol(
    utterances: Sequence[Utterance],
    scheme: str,
    fold: int | str | None,
    default_folds: Sequence[Sequence[str]],
    corpus: str,
) -> tuple[Callable[[Utterance], str | None], dict[str, Any]]:
    """The split function for a fold of a scheme, and a description of it for the summary.

    scheme "default": the corpus's folds over `Utterance.group` (or the speaker when a corpus has
    no groups); "loso": leave-one-speaker-out. Fold k: test = fold k, dev = fold k-1 (wrapping),
    train = the rest; `fold=None` is the last fold.
    """
    if scheme == "default":
        folds = [list(f) for f in default_folds if f]

        def key(u: Utterance) -> str:
            return u.group or u.speaker

    elif scheme == "loso":
        folds = [[s] for s in natural_sorted(u.speaker for u in utterances)]

        def key(u: Utterance) -> str:
            return u.speaker

    else:
        raise ValueError(f"{corpus}: unknown split scheme {scheme!r}; use one of {SCHEMES}")
    if len(folds) < 3:
        raise SplitLeakError(
            f"{corpus}: found {len(folds)} fold(s) of speakers ({folds}); speaker-independent "
            "train/dev/test needs at least 3 -- is the root complete?"
        )
    k = resolve_fold(fold, folds, corpus)
    assignment = fold_assignment(folds, k)
    where = {g: split for split, groups in assignment.items() for g in groups}
    protocol = {"scheme": scheme, "fold": k, "n_folds": len(folds), **assignment}
    return (lambda u: where.get(key(u))), protocol


def actor_folds(per_fold: int) -> FoldsFn:
    """Folds of `per_fold` consecutive actor numbers (extra["actor"]): 1-4, 5-8, ... for per_fold=4.

    Fixed by actor number, so a fold means the same actors whichever files are present.
    """

    def folds(utterances: Sequence[Utterance], seed: int) -> list[list[str]]:
        by_block: dict[int, set[str]] = defaultdict(set)
        for u in utterances:
            by_block[(int(u.extra["actor"]) - 1) // per_fold].add(u.speaker)
        return [natural_sorted(by_block[k]) for k in sorted(by_block)]

    return folds


def speaker_blocks(n_folds: int) -> FoldsFn:
    """`n_folds` folds of consecutive speaker ids (fewer when there are fewer speakers)."""

    def folds(utterances: Sequence[Utterance], seed: int) -> list[list[str]]:
        speakers = {u.speaker for u in utterances}
        return contiguous_folds(speakers, min(n_folds, len(speakers))) if speakers else []

    return folds
