"""What every corpus importer shares: the Utterance record, label mapping, and writing shards.

An importer only has to *find* utterances (parse its corpus's layout into `Utterance` records)
and say which speakers go to which split; `write_corpus` does the rest the same way for all:
map emotions to the configured label set (others dropped and counted), read audio with
soundfile (unreadable or missing files are counted, logged skips, or an error with `strict`),
keep the original sample rate and channels as FLAC, and write speaker-independent shards
`{out_dir}/{split}/{corpus}-{lang}-NNNNNN.tar` plus each split's index.json.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lakd import DEFAULT_LABELS
from lakd.data.shards import ShardWriter, write_index
from lakd.data.splits import SplitLeakError, fold_assignment, natural_sorted, validate_speaker_splits

log = logging.getLogger("lakd.corpora")

ProgressFn = Callable[[int, int], None]

_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")

# Common spellings of emotion names in labels files and folder names -> canonical name.
EMOTION_ALIASES = {
    "angry": "anger",
    "ang": "anger",
    "mad": "anger",
    "happy": "happiness",
    "hap": "happiness",
    "joy": "happiness",
    "joyful": "happiness",
    "neu": "neutral",
    "sad": "sadness",
    "fearful": "fear",
    "fea": "fear",
    "afraid": "fear",
    "disgusted": "disgust",
    "dis": "disgust",
    "surprised": "surprise",
    "sur": "surprise",
    "bored": "boredom",
    "fru": "frustration",
    "frustrated": "frustration",
    "exc": "excitement",
    "excited": "excitement",
}

SCHEMES = ("default", "loso")


class CorpusLayoutError(FileNotFoundError):
    """The root does not look like the corpus (message says what was expected where)."""


class CorpusImportError(RuntimeError):
    """A strict import met a bad file (message names it)."""


@dataclass
class Utterance:
    """One source recording, as an importer found it."""

    path: Path  # audio file
    key: str  # unique sample key (letters, digits, '_' and '-')
    emotion: str  # canonical English name (anger, happiness, ..., calm, boredom) or the raw label
    speaker: str  # corpus-unique speaker id, prefixed with the corpus (e.g. "ravdess_07")
    language: str  # ISO code
    gender: str = "u"  # "f", "m" or "u"
    text: str | None = None
    group: str | None = None  # fold unit when it is not the speaker (IEMOCAP: session)
    split: str | None = None  # preassigned split (manifest only)
    extra: dict[str, Any] = field(default_factory=dict)  # corpus fields kept in the sample json


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


# ----------------------------------------------------------------------------- labels


def normalize_labels(labels: Iterable[str] | None) -> list[str]:
    labs = list(labels) if labels is not None else list(DEFAULT_LABELS)
    if isinstance(labels, str):
        labs = [x.strip() for x in labels.split(",") if x.strip()]
    if not labs or len(set(labs)) != len(labs):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labs}")
    return labs


def map_label(emotion: str, raw: str | None, labels: Sequence[str], label_map: Mapping[str, str] | None) -> str | None:
    """The configured label for an utterance, or None if it falls outside the label set.

    `label_map` may rename either the corpus's raw code (e.g. "exc", "02") or the canonical name
    (e.g. "calm": "neutral"); a value of "" or None drops the class explicitly.
    """
    target = emotion
    if label_map:
        if raw is not None and raw in label_map:
            target = label_map[raw]
        elif emotion in label_map:
            target = label_map[emotion]
    if not target:
        return None
    return target if target in labels else None


def canonical_emotion(name: str, labels: Sequence[str] = ()) -> str:
    """Lower-cased canonical emotion name; a name that is already a configured label is kept as is."""
    name = name.strip()
    if name in labels:
        return name
    low = name.lower()
    return EMOTION_ALIASES.get(low, low)


def sanitize_key(text: str) -> str:
    key = _KEY_BAD.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"cannot make a sample key from {text!r}")
    return key


def corpus_name(text: str) -> str:
    """A corpus name usable as shard prefix: letters, digits and '_' (no '-', which separates the language)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    if not name:
        raise ValueError(f"invalid corpus name {text!r}")
    return name


# ----------------------------------------------------------------------------- splits


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


def actor_folds(utterances: Sequence[Utterance], per_fold: int) -> list[list[str]]:
    """Folds of `per_fold` consecutive actor numbers (extra["actor"]): 1-4, 5-8, ... for per_fold=4.

    Fixed by actor number, so a fold means the same actors whichever files are present.
    """
    folds: dict[int, set[str]] = defaultdict(set)
    for u in utterances:
        folds[(int(u.extra["actor"]) - 1) // per_fold].add(u.speaker)
    return [natural_sorted(folds[k]) for k in sorted(folds)]


# ----------------------------------------------------------------------------- audio


def encode_source_flac(path: Path) -> tuple[bytes, int, int, int]:
    """Read an audio file with soundfile; return (flac_bytes, sample_rate, channels, frames).

    Keeps the original rate and channels; 24-bit and float sources stay 24-bit, others 16-bit.
    Raises ValueError for empty audio (soundfile errors propagate for unreadable files).
    """
    info = sf.info(str(path))
    if info.frames <= 0:
        raise ValueError("contains no audio frames")
    if info.samplerate > 655_350:
        raise ValueError(f"sample rate {info.samplerate} Hz is too high for FLAC")
    high = info.subtype in ("PCM_24", "PCM_32", "FLOAT", "DOUBLE")
    is_float = info.subtype in ("FLOAT", "DOUBLE")
    data, sr = sf.read(str(path), dtype="float64" if is_float else "int32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError("contains no audio frames")
    if data.dtype == np.float64:
        data = np.clip(data, -1.0, 1.0 - 2.0**-23)
    buf = io.BytesIO()
    sf.write(buf, data if data.shape[1] > 1 else data[:, 0], sr, format="FLAC", subtype="PCM_24" if high else "PCM_16")
    return buf.getvalue(), int(sr), int(data.shape[1]), int(data.shape[0])


def unreadable_reason(path: Path, error: Exception) -> str:
    """Why a file could not be decoded, with a hint for the common cases."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"cannot open ({e.strerror or e})"
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer, not audio (fetch the audio with `git lfs pull`)"
    return f"unreadable audio ({error})"


# ----------------------------------------------------------------------------- writing


def skip(skipped: list[dict[str, str]], path: Path | str, reason: str, strict: bool) -> None:
    """Record a bad source file in `skipped`: an error under `strict`, else a counted, logged skip."""
    msg = f"{path}: {reason}"
    if strict:
        raise CorpusImportError(msg + " (strict mode; drop --strict to skip such files)")
    log.warning("skipping %s", msg)
    skipped.append({"path": str(path), "reason": reason})


def _clear_corpus_shards(out_dir: Path, corpus: str) -> None:
    for split_dir in [p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        removed = False
        for old in split_dir.glob(f"{corpus}-*.tar"):
            old.unlink()
            removed = True
        if removed:
            if any(split_dir.glob("*.tar")):
                write_index(split_dir)
            elif (split_dir / "index.json").exists():
                (split_dir / "index.json").unlink()


def write_corpus(
    corpus: str,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    utterances: Sequence[Utterance],
    split_of: Callable[[Utterance], str | None],
    labels: Sequence[str] | None = None,
    label_map: Mapping[str, str] | None = None,
    shard_size: int = 200,
    strict: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
    protocol: Mapping[str, Any] | None = None,
    excluded: Mapping[str, int] | None = None,
    skipped: Sequence[dict] | None = None,
) -> ImportSummary:
    """Write utterances as shards, one split/language at a time, shuffled within each (seeded).

    New shards are written to a staging folder inside `out_dir` and moved into place only when
    every split is complete; they then replace this corpus's earlier shards (`{corpus}-*.tar`)
    in every split folder, leaving other corpora's shards in the same folders untouched.
    """
    t0 = time.time()
    labs = normalize_labels(labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ImportSummary(
        corpus=corpus, root=str(root), out_dir=str(out_dir), labels=labs, protocol=dict(protocol or {})
    )
    summary.excluded.update(excluded or {})
    summary.skipped.extend(skipped or [])
    dropped: Counter = Counter()

    # 1. labels and splits
    keep: dict[tuple[str, str], list[tuple[Utterance, str]]] = defaultdict(list)
    keys_seen: set[str] = set()
    for u in utterances:
        label = map_label(u.emotion, u.extra.get("emotion_raw"), labs, label_map)
        if label is None:
            dropped[u.emotion or "?"] += 1
            continue
        split = split_of(u)
        if split is None:
            summary.excluded["speaker in no split"] = summary.excluded.get("speaker in no split", 0) + 1
            continue
        if u.key in keys_seen:
            skip(
                summary.skipped,
                u.path,
                f"duplicate sample key {u.key!r} (the same recording found twice under the root?)",
                strict,
            )
            continue
        keys_seen.add(u.key)
        keep[(split, u.language)].append((u, label))
    summary.dropped = dict(sorted(dropped.items()))
    split_speakers: dict[str, set[str]] = defaultdict(set)
    for (split, _), items in keep.items():
        split_speakers[split].update(u.speaker for u, _ in items)
    validate_speaker_splits(split_speakers, where=f"{corpus} import")
    if not keep:
        raise CorpusLayoutError(
            f"{root}: no {corpus} utterances with labels {labs} were found "
            f"(dropped by label: {dict(dropped)}, excluded: {summary.excluded}, "
            f"skipped: {len(summary.skipped)})"
        )

    # 2. shards, staged
    total = sum(len(v) for v in keep.values())
    done = 0
    staging = out_dir / f".staging-{corpus}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    durations: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    written_speakers: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    try:
        for split, lang in sorted(keep):
            items = sorted(keep[(split, lang)], key=lambda x: x[0].key)
            random.Random(f"{seed}-{corpus}-{split}-{lang}").shuffle(items)
            writer = ShardWriter(staging / split, prefix=f"{corpus}-{lang}", max_count=shard_size, write_index=False)
            try:
                for u, label in items:
                    done += 1
                    try:
                        flac, sr, channels, frames = encode_source_flac(u.path)
                    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
                        skip(summary.skipped, u.path, unreadable_reason(u.path, e), strict)
                        if progress:
                            progress(done, total)
                        continue
                    duration = frames / sr
                    meta = {
                        **u.extra,
                        "emotion": label,
                        "language": lang,
                        "speaker": u.speaker,
                        "gender": u.gender,
                        "corpus": corpus,
                        "split": split,
                        "duration": round(duration, 3),
                        "sample_rate": sr,
                        "channels": channels,
                        "source": _relpath(u.path, root),
                    }
                    if u.text is not None:
                        meta["text"] = u.text
                    writer.write(u.key, meta, audio_bytes=flac, audio_ext="flac")
                    counts[split][lang][label] += 1
                    durations[split][lang] += duration
                    written_speakers[split][lang].add(u.speaker)
                    if progress:
                        progress(done, total)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        if not any(counts.values()):
            first = "; ".join(f"{x['path']}: {x['reason']}" for x in summary.skipped[:3])
            raise CorpusImportError(f"{corpus}: none of the {total} selected files could be read ({first})")
        # 3. swap into place
        _clear_corpus_shards(out_dir, corpus)
        for split_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
            dest = out_dir / split_dir.name
            dest.mkdir(parents=True, exist_ok=True)
            for tar in sorted(split_dir.glob("*.tar")):
                os.replace(tar, dest / tar.name)
                summary.shards.setdefault(split_dir.name, []).append(str(dest / tar.name))
            if any(dest.glob("*.tar")):
                write_index(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    summary.counts = {s: {l: dict(sorted(c.items())) for l, c in sorted(langs.items())} for s, langs in counts.items()}
    summary.durations = {s: dict(d) for s, d in durations.items()}
    summary.speakers = {s: {l: sorted(v) for l, v in sorted(langs.items())} for s, langs in written_speakers.items()}
    summary.seconds = time.time() - t0
    if summary.skipped:
        log.warning("%s: %d file(s) skipped (see summary.skipped)", corpus, len(summary.skipped))
    return summary


def _relpath(path: Path, root: str | os.PathLike) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def find_files(root: Path, pattern: re.Pattern, exts: Iterable[str] = (".wav",)) -> list[Path]:
    """All files under root whose *name* matches `pattern` (case-insensitive extensions), sorted.

    Hidden files (e.g. macOS `._name.wav` resource forks) are ignored.
    """
    exts = tuple(e.lower() for e in exts)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            if pattern.match(name):
                out.append(Path(dirpath) / name)
    return sorted(out)


def require_dir(root: str | os.PathLike, corpus: str, expected: str) -> Path:
    p = Path(root)
    if not p.is_dir():
        raise CorpusLayoutError(f"{corpus}: root {p} is not a directory (expected {expected})")
    return p


@dataclass
class Scan:
    """What an importer found under its root, before labels and splits are applied."""

    utterances: list[Utterance] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)  # reason -> n (left out by the protocol)
    skipped: list[dict[str, str]] = field(default_factory=list)  # bad files met while scanning


def import_scan(
    corpus: str,
    root: Path,
    out_dir: str | os.PathLike,
    scan: Scan,
    default_folds: Sequence[Sequence[str]],
    expected: str,
    *,
    labels: Iterable[str] | None,
    fold: int | str | None,
    scheme: str,
    label_map: Mapping[str, str] | None,
    shard_size: int,
    strict: bool,
    seed: int,
    progress: ProgressFn | None,
    split_of: Callable[[Utterance], str | None] | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> ImportSummary:
    """Apply the fold protocol (unless `split_of` is given) and write the shards."""
    if not scan.utterances:
        raise CorpusLayoutError(
            f"{corpus}: found no utterances under {root}; expected {expected}"
            + (f" ({len(scan.skipped)} file(s) skipped)" if scan.skipped else "")
        )
    if split_of is None:
        split_of, protocol = fold_protocol(scan.utterances, scheme, fold, default_folds, corpus)
    return write_corpus(
        corpus,
        root,
        out_dir,
        scan.utterances,
        split_of,
        labels=labels,
        label_map=label_map,
        shard_size=shard_size,
        strict=strict,
        seed=seed,
        progress=progress,
        protocol=protocol,
        excluded=scan.excluded,
        skipped=scan.skipped,
    )
