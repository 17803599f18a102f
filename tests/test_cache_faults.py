"""The teacher cache under real faults: a `lakd cache` process killed with SIGKILL mid-teacher, a corrupted
teacher checkpoint met mid-run, a deleted cache shard, a teacher that is not trained, a teacher whose outputs
are NaN, absurd audio. The manifest never claims what is not on disk; a rerun repairs what is missing."""

import json
import os
import shutil
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_fixtures import (
    assert_manifest_true,
    make_shards,
    save_teacher,
    write,
)
from kill_at_marker import kill_when_marker_appears

from lakd.data.shards import write_index
from lakd.distill.cache import CacheError, TeacherCache, checkpoint_hash
from lakd.models.ser import SERModel

REPO = Path(__file__).resolve().parents[1]


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lakd.config import DataConfig
    from lakd.distill.cache_write import write_teacher_cache
    shards, t_en, t_fi, out, marker = sys.argv[1:6]
    def progress(name, done, total):
        if name == "fi" and done >= 4:
            Path(marker).write_text(str(done))
            time.sleep(120)  # killed here, half-way through teacher fi
    write_teacher_cache({"en": t_en, "fi": t_fi}, shards, out, ["anger", "happiness", "neutral", "sadness"],
                        ["en", "fi", "fr"], DataConfig(max_seconds=1.0, eval_batch_size=4, num_workers=0),
                        "cpu", batch_size=4, samples_per_shard=5, progress=progress)
    """
)


def test_a_cache_job_killed_after_a_retrained_teacher_never_leaves_a_lying_manifest(cached, tmp_path):
    shards, teachers, out = cached
    v1 = tmp_path / "t_fi_v1"
    shutil.copytree(teachers["fi"], v1)
    save_teacher(teachers["fi"], 24, seed=7)  # fi retrained in place: its cache must be recomputed
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(shards), teachers["en"], teachers["fi"], str(out), str(marker)]
    kill_when_marker_appears([sys.executable, "-c", _CHILD, *args], env, marker, "reached teacher fi")
    manifest = assert_manifest_true(out)
    assert list(manifest["teachers"]) == ["en"]  # fi's old entry went before its files did

    shutil.rmtree(teachers["fi"])
    shutil.copytree(v1, teachers["fi"])  # back to the checkpoint the old cache was made with
    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert set(ran) == {"fi"}  # recomputed, not "up to date" with its files gone
    assert_manifest_true(out)
    TeacherCache(out, teacher_dirs=teachers)


def test_changed_data_then_a_corrupt_checkpoint_mid_run_keeps_the_manifest_true(cached, tmp_path):
    shards, teachers, out = cached
    old_shard = shards / "train-000001.tar"
    saved = old_shard.read_bytes()
    old_shard.unlink()  # the data changes: a shard is taken out, the directory re-indexed
    write_index(shards)
    weights = Path(teachers["fi"]) / "model.safetensors"
    good_weights = weights.read_bytes()
    weights.write_bytes(good_weights[:64] + np.random.default_rng(0).bytes(len(good_weights) - 64))
    ran = []
    with pytest.raises(CacheError, match="teacher 'fi': "):  # found once en was recomputed
        write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert "en" in ran and "fi" not in ran
    manifest = assert_manifest_true(out)
    assert list(manifest["teachers"]) == ["en"]
    assert not (out / "fi").exists()  # the stale files went after the manifest stopped listing them

    weights.write_bytes(good_weights)
    old_shard.write_bytes(saved)  # the data is as it was when the first cache was made
    write_index(shards)
    ran.clear()
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert set(ran) == {"en", "fi"}  # the data fingerprint changed back: both recomputed, none "up to date"
    assert_manifest_true(out)


def test_a_deleted_cache_shard_is_recomputed_not_up_to_date(cached):
    shards, teachers, out = cached
    (out / "en" / "cache-000001.tar").unlink()
    ran = []
    write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert set(ran) == {"en"}
    assert_manifest_true(out)


def test_a_teacher_that_is_not_trained_is_found_before_anything_is_computed(tmp_path):
    shards = make_shards(tmp_path / "data")
    write_index_langs = {"en", "fi", "fr"}
    assert write_index_langs == set(json.loads((shards / "index.json").read_text())["counts"])
    teachers = {
        "en": save_teacher(tmp_path / "t_en", 32, 0),
        "fi": save_teacher(tmp_path / "t_fi", 24, 1),
        "fr": str(tmp_path / "teachers" / "fr" / "best"),  # never trained
    }
    ran = []
    with pytest.raises(CacheError) as e:
        write(shards, teachers, tmp_path / "cache", progress=lambda name, done, total: ran.append(name))
    message = str(e.value)
    assert "teacher 'fr' of language 'fr' (4 samples of it in the data)" in message
    assert "teachers/fr/best" in message and "`lakd train teacher --language fr`" in message
    assert "Nothing was computed" in message
    assert ran == [] and not (tmp_path / "cache").exists()


def test_a_teacher_with_nan_outputs_is_refused_naming_a_key_and_nothing_is_cached(tmp_path):
    shards = make_shards(tmp_path / "data")
    broken = tmp_path / "t_nan"
    model = SERModel.from_pretrained(save_teacher(tmp_path / "t_en", 32, 0))
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    model.save_pretrained(broken, extra_meta={"kind": "ft-mono"})
    teachers = {"en": str(tmp_path / "t_en"), "fi": str(broken)}
    with pytest.raises(CacheError, match=r"teacher 'fi' gave non-finite logits or embedding for sample 'utt\d+'"):
        write(shards, teachers, tmp_path / "cache")
    manifest = assert_manifest_true(tmp_path / "cache")
    assert list(manifest["teachers"]) == ["en"] and not (tmp_path / "cache" / "fi").exists()
    assert checkpoint_hash(broken)  # a loadable checkpoint: only its outputs are bad


def test_absurd_audio_never_reaches_the_cache(tmp_path):
    import io

    import soundfile as sf

    shards = make_shards(tmp_path / "data")
    loud = (0.1 * np.ones(8000)).astype(np.float32)
    loud[::7] = 1e30
    buf = io.BytesIO()
    sf.write(buf, loud, 16_000, format="WAV", subtype="FLOAT")
    meta = {"emotion": "anger", "language": "en", "speaker": "s9", "corpus": "t", "split": "train", "duration": 0.5}
    with tarfile.open(shards / "train-000001.tar", "a") as tar:  # appended after indexing: a real stale shard
        for name, payload in (("loud.wav", buf.getvalue()), ("loud.json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    manifest = write(shards, {"en": save_teacher(tmp_path / "t_en", 32, 0)}, tmp_path / "cache")
    assert manifest["teachers"]["en"]["skips"]["counts"] == {"out_of_range": 1}
    cache = TeacherCache(tmp_path / "cache")
    assert "loud" not in cache and len(cache) == 12
    logits, embeds = cache.lookup([f"utt{i:03d}" for i in range(12)])
    assert torch.isfinite(logits).all() and torch.isfinite(embeds[0]).all()


def test_a_shard_missing_from_disk_stops_the_cache_before_anything_is_computed(cached):
    shards, teachers, out = cached
    before = (out / "manifest.json").read_bytes()
    (shards / "train-000001.tar").unlink()
    ran = []
    with pytest.raises(FileNotFoundError, match=r"train-000001\.tar: listed in .*index\.json \(6 samples\)"):
        write(shards, teachers, out, progress=lambda name, done, total: ran.append(name))
    assert ran == [] and (out / "manifest.json").read_bytes() == before
    assert_manifest_true(out)
