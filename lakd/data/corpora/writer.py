"""Writing shards: source audio -> FLAC, labels and splits applied, staged and swapped into place.

`write_corpus` does this the same way for every corpus: map emotions to the configured label set
(others dropped and counted), read audio with soundfile (unreadable or missing files are counted,
logged skips, or an error with `strict`), keep the original sample rate and channels as FLAC, and
write speaker-independent shards `{out_dir}/{split}/{corpus}-{lang}-NNNNNN.tar` plus each split's
index.json.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lakd.data.corpora.labels import map_label, normalize_labels
from lakd.data.corpora.summary import ImportSummary
from lakd.data.corpora.utterances import CorpusImportError, CorpusLayoutError, Utterance, log, skip
from lakd.data.shards import ShardWriter, write_index
from lakd.data.splits import validate_speaker_splits

ProgressFn = Callable[[int, int], None]


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
