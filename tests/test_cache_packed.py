"""The memory-mapped teacher cache: lookups identical to the in-RAM reader on a cache written by the real
writer from real tiny teachers; a corrupt or truncated packed file found and named; a cache of an older lakd
(no packed files) packed on rerun without recomputing; a writer killed while packing never leaves a packed file
claimed by the manifest; a child process opening a large cache stays far below its size in RSS."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_fixtures import assert_manifest_true, make_shards, save_teacher, write
from kill_at_marker import kill_when_marker_appears

from lakd.bench.cache import InRamCache, build_synthetic_cache
from lakd.distill.cache import CacheCorruptError, CacheMissError, TeacherCache

REPO = Path(__file__).resolve().parents[1]


def all_keys(cache):
    return [f"utt{i:03d}" for i in range(len(cache))]


def test_lookups_are_exactly_those_of_the_in_ram_reader(cached):
    _, teachers, out = cached
    mapped, in_ram = TeacherCache(out, teacher_dirs=teachers), InRamCache(out)
    assert len(mapped) == len(in_ram) == 12
    keys = list(np.random.default_rng(0).permutation(all_keys(mapped))) + ["utt003", "utt003"]  # repeats, too
    logits, embeds = mapped.lookup(keys)
    ref_logits, ref_embeds = in_ram.lookup(keys)
    assert logits.dtype == torch.float32 and torch.equal(logits, ref_logits)
    for a, b in zip(embeds, ref_embeds):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert mapped.lookup([])[0].shape == (2, 0, 4)
    assert "utt011" in mapped and "utt012" not in mapped and "utt01" not in mapped and "utt0111" not in mapped
    for absent in ("utt0111", "utt01", "zzz", ""):  # longer, shorter, after and before every key
        with pytest.raises(CacheMissError, match=rf"sample key '{absent}' has no cached knowledge of teacher 'en'"):
            mapped.lookup(["utt000", absent])
    assert isinstance(mapped._teachers[0].pooled, np.memmap)  # mapped, not loaded


@pytest.mark.parametrize("part", ["logits", "pooled", "keys", "rows"])
def test_a_corrupt_packed_file_is_named_and_a_rerun_repacks_it_without_recomputing(cached, part):
    shards, teachers, out = cached
    path = out / "fi" / f"packed-{part}.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the data, same size
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=rf"fi/packed-{part}\.npy: sha256 differs .*rerun `lakd cache`"):
        TeacherCache(out)
    with pytest.raises(CacheCorruptError, match=rf"fi/packed-{part}\.npy \(sha256 mismatch\)"):
        TeacherCache(out, verify=False).verify()
    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert ran == [] and TeacherCache(out).verify()["ok"]  # packed again from the shards, nothing recomputed
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-8]))  # truncated: found without hashing, and by the writer's resume check
    with pytest.raises(CacheCorruptError, match=rf"fi/packed-{part}\.npy has {len(data) - 8} bytes"):
        TeacherCache(out, verify=False)
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert ran == []
    assert_manifest_true(out)
    assert TeacherCache(out).verify() == {"shards": 6, "packed": 8, "ok": True}


def test_a_broken_npy_header_is_a_corrupt_cache_naming_the_file(cached):
    _, _, out = cached
    path = out / "en" / "packed-pooled.npy"
    data = bytearray(path.read_bytes())
    data[10:20] = b"!" * 10  # inside the header's dict literal
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=r"en/packed-pooled\.npy: unreadable packed cache file"):
        TeacherCache(out, verify=False)


def test_a_cache_of_an_older_lakd_is_packed_on_rerun_not_recomputed(cached):
    shards, teachers, out = cached
    before = InRamCache(out).lookup(all_keys(InRamCache(out)))
    manifest = json.loads((out / "manifest.json").read_text())
    for name, entry in manifest["teachers"].items():
        del entry["packed"]
        for p in (out / name).glob("packed-*.npy"):
            p.unlink()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheCorruptError, match=r"teacher 'en'.*not packed \(written by an older lakd\).*lakd cache"):
        TeacherCache(out)
    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert ran == []
    after = TeacherCache(out, teacher_dirs=teachers).lookup(all_keys(InRamCache(out)))
    assert torch.equal(after[0], before[0]) and all(torch.equal(a, b) for a, b in zip(after[1], before[1]))


_KILLED_WHILE_PACKING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lakd.config import DataConfig
    from lakd.distill import cache_pack
    from lakd.distill.cache_write import write_teacher_cache
    shards, t_en, t_fi, out, marker = sys.argv[1:6]
    commit = cache_pack._HashedTemp.commit
    def commit_then_hang(self, out_dir):  # fi's first packed file is in place, the others are temp files
        record = commit(self, out_dir)
        if self.final.parent.name == "fi":
            Path(marker).write_text(record["path"])
            time.sleep(120)
        return record
    cache_pack._HashedTemp.commit = commit_then_hang
    write_teacher_cache({"en": t_en, "fi": t_fi}, shards, out, ["anger", "happiness", "neutral", "sadness"],
                        ["en", "fi", "fr"], DataConfig(max_seconds=1.0, eval_batch_size=4, num_workers=0),
                        "cpu", batch_size=4, samples_per_shard=5)
    """
)


def test_a_writer_killed_while_packing_leaves_no_packed_file_claimed(tmp_path):
    shards = make_shards(tmp_path / "data")
    teachers = {"en": save_teacher(tmp_path / "t_en", 32, 0), "fi": save_teacher(tmp_path / "t_fi", 24, 1)}
    out, marker = tmp_path / "cache", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _KILLED_WHILE_PACKING, *shards_args(shards, teachers, out, marker)]
    kill_when_marker_appears(cmd, env, marker, "packed teacher fi")
    left = sorted(p.name for p in (out / "fi").iterdir())
    assert marker.read_text() == "fi/packed-keys.npy" and "packed-keys.npy" in left
    assert any(n.startswith(".packed-") and n.endswith(".tmp") for n in left)  # killed mid-pack: temp files
    manifest = assert_manifest_true(out)
    assert list(manifest["teachers"]) == ["en"]  # fi's packed files are on disk, but nothing claims them
    assert TeacherCache(out).lookup(["utt000"])[0].shape == (1, 1, 4)

    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert set(ran) == {"fi"}
    assert not [n for n in os.listdir(out / "fi") if n.startswith(".")]  # the dead job's temp files are gone
    assert_manifest_true(out)
    assert torch.equal(TeacherCache(out).lookup(["utt005"])[0], InRamCache(out).lookup(["utt005"])[0])


def shards_args(shards, teachers, out, marker):
    return [str(shards), teachers["en"], teachers["fi"], str(out), str(marker)]


_OPEN_AND_LOOK_UP = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from lakd.bench.cache import _status, reset_peak_rss
    from lakd.distill.cache import TeacherCache
    assert reset_peak_rss()  # the peak from here on, not importing torch's
    before = _status()
    cache = TeacherCache(sys.argv[1], verify=True)  # hashes every packed file, in chunks
    opened = _status()
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits, embeds = cache.lookup([f"utt{i:09d}" for i in rng.integers(0, len(cache), 64)])
    result = {"before": before, "opened": opened, "after": _status(), "n": len(cache), "h": embeds[0].shape[1]}
    print(json.dumps(result))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_a_child_opening_a_400_mb_cache_grows_by_far_less_than_its_size(tmp_path):
    n, hidden = 100_000, 1000
    build_synthetic_cache(tmp_path / "big", n, teachers=1, num_classes=4, hidden=hidden, shards=False)
    size_mb = sum(p.stat().st_size for p in (tmp_path / "big").glob("*/packed-*.npy")) / 2**20
    assert size_mb > 380
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_LOOK_UP, str(tmp_path / "big")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.splitlines()[-1])
    assert (r["n"], r["h"]) == (n, hidden)
    before, opened, after = r["before"], r["opened"], r["after"]
    # the peak since the reset after importing torch: opening and verifying every file (sha256 in chunks)
    assert opened["VmHWM"] - before["VmRSS"] < 150, f"opening a {size_mb:.0f} MiB cache: {opened} (before: {before})"
    # lookups map the file pages they touch (RssFile: page cache, shared by every process on the node, and
    # reclaimable); the process's own memory stays flat
    assert after["RssAnon"] - before["RssAnon"] < 150, f"50 lookups: {after} (before: {before})"


def test_teachers_with_the_same_keys_in_other_row_orders_each_give_their_own_rows(tmp_path):
    from lakd.distill.cache import FORMAT
    from lakd.distill.cache_pack import PackedWriter
    from lakd.io import atomic_write_json

    keys = [f"k{i:02d}" for i in range(20)]
    manifest = {"format": FORMAT, "labels": ["a", "b"], "languages": [], "teachers": {}, "order": ["x", "y"]}
    for t, seed in (("x", 1), ("y", 2)):  # the same keys, written in different orders
        perm = np.random.default_rng(seed).permutation(20)
        w = PackedWriter(tmp_path, t, 20, 2, 3)
        for i in perm:  # knowledge that says which teacher and which key it belongs to
            w.add(keys[i], np.array([seed, i], np.float32), np.full(3, 100 * seed + i, np.float32))
        entry = {"num_samples": 20, "hidden_size": 3, "shards": [], "complete": True, "packed": w.finish()}
        manifest["teachers"][t] = entry
    assert (
        manifest["teachers"]["x"]["packed"]["keys"]["sha256"] == manifest["teachers"]["y"]["packed"]["keys"]["sha256"]
    )
    assert (
        manifest["teachers"]["x"]["packed"]["rows"]["sha256"] != manifest["teachers"]["y"]["packed"]["rows"]["sha256"]
    )
    atomic_write_json(tmp_path / "manifest.json", manifest)
    logits, embeds = TeacherCache(tmp_path).lookup(["k07", "k00", "k19"])
    assert logits.tolist() == [[[1, 7], [1, 0], [1, 19]], [[2, 7], [2, 0], [2, 19]]]
    assert embeds[1][:, 0].tolist() == [207, 200, 219]
