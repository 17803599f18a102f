"""Fuzzing the readers of untrusted bytes with random and truncated input (hypothesis, fixed budget, derandomized
so CI runs the same examples every time): the shard reader, the metadata parser and audio decoding each either
succeed or raise their documented error, and the loader turns every input into batches plus counted skips.

Documented errors: `iter_tar_samples` -> ShardFormatError (a missing file: FileNotFoundError);
`parse_sample` / `Sample.duration` -> SampleError; `decode_audio` -> AudioDecodeError.
"""

import io
import json
import os
import tempfile

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakd.config import DataConfig
from lakd.data.audio import MAX_PEAK, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioDecodeError, audio_problem, decode_audio
from lakd.data.loader import build_loader
from lakd.data.shards import SampleError, ShardFormatError, ShardWriter, encode_flac, iter_tar_samples, parse_sample
from lakd.data.skips import SKIP_REASONS

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
FUZZ_SLOW = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
LABELS = ["anger", "happiness", "neutral", "sadness"]


def _tone(n=1600, sr=16_000):
    return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 220 / sr)).astype(np.float32)


def _wav(x, sr=16_000, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


META = {"emotion": "anger", "language": "en", "speaker": "s", "corpus": "c", "split": "x"}
FLAC = encode_flac(_tone(), 16_000)
WAV = _wav(_tone())


def _real_shard() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        with ShardWriter(d, "en", max_count=10, write_index=False) as w:
            for i in range(4):
                w.write(f"k{i}", META, audio=_tone(800 + 200 * i), sample_rate=16_000)
        with open(os.path.join(d, "en-000000.tar"), "rb") as f:
            return f.read()


SHARD = _real_shard()


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data[: min(cut, len(data))])
    for pos, value in flips:
        if b:
            b[pos % len(b)] = value
    return bytes(b)


mutated = st.builds(
    _mutate,
    st.sampled_from([SHARD, FLAC, WAV]),
    st.integers(0, len(SHARD)),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
)


# ----------------------------------------------------------------------------- the shard reader


def _read_all(data: bytes, suffix=".tar"):
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        try:
            return list(iter_tar_samples(f.name))
        except ShardFormatError as e:
            assert f.name in str(e)  # names the file
            return None


@FUZZ
@given(st.one_of(st.binary(max_size=4096), mutated.filter(lambda b: b[:4] != b"fLaC" and b[:4] != b"RIFF")))
def test_shard_reader_reads_or_raises_shard_format_error(data):
    samples = _read_all(data)
    if samples is not None:
        for key, members in samples:
            assert isinstance(key, str) and all(isinstance(v, bytes) for v in members.values())


@FUZZ
@given(st.integers(0, len(SHARD)))
def test_a_truncated_shard_gives_a_prefix_of_its_samples_or_a_named_error(cut):
    whole = _read_all(SHARD)
    part = _read_all(SHARD[:cut])
    if part is not None and part:
        n = len(part)
        assert [k for k, _ in part[:-1]] == [k for k, _ in whole[: n - 1]]  # the last one may be cut short


# ----------------------------------------------------------------------------- the metadata parser

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
metadata = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from([*META, "duration", "x"]), json_values, max_size=7).map(
        lambda d: json.dumps({**META, **d}).encode()
    ),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
members = st.dictionaries(
    st.sampled_from(["json", "flac", "wav", "txt", "__key__", "__url__", ""]),
    st.one_of(st.binary(max_size=64), st.just(FLAC), st.just(WAV)),
    max_size=4,
)


@FUZZ
@given(members, st.one_of(st.none(), metadata), st.booleans())
def test_parse_sample_parses_or_raises_sample_error(other, meta, require_audio):
    ms = dict(other)
    if meta is not None:
        ms["json"] = meta
    try:
        sample = parse_sample("k", ms, required=("emotion", "language"), require_audio=require_audio)
    except SampleError as e:
        assert e.reason in SKIP_REASONS and str(e)
        return
    assert isinstance(sample.meta, dict) and {"emotion", "language"} <= set(sample.meta)
    try:
        seconds = sample.duration()
    except SampleError as e:
        assert e.reason in SKIP_REASONS
    else:
        assert np.isfinite(seconds) and seconds >= 0


# ----------------------------------------------------------------------------- audio decoding


@FUZZ
@given(st.one_of(st.binary(max_size=4096), mutated), st.sampled_from(["flac", "wav"]))
def test_decode_audio_decodes_or_raises_audio_decode_error(data, ext):
    try:
        audio, sr = decode_audio(data, ext, "fuzz.tar:k", max_seconds=60.0)
    except AudioDecodeError as e:
        assert "fuzz.tar:k" in str(e) and e.reason in SKIP_REASONS
        return
    assert audio.ndim == 2 and audio.dtype == np.float32 and MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE
    problem = audio_problem(audio, sr, 0.05)
    assert problem is None or problem in SKIP_REASONS
    if problem is None:
        assert np.isfinite(audio).all() and np.abs(audio).max() <= MAX_PEAK


@FUZZ
@given(
    st.integers(1, 400_000),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=64),
)
def test_float_wav_of_any_rate_and_values_decodes_within_bounds_or_is_refused(rate, values):
    data = _wav(np.asarray(values, dtype=np.float32), sr=rate, subtype="FLOAT")
    try:
        audio, sr = decode_audio(data, "wav", "fuzz.tar:k")
    except AudioDecodeError as e:
        assert e.reason in ("bad_sample_rate", "undecodable_audio")
        assert e.reason == "undecodable_audio" or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
        return
    assert sr == rate and audio.shape[0] == len(values)
    problem = audio_problem(audio, sr, 0.05)
    assert problem in SKIP_REASONS or (problem is None and np.abs(audio).max() <= MAX_PEAK)


# ----------------------------------------------------------------------------- the loader, end to end


damaged_shards = st.builds(
    _mutate,
    st.just(SHARD),
    st.integers(len(SHARD) // 3, len(SHARD)),
    st.lists(st.tuples(st.integers(0, len(SHARD)), st.integers(0, 255)), max_size=4),
)


@FUZZ_SLOW
@given(damaged_shards, st.booleans())
def test_the_loader_turns_any_shard_into_batches_and_counted_skips(data, train):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "en-000000.tar"), "wb") as f:
            f.write(data)
        cfg = DataConfig(max_seconds=0.5, batch_size=2, eval_batch_size=2, shuffle_buffer=2, epoch_samples=4)
        try:
            loader = build_loader(d, LABELS, ["en"], cfg=cfg, train=train)
        except ValueError as e:  # training: no readable sample of any language in the shard
            assert "no shards hold samples" in str(e) or "no training samples" in str(e)
            return
        try:
            batches = list(loader)
        except RuntimeError as e:  # training: every readable sample was bad
            assert "no usable training samples" in str(e)
            return
        for b in batches:
            assert np.isfinite(b["input_values"].numpy()).all()
        assert set(loader.skips.counts) <= set(SKIP_REASONS)
        if not train:  # each sample once: yielded or counted
            keys = [k for b in batches for k in b["keys"]]
            assert len(keys) == len(set(keys)) <= 4
