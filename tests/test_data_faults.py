"""Data faults injected for real (files deleted, absurd or lying audio, hostile JSON and headers): each is an
error naming the file, or a counted skip with a named reason, never a silent loss or a NaN downstream."""

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from raw_tar import write_tar
from typer.testing import CliRunner

from lakd.cli import app
from lakd.config import DataConfig
from lakd.data.audio import AudioDecodeError, decode_audio
from lakd.data.loader import build_loader
from lakd.data.shards import ShardWriter, encode_flac, write_index

LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en", "fi"]
CFG = DataConfig(max_seconds=1.0, batch_size=2, eval_batch_size=2, shuffle_buffer=4, bucket_buffer=4)


def _meta(lang="en", emotion="anger", **more):
    return {"emotion": emotion, "language": lang, "speaker": "s1", "corpus": "c", "split": "x", **more}


def _tone(n=3200, sr=16_000):
    return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 200 / sr)).astype(np.float32)


def _wav(x, sr=16_000):
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _with_header_rate(wav: bytes, rate: int) -> bytes:
    """The same WAV bytes with the fmt chunk's sample rate (and byte rate) rewritten: a lying header."""
    b = bytearray(wav)
    fmt = b.index(b"fmt ")
    channels, bits = struct.unpack_from("<H", b, fmt + 10)[0], struct.unpack_from("<H", b, fmt + 22)[0]
    struct.pack_into("<I", b, fmt + 12, rate)
    struct.pack_into("<I", b, fmt + 16, rate * channels * bits // 8)
    return bytes(b)


def _good(key, lang="en"):
    return [(f"{key}.flac", encode_flac(_tone(), 16_000)), (f"{key}.json", json.dumps(_meta(lang)).encode())]


def _shard_with(tmp_path, bad_members, name="mixed-000000.tar", n_good=4):
    members = [m for i in range(n_good) for m in _good(f"good{i}")] + bad_members
    write_tar(tmp_path / name, members)
    write_index(tmp_path)
    return tmp_path


def _eval_keys_and_skips(data, cfg=CFG):
    loader = build_loader(data, LABELS, LANGS, cfg=cfg, train=False)
    batches = list(loader)
    for b in batches:
        assert torch.isfinite(b["input_values"]).all() and b["input_values"].abs().max() <= 1.0
    return [k for b in batches for k in b["keys"]], loader.skips.as_dict()["counts"]


# ----------------------------------------------------------------------------- a shard gone from the disk


@pytest.fixture
def three_shards(tmp_path):
    with ShardWriter(tmp_path, "en", max_count=2) as w:
        for i in range(6):
            w.write(f"k{i}", _meta(), audio=_tone(), sample_rate=16_000)
    (tmp_path / "en-000001.tar").unlink()  # listed in index.json, gone from the disk
    return tmp_path


@pytest.mark.parametrize("train", [True, False])
def test_a_shard_listed_in_the_index_but_missing_is_an_error_naming_it(three_shards, train):
    with pytest.raises(
        FileNotFoundError, match=r"en-000001\.tar: listed in .*index\.json \(2 samples\) but not on disk"
    ):
        build_loader(three_shards, LABELS, LANGS, cfg=CFG, train=train)


def test_missing_shards_skip_is_counted_every_epoch_and_rides_on_the_first_batch(three_shards):
    cfg = replace(CFG, missing_shards="skip")
    loader = build_loader(three_shards, LABELS, LANGS, cfg=cfg, train=False)
    for _ in range(2):
        batches = list(loader)
        assert sorted(k for b in batches for k in b["keys"]) == ["k0", "k1", "k4", "k5"]
        assert batches[0]["skipped"] == {"missing_shard": 2}
        assert loader.last_epoch_skips.as_dict()["examples"]["missing_shard"][0].endswith("en-000001.tar")
    assert loader.skips.counts == {"missing_shard": 4}


def test_inspect_fails_on_a_missing_shard(three_shards):
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["shards", "inspect", str(three_shards)])
    assert res.exit_code == 1
    assert "FAILED missing" in res.output and "en-000001.tar: listed in index.json (2 samples) but not on disk" in (
        res.output
    )


def test_training_on_a_shard_missing_from_disk_fails_in_one_line_naming_it(tmp_path):
    """A real `lakd train teacher` whose training shards lost one: one line naming it, exit 1 (it was this message
    at the end of a 200-line traceback; every training command shares the CLI's `one_line_errors`)."""
    from tiny_run import tiny_run

    config = tiny_run(tmp_path)
    train = tmp_path / "data" / "train"
    shutil.rmtree(train)
    with ShardWriter(train, "en", max_count=4) as w:
        for i in range(8):
            w.write(f"k{i}", _meta(emotion=LABELS[i % 4]), audio=_tone(), sample_rate=16_000)
    (train / "en-000001.tar").unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "lakd.cli", "train", "teacher", "--language", "en", "-c", str(config)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert (
        f"error: {train / 'en-000001.tar'}: listed in {train / 'index.json'} (4 samples) but not on disk; restore it"
        in " ".join(r.stderr.split())
    )


# ----------------------------------------------------------------------------- finite but absurd audio


def test_absurd_audio_is_skipped_as_out_of_range(tmp_path, caplog):
    loud = _tone()
    loud[100:200] = 1e30
    data = _shard_with(tmp_path, [("loud.wav", _wav(loud)), ("loud.json", json.dumps(_meta()).encode())])
    caplog.set_level(logging.WARNING, logger="lakd.data")
    keys, counts = _eval_keys_and_skips(data)
    assert sorted(keys) == [f"good{i}" for i in range(4)] and counts == {"out_of_range": 1}
    assert "skipped out_of_range: " in caplog.text and "mixed-000000.tar:loud" in caplog.text and "1e+30" in caplog.text
    train = build_loader(data, LABELS, LANGS, cfg=replace(CFG, epoch_samples=8), train=True)
    assert all(torch.isfinite(b["input_values"]).all() for b in train)
    assert train.skips.counts["out_of_range"] == 1
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["shards", "inspect", str(data), "--decode"])
    assert res.exit_code == 1 and "loud: out_of_range: 3200 frames at 16000 Hz, peak 1e+30" in res.output


def test_evaluation_never_scores_nan_and_counts_it_by_key(tmp_path, caplog):
    from lakd.config import ModelConfig
    from lakd.models.ser import SERModel
    from lakd.recipes.evaluate import evaluate_model, predict_shards

    loud = _tone()
    loud[5] = -3e29
    data = _shard_with(tmp_path, [("loud.wav", _wav(loud)), ("loud.json", json.dumps(_meta()).encode())])
    backbone = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    model = SERModel(ModelConfig(backbone=backbone), LABELS, LANGS).eval()
    pred = predict_shards(model, data, LABELS, LANGS, CFG, "cpu")
    assert len(pred["keys"]) == 4 and np.isfinite(pred["probs"]).all()
    assert pred["skipped"]["counts"] == {"out_of_range": 1}
    evaluate_model(model, data, LABELS, LANGS, CFG, "cpu", tmp_path / "report", n_bootstrap=0)
    assert "**1 sample(s) skipped and not scored** (out_of_range 1)" in (tmp_path / "report" / "report.md").read_text()

    with torch.no_grad():  # a model whose outputs are NaN: every sample is a counted skip, none is class 0
        model.head.bias.fill_(float("nan"))
    caplog.set_level(logging.WARNING, logger="lakd.data")
    pred = predict_shards(model, data, LABELS, LANGS, CFG, "cpu")
    assert pred["keys"] == [] and pred["y_pred"] == [] and pred["probs"].shape == (0, 4)
    assert pred["skipped"]["counts"] == {"nonfinite_output": 4, "out_of_range": 1}
    assert "skipped nonfinite_output: model output:good0" in caplog.text


# ----------------------------------------------------------------------------- hostile metadata


def test_deeply_nested_json_is_a_counted_skip_and_shards_index_names_the_shard(tmp_path, caplog):
    deep = b"[" * 100_000 + b"]" * 100_000
    members = [m for i in range(4) for m in _good(f"good{i}")] + [("deep.flac", encode_flac(_tone(), 16_000))]
    write_tar(tmp_path / "deep-000000.tar", members + [("deep.json", deep)])
    caplog.set_level(logging.WARNING, logger="lakd.data")
    keys, counts = _eval_keys_and_skips(tmp_path)
    assert len(keys) == 4 and counts == {"bad_metadata": 1}
    assert "skipped bad_metadata: " in caplog.text and "deep-000000.tar:deep (JSON nested too deeply)" in caplog.text
    train = build_loader(tmp_path, LABELS, LANGS, cfg=replace(CFG, epoch_samples=8, num_workers=2), train=True)
    assert len(list(train)) == 4 and train.skips.counts["bad_metadata"] >= 1

    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["shards", "index", str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "deep-000000.tar: sample 'deep' has bad metadata (JSON nested too deeply)" in res.output
    assert not (tmp_path / "index.json").exists()


# ----------------------------------------------------------------------------- lying headers, endless audio


@pytest.mark.parametrize("rate", [1, 3_999, 192_001])
def test_a_sample_rate_outside_the_bounds_is_refused_before_resampling(tmp_path, rate):
    liar = _with_header_rate(_wav(_tone(2000)), rate)
    assert len(liar) < 9000  # at 1 Hz this would have become 32 M samples at 16 kHz
    with pytest.raises(AudioDecodeError, match=rf"x.tar:liar: sample rate {rate} Hz is outside 4000..192000 Hz") as e:
        decode_audio(liar, "wav", "x.tar:liar")
    assert e.value.reason == "bad_sample_rate"
    data = _shard_with(tmp_path, [("liar.wav", liar), ("liar.json", json.dumps(_meta()).encode())])
    keys, counts = _eval_keys_and_skips(data)
    assert len(keys) == 4 and counts == {"bad_sample_rate": 1}


def test_audio_longer_than_max_decoded_seconds_is_skipped_undecoded(tmp_path):
    long = [("long.flac", encode_flac(_tone(16_000 * 3), 16_000)), ("long.json", json.dumps(_meta()).encode())]
    data = _shard_with(tmp_path, long)
    keys, counts = _eval_keys_and_skips(data, replace(CFG, max_decoded_seconds=2.0))
    assert len(keys) == 4 and counts == {"too_long": 1}
    with pytest.raises(AudioDecodeError, match="3.0 s of audio, more than data.max_decoded_seconds=2"):
        decode_audio(long[0][1], "flac", "x.tar:long", max_seconds=2.0)
    keys, counts = _eval_keys_and_skips(data)  # the default (600 s) keeps it
    assert len(keys) == 5 and counts == {}


# ----------------------------------------------------------------------------- inspect --decode


def test_inspect_decode_names_each_bad_sample_and_exits_1(tmp_path):
    bad = [
        ("noise.flac", np.random.default_rng(0).bytes(3000)),
        ("noise.json", json.dumps(_meta(duration=0.2)).encode()),
        ("empty.wav", _wav(np.zeros(0))),
        ("empty.json", json.dumps(_meta(duration=0.0)).encode()),
        ("liar.flac", encode_flac(_tone(3200), 16_000)),
        ("liar.json", json.dumps(_meta(duration=3.0)).encode()),
    ]
    data = _shard_with(tmp_path, bad)
    runner = CliRunner(env={"COLUMNS": "300"})
    trusting = runner.invoke(app, ["shards", "inspect", str(data)])
    assert trusting.exit_code == 0  # without --decode the JSON durations are believed
    res = runner.invoke(app, ["shards", "inspect", str(data), "--decode"])
    assert res.exit_code == 1, res.output
    out = res.output
    assert "3 bad sample(s)" in out
    assert "mixed-000000.tar:noise: undecodable_audio: cannot decode .flac audio" in out
    assert "mixed-000000.tar:empty: empty_audio: 0 frames at 16000 Hz" in out
    assert "mixed-000000.tar:liar: duration_mismatch: JSON says 3.000 s, the audio is 0.200 s" in out
    assert "good" not in out.split("bad sample(s)")[1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.missing_shards=drop", "data.missing_shards must be one of error, skip, got 'drop'"),
        ("data.max_decoded_seconds=0", "data.max_decoded_seconds must be a number > 0"),
    ],
)
def test_the_data_fault_settings_are_checked_at_config_load(override, message):
    from lakd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])
