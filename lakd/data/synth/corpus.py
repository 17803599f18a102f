"""Writing the synthetic corpus: plan, render in parallel fresh processes, shard, index, summarize."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lakd import DEFAULT_LABELS
from lakd.data.shards import ShardWriter, write_index
from lakd.data.synth.espeak import check_languages, open_engine
from lakd.data.synth.plan import CORPUS, SAMPLE_RATE, load_sentences, plan_corpus
from lakd.data.synth.render import render_chunk_fresh, render_chunks
from lakd.data.synth.styles import profile_for

ProgressFn = Callable[[int, int], None]


def _existing_shards(out_dir: Path, splits: Iterable[str], overwrite: bool) -> list[Path]:
    existing = [p for s in splits for p in sorted((out_dir / s).glob("*.tar"))] if out_dir.exists() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds shards ({existing[0]} ...); pass overwrite=True "
            "(--overwrite) to replace them, or choose another output folder"
        )
    return existing


def synthesize_corpus(
    out_dir: str | os.PathLike,
    languages: Sequence[str] = ("en", "fi", "fr"),
    speakers_per_language: int = 6,
    utterances_per_speaker: int = 24,
    labels: Sequence[str] = DEFAULT_LABELS,
    seed: int = 0,
    splits: Mapping[str, int | float] | None = None,
    shard_size: int = 200,
    progress: ProgressFn | None = None,
    backend: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Synthesize a speaker-independent emotional corpus into `{out_dir}/{split}/{lang}-NNNNNN.tar`.

    `splits` gives speakers per split as counts ({"train": 4, "dev": 1, "test": 1}) or fractions
    (default 2/3, 1/6, 1/6); every speaker is in exactly one split. Same arguments and espeak-ng
    version -> the same bytes. Returns a summary dict (counts, speakers, shards, `rows` for a table).
    """
    t0 = time.time()
    if isinstance(languages, str):
        languages = languages.split(",")
    if isinstance(labels, str):
        labels = labels.split(",")
    languages = list(dict.fromkeys(x.strip() for x in languages if x.strip()))
    labels = [x.strip() for x in labels]
    if not languages:
        raise ValueError("give at least one language code")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labels}")
    for lab in labels:
        profile_for(lab)
    if speakers_per_language < 1 or utterances_per_speaker < 1:
        raise ValueError("speakers_per_language and utterances_per_speaker must be >= 1")
    engine = open_engine(backend)
    check_languages(engine, languages)
    plan = plan_corpus(languages, speakers_per_language, utterances_per_speaker, labels, seed, splits)
    split_names = sorted({s.split for s in plan})
    out_dir = Path(out_dir)
    old_shards = _existing_shards(out_dir, split_names, overwrite)

    chunks = render_chunks(plan)
    n_workers = max(1, min(workers or (os.cpu_count() or 1), len(chunks)))
    writers: dict[tuple[str, str], ShardWriter] = {}
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    durations: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    speakers: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    done = 0
    # shards are staged and moved into place only when the whole corpus is done
    staging = out_dir / f".staging-synth-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    pool = cf.ThreadPoolExecutor(max_workers=n_workers)
    try:
        jobs = [pool.submit(render_chunk_fresh, [asdict(s) for s in chunk], engine.name) for chunk in chunks]
        for chunk, job in zip(chunks, jobs):
            for spec, (key, flac, n) in zip(chunk, job.result()):
                w = writers.get((spec.split, spec.language))
                if w is None:
                    w = writers[(spec.split, spec.language)] = ShardWriter(
                        staging / spec.split, prefix=spec.language, max_count=shard_size, write_index=False
                    )
                w.write(key, spec.meta(n / SAMPLE_RATE), audio_bytes=flac, audio_ext="flac")
                counts[spec.split][spec.language][spec.emotion] += 1
                durations[spec.split][spec.language] += n / SAMPLE_RATE
                speakers[spec.split][spec.language].add(spec.speaker)
                done += 1
                if progress:
                    progress(done, len(plan))
        for w in writers.values():
            w.close()
        for p in old_shards:
            p.unlink()
        for split in split_names:
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            for tar in sorted((staging / split).glob("*.tar")):
                os.replace(tar, out_dir / split / tar.name)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    indexes = {s: write_index(out_dir / s) for s in split_names}

    from lakd.data.corpora.summary import count_rows, split_order

    spk = {s: {lang: sorted(v) for lang, v in langs.items()} for s, langs in speakers.items()}
    return {
        "corpus": CORPUS,
        "out_dir": str(out_dir),
        "backend": engine.name,
        "seed": seed,
        "languages": languages,
        "labels": labels,
        "sentences": {lang: load_sentences(lang)[1] for lang in languages},
        "num_samples": len(plan),
        "duration_s": round(sum(i["duration_s"] for i in indexes.values()), 2),
        "splits": {
            s: {
                "dir": str(out_dir / s),
                "num_samples": indexes[s]["num_samples"],
                "duration_s": indexes[s]["duration_s"],
                "speakers": sorted({x for v in spk[s].values() for x in v}),
                "counts": {lang: dict(sorted(c.items())) for lang, c in sorted(counts[s].items())},
                "shards": [str(out_dir / s / sh["path"]) for sh in indexes[s]["shards"]],
            }
            for s in split_order(split_names)
        },
        "rows": count_rows(counts, spk, durations, labels),
        "seconds": round(time.time() - t0, 2),
    }
