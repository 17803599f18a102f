"""Audio conversion and the streaming loader: batch contract, crop/pad, bucketing, language mixing,
exactly-once evaluation across ranks and workers, rank and worker splitting in training, what crosses from
a worker to the main process, determinism."""

import io
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from lakd import DEFAULT_LABELS
from lakd.bench.data import make_tone_corpus
from lakd.config import DataConfig
from lakd.data.audio import AudioDecodeError, _resampler, audio_problem, decode_audio, to_mono_16k
from lakd.data.batching import collate, finish_batch, worker_quota
from lakd.data.loader import build_loader, prefetch_batches
from lakd.data.samples import LabeledSample
from lakd.data.shards import ShardWriter, iter_tar_samples

LABELS = list(DEFAULT_LABELS)
LANGS = ["en", "fi", "fr"]
FAST = DataConfig(max_seconds=1.0, batch_size=4, eval_batch_size=4, shuffle_buffer=16, bucket_buffer=16)


def _keys(loader):
    return [k for b in loader for k in b["keys"]]


def _label_of(key):  # make_tone_corpus: sample i of a language has label i % 4
    return DEFAULT_LABELS[int(key.rsplit("_", 1)[1]) % len(DEFAULT_LABELS)]


# ----------------------------------------------------------------------------- audio


def test_to_mono_16k_resamples_and_averages_channels():
    sr = 44_100
    t = np.arange(sr // 2) / sr
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, 0.5 * left], axis=1).astype(np.float32)
    wav = to_mono_16k(stereo, sr)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert np.fft.rfftfreq(wav.numel(), 1 / 16_000)[spectrum.argmax()] == pytest.approx(440, abs=4)
    rms = float(wav[1000:-1000].pow(2).mean().sqrt())
    assert rms == pytest.approx(0.75 * 0.4 / np.sqrt(2), rel=0.03)  # average of the channels, not the sum


@pytest.mark.parametrize("sr", [8_000, 22_050, 48_000])
def test_to_mono_16k_any_rate(sr):
    x = np.random.default_rng(0).standard_normal((sr, 1)).astype(np.float32) * 0.1
    assert abs(to_mono_16k(x, sr).numel() - 16_000) <= 1


def test_16k_mono_passes_through_and_kernels_are_cached():
    x = np.linspace(-1, 1, 1600, dtype=np.float32)
    assert torch.equal(to_mono_16k(x, 16_000), torch.from_numpy(x))
    assert _resampler(22_050, 16_000) is _resampler(22_050, 16_000)


def test_audio_problem_classifies_bad_audio():
    ok = np.full((1600, 1), 0.1, dtype=np.float32)
    assert audio_problem(ok, 16_000, 0.05) is None
    assert audio_problem(np.zeros((0, 1), np.float32)) == "empty_audio"
    assert audio_problem(np.array([[0.1], [np.nan]], np.float32)) == "nonfinite_audio"
    assert audio_problem(np.array([[0.1], [np.inf]], np.float32)) == "nonfinite_audio"
    assert audio_problem(np.zeros((1600, 2), np.float32)) == "silent_audio"
    assert audio_problem(ok[:100], 16_000, 0.05) == "too_short"
    assert audio_problem(np.array([[0.1], [1e30]], np.float32)) == "out_of_range"  # finite, but no audio
    assert audio_problem(np.array([[0.1], [-999.0]], np.float32)) is None  # badly scaled, within MAX_PEAK


@pytest.mark.parametrize("sr", [0, 1, 3_999, 192_001])
def test_to_mono_16k_refuses_rates_outside_the_bounds(sr):
    with pytest.raises(ValueError, match=f"sample rate {sr} Hz is outside 4000..192000 Hz"):
        to_mono_16k(np.ones((100, 1), np.float32), sr)


def test_decode_audio_reads_flac_and_wav_and_names_the_sample_on_error():
    x = (0.2 * np.sin(np.arange(2205) / 5)).astype(np.float32)
    for fmt, ext in (("FLAC", "flac"), ("WAV", "wav")):
        buf = io.BytesIO()
        sf.write(buf, x, 22_050, format=fmt)
        audio, sr = decode_audio(buf.getvalue(), ext, "a.tar:k")
        assert sr == 22_050 and audio.shape == (2205, 1)
    with pytest.raises(AudioDecodeError, match=r"shard-7\.tar:utt_3"):
        decode_audio(b"not audio at all" * 10, "flac", "shard-7.tar:utt_3")


# ----------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2 shards per language, 16 samples per language, 0.2-2 s at 16/22.05/44.1 kHz, mono and stereo."""
    return make_tone_corpus(
        tmp_path_factory.mktemp("tones") / "train", {"en": 16, "fi": 16, "fr": 16}, shard_size=8, seconds=(0.2, 2.0)
    )


def test_training_batches_follow_the_contract(corpus):
    cfg = replace(FAST, epoch_samples=30)
    loader = build_loader(corpus, LABELS, LANGS, cfg=cfg, train=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 8  # ceil(30 / 4)
    assert sum(len(b["keys"]) for b in batches) == 30
    for b in batches:
        x, m = b["input_values"], b["attention_mask"]
        assert x.dtype == torch.float32 and m.dtype == torch.int64 and x.shape == m.shape
        assert x.shape[1] <= 16_000  # cropped to max_seconds
        assert b["labels"].dtype == torch.int64 and b["language_ids"].dtype == torch.int64
        assert len(b["keys"]) == len(b["languages"]) == x.shape[0] == len(b["speakers"])
        for i, key in enumerate(b["keys"]):
            n = int(m[i].sum())
            assert torch.all(m[i, :n] == 1) and torch.all(m[i, n:] == 0)
            assert torch.all(x[i, n:] == 0) and x[i, :n].abs().max() > 0
            assert LABELS[b["labels"][i]] == _label_of(key)
            assert LANGS[b["language_ids"][i]] == b["languages"][i] == key.split("_")[1]
        assert int(m.sum(1).max()) == x.shape[1]  # padded only to the longest in the batch


def test_random_crop_is_a_slice_of_the_audio_and_varies(tmp_path):
    ramp = np.sin(np.arange(48_000) / 50.0).astype(np.float32) * 0.5  # 3 s at 16 kHz, no resampling
    with ShardWriter(tmp_path, "en") as w:
        w.write(
            "long",
            {"emotion": "anger", "language": "en", "speaker": "s", "corpus": "c", "split": "train"},
            audio=ramp,
            sample_rate=16_000,
        )
    [(_, members)] = list(iter_tar_samples(tmp_path / "en-000000.tar"))
    original = sf.read(io.BytesIO(members["flac"]), dtype="float32")[0]  # as stored (16-bit)
    cfg = replace(FAST, epoch_samples=6, batch_size=1, bucket=False)
    starts = set()
    for b in build_loader(tmp_path, LABELS, ["en"], cfg=cfg, train=True):
        crop = b["input_values"][0].numpy()
        assert crop.size == 16_000
        matches = [
            s for s in np.flatnonzero(original[:32_001] == crop[0]) if np.array_equal(original[s : s + 16_000], crop)
        ]
        assert matches, "crop is not a contiguous slice of the stored audio"
        starts.add(int(matches[0]))
    assert len(starts) > 1


def test_eval_truncates_generously_and_can_keep_full_length(corpus):
    cfg = replace(FAST, max_seconds=0.5)
    lengths = [
        int(n) for b in build_loader(corpus, LABELS, LANGS, cfg=cfg, train=False) for n in b["attention_mask"].sum(1)
    ]
    assert max(lengths) == 16_000 and len(lengths) == 48  # 2 x max_seconds
    full = [
        int(n)
        for b in build_loader(corpus, LABELS, LANGS, cfg=cfg, train=False, eval_max_seconds=0)
        for n in b["attention_mask"].sum(1)
    ]
    assert max(full) > 16_000 and sum(full) > sum(lengths)


def _padding_fraction(loader):
    real = total = 0
    for b in loader:
        real += int(b["attention_mask"].sum())
        total += b["attention_mask"].numel()
    return 1 - real / total


def test_bucketing_cuts_padding(corpus):
    cfg = replace(FAST, max_seconds=4.0, batch_size=4, bucket_buffer=24, epoch_samples=48)
    bucketed = _padding_fraction(build_loader(corpus, LABELS, LANGS, cfg=cfg, train=True))
    plain = _padding_fraction(build_loader(corpus, LABELS, LANGS, cfg=replace(cfg, bucket=False), train=True))
    assert bucketed < 0.5 * plain
    assert plain > 0.2


# ----------------------------------------------------------------------------- language mixing


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    return make_tone_corpus(
        tmp_path_factory.mktemp("skewed") / "train",
        {"en": 96, "fi": 16},
        shard_size=16,
        seconds=(0.1, 0.15),
        sample_rates=(16_000,),
        channels=(1,),
    )


@pytest.mark.parametrize("alpha,expected", [(1.0, 16 / 112), (0.5, 4 / (4 + 96**0.5)), (0.0, 0.5)])
def test_temperature_sampling_sets_language_shares(skewed, alpha, expected):
    cfg = replace(FAST, language_alpha=alpha, epoch_samples=400, batch_size=16, shuffle_buffer=8)
    shares = Counter(
        lang for b in build_loader(skewed, LABELS, ["en", "fi"], cfg=cfg, train=True) for lang in b["languages"]
    )
    assert sum(shares.values()) == 400
    assert shares["fi"] / 400 == pytest.approx(expected, abs=0.06)


# ----------------------------------------------------------------------------- ranks and workers


@pytest.mark.parametrize("shards_per_language", [4, 1])  # 12 shards: split by shard; 3 shards < 4 readers: by sample
def test_eval_reads_every_sample_exactly_once_across_ranks_and_workers(tmp_path, shards_per_language):
    data = make_tone_corpus(
        tmp_path / "dev", {"en": 12, "fi": 12, "fr": 12}, shard_size=12 // shards_per_language, seconds=(0.1, 0.2)
    )
    cfg = replace(FAST, num_workers=2, eval_batch_size=5)
    seen = []
    for rank in (0, 1):
        loader = build_loader(data, LABELS, LANGS, cfg=cfg, train=False, rank=rank, world_size=2)
        keys = _keys(loader)
        assert keys, f"rank {rank} got nothing"
        seen += keys
    expected = {f"tone_{l}_{i:05d}" for l in LANGS for i in range(12)}
    assert len(seen) == len(expected) and set(seen) == expected


def test_eval_order_is_fixed(corpus):
    cfg = replace(FAST, num_workers=2)
    a = _keys(build_loader(corpus, LABELS, LANGS, cfg=cfg, train=False))
    assert a == _keys(build_loader(corpus, LABELS, LANGS, cfg=cfg, train=False))


@pytest.mark.parametrize("num_workers,shuffle_buffer", [(0, 1), (2, 1), (2, 6)])
def test_training_splits_shards_across_ranks(tmp_path, num_workers, shuffle_buffer):
    data = make_tone_corpus(tmp_path / "train", {"en": 64}, shard_size=8, seconds=(0.1, 0.12))
    cfg = replace(FAST, num_workers=num_workers, batch_size=8, shuffle_buffer=shuffle_buffer)
    per_rank, lengths = [], []
    for rank in (0, 1):
        loader = build_loader(data, LABELS, ["en"], cfg=cfg, train=True, rank=rank, world_size=2)
        batches = list(loader)
        lengths.append(len(batches))
        assert len(batches) == len(loader)
        per_rank.append([k for b in batches for k in b["keys"]])
    assert lengths == [4, 4]  # same number of steps on every rank: DDP must not hang
    shards = [{int(k[-5:]) // 8 for k in keys} for keys in per_rank]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 4  # disjoint halves of the shards
    if shuffle_buffer <= 1:  # without a shuffle buffer reaching into the next cycle: every sample exactly once
        assert sorted(per_rank[0] + per_rank[1]) == sorted(f"tone_en_{i:05d}" for i in range(64))


def test_training_with_fewer_shards_than_readers_resamples_to_a_fixed_length(tmp_path):
    data = make_tone_corpus(tmp_path / "train", {"en": 10, "fi": 10}, shard_size=10, seconds=(0.1, 0.12))
    cfg = replace(FAST, num_workers=2, batch_size=3)
    for rank in (0, 1):
        loader = build_loader(data, LABELS, ["en", "fi"], cfg=cfg, train=True, rank=rank, world_size=2)
        batches = list(loader)
        assert len(batches) == len(loader) == 4  # ceil(10 samples per rank / 3)
        assert sum(len(b["keys"]) for b in batches) == 10


def test_training_workers_read_disjoint_shards_and_each_sample_once_per_epoch(tmp_path):
    """Within one rank, workers split the shards (no worker decodes another's samples) and, with an epoch of the
    data set's size and no shuffle buffer reaching into the next cycle, together read every sample exactly once.
    DataLoader hands out batches round-robin: batch i comes from worker i mod 2."""
    data = make_tone_corpus(tmp_path / "train", {"en": 64}, shard_size=8, seconds=(0.1, 0.12))
    cfg = replace(FAST, num_workers=2, batch_size=8, shuffle_buffer=1, epoch_samples=64)
    batches = list(build_loader(data, LABELS, ["en"], cfg=cfg, train=True))
    assert len(batches) == 8
    per_worker = [[k for b in batches[w::2] for k in b["keys"]] for w in (0, 1)]
    shards = [{int(k[-5:]) // 8 for k in keys} for keys in per_worker]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 4
    assert sorted(per_worker[0] + per_worker[1]) == sorted(f"tone_en_{i:05d}" for i in range(64))


def _torch_to_mono_16k(audio: np.ndarray, sr: int) -> torch.Tensor:
    """The conversion as it was, all in torch: the reference for the numpy path."""
    wav = torch.as_tensor(np.ascontiguousarray(audio)).to(torch.float32)
    if wav.ndim == 2:
        wav = wav.mean(dim=1)
    if sr != 16_000:
        wav = _resampler(sr, 16_000)(wav.unsqueeze(0)).squeeze(0)
    return wav


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_to_mono_16k_numpy_path_is_bit_identical_to_torch(channels, dtype):
    rng = np.random.default_rng(7 + (channels or 0))
    shape = (9_000,) if channels is None else (9_000, channels)
    audio = (rng.standard_normal(shape) * (3000 if dtype == np.int16 else 0.3)).astype(dtype)
    for sr in (16_000, 22_050):
        got = to_mono_16k(audio, sr)
        assert got.dtype == torch.float32 and got.ndim == 1
        assert torch.equal(got, _torch_to_mono_16k(audio, sr))


def _sample(i: int, n: int) -> LabeledSample:
    audio = torch.linspace(0.1, 0.5, n)
    return LabeledSample(key=f"k{i}", shard="s.tar", language="fi", language_id=1, label=i, speaker="sp", audio=audio)


def test_collate_puts_the_audio_in_shared_memory_and_finish_batch_builds_the_contract():
    samples = [_sample(0, 3), _sample(1, 5), _sample(2, 1)]
    raw = collate(samples, shared=True)  # what a DataLoader worker does
    assert raw["input_values"].is_shared() and not collate(samples, shared=False)["input_values"].is_shared()
    assert "attention_mask" not in raw and raw["lengths"] == [3, 5, 1]
    assert [k for k, v in raw.items() if isinstance(v, torch.Tensor)] == ["input_values"]  # one shared file a batch
    b = finish_batch({**raw, "skipped": {"too_short": 1}})
    assert list(b) == [
        "input_values", "attention_mask", "labels", "language_ids", "keys", "languages", "speakers", "skipped"
    ]  # fmt: skip
    assert b["attention_mask"].dtype == torch.int64 and b["labels"].dtype == b["language_ids"].dtype == torch.int64
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    for row, s, n in zip(b["input_values"], samples, raw["lengths"]):
        assert torch.equal(row[:n], s.audio) and not row[n:].any()
    assert b["labels"].tolist() == [0, 1, 2] and b["language_ids"].tolist() == [1, 1, 1]
    assert b["keys"] == ["k0", "k1", "k2"] and b["skipped"] == {"too_short": 1}


@pytest.mark.parametrize("train", [True, False])
def test_batches_from_a_worker_equal_batches_made_in_process(corpus, train):
    """One worker reads with the same seeds as the main process, so the batches must be equal bit for bit:
    the shared-memory audio, the mask the main process builds from lengths, labels, keys and skip counts."""
    cfg = replace(FAST, epoch_samples=24)
    ref = list(build_loader(corpus, LABELS, LANGS, cfg=cfg, train=train, seed=2))
    got = list(build_loader(corpus, LABELS, LANGS, cfg=replace(cfg, num_workers=1), train=train, seed=2))
    assert len(got) == len(ref) > 1
    for a, b in zip(ref, got):
        assert list(a) == list(b)
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                assert v.dtype == b[k].dtype and torch.equal(v, b[k]), k
            else:
                assert v == b[k], k
        assert b["input_values"].is_shared() and not a["input_values"].is_shared()


def test_workers_may_have_a_whole_bucket_ready_ahead_of_the_consumer():
    """A worker hands over a bucket's batches all at once; it must be allowed to queue all of them (and one of
    the next bucket) so that it decodes while the consumer steps, instead of waiting for it. (The loaders in
    the worker tests above run with these settings: FAST has 4 batches a bucket, so 5 in flight per worker.)"""
    assert prefetch_batches(DataConfig(bucket=True, bucket_buffer=256), 16) == 17
    assert prefetch_batches(DataConfig(bucket=True, bucket_buffer=256), 32) == 9  # eval batches
    assert prefetch_batches(DataConfig(bucket=True, bucket_buffer=16), 32) == 2  # a bucket is one batch
    assert prefetch_batches(DataConfig(bucket=False), 16) == 2  # batches come one at a time
    assert prefetch_batches(FAST, FAST.batch_size) == 5


def test_worker_quota_gives_whole_batches_and_one_partial():
    for n, b, w in [(30, 4, 2), (10, 3, 4), (100, 16, 3), (5, 8, 2), (64, 8, 1)]:
        quotas = [worker_quota(n, b, i, w) for i in range(w)]
        assert sum(quotas) == n
        assert sum(-(-q // b) for q in quotas) == -(-n // b)


# ----------------------------------------------------------------------------- determinism and options


def _run(data, **kw):
    cfg = replace(FAST, epoch_samples=24, **kw.pop("cfg", {}))
    return [(b["keys"], b["input_values"]) for b in build_loader(data, LABELS, LANGS, cfg=cfg, train=True, **kw)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_training_is_deterministic_for_a_seed_and_epoch(corpus, num_workers):
    cfg = {"num_workers": num_workers}
    a, b = _run(corpus, seed=3, cfg=cfg), _run(corpus, seed=3, cfg=cfg)
    assert [k for k, _ in a] == [k for k, _ in b]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert [k for k, _ in a] != [k for k, _ in _run(corpus, seed=4, cfg=cfg)]
    assert [k for k, _ in a] != [k for k, _ in _run(corpus, seed=3, epoch=1, cfg=cfg)]


def test_each_pass_is_the_next_epoch(corpus):
    loader = build_loader(corpus, LABELS, LANGS, cfg=replace(FAST, epoch_samples=24), train=True, seed=1)
    first, second = _keys(loader), _keys(loader)
    assert first != second
    assert second == _keys(
        build_loader(corpus, LABELS, LANGS, cfg=replace(FAST, epoch_samples=24), train=True, seed=1, epoch=1)
    )
    loader.set_epoch(0)
    assert _keys(loader) == first


def test_unknown_language_allowed_gets_id_minus_one_and_filter_drops_silently(corpus):
    loader = build_loader(corpus, LABELS, ["en", "fi"], cfg=FAST, train=False, allow_unknown_language=True)
    ids = {lang: set() for lang in LANGS}
    for b in loader:
        for lang, i in zip(b["languages"], b["language_ids"].tolist()):
            ids[lang].add(i)
    assert ids == {"en": {0}, "fi": {1}, "fr": {-1}}
    filtered = build_loader(corpus, LABELS, LANGS, cfg=FAST, train=False, language_filter=["fi"])
    langs = {l for b in filtered for l in b["languages"]}
    assert langs == {"fi"} and filtered.skips.total == 0
    train = build_loader(corpus, LABELS, LANGS, cfg=replace(FAST, epoch_samples=12), train=True, language_filter=["fr"])
    assert {l for b in train for l in b["languages"]} == {"fr"} and train.skips.total == 0


def test_emosynth3_dev_reads_once_with_workers(emosynth3):
    cfg = replace(FAST, num_workers=2, eval_batch_size=32, max_seconds=2.0)
    loader = build_loader(emosynth3 / "dev", LABELS, LANGS, cfg=cfg, train=False)
    batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == len(set(keys)) == 360 == loader.num_samples
    assert len(batches) == len(loader)
    assert loader.skips.total == 0
