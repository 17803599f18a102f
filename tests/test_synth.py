"""Synthetic emotional speech: real espeak-ng synthesis, determinism, splits and prosody by class."""

import ctypes.util
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lakd.data.index import read_index
from lakd.data.shards import iter_tar_samples
from lakd.data.splits import check_shard_dirs
from lakd.data.synth import (
    EspeakNotFoundError,
    UnknownLanguageError,
    check_languages,
    estimate_f0,
    load_sentences,
    open_engine,
    prosody_features,
    resample,
    synthesize_corpus,
)
from lakd.io import sha256_file

HAVE_ESPEAK = bool(shutil.which("espeak-ng") or ctypes.util.find_library("espeak-ng"))
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
LABELS = ["anger", "happiness", "neutral", "sadness"]


def read_samples(directory: Path):
    for tar in sorted(directory.glob("*.tar")):
        for key, members in iter_tar_samples(tar):
            yield key, json.loads(members["json"]), members["flac"]


def shard_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.glob("*/*.tar"))}


@needs_espeak
def test_corpus_is_deterministic_speaker_independent_and_well_formed(tmp_path):
    kw = dict(languages=("en", "fi"), speakers_per_language=3, utterances_per_speaker=8, seed=7, shard_size=5)
    calls = []
    a = synthesize_corpus(tmp_path / "a", progress=lambda done, total: calls.append((done, total)), **kw)
    synthesize_corpus(tmp_path / "b", workers=1, **kw)
    ha, hb = shard_hashes(tmp_path / "a"), shard_hashes(tmp_path / "b")
    assert ha and ha == hb  # same seed -> same bytes, whatever the worker count
    assert calls[-1] == (48, 48) and len(calls) == 48
    assert a["num_samples"] == 48 and set(a["splits"]) == {"train", "dev", "test"}
    assert {p.split("/")[1].rsplit("-", 1)[0] for p in ha} == {"en", "fi"}
    assert "train/en-000001.tar" in ha  # shard_size=5 -> 8 train utterances per language use 2 shards

    speakers = check_shard_dirs(tmp_path / "a")  # raises if a speaker is in two splits
    assert all(len(v) == 2 for v in speakers.values())  # one speaker per language per split
    index = read_index(tmp_path / "a" / "train")
    assert index["counts"] == {"en": {lab: 2 for lab in LABELS}, "fi": {lab: 2 for lab in LABELS}}

    key, meta, flac = next(read_samples(tmp_path / "a" / "dev"))
    audio, sr = sf.read(io.BytesIO(flac))
    assert sr == 16000 and audio.ndim == 1 and 0.5 < len(audio) / sr < 8
    assert abs(meta["duration"] - len(audio) / sr) < 1e-3
    for field in ("emotion", "language", "speaker", "gender", "corpus", "split", "text", "duration", "sample_rate"):
        assert field in meta
    assert meta["corpus"] == "lakd-synth" and meta["split"] == "dev" and meta["emotion"] in LABELS
    assert meta["voice"].startswith(meta["language"] + "+")
    assert set(meta["prosody"]) >= {"pitch", "range", "rate", "volume", "word_gap", "voice_quality"}
    assert meta["text"] in load_sentences(meta["language"])[0]
    assert meta["emotion"] not in key  # keys do not leak the label

    c = synthesize_corpus(tmp_path / "c", **{**kw, "seed": 8})
    assert shard_hashes(tmp_path / "c") != ha
    assert [r["total"] for r in c["rows"]] == [8, 8, 8, 8, 8, 8]


@needs_espeak
def test_prosody_differs_by_emotion_in_the_expected_direction(tmp_path):
    synthesize_corpus(
        tmp_path, languages=("en",), speakers_per_language=4, utterances_per_speaker=16, splits={"train": 4}, seed=1
    )
    # per speaker and emotion: log F0 (modal voice only: creaky/whispered voices have no reliable F0),
    # log RMS and duration; compared within speakers, so voice differences do not blur the picture
    values = defaultdict(lambda: defaultdict(list))
    for _, meta, flac in read_samples(tmp_path / "train"):
        audio, sr = sf.read(io.BytesIO(flac))
        f = prosody_features(audio, sr)
        cell = values[(meta["speaker"], meta["emotion"])]
        if meta["prosody"]["voice_quality"] == "modal":
            cell["f0"].append(np.log(f["f0_mean"]))
        cell["rms"].append(np.log(f["rms"]))
        cell["duration"].append(f["duration"])
    speakers = sorted({s for s, _ in values})
    assert len(speakers) == 4

    def rel(emotion: str, feature: str) -> float:
        """Mean over speakers of (emotion mean - speaker mean)."""
        out = []
        for s in speakers:
            every = [v for (s2, _), c in values.items() if s2 == s for v in c[feature]]
            if values[(s, emotion)][feature]:
                out.append(np.mean(values[(s, emotion)][feature]) - np.mean(every))
        return float(np.mean(out))

    f0 = {e: rel(e, "f0") for e in LABELS}
    rms = {e: rel(e, "rms") for e in LABELS}
    dur = {e: rel(e, "duration") for e in LABELS}
    assert f0["happiness"] > f0["neutral"] > f0["sadness"] and f0["anger"] > f0["neutral"]
    assert f0["happiness"] - f0["sadness"] > np.log(2) * 2 / 12  # at least two semitones apart
    assert rms["anger"] > rms["neutral"] > rms["sadness"]
    assert dur["sadness"] > dur["neutral"] > dur["anger"]


@needs_espeak
def test_unknown_language_and_label_errors_are_clear(tmp_path):
    with pytest.raises(UnknownLanguageError, match=r"\['xx'\].*espeak-ng --voices"):
        synthesize_corpus(tmp_path, languages=("en", "xx"), speakers_per_language=3, utterances_per_speaker=2)
    with pytest.raises(ValueError, match="no prosody profile for label 'joyous'"):
        synthesize_corpus(tmp_path, labels=("anger", "joyous"))
    assert not any(tmp_path.iterdir())  # nothing written before the checks


@needs_espeak
def test_refuses_to_mix_with_existing_shards(tmp_path):
    kw = dict(languages=("de",), speakers_per_language=3, utterances_per_speaker=4)
    synthesize_corpus(tmp_path, **kw)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        synthesize_corpus(tmp_path, **kw)
    s = synthesize_corpus(tmp_path, overwrite=True, seed=1, **kw)
    assert s["num_samples"] == 12 and len(list(tmp_path.glob("*/*.tar"))) == 3


@needs_espeak
def test_shipped_sentence_languages_have_voices_and_fallback():
    engine = open_engine()
    langs = ["en", "fi", "fr", "de", "es", "it", "sv"]
    check_languages(engine, langs)
    for lang in langs:
        sentences, source = load_sentences(lang)
        assert source == lang and len(sentences) >= 15 and len(set(sentences)) == len(sentences)
    assert load_sentences("en-us")[1] == "en"
    assert load_sentences("pl")[1] == "generic"


@needs_espeak
def test_program_backend_and_missing_espeak_message(tmp_path, monkeypatch):
    s = synthesize_corpus(tmp_path, languages=("it",), speakers_per_language=3, utterances_per_speaker=2, backend="cli")
    assert s["backend"] == "cli" and s["num_samples"] == 6
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng program on PATH
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        open_engine("cli")


def test_resample_and_f0_estimate_are_accurate():
    sr = 22050
    t = np.arange(sr) / sr
    y = resample(np.sin(2 * np.pi * 1000 * t), sr, 16000)
    assert len(y) == 16000
    ideal = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(y - ideal)[100:-100].max() < 1e-3
    above = resample(np.sin(2 * np.pi * 9500 * t), sr, 16000)  # above the new Nyquist: filtered out
    assert np.abs(above[100:-100]).max() < 0.01
    for f0 in (110.0, 220.0):
        x = np.sign(np.sin(2 * np.pi * f0 * np.arange(16000) / 16000)) * 0.3
        est = estimate_f0(x, 16000)
        assert abs(np.nanmedian(est) - f0) / f0 < 0.03
    assert np.isnan(estimate_f0(np.zeros(16000), 16000)).all()
