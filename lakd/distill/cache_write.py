"""Writing the teacher-knowledge cache (layout and reading: `lakd.distill.cache`).

Each shard is written to a temp file and renamed; `manifest.json` is rewritten (atomically) without a
teacher before its old files are deleted, and with it only after its last shard is in place, so the manifest
never claims what is not on disk: a killed job leaves complete teachers (skipped on resume) and one partial
teacher (not in the manifest, restarted from scratch). Every teacher is checked before anything is computed.
See docs/guarantees.md.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lakd.choices import CACHE_SCOPES
from lakd.data.index import shard_sample_counts
from lakd.data.shards import check_key, expand_urls
from lakd.distill.cache import (
    FORMAT,
    MANIFEST,
    SHARD_PREFIX,
    CacheError,
    checkpoint_hash,
    data_fingerprint,
    packed_problem,
    read_manifest,
    teacher_language,
)
from lakd.distill.cache_pack import pack_teacher
from lakd.io import TarShardWriter, atomic_write_json, sha256_file

log = logging.getLogger("lakd.distill.cache")


def _encode_npz(logits: np.ndarray, pooled: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, logits=logits.astype(np.float32), pooled=pooled.astype(np.float32))
    return buf.getvalue()


class _CacheShardWriter(TarShardWriter):
    """`<dir>/cache-NNNNNN.tar` shards of `<key>.npz`; records each finished shard's path, sha256 and size."""

    def __init__(self, directory: Path, max_count: int):
        super().__init__(directory, SHARD_PREFIX, max_count)
        self.shards: list[dict] = []

    def add(self, key: str, data: bytes) -> None:
        self.add_sample([(f"{key}.npz", data)])

    def shard_finished(self, path: Path, num_samples: int) -> None:
        self.shards.append(
            {
                "path": f"{self.directory.name}/{path.name}",
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
                "num_samples": num_samples,
            }
        )


def _clear_teacher_dir(directory: Path) -> None:
    """Remove a teacher's (partial or stale) cache shards and packed files; only files this module writes are
    touched."""
    if not directory.is_dir():
        return
    ours = (f"{SHARD_PREFIX}-", f".{SHARD_PREFIX}.", "packed-", ".packed-")
    for p in directory.iterdir():
        if p.is_file() and p.name.startswith(ours):
            p.unlink()
    try:
        directory.rmdir()
    except OSError:
        pass  # holds files we did not write: leave it


def _absent_shard(out: Path, entry: dict) -> str | None:
    """The first shard of a manifest entry that is not on disk as recorded (missing, or of another size)."""
    for shard in entry.get("shards", []):
        path = out / shard["path"]
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if "bytes" in shard and size != shard["bytes"]:
            return f"{path} has {size} bytes, the manifest says {shard['bytes']}"
    return None


def check_teachers(
    teacher_dirs: Mapping[str, str | os.PathLike],
    labels: Sequence[str],
    languages: Sequence[str],
    teacher_languages: Mapping[str, str | None] | None = None,
    data_counts: Mapping[str, int] | None = None,
) -> dict[str, tuple[str, str | None]]:
    """Every teacher usable, before anything is computed: a valid cache directory name, a lakd model at its
    checkpoint that predicts `labels`. Returns name -> (checkpoint hash, language taught).

    A missing teacher is named with the language it teaches and how many samples of it the data holds
    (`data_counts`), and how to train it; CacheError otherwise names the directory and the problem.
    """
    from lakd.models.ser import CheckpointError, read_metadata

    out = {}
    for name, ckpt in teacher_dirs.items():
        if "/" in name or name.startswith(".") or name in ("", MANIFEST):
            raise CacheError(f"teacher name {name!r} cannot be used as a cache directory name")
        lang = (teacher_languages or {}).get(name, teacher_language(name, languages))
        try:
            labels_of = read_metadata(ckpt)["labels"]
        except CheckpointError as e:
            what = f"teacher {name!r}" + (f" of language {lang!r}" if lang else "")
            held = (data_counts or {}).get(lang) if lang else None
            if held:
                what += f" ({held} samples of it in the data)"
            hint = f"train it first (`lakd train teacher --language {name}`)" if lang or name == "multi" else ""
            hint = f"{hint} or leave it out (--teachers)" if hint else "leave it out (--teachers)"
            raise CacheError(f"{what}: {e}; {hint}. Nothing was computed.") from e
        if list(labels_of) != list(labels):
            raise CacheError(f"teacher {name} ({ckpt}) predicts labels {labels_of}, the cache is for {list(labels)}")
        out[name] = (checkpoint_hash(ckpt), lang)
    return out


@torch.no_grad()
def _run_teacher(
    model,
    batches,
    writer: _CacheShardWriter,
    name: str,
    progress: Callable[[str, int, int | None], None] | None,
    total: int | None,
    device,
) -> int:
    seen: set[str] = set()
    for batch in batches:
        x = batch["input_values"].to(device)
        mask = batch["attention_mask"].to(device)
        lang = torch.tensor([model.language_id(l) for l in batch["languages"]], dtype=torch.long, device=device)
        out = model(x, mask, lang)
        logits = out.logits.float().cpu().numpy()
        pooled = out.pooled.float().cpu().numpy()
        for i, key in enumerate(batch["keys"]):
            check_key(key)
            if key in seen:
                raise CacheError(
                    f"sample key {key!r} occurs twice in the cached data; keys must be unique across shards"
                )
            if not (np.isfinite(logits[i]).all() and np.isfinite(pooled[i]).all()):
                raise CacheError(
                    f"teacher {name!r} gave non-finite logits or embedding for sample {key!r}; nothing of this "
                    "teacher was cached (is its checkpoint broken? `lakd evaluate` it)"
                )
            seen.add(key)
            writer.add(key, _encode_npz(logits[i], pooled[i]))
        if progress is not None:
            progress(name, len(seen), total)
    return len(seen)


def _covers(language: str | None, scope: str, teachers: dict, languages: list[str]) -> list[str] | None:
    """The languages whose samples a teacher's cached knowledge holds; None: all.

    With own-language scope a per-language teacher holds its own language and every language of `languages`
    that has no teacher of its own: route weighting sends those samples to the mixture of all teachers
    (`lakd.distill.losses.route_matrix`), so the loss is exactly the one an "all" cache gives."""
    if scope == "all" or language is None:
        return None
    taught = {lang for _, lang in teachers.values() if lang is not None}
    return [language, *(lang for lang in languages if lang not in taught)]


def write_teacher_cache(
    teacher_dirs: Mapping[str, str | os.PathLike],
    spec,
    out_dir: str | os.PathLike,
    labels: Sequence[str],
    languages: Sequence[str],
    data_cfg,
    device="cpu",
    batch_size: int | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    resume: bool = True,
    eval_max_seconds: float | None = None,
    samples_per_shard: int = 1000,
    teacher_languages: Mapping[str, str | None] | None = None,
    scope: str = "all",
) -> dict:
    """Run every teacher (eval mode, no grad) once over every sample of `spec`; return the manifest.

    `scope="own-language"` runs a per-language teacher over the samples of its own language only (and of the
    languages without a teacher of their own; a teacher for all languages still sees all): N teachers over N
    languages then cost N x (one language) instead of N x (all languages), and route weighting, which gives a
    sample only its own language's teacher, needs no more (`distill.cache_scope`). Cosine weightings compare
    every teacher on every sample and need "all".

    teacher_dirs: name -> checkpoint dir (names in `languages` are per-language teachers, others teach all,
    unless `teacher_languages` says otherwise). A teacher already complete in the manifest with the same
    checkpoint hash and data fingerprint, and its shards on disk as recorded, is skipped (`resume=False`
    recomputes all). `progress(teacher, samples_done, total_or_None)` is called after each batch. Run it in
    one process (rank 0).

    The manifest never claims what is not on disk: all teachers are checked first (`check_teachers`); the
    manifest is rewritten without every entry about to be recomputed *before* any file is deleted, and a
    teacher's entry is added only after its last shard and its packed files (`lakd.distill.cache_pack`) are in
    place. A complete teacher whose packed files are missing, corrupt (sha256) or never written (an older
    lakd) is packed again from its shards, not recomputed. A run killed at any point leaves a
    manifest whose every entry is complete; the next run recomputes the rest.
    """
    from dataclasses import replace

    from lakd.data.index import directory_counts
    from lakd.data.loader import EVAL_MAX_FACTOR, build_loader
    from lakd.models.ser import CheckpointError, SERModel

    out = Path(out_dir)
    labels, languages = list(labels), list(languages)
    if scope not in CACHE_SCOPES:
        raise CacheError(f"cache scope must be one of {', '.join(CACHE_SCOPES)}, got {scope!r}")
    if not teacher_dirs:
        raise CacheError(f"{out}: no teachers to cache")
    urls = expand_urls(spec)
    data_counts = {lang: sum(c.values()) for lang, c in directory_counts(urls).items()}
    teachers = check_teachers(teacher_dirs, labels, languages, teacher_languages, data_counts)
    effective_max = EVAL_MAX_FACTOR * data_cfg.max_seconds if eval_max_seconds is None else eval_max_seconds
    data_cfg = replace(data_cfg, eval_batch_size=batch_size or data_cfg.eval_batch_size)
    fp = data_fingerprint(spec, labels, languages, effective_max)
    # the data's problems that stop a run (a shard index.json lists but the disk lacks) surface here, too
    loader = build_loader(spec, labels, languages, cfg=data_cfg, train=False, eval_max_seconds=effective_max)
    device = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)

    old = read_manifest(out)
    valid = dict(old.get("teachers", {})) if old is not None and old.get("data", {}).get("hash") == fp["hash"] else {}
    if old is not None and not valid and old.get("teachers"):
        log.info("%s: data, labels or truncation changed since the cache was written: recomputing all teachers", out)
    if not resume:
        valid = {}
    for name, entry in list(valid.items()):
        absent = _absent_shard(out, entry) if entry.get("complete") else "incomplete"
        if absent is not None:
            log.warning(
                "cache %s: teacher %s's cache is not on disk as recorded (%s): recomputing it", out, name, absent
            )
        rescoped = name in teachers and entry.get("covers") != _covers(teachers[name][1], scope, teachers, languages)
        if absent is not None or rescoped or (name in teachers and entry.get("checkpoint_hash") != teachers[name][0]):
            del valid[name]
        elif (problem := packed_problem(out, entry, check_sha256=True)) is not None:
            log.warning(
                "cache %s: teacher %s's packed files: %s: packing them again from its shards", out, name, problem
            )
            valid[name] = {k: v for k, v in entry.items() if k != "packed"}  # claimed again once repacked
    todo = [name for name in teacher_dirs if name not in valid]
    manifest = {"format": FORMAT, "labels": labels, "languages": languages, "data": fp, "teachers": valid}
    manifest["order"] = [t for t in teacher_dirs if t in valid]
    atomic_write_json(out / MANIFEST, manifest)  # first: from here on it claims only what stays on disk
    for stale in set((old or {}).get("teachers", {})) - set(valid) | set(todo):
        _clear_teacher_dir(out / stale)

    total = None
    try:
        total = sum(shard_sample_counts(urls).values())
    except Exception:  # a count is only for progress display
        pass

    for name, ckpt in teacher_dirs.items():
        if name not in todo:
            entry = valid[name]
            if "packed" not in entry:
                start = time.time()
                entry["packed"] = pack_teacher(out, name, entry["shards"], entry["num_samples"], len(labels))
                atomic_write_json(out / MANIFEST, manifest)  # after the packed files are in place
                log.info("cache %s: teacher %s packed from its shards in %.1f s", out, name, time.time() - start)
            log.info("cache %s: teacher %s up to date (%d samples), skipped", out, name, entry["num_samples"])
            continue
        ckpt_hash, lang = teachers[name]
        tdir = out / name
        try:
            model = SERModel.from_pretrained(ckpt, map_location=device).eval()
        except CheckpointError as e:
            raise CacheError(f"teacher {name!r}: {e}") from e
        writer = _CacheShardWriter(tdir, samples_per_shard)
        start = time.time()
        covers = _covers(lang, scope, teachers, languages)
        batches, expected = loader, total
        if covers is not None:
            own = {"language_filter": covers, "eval_max_seconds": effective_max}
            batches = build_loader(spec, labels, languages, cfg=data_cfg, train=False, **own)
            expected = sum(data_counts.get(c, 0) for c in covers)
        try:
            n = _run_teacher(model, batches, writer, name, progress, expected, device)
            writer.close()
            if n == 0:
                raise CacheError(f"teacher {name}: no samples in {spec} (see the loader's skip log)")
            packed = pack_teacher(out, name, writer.shards, n, len(labels))
        except BaseException:
            writer.abort()
            _clear_teacher_dir(tdir)  # the manifest does not list it; leave no half-written teacher behind
            raise
        manifest["teachers"][name] = {
            "checkpoint": str(Path(ckpt).resolve()),
            "checkpoint_hash": ckpt_hash,
            "language": lang,
            "scope": "all" if covers is None else "own-language",
            "covers": covers,
            "hidden_size": model.hidden_size,
            "num_samples": n,
            "shards": writer.shards,
            "packed": packed,
            "skips": batches.last_epoch_skips.as_dict(),
            "seconds": round(time.time() - start, 2),
            "complete": True,
        }
        manifest["order"] = [t for t in teacher_dirs if t in manifest["teachers"]]
        atomic_write_json(out / MANIFEST, manifest)  # last: every shard it lists is in place
        log.info("cache %s: teacher %s: %d samples in %.1f s", out, name, n, time.time() - start)
        del model
    return manifest
