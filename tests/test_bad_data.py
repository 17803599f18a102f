"""Bad data never crashes an epoch: every kind is skipped, counted by reason and logged with shard and key;
with data.strict it raises BadSampleError naming them instead."""

import io
import json
import logging
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from raw_tar import write_tar

from lakd.config import DataConfig
from lakd.data.loader import build_loader
from lakd.data.shards import ShardWriter, encode_flac
from lakd.data.skips import BadSampleError, SkipCounter

LABELS = ["anger", "happiness", "neutral", "sadness"]
LANGS = ["en", "fi"]
CFG = DataConfig(max_seconds=1.0, batch_size=4, eval_batch_size=4, shuffle_buffer=8, bucket_buffer=8)


def _meta(key, lang="en", emotion="anger"):
    return json.dumps({"emotion": emotion, "language": lang, "speaker": "s1", "corpus": "c", "split": "x"}).encode()


def _wav(x, sr=16_000, subtype="FLOAT"):
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _tone(n=3200, sr=16_000):
    return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 200 / sr)).astype(np.float32)


BAD = {  # key -> (members, reason)
    "undecodable": ([("undecodable.flac", b"\x00garbage" * 50), ("undecodable.json", _meta(0))], "undecodable_audio"),
    "empty": ([("empty.wav", _wav(np.zeros(0))), ("empty.json", _meta(0))], "empty_audio"),
    "nan": (
        [("nan.wav", _wav(np.where(np.arange(3200) == 7, np.nan, _tone()))), ("nan.json", _meta(0))],
        "nonfinite_audio",
    ),
    "inf": (
        [("inf.wav", _wav(np.where(np.arange(3200) == 9, np.inf, _tone()))), ("inf.json", _meta(0))],
        "nonfinite_audio",
    ),
    "zeros": ([("zeros.flac", encode_flac(np.zeros(3200), 16_000)), ("zeros.json", _meta(0))], "silent_audio"),
    "tiny": ([("tiny.flac", encode_flac(_tone(40), 16_000)), ("tiny.json", _meta(0))], "too_short"),
    "nojson": ([("nojson.flac", encode_flac(_tone(), 16_000))], "missing_json"),
    "badjson": ([("badjson.flac", encode_flac(_tone(), 16_000)), ("badjson.json", b"{oops")], "invalid_json"),
    "listjson": ([("listjson.flac", encode_flac(_tone(), 16_000)), ("listjson.json", b"[1, 2]")], "invalid_json"),
    "nolang": (
        [("nolang.flac", encode_flac(_tone(), 16_000)), ("nolang.json", b'{"emotion": "anger"}')],
        "missing_field",
    ),
    "badlabel": (
        [("badlabel.flac", encode_flac(_tone(), 16_000)), ("badlabel.json", _meta(0, emotion="boredom"))],
        "unknown_label",
    ),
    "badlang": (
        [("badlang.flac", encode_flac(_tone(), 16_000)), ("badlang.json", _meta(0, lang="de"))],
        "unknown_language",
    ),
    "noaudio": ([("noaudio.json", _meta(0))], "missing_audio"),
}
EXPECTED = {
    "undecodable_audio": 1,
    "empty_audio": 1,
    "nonfinite_audio": 2,
    "silent_audio": 1,
    "too_short": 1,
    "missing_json": 1,
    "invalid_json": 2,
    "missing_field": 1,
    "unknown_label": 1,
    "unknown_language": 1,
    "missing_audio": 1,
}


@pytest.fixture
def bad_corpus(tmp_path):
    """bad-000000.tar: every bad kind between good samples (no index); good-*.tar: clean, one cut off mid-member."""
    members, good = [], []
    for i, (_key, (ms, _)) in enumerate(BAD.items()):
        gk = f"good{i:02d}"
        members += [
            (f"{gk}.flac", encode_flac(_tone(4000 + 100 * i), 16_000)),
            (f"{gk}.json", _meta(gk, ["en", "fi"][i % 2])),
        ]
        good.append(gk)
        members += ms
    write_tar(tmp_path / "bad-000000.tar", members)
    with ShardWriter(tmp_path, "good", max_count=4, write_index=False) as w:
        for i in range(8):
            w.write(f"clean{i}", json.loads(_meta(0, "fi")), audio=_tone(), sample_rate=16_000)
    corrupt = tmp_path / "good-000001.tar"  # cut in the middle of the 3rd sample's audio
    with tarfile.open(corrupt) as tar:
        third = [m for m in tar.getmembers() if m.name == "clean6.flac"][0]
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: third.offset_data + third.size // 2])
    return tmp_path, good + [f"clean{i}" for i in range(4)]


def test_every_bad_kind_is_skipped_counted_and_logged(bad_corpus, caplog):
    data, good = bad_corpus
    caplog.set_level(logging.WARNING, logger="lakd.data")
    loader = build_loader(data, LABELS, LANGS, cfg=CFG, train=False)
    keys = [k for b in loader for k in b["keys"]]
    assert set(good) <= set(keys) <= set(good) | {"clean4", "clean5"}  # clean4 and 5 precede the cut
    assert len(keys) == len(set(keys))
    counts = loader.skips.as_dict()["counts"]
    assert {k: v for k, v in counts.items() if k != "corrupt_shard"} == EXPECTED
    assert counts["corrupt_shard"] == 1
    text = caplog.text
    for key, (_, reason) in BAD.items():
        assert f"bad-000000.tar:{key}" in text and reason in text
    assert "good-000001.tar" in text and "corrupt_shard" in text
    assert "eval pass, rank 0" in text and f"{sum(EXPECTED.values()) + 1} skipped" in text  # end-of-epoch summary
    assert loader.last_epoch_skips.total == loader.skips.total


def test_skip_counts_from_workers_are_merged(bad_corpus):
    data, _ = bad_corpus
    single = build_loader(data, LABELS, LANGS, cfg=CFG, train=False)
    list(single)
    multi = build_loader(data, LABELS, LANGS, cfg=replace(CFG, num_workers=2), train=False)
    list(multi)
    assert multi.skips.as_dict()["counts"] == single.skips.as_dict()["counts"]


def test_training_goes_on_through_bad_data(bad_corpus):
    data, good = bad_corpus
    skips = SkipCounter()
    loader = build_loader(
        data, LABELS, LANGS, cfg=replace(CFG, epoch_samples=40, num_workers=2), train=True, skips=skips
    )
    batches = list(loader)
    assert len(batches) == len(loader) == 10
    assert {k for b in batches for k in b["keys"]} <= set(good) | {"clean4", "clean5"}
    assert skips is loader.skips and skips.counts["nonfinite_audio"] >= 2 and skips.counts["unknown_label"] >= 1
    assert "skipped" in skips.summary()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_strict_raises_naming_shard_key_and_reason(bad_corpus, num_workers):
    data, _ = bad_corpus
    loader = build_loader(data, LABELS, LANGS, cfg=replace(CFG, strict=True, num_workers=num_workers), train=False)
    with pytest.raises(
        BadSampleError,
        match=r"bad-000000\.tar:undecodable.*undecodable_audio|"
        r"undecodable_audio: .*bad-000000\.tar:undecodable",
    ):
        list(loader)


def test_shard_shorter_than_its_index_is_counted(tmp_path):
    with ShardWriter(tmp_path, "en", max_count=6) as w:
        for i in range(6):
            w.write(f"k{i}", json.loads(_meta(0)), audio=_tone(), sample_rate=16_000)
    shard = tmp_path / "en-000000.tar"
    with tarfile.open(shard) as tar:
        fourth = [m for m in tar.getmembers() if m.name == "k3.flac"][0]
    with open(shard, "r+b") as f:  # cut exactly at a member boundary: tar readers see a clean end
        f.truncate(fourth.offset)
    loader = build_loader(tmp_path, LABELS, LANGS, cfg=CFG, train=False)
    assert [k for b in loader for k in b["keys"]] == ["k0", "k1", "k2"]
    assert loader.skips.counts["truncated_shard"] == 3


def test_shards_of_unknown_languages_are_counted_without_reading(tmp_path):
    with ShardWriter(tmp_path, "de", max_count=10, write_index=False) as w:
        for i in range(5):
            w.write(f"de{i}", json.loads(_meta(0, "de")), audio=_tone(), sample_rate=16_000)
    with ShardWriter(tmp_path, "en", max_count=10) as w:
        for i in range(3):
            w.write(f"en{i}", json.loads(_meta(0, "en")), audio=_tone(), sample_rate=16_000)
    (tmp_path / "de-000000.tar").write_bytes(b"x" * 10240)  # after indexing: reading it would be a corrupt_shard
    loader = build_loader(tmp_path, LABELS, LANGS, cfg=CFG, train=False)
    assert sorted(k for b in loader for k in b["keys"]) == ["en0", "en1", "en2"]
    assert loader.skips.as_dict()["counts"] == {"unknown_language": 5}


def test_a_language_with_only_bad_audio_is_dropped_from_the_training_mix(tmp_path, caplog):
    with ShardWriter(tmp_path, "en", max_count=10, write_index=False) as w:
        for i in range(6):
            w.write(f"en{i}", json.loads(_meta(0, "en")), audio=_tone(), sample_rate=16_000)
    with ShardWriter(tmp_path, "fi", max_count=10) as w:
        for i in range(6):
            w.write(f"fi{i}", json.loads(_meta(0, "fi")), audio=np.zeros(3200), sample_rate=16_000)
    caplog.set_level(logging.ERROR, logger="lakd.data")
    loader = build_loader(tmp_path, LABELS, LANGS, cfg=replace(CFG, epoch_samples=200, language_alpha=0.0), train=True)
    langs = [l for b in loader for l in b["languages"]]
    assert len(langs) == 200 and set(langs) == {"en"}
    assert loader.skips.counts["silent_audio"] == 6 and "dropping it from the mix" in caplog.text


def test_all_bad_training_data_fails_clearly(tmp_path):
    with ShardWriter(tmp_path, "fi", max_count=10) as w:
        for i in range(4):
            w.write(f"fi{i}", json.loads(_meta(0, "fi")), audio=np.zeros(3200), sample_rate=16_000)
    loader = build_loader(tmp_path, LABELS, LANGS, cfg=replace(CFG, epoch_samples=8), train=True)
    with pytest.raises(RuntimeError, match="no usable training samples.*silent_audio"):
        list(loader)
