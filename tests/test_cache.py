"""Teacher-knowledge cache on real tiny shards and real tiny teachers: round trip, errors, resume, corruption."""

import json

import pytest
import torch
from cache_fixtures import make_shards, save_teacher, write

from lakd.data.shards import iter_tar_samples
from lakd.distill.cache import (
    CacheCorruptError,
    CacheMismatchError,
    CacheMissError,
    TeacherCache,
    checkpoint_hash,
)
from lakd.models.ser import SERModel


@pytest.fixture
def setup(tmp_path):
    shards = make_shards(tmp_path / "data")
    teachers = {"en": save_teacher(tmp_path / "t_en", 32, 0), "fi": save_teacher(tmp_path / "t_fi", 24, 1)}
    return shards, teachers, tmp_path / "cache"


def test_round_trip_matches_running_the_teacher(setup):
    shards, teachers, out = setup
    manifest = write(shards, teachers, out)
    assert manifest["order"] == ["en", "fi"]
    assert [manifest["teachers"][t]["language"] for t in ("en", "fi")] == ["en", "fi"]
    assert [s["path"] for s in manifest["teachers"]["en"]["shards"]] == [
        "en/cache-000000.tar",
        "en/cache-000001.tar",
        "en/cache-000002.tar",
    ]
    cache = TeacherCache(out, teacher_dirs=teachers)
    assert len(cache) == 12 and cache.teacher_languages == ["en", "fi"] and cache.embed_dims == [32, 24]
    assert cache.verify() == {"shards": 6, "packed": 8, "ok": True}

    samples = [(k, m) for p in sorted(shards.glob("*.tar")) for k, m in iter_tar_samples(p)]
    keys = [samples[3][0], samples[0][0], samples[10][0]]
    logits, embeds = cache.lookup(keys)
    assert logits.shape == (2, 3, 4) and logits.dtype == torch.float32
    assert embeds[0].shape == (3, 32) and embeds[1].shape == (3, 24)

    import io

    import soundfile as sf

    for k_idx, name in enumerate(["en", "fi"]):
        model = SERModel.from_pretrained(teachers[name])
        for b, key in enumerate(keys):
            members = dict(samples)[key]
            audio, _ = sf.read(io.BytesIO(members["flac"]), dtype="float32")
            with torch.no_grad():
                out_alone = model(torch.from_numpy(audio)[None])
            assert torch.allclose(logits[k_idx, b], out_alone.logits[0], atol=1e-4)
            assert torch.allclose(embeds[k_idx][b], out_alone.pooled[0], atol=1e-4)


def test_missing_key_names_key_and_directory(setup):
    shards, teachers, out = setup
    write(shards, teachers, out)
    cache = TeacherCache(out)
    with pytest.raises(CacheMissError, match=r"'nope'.*'en'.*cache"):
        cache.lookup(["utt000", "nope"])


def test_changed_teacher_is_a_mismatch_and_only_it_is_recomputed(setup):
    shards, teachers, out = setup
    write(shards, teachers, out)
    old_hash = checkpoint_hash(teachers["fi"])
    save_teacher(teachers["fi"], 24, seed=7)  # "retrained" teacher in the same directory
    new_hash = checkpoint_hash(teachers["fi"])
    assert new_hash != old_hash
    with pytest.raises(CacheMismatchError, match=rf"'fi'.*{new_hash[:16]}.*{old_hash[:16]}"):
        TeacherCache(out, teacher_dirs=teachers)
    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert set(ran) == {"fi"}
    TeacherCache(out, teacher_dirs=teachers)  # consistent again


def test_resume_skips_completed_teacher_and_restarts_partial_one(setup):
    shards, teachers, out = setup

    def crash_in_fi(name, done, total):
        if name == "fi":
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        write(shards, teachers, out, progress=crash_in_fi)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["teachers"]) == ["en"]
    en_mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "en").iterdir()}

    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append((name, done, total)))
    assert {r[0] for r in ran} == {"fi"} and ran[-1][1:] == (12, 12)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "en").iterdir()} == en_mtimes
    assert sorted(p.name for p in (out / "fi").iterdir()) == [
        "cache-000000.tar",
        "cache-000001.tar",
        "cache-000002.tar",
        "packed-keys.npy",
        "packed-logits.npy",
        "packed-pooled.npy",
        "packed-rows.npy",
    ]
    TeacherCache(out, teacher_dirs=teachers).verify()

    ran.clear()
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name), resume=False)
    assert set(ran) == {"en", "fi"}


def test_corrupted_shard_is_detected(setup):
    shards, teachers, out = setup
    write(shards, teachers, out)
    cache = TeacherCache(out)
    shard = out / "fi" / "cache-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match=r"fi/cache-000001.tar \(sha256 mismatch\)"):
        cache.verify()
    # readers use only the packed files, which are intact: they open and give the right knowledge
    assert torch.equal(TeacherCache(out).lookup(["utt001"])[0], cache.lookup(["utt001"])[0])
