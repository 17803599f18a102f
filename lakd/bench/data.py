"""Loader throughput by DataLoader worker count (`lakd bench data`), and a small tone corpus to run it on.

`--augment` measures the waveform augmentation's cost: every transform on, side by side with the clean loader.

Throughput is measured from the start of iteration (worker start-up included) over `max_batches`
training batches: samples/s and seconds of audio/s, plus the time to the first batch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lakd import DEFAULT_LABELS, SAMPLE_RATE
from lakd.bench import machine_facts
from lakd.config import DataConfig
from lakd.config.schema import AugmentConfig
from lakd.data.index import directory_counts
from lakd.data.shards import ShardWriter, expand_urls, write_index
from lakd.io import atomic_write_json


def make_tone_corpus(
    out_dir: str | os.PathLike,
    per_language: dict[str, int] | None = None,
    shard_size: int = 20,
    labels=DEFAULT_LABELS,
    sample_rates=(16_000, 22_050, 44_100),
    channels=(1, 2),
    seconds=(0.5, 3.0),
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write `{lang}-NNNNNN.tar` shards of labelled tones + noise (mixed rates and channel counts) and index.json.

    The emotion sets the tone's pitch, so the data is trivially learnable; it exists to exercise the
    pipeline (decoding, resampling, mixing, batching), not to train anything meaningful.
    """
    per_language = per_language or {"en": 40, "fi": 40, "fr": 40}
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for lang, n in per_language.items():
        with ShardWriter(out, prefix=lang, max_count=shard_size, write_index=False) as w:
            for i in range(n):
                label = labels[i % len(labels)]
                sr = int(sample_rates[i % len(sample_rates)])
                ch = int(channels[i % len(channels)])
                dur = float(rng.uniform(*seconds))
                t = np.arange(int(dur * sr)) / sr
                f0 = 150.0 * (1 + labels.index(label) * 0.5)
                tone = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)
                audio = np.stack([tone * (1 - 0.3 * c) for c in range(ch)], axis=1) if ch > 1 else tone
                meta = {
                    "emotion": label,
                    "language": lang,
                    "speaker": f"{lang}_spk{i % 3:02d}",
                    "corpus": "tones",
                    "split": split,
                }
                w.write(f"tone_{lang}_{i:05d}", meta, audio=audio.astype(np.float32), sample_rate=sr)
    write_index(out)
    return out


def _labels_and_languages(spec) -> tuple[list[str], list[str]]:
    """Emotions and languages named in the shards' index.json files (default labels if there is none)."""
    counts = directory_counts(expand_urls(spec))
    labels = {label for c in counts.values() for label in c}
    return sorted(labels) or list(DEFAULT_LABELS), sorted(counts)


def _ratios(results: list[dict]) -> dict:
    """Per worker count: augmented / clean samples/s (the cost of augmentation; < 1 is slower)."""
    by = {(r["num_workers"], r["augment"]): r["samples_per_s"] for r in results}
    return {
        str(w): round(by[(w, "on")] / by[(w, "off")], 3)
        for w in sorted({r["num_workers"] for r in results})
        if by.get((w, "on")) and by.get((w, "off"))
    }


def bench_data(
    spec=None,
    worker_counts=(0, 1, 2),
    batch_size: int = 16,
    max_batches: int = 30,
    out_json: str | os.PathLike | None = None,
    cfg: DataConfig | None = None,
    console=None,
    augment: AugmentConfig | None = None,
) -> dict:
    """Training-loader throughput per worker count; prints a rich table and writes JSON atomically.

    `spec=None` benchmarks a small tone corpus (mixed 16/22.05/44.1 kHz, mono/stereo) made in a temp dir.
    `augment` also measures each worker count with that waveform augmentation (`data.augment`), side by
    side with the clean loader, and reports augmented / clean throughput per worker count.
    """
    from rich.console import Console
    from rich.table import Table

    from lakd.data.loader import build_loader

    console = console or Console()
    tmp = None
    if spec is None:
        tmp = tempfile.TemporaryDirectory(prefix="lakd-bench-data-")
        spec = str(make_tone_corpus(Path(tmp.name) / "train", {"en": 120, "fi": 120, "fr": 60}, shard_size=30))
    try:
        labels, languages = _labels_and_languages(spec)
        base = cfg or DataConfig()
        results = []
        variants = [("off", base.augment)] + ([("on", augment)] if augment is not None else [])
        for workers, (aug_name, aug_cfg) in ((w, v) for w in worker_counts for v in variants):
            c = dataclasses.replace(
                base,
                num_workers=int(workers),
                batch_size=batch_size,
                epoch_samples=max_batches * batch_size,
                augment=aug_cfg,
            )
            loader = build_loader(spec, labels, languages, cfg=c, train=True, allow_unknown_language=True)
            samples, audio_s, first = 0, 0.0, None
            t0 = time.perf_counter()
            for batch in loader:
                if first is None:
                    first = time.perf_counter() - t0
                samples += len(batch["keys"])
                audio_s += float(batch["attention_mask"].sum()) / SAMPLE_RATE
            elapsed = time.perf_counter() - t0
            results.append(
                {
                    "num_workers": int(workers),
                    **({"augment": aug_name} if augment is not None else {}),
                    "batches": len(loader),
                    "samples": samples,
                    "audio_seconds": round(audio_s, 2),
                    "seconds": round(elapsed, 3),
                    "first_batch_s": round(first or 0.0, 3),
                    "samples_per_s": round(samples / elapsed, 2) if elapsed else None,
                    "audio_seconds_per_s": round(audio_s / elapsed, 2) if elapsed else None,
                    "skipped": loader.skips.as_dict()["counts"],
                }
            )
    finally:
        if tmp is not None:
            tmp.cleanup()

    report = {
        "benchmark": "data",
        "spec": "synthetic tone corpus (300 samples)" if tmp is not None else str(spec),
        "batch_size": batch_size,
        "max_batches": max_batches,
        "max_seconds": base.max_seconds,
        "bucket": base.bucket,
        "shuffle_buffer": base.shuffle_buffer,
        "results": results,
        **({"augment": dataclasses.asdict(augment), "augment_ratio": _ratios(results)} if augment else {}),
        **machine_facts(),
    }
    table = Table(title=f"loader throughput ({report['spec']}, batch {batch_size}, {max_batches} batches)")
    for col in (
        "workers",
        *(("augment",) if augment is not None else ()),
        "samples/s",
        "audio s/s",
        "first batch s",
        "total s",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r["num_workers"]),
            *((r["augment"],) if augment is not None else ()),
            f"{r['samples_per_s']:.1f}",
            f"{r['audio_seconds_per_s']:.1f}",
            f"{r['first_batch_s']:.2f}",
            f"{r['seconds']:.2f}",
        )
    console.print(table)
    for workers, ratio in report.get("augment_ratio", {}).items():
        console.print(f"{workers} workers: augmented / clean samples/s = {ratio}")
    if out_json is not None:
        atomic_write_json(out_json, report)
        console.print(f"wrote {out_json}")
    return report


def all_augmentations() -> AugmentConfig:
    """Every transform at probability 1 (the worst case of `data.augment`), for `lakd bench data --augment`."""
    return AugmentConfig(speed_prob=1.0, noise_prob=1.0, gain_prob=1.0, reverb_prob=1.0, bandlimit_prob=1.0)
