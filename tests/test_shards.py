"""Shard format: writing and reading back, index.json, data specs, and `inspect_shards` (incl. EmoSynth-3)."""

import io
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from lakd.data.index import ShardIndex, read_index, shard_entry
from lakd.data.inspect import inspect_shards, print_inspection
from lakd.data.shards import (
    SampleError,
    ShardFormatError,
    ShardWriter,
    encode_flac,
    expand_urls,
    iter_tar_samples,
    parse_sample,
    write_index,
)
from lakd.io import sha256_file


def _meta(lang="en", emotion="anger", speaker="en_spk01"):
    return {"emotion": emotion, "language": lang, "speaker": speaker, "corpus": "unit", "split": "train"}


def _tone(seconds, sr, channels=1, f0=220.0):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.4 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def test_round_trip_keeps_audio_and_metadata(tmp_path):
    audio = _tone(0.5, 22_050, channels=2)
    with ShardWriter(tmp_path, "en", max_count=10) as w:
        w.write("utt_a", _meta(), audio=audio, sample_rate=22_050)
        w.write("utt_b", _meta(emotion="sadness"), audio=_tone(0.3, 16_000), sample_rate=16_000)
    [(key_a, a), (key_b, b)] = list(iter_tar_samples(tmp_path / "en-000000.tar"))
    assert (key_a, key_b) == ("utt_a", "utt_b")
    meta = json.loads(a["json"])
    assert (
        meta["emotion"] == "anger"
        and meta["sample_rate"] == 22_050
        and meta["duration"] == pytest.approx(0.5, abs=1e-3)
    )
    decoded, sr = sf.read(io.BytesIO(a["flac"]), dtype="float32", always_2d=True)
    assert sr == 22_050 and decoded.shape == audio.shape
    assert np.abs(decoded - audio).max() < 1e-3  # 16-bit FLAC
    assert json.loads(b["json"])["emotion"] == "sadness"


def test_writer_splits_shards_and_indexes_them(tmp_path):
    with ShardWriter(tmp_path, "fi", max_count=3) as w:
        for i in range(7):
            w.write(f"k{i}", _meta("fi", ["anger", "neutral"][i % 2]), audio=_tone(0.2, 16_000), sample_rate=16_000)
    shards = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert shards == ["fi-000000.tar", "fi-000001.tar", "fi-000002.tar"]
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"
    index = read_index(tmp_path)
    assert index["num_samples"] == 7 and index["counts"] == {"fi": {"anger": 4, "neutral": 3}}
    assert [s["num_samples"] for s in index["shards"]] == [3, 3, 1]
    assert index["shards"][0]["sha256"] == sha256_file(tmp_path / "fi-000000.tar")
    assert index["duration_s"] == pytest.approx(1.4, abs=0.01)


def test_writer_is_byte_reproducible(tmp_path):
    for d in ("a", "b"):
        with ShardWriter(tmp_path / d, "en") as w:
            w.write("x1", _meta(), audio=_tone(0.2, 16_000), sample_rate=16_000)
    assert sha256_file(tmp_path / "a" / "en-000000.tar") == sha256_file(tmp_path / "b" / "en-000000.tar")


@pytest.mark.parametrize("key", ["has.dot", "", "sp ace", "slash/x"])
def test_writer_rejects_bad_keys(tmp_path, key):
    with pytest.raises(ShardFormatError, match="key"):
        with ShardWriter(tmp_path, "en") as w:
            w.write(key, _meta(), audio=_tone(0.1, 16_000))


def test_writer_rejects_duplicates_and_missing_fields_and_leaves_no_partial_shard(tmp_path):
    with pytest.raises(ShardFormatError, match="duplicate"):
        with ShardWriter(tmp_path, "en") as w:
            w.write("same", _meta(), audio=_tone(0.1, 16_000))
            w.write("same", _meta(), audio=_tone(0.1, 16_000))
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ShardFormatError, match="speaker"):
        with ShardWriter(tmp_path, "en") as w:
            w.write(
                "k", {"emotion": "anger", "language": "en", "corpus": "c", "split": "train"}, audio=_tone(0.1, 16_000)
            )


@pytest.fixture
def three_shards(tmp_path):
    with ShardWriter(tmp_path / "d", "en", max_count=1) as w:
        for i in range(3):
            w.write(f"k{i}", _meta(), audio=_tone(0.1, 16_000))
    return tmp_path / "d"


def test_expand_urls_accepts_dirs_patterns_lists_and_commas(three_shards):
    d = three_shards
    names = [str(d / f"en-00000{i}.tar") for i in range(3)]
    assert expand_urls(d) == names
    assert expand_urls(str(d / "en-{000000..000002}.tar")) == names
    assert expand_urls(str(d / "en-*.tar")) == names
    assert expand_urls([names[2], names[0]]) == [names[2], names[0]]
    assert expand_urls(f"{names[0]},{names[1]}") == names[:2]
    assert expand_urls(names[1]) == [names[1]]


def test_expand_urls_names_what_is_missing(three_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="en-000007.tar"):
        expand_urls(str(three_shards / "en-{000000..000007}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        expand_urls(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="matched no shards"):
        expand_urls(str(three_shards / "xx-*.tar"))


def test_inspect_counts_speakers_and_durations(tmp_path):
    with ShardWriter(tmp_path, "mix", max_count=4) as w:
        for i in range(6):
            lang = "en" if i < 4 else "fr"
            w.write(
                f"s{i}",
                _meta(lang, ["anger", "sadness"][i % 2], f"{lang}_spk{i % 2}"),
                audio=_tone(0.25, 44_100, channels=2),
                sample_rate=44_100,
            )
    report = inspect_shards(tmp_path)
    assert report["num_shards"] == 2 and report["num_samples"] == 6
    assert report["counts"] == {"en": {"anger": 2, "sadness": 2}, "fr": {"anger": 1, "sadness": 1}}
    assert report["num_speakers"] == {"en": 2, "fr": 2}
    assert report["labels"] == {"anger": 3, "sadness": 3} and report["label_fractions"]["anger"] == 0.5
    assert report["durations_s"]["en"]["anger"] == pytest.approx(0.5, abs=0.01)
    assert report["checksums"]["ok"] == 2 and report["checksum_failures"] == []


def test_inspect_reports_missing_index_and_unindexed_shard(tmp_path, three_shards):
    os.unlink(three_shards / "index.json")
    report = inspect_shards(three_shards)
    assert report["checksums"]["missing index"] == 3 and report["checksum_failures"] == []
    write_index(three_shards)
    shutil.copy(three_shards / "en-000000.tar", three_shards / "en-000009.tar")
    report = inspect_shards(three_shards)
    [failure] = report["checksum_failures"]
    assert failure["status"] == "not in index" and "en-000009.tar" in failure["path"]
    assert inspect_shards(three_shards, verify=False)["checksums"]["not verified"] == 4


def test_inspect_reports_truncated_shard_and_bad_samples(tmp_path):
    with ShardWriter(tmp_path, "en", max_count=50) as w:
        for i in range(10):
            w.write(f"s{i}", _meta(), audio=_tone(0.3, 16_000))
    shard = tmp_path / "en-000000.tar"
    with tarfile.open(shard, "a") as tar:  # a sample whose JSON is broken
        info = tarfile.TarInfo("broken.json")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"{oops"))
    report = inspect_shards(tmp_path)
    assert any("broken" in p and "invalid JSON" in p for p in report["problems"])
    assert report["checksum_failures"][0]["status"] == "mismatch"  # appended after indexing
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    report = inspect_shards(tmp_path)
    assert any(f["status"] == "unreadable" and "en-000000.tar" in f["detail"] for f in report["checksum_failures"])
    assert 0 < report["num_samples"] < 10


def test_inspect_emosynth3_train(emosynth3):
    report = inspect_shards(emosynth3 / "train")
    index = json.loads((emosynth3 / "train" / "index.json").read_text())
    assert report["num_samples"] == index["num_samples"] and report["num_shards"] == len(index["shards"])
    assert report["counts"] == index["counts"]
    assert report["num_speakers"] == {lang: len(s) for lang, s in index["speakers"].items()}
    assert report["duration_s"] == pytest.approx(index["duration_s"], abs=1.0)
    assert report["checksums"]["ok"] == len(index["shards"]) and report["checksum_failures"] == []
    console = Console(record=True, width=120)
    print_inspection(report, console)
    text = console.export_text()
    assert "fi" in text and "sadness" in text and "ok 9" in text


def test_inspect_detects_tampered_emosynth3_copy(emosynth3, tmp_path):
    src = emosynth3 / "dev"
    copy = tmp_path / "dev"
    shutil.copytree(src, copy)
    os.chmod(copy, 0o755)
    target = copy / "fi-000000.tar"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    target.write_bytes(bytes(data))
    report = inspect_shards(copy)
    [failure] = report["checksum_failures"]
    assert failure["status"] == "mismatch" and "fi-000000.tar" in failure["path"]
    assert report["checksums"]["ok"] == 2
    console = Console(record=True, width=120)
    print_inspection(report, console)
    assert "FAILED" in console.export_text()


def test_shard_index_reads_counts_checksums_and_languages_and_sees_rewrites(tmp_path):
    with ShardWriter(tmp_path, "mix", max_count=2) as w:
        for i, (lang, emo) in enumerate([("en", "anger"), ("en", "sadness"), ("fr", "anger")]):
            w.write(f"k{i}", _meta(lang, emo, f"{lang}_spk1"), audio=_tone(0.1, 16_000))
    index = ShardIndex.load(tmp_path)
    assert ShardIndex.load(tmp_path) is index  # parsed once while the file is unchanged
    assert index.counts == {"en": {"anger": 1, "sadness": 1}, "fr": {"anger": 1}}
    assert index.languages == ["en", "fr"] and index.labels == ["anger", "sadness"] and index.num_samples == 3
    assert index.speakers == ["en_spk1", "fr_spk1"]
    first = index.entry(str(tmp_path / "mix-000000.tar"))
    assert first.num_samples == 2 and first.languages == {"en": 2}
    assert first.sha256 == sha256_file(tmp_path / "mix-000000.tar")
    assert shard_entry(tmp_path / "mix-000001.tar").languages == {"fr": 1}
    assert shard_entry(tmp_path / "other.tar") is None and ShardIndex.load(tmp_path / "nowhere") is None
    # rewritten at once with other content of the same size: never served stale
    data, size = read_index(tmp_path), (tmp_path / "index.json").stat().st_size
    data["shards"][0]["sha256"] = "f" * 64
    (tmp_path / "index.json").write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    assert (tmp_path / "index.json").stat().st_size == size
    assert shard_entry(tmp_path / "mix-000000.tar").sha256 == "f" * 64
    (tmp_path / "index.json").write_text("{broken")
    with pytest.raises(ShardFormatError, match="invalid JSON"):
        ShardIndex.load(tmp_path)


def test_shard_index_flattens_per_language_speakers(tmp_path):
    (tmp_path / "index.json").write_text(
        json.dumps({"speakers": {"en": ["en_b", "en_a"], "fi": ["fi_a"]}, "shards": [{"path": "x.tar"}]})
    )
    index = ShardIndex.load(tmp_path)
    assert index.speakers == ["en_a", "en_b", "fi_a"]
    assert index.entry("x.tar").languages is None and index.entry("x.tar").num_samples is None


@pytest.mark.parametrize(
    ("members", "reason", "problem"),
    [
        ({"flac": b"x"}, "missing_json", "no .json member"),
        ({"json": b"{oops", "flac": b"x"}, "invalid_json", "invalid JSON metadata"),
        ({"json": b"[1]", "flac": b"x"}, "invalid_json", "expected an object, got list"),
        ({"json": b'{"emotion": "anger"}', "flac": b"x"}, "missing_field", "lacks ['language']"),
        ({"json": b'{"emotion": "anger", "language": "en"}', "txt": b"x"}, "missing_audio", "no .flac or .wav"),
    ],
)
def test_parse_sample_names_each_problem(members, reason, problem):
    with pytest.raises(SampleError, match=re.escape(problem)) as info:
        parse_sample("k", members, required=("emotion", "language"))
    assert info.value.reason == reason


def test_parse_sample_reads_metadata_audio_and_duration():
    flac = encode_flac(_tone(0.5, 16_000), 16_000)
    s = parse_sample("k", {"json": b'{"emotion": "anger", "language": "en"}', "flac": flac, "__url__": "x"})
    assert (s.audio_ext, s.audio, s.members) == ("flac", flac, ("flac", "json"))
    assert s.duration() == pytest.approx(0.5, abs=1e-3)
    late = parse_sample("k", {"json": b'{"duration": 2.5}'}, require_audio=False)
    assert late.audio_ext is None and late.duration() == 2.5
    with pytest.raises(SampleError, match="no .flac or .wav"):
        late.require_audio()
