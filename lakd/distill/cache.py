"""Teacher-knowledge cache: run each frozen teacher once over the training shards, store logits + embeddings.

Layout (`out_dir`):

    manifest.json                      teachers, checkpoint hashes, data fingerprint, per-shard sha256
    <teacher>/cache-000000.tar         per sample `<key>.npz` with float32 `logits [C]` and `pooled [H]`
    <teacher>/cache-000001.tar ...

Each shard is written to a temp file and renamed; `manifest.json` is rewritten (atomically) after each
teacher completes, so a killed job leaves complete teachers (skipped on resume) and one partial teacher
(restarted from scratch). Teachers run on the eval view of the data (whole utterance, truncated like
evaluation), not on the random training crops: see docs/method.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lakd.data.index import shard_entry, shard_sample_counts
from lakd.data.shards import check_key, expand_urls
from lakd.io import TarShardWriter, atomic_write_json, sha256_file

log = logging.getLogger("lakd.distill.cache")

MANIFEST = "manifest.json"
FORMAT = "lakd-teacher-cache/1"
SHARD_PREFIX = "cache"
CHECKPOINT_FILES = (
    "config.json",
    "lakd.json",
    "lakd_head.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
)


class CacheError(RuntimeError):
    """The teacher cache cannot be used as asked; the message names the cache directory."""


class CacheMissError(CacheError, LookupError):
    """A sample key has no cached teacher knowledge."""


class CacheMismatchError(CacheError):
    """A teacher checkpoint differs from the one the cache was computed with."""


class CacheCorruptError(CacheError):
    """A cache shard does not match its recorded checksum or cannot be read."""


# ----------------------------------------------------------------------------- fingerprints


def checkpoint_hash(directory: str | os.PathLike) -> str:
    """sha256 over a model directory's weight files, config.json and lakd.json (names and contents)."""
    d = Path(directory)
    files = (
        sorted(p for p in d.iterdir() if p.name in CHECKPOINT_FILES or (p.suffix == ".safetensors" and p.is_file()))
        if d.is_dir()
        else []
    )
    if not any(p.name == "lakd.json" for p in files):
        raise CacheError(f"teacher checkpoint {d}: not a lakd model directory (no lakd.json)")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def data_fingerprint(spec, labels: Sequence[str], languages: Sequence[str], eval_max_seconds: float | None) -> dict:
    """What the cached knowledge depends on besides the teacher: shards (by index sha256, else size+mtime),
    label and language order, and the eval truncation."""
    shards = []
    for url in expand_urls(spec):
        entry = shard_entry(url)
        if entry is not None and entry.sha256:
            ident = f"sha256:{entry.sha256}"
        else:
            st = os.stat(url)
            ident = f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
        shards.append([os.path.basename(url), ident])
    fp = {"shards": shards, "labels": list(labels), "languages": list(languages), "eval_max_seconds": eval_max_seconds}
    fp["hash"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return fp


def teacher_language(name: str, languages: Sequence[str]) -> str | None:
    """A teacher named after a language teaches that language; any other name (e.g. 'multi') teaches all."""
    return name if name in languages else None


# ----------------------------------------------------------------------------- writing


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
            {"path": f"{self.directory.name}/{path.name}", "sha256": sha256_file(path), "num_samples": num_samples}
        )


def _clear_teacher_dir(directory: Path) -> None:
    """Remove a teacher's (partial or stale) cache shards; only files this module writes are touched."""
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.is_file() and (p.name.startswith(f"{SHARD_PREFIX}-") or p.name.startswith(f".{SHARD_PREFIX}.")):
            p.unlink()
    try:
        directory.rmdir()
    except OSError:
        pass  # holds files we did not write: leave it


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CacheError(f"{p}: invalid JSON ({e}); delete the cache directory to rebuild it") from e
    if m.get("format") != FORMAT:
        raise CacheError(f"{p}: format {m.get('format')!r}, this lakd reads {FORMAT!r}")
    return m


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
            seen.add(key)
            writer.add(key, _encode_npz(logits[i], pooled[i]))
        if progress is not None:
            progress(name, len(seen), total)
    return len(seen)


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
) -> dict:
    """Run every teacher (eval mode, no grad) once over every sample of `spec`; return the manifest.

    teacher_dirs: name -> checkpoint dir (names in `languages` are per-language teachers, others teach all,
    unless `teacher_languages` says otherwise). A teacher already complete in the manifest with the same
    checkpoint hash and data fingerprint is skipped (`resume=False` recomputes all). `progress(teacher,
    samples_done, total_or_None)` is called after each batch. Run it in one process (rank 0).
    """
    from dataclasses import replace

    from lakd.data.loader import EVAL_MAX_FACTOR, build_loader
    from lakd.models.ser import SERModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, languages = list(labels), list(languages)
    if not teacher_dirs:
        raise CacheError(f"{out}: no teachers to cache")
    effective_max = EVAL_MAX_FACTOR * data_cfg.max_seconds if eval_max_seconds is None else eval_max_seconds
    data_cfg = replace(data_cfg, eval_batch_size=batch_size or data_cfg.eval_batch_size)
    fp = data_fingerprint(spec, labels, languages, effective_max)
    device = torch.device(device)

    old = read_manifest(out) if resume else None
    manifest = {"format": FORMAT, "labels": labels, "languages": languages, "data": fp, "teachers": {}}
    if old is not None and old.get("data", {}).get("hash") == fp["hash"]:
        manifest["teachers"] = dict(old.get("teachers", {}))
    elif old is not None:
        log.info("%s: data, labels or truncation changed since the cache was written: recomputing all teachers", out)
    for stale in set((old or {}).get("teachers", {})) - set(manifest["teachers"]):
        _clear_teacher_dir(out / stale)

    total = None
    try:
        total = sum(shard_sample_counts(expand_urls(spec)).values())
    except Exception:  # a count is only for progress display
        pass

    for name, ckpt in teacher_dirs.items():
        if "/" in name or name.startswith(".") or name in ("", MANIFEST):
            raise CacheError(f"teacher name {name!r} cannot be used as a cache directory name")
        ckpt_hash = checkpoint_hash(ckpt)
        lang = (teacher_languages or {}).get(name, teacher_language(name, languages))
        done = manifest["teachers"].get(name)
        if done is not None and done.get("checkpoint_hash") == ckpt_hash and done.get("complete"):
            log.info("cache %s: teacher %s up to date (%d samples), skipped", out, name, done["num_samples"])
            continue
        manifest["teachers"].pop(name, None)
        tdir = out / name
        _clear_teacher_dir(tdir)
        tdir.mkdir(parents=True, exist_ok=True)

        model = SERModel.from_pretrained(ckpt, map_location=device).eval()
        if list(model.labels) != labels:
            raise CacheError(f"teacher {name} ({ckpt}) predicts labels {model.labels}, the cache is for {labels}")
        loader = build_loader(spec, labels, languages, cfg=data_cfg, train=False, eval_max_seconds=effective_max)
        writer = _CacheShardWriter(tdir, samples_per_shard)
        start = time.time()
        try:
            n = _run_teacher(model, loader, writer, name, progress, total, device)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        if n == 0:
            raise CacheError(f"teacher {name}: no samples in {spec} (see the loader's skip log)")
        manifest["teachers"][name] = {
            "checkpoint": str(Path(ckpt).resolve()),
            "checkpoint_hash": ckpt_hash,
            "language": lang,
            "hidden_size": model.hidden_size,
            "num_samples": n,
            "shards": writer.shards,
            "skips": loader.skips.as_dict(),
            "seconds": round(time.time() - start, 2),
            "complete": True,
        }
        manifest["order"] = [t for t in teacher_dirs if t in manifest["teachers"]]
        atomic_write_json(out / MANIFEST, manifest)
        log.info("cache %s: teacher %s: %d samples in %.1f s", out, name, n, time.time() - start)
        del model
    manifest["order"] = [t for t in teacher_dirs if t in manifest["teachers"]]
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


# ----------------------------------------------------------------------------- reading


class TeacherCache:
    """All cached teacher knowledge in memory: per teacher a `[N, C]` logits and `[N, H_k]` embedding array.

    Memory is N x (C + H_k) x 4 bytes per teacher (100k utterances x 1024 dims ~ 0.4 GB per teacher),
    in every process that builds one. `teacher_dirs` (name -> checkpoint) selects and orders the teachers
    and checks each checkpoint's hash against the manifest; without it, all cached teachers in manifest order.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        teacher_dirs: Mapping[str, str | os.PathLike] | None = None,
        verify: bool = True,
    ):
        self.dir = Path(out_dir)
        manifest = read_manifest(self.dir)
        if manifest is None:
            raise CacheError(f"{self.dir}: no {MANIFEST} (run `lakd cache` first)")
        self.manifest = manifest
        teachers = manifest.get("teachers", {})
        names = list(teacher_dirs) if teacher_dirs is not None else list(manifest.get("order", teachers))
        for name in names:
            entry = teachers.get(name)
            if entry is None or not entry.get("complete"):
                raise CacheError(
                    f"{self.dir}: teacher {name!r} is not cached (cached: {sorted(teachers)}); run `lakd cache`"
                )
            if teacher_dirs is not None:
                now = checkpoint_hash(teacher_dirs[name])
                if now != entry["checkpoint_hash"]:
                    raise CacheMismatchError(
                        f"{self.dir}: teacher {name!r} at {teacher_dirs[name]} has hash {now[:16]}..., "
                        f"but the cache was computed with {entry['checkpoint_hash'][:16]}... "
                        f"({entry.get('checkpoint')}); rerun `lakd cache`"
                    )
        self.teacher_names: list[str] = names
        self.teacher_languages: list[str | None] = [teachers[n].get("language") for n in names]
        self.labels: list[str] = list(manifest["labels"])
        self._logits: list[np.ndarray] = []
        self._pooled: list[np.ndarray] = []
        self._rows: list[dict[str, int]] = []
        for name in names:
            self._load_teacher(name, teachers[name], verify)

    def _load_teacher(self, name: str, entry: dict, verify: bool) -> None:
        logits, pooled, rows = [], [], {}
        for shard in entry["shards"]:
            path = self.dir / shard["path"]
            try:
                data = path.read_bytes()
            except OSError as e:
                raise CacheCorruptError(f"{path}: cannot read cache shard ({e})") from e
            if verify and hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise CacheCorruptError(
                    f"{path}: sha256 differs from {self.dir / MANIFEST}; the shard is corrupt, rerun `lakd cache`"
                )
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                    for member in tar:
                        if not member.isfile() or not member.name.endswith(".npz"):
                            continue
                        key = member.name[:-4]
                        with np.load(io.BytesIO(tar.extractfile(member).read())) as z:
                            rows[key] = len(logits)
                            logits.append(z["logits"])
                            pooled.append(z["pooled"])
            except (tarfile.TarError, OSError, ValueError, KeyError) as e:
                raise CacheCorruptError(f"{path}: unreadable cache shard ({e}); rerun `lakd cache`") from e
        if len(rows) != entry["num_samples"]:
            raise CacheCorruptError(
                f"{self.dir}/{name}: {len(rows)} samples in the shards, manifest says {entry['num_samples']}"
            )
        self._logits.append(np.stack(logits).astype(np.float32, copy=False))
        self._pooled.append(np.stack(pooled).astype(np.float32, copy=False))
        self._rows.append(rows)

    def __len__(self) -> int:
        return len(self._rows[0]) if self._rows else 0

    def __contains__(self, key: str) -> bool:
        return all(key in r for r in self._rows)

    @property
    def embed_dims(self) -> list[int]:
        return [p.shape[1] for p in self._pooled]

    def lookup(self, keys: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher logits `[K, B, C]` and embeddings (K tensors `[B, H_k]`), float32 on CPU, in teacher order."""
        logits, embeds = [], []
        for name, rows, lg, pl in zip(self.teacher_names, self._rows, self._logits, self._pooled):
            try:
                idx = np.fromiter((rows[k] for k in keys), dtype=np.int64, count=len(keys))
            except KeyError as e:
                raise CacheMissError(
                    f"sample key {e.args[0]!r} has no cached knowledge of teacher {name!r} in {self.dir} "
                    "(was the cache computed on other shards? rerun `lakd cache`)"
                ) from None
            logits.append(torch.from_numpy(lg[idx]))
            embeds.append(torch.from_numpy(pl[idx]))
        return torch.stack(logits), embeds

    def verify(self) -> dict:
        """Recompute every shard's sha256 against the manifest; raise CacheCorruptError listing the bad ones."""
        bad, checked = [], 0
        for name in self.manifest.get("teachers", {}):
            for shard in self.manifest["teachers"][name]["shards"]:
                path = self.dir / shard["path"]
                checked += 1
                if not path.exists():
                    bad.append(f"{path} (missing)")
                elif sha256_file(path) != shard["sha256"]:
                    bad.append(f"{path} (sha256 mismatch)")
        if bad:
            raise CacheCorruptError(f"{self.dir}: {len(bad)} of {checked} cache shards are corrupt: " + ", ".join(bad))
        return {"shards": checked, "ok": True}
