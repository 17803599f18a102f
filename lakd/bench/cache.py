"""`lakd bench cache`: peak RSS and lookup time of the teacher cache, held in RAM vs memory-mapped, at 1x and 10x.

Synthetic caches (random knowledge, real format: tar shards of `<key>.npz` written by the cache writer's shard
writer, packed arrays by `PackedWriter`, a manifest) are built at `n` and `factor * n` samples. Each is opened
in a fresh subprocess, once per way of reading it:

- `ram`: the pre-mmap `TeacherCache` (`InRamCache` below, its loading and lookup kept verbatim): every shard
  read and decoded, a dict of all keys and stacked `[N, C]` / `[N, H]` arrays per teacher, per process;
- `mmap`: today's `TeacherCache`: packed `.npy` files verified (sha256 in chunks) and memory-mapped.

The child, after its imports, resets its peak RSS (`reset_peak_rss`), then reports its peak RSS (VmHWM; and
`ru_maxrss`, which cannot be reset) and its current anonymous (private) and file-backed RSS after opening and
after one epoch of lookups (all keys, shuffled, in batches), and the mean lookup time per batch.
File-backed pages are the page cache: shared by every process on the node that maps the same file, and
reclaimable; anonymous pages are each process's own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lakd.bench import publish

MB = 1 << 20


def _key(i: int) -> str:
    return f"utt{i:09d}"


# ------------------------------------------------------------------------------ the pre-mmap reader


class InRamCache:
    """The teacher cache as read before memory-mapping (lakd <= c7d2910), for comparison: all in RAM."""

    def __init__(self, out_dir: str | os.PathLike):
        from lakd.distill.cache import read_manifest

        self.dir = Path(out_dir)
        self.manifest = read_manifest(self.dir)
        teachers = self.manifest["teachers"]
        self.teacher_names = list(self.manifest.get("order", teachers))
        self._logits: list[np.ndarray] = []
        self._pooled: list[np.ndarray] = []
        self._rows: list[dict[str, int]] = []
        for name in self.teacher_names:
            self._load_teacher(teachers[name])

    def _load_teacher(self, entry: dict) -> None:
        logits, pooled, rows = [], [], {}
        for shard in entry["shards"]:
            data = (self.dir / shard["path"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                raise RuntimeError(f"{shard['path']}: sha256 mismatch")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    if not member.isfile() or not member.name.endswith(".npz"):
                        continue
                    with np.load(io.BytesIO(tar.extractfile(member).read())) as z:
                        rows[member.name[:-4]] = len(logits)
                        logits.append(z["logits"])
                        pooled.append(z["pooled"])
        self._logits.append(np.stack(logits).astype(np.float32, copy=False))
        self._pooled.append(np.stack(pooled).astype(np.float32, copy=False))
        self._rows.append(rows)

    def __len__(self) -> int:
        return len(self._rows[0]) if self._rows else 0

    def lookup(self, keys) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, embeds = [], []
        for rows, lg, pl in zip(self._rows, self._logits, self._pooled):
            idx = np.fromiter((rows[k] for k in keys), dtype=np.int64, count=len(keys))
            logits.append(torch.from_numpy(lg[idx]))
            embeds.append(torch.from_numpy(pl[idx]))
        return torch.stack(logits), embeds


# ------------------------------------------------------------------------------ synthetic caches


def build_synthetic_cache(
    out: str | os.PathLike,
    n: int,
    teachers: int = 3,
    num_classes: int = 4,
    hidden: int = 768,
    shards: bool = True,
    samples_per_shard: int = 1000,
    seed: int = 0,
) -> dict:
    """A cache of `n` samples x `teachers` teachers of random knowledge (keys `_key(i)` in shuffled order);
    tar shards too unless `shards=False` (then only `TeacherCache` can read it). Returns the manifest."""
    from lakd.distill.cache import FORMAT, MANIFEST
    from lakd.distill.cache_pack import PackedWriter
    from lakd.distill.cache_write import _CacheShardWriter, _encode_npz
    from lakd.io import atomic_write_json

    out = Path(out)
    labels = [f"c{i}" for i in range(num_classes)]
    order = np.random.default_rng(seed).permutation(n)
    manifest = {"format": FORMAT, "labels": labels, "languages": [], "data": {"hash": "synthetic"}, "teachers": {}}
    for t in range(teachers):
        name = f"t{t}"
        rng = np.random.default_rng(seed + 1 + t)
        writer = _CacheShardWriter(out / name, samples_per_shard) if shards else None
        packer = PackedWriter(out, name, n, num_classes, hidden)
        for start in range(0, n, 4096):
            keys = [_key(i) for i in order[start : start + 4096]]
            logits = rng.standard_normal((len(keys), num_classes), dtype=np.float32)
            pooled = rng.standard_normal((len(keys), hidden), dtype=np.float32)
            packer.add_rows(keys, logits, pooled)
            if writer is not None:
                for i, key in enumerate(keys):
                    writer.add(key, _encode_npz(logits[i], pooled[i]))
        if writer is not None:
            writer.close()
        manifest["teachers"][name] = {
            "checkpoint": "synthetic",
            "checkpoint_hash": "synthetic",
            "language": None,
            "hidden_size": hidden,
            "num_samples": n,
            "shards": writer.shards if writer is not None else [],
            "packed": packer.finish(),
            "complete": True,
        }
    manifest["order"] = list(manifest["teachers"])
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------ the measuring child


def _status() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process from /proc (Linux), in MiB; {} elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    return {k: int(fields[k].split()[0]) * 1024 / MB for k in wanted if k in fields}


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0: `5` to /proc/self/clear_refs).

    So that the peak measures what comes after (opening a cache), not the transient peak of importing torch;
    ru_maxrss cannot be reset, and in a spawned child it may even carry its parent's peak from before exec."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss() -> dict:
    """Peak RSS since the reset (VmHWM), ru_maxrss, current anonymous / file-backed RSS of this process, MiB."""
    st = _status()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    out = {"peak_mb": st.get("VmHWM", maxrss), "ru_maxrss_mb": maxrss}
    if "RssAnon" in st:
        out.update(anon_mb=st["RssAnon"], file_mb=st["RssFile"])
    return out


def child(mode: str, cache_dir: str, batch_size: int, seed: int = 0) -> dict:
    """Open the cache one way (`ram` or `mmap`), sweep one epoch of lookups; memory and times."""
    from lakd.distill.cache import TeacherCache

    torch.set_num_threads(1)
    peak_reset = reset_peak_rss()
    base = _rss()
    t0 = time.perf_counter()
    cache = InRamCache(cache_dir) if mode == "ram" else TeacherCache(cache_dir, verify=True)
    open_s = time.perf_counter() - t0
    opened = _rss()
    n = len(cache)
    order = np.random.default_rng(seed).permutation(n)
    times = []
    for start in range(0, n, batch_size):
        keys = [_key(i) for i in order[start : start + batch_size]]
        t0 = time.perf_counter()
        cache.lookup(keys)
        times.append(time.perf_counter() - t0)
    swept = _rss()
    before = base.get("anon_mb", 0.0) + base.get("file_mb", 0.0)
    return {
        "mode": mode,
        "samples": n,
        "peak_reset": peak_reset,
        # what opening and one epoch added to this process: own (anonymous) memory, and mapped file pages
        "anon_growth_mb": swept.get("anon_mb", 0.0) - base.get("anon_mb", 0.0),
        "file_growth_mb": swept.get("file_mb", 0.0) - base.get("file_mb", 0.0),
        "peak_growth_mb": swept["peak_mb"] - before,
        "open_s": open_s,
        "rss_before_open": base,
        "rss_after_open": opened,
        "rss_after_sweep": swept,
        "lookup_batches": len(times),
        "lookup_ms_per_batch": 1000 * float(np.mean(times)),
        "lookup_ms_per_batch_median": 1000 * float(np.median(times)),
    }


def measure_in_child(mode: str, cache_dir, batch_size: int = 64, timeout: float = 1800) -> dict:
    """`child(...)` in a fresh Python process (its own RSS), with one thread for numpy and torch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = (
        "import json, sys; from lakd.bench.cache import child; "
        "print(json.dumps(child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, mode, str(cache_dir), str(batch_size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cache bench child ({mode}, {cache_dir}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the benchmark


def bench_cache(
    n: int = 20_000,
    factor: int = 10,
    teachers: int = 3,
    num_classes: int = 4,
    hidden: int = 768,
    batch_size: int = 64,
    modes=("ram", "mmap"),
    work_dir=None,
    out_json=None,
    console=None,
) -> dict:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "teachers": teachers,
        "num_classes": num_classes,
        "hidden": hidden,
        "batch_size": batch_size,
        "settings": [],
    }
    with tempfile.TemporaryDirectory(prefix="lakd-bench-cache-", dir=work_dir) as tmp:
        for scale in (1, factor):
            size = n * scale
            cache_dir = Path(tmp) / f"x{scale}"
            t0 = time.perf_counter()
            build_synthetic_cache(cache_dir, size, teachers, num_classes, hidden)
            build_s = time.perf_counter() - t0
            packed = sum(p.stat().st_size for p in cache_dir.glob("*/packed-*.npy"))
            console.print(
                f"built {size} samples x {teachers} teachers in {build_s:.0f} s ({packed / MB:.0f} MiB packed)"
            )
            for mode in modes:
                r = measure_in_child(mode, cache_dir, batch_size)
                r.update(scale=scale, build_s=build_s, knowledge_mb=teachers * size * (num_classes + hidden) * 4 / MB)
                results["settings"].append(r)
                console.print(f"  {mode}: peak {r['rss_after_sweep']['peak_mb']:.0f} MiB")
            for p in cache_dir.glob("*/cache-*.tar"):
                p.unlink()  # disk: the next scale is 10x larger

    table = Table(title=f"teacher cache: {teachers} teachers, C={num_classes}, H={hidden}, batch {batch_size}")
    for col in (
        "scale",
        "samples",
        "knowledge MiB",
        "way",
        "open s",
        "peak RSS after open",
        "peak RSS after epoch",
        "growth: peak / anon / file",
        "lookup ms/batch",
    ):
        table.add_column(col)
    for r in results["settings"]:
        a, s = r["rss_after_open"], r["rss_after_sweep"]
        table.add_row(
            f"{r['scale']}x",
            str(r["samples"]),
            f"{r['knowledge_mb']:.0f}",
            r["mode"],
            f"{r['open_s']:.1f}",
            f"{a['peak_mb']:.0f}",
            f"{s['peak_mb']:.0f}",
            f"{r['peak_growth_mb']:.0f} / {r['anon_growth_mb']:.0f} / {r['file_growth_mb']:.0f}",
            f"{r['lookup_ms_per_batch']:.3f}",
        )
    return publish(table, results, out_json, console)
