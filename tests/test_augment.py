"""Waveform augmentation (lakd.data.augment): each transform's effect on a known signal, determinism per
(seed, epoch, key), training crops only (evaluation batches unchanged), config checks, and a real training run."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from lakd import DEFAULT_LABELS, SAMPLE_RATE
from lakd.bench.data import make_tone_corpus
from lakd.config import ConfigError, DataConfig, load_config
from lakd.config.schema import AugmentConfig, Config
from lakd.data import augment as A
from lakd.data.loader import build_loader

SR = SAMPLE_RATE
LANGS = ["en", "fi", "fr"]
ALL_ON = AugmentConfig(speed_prob=1.0, noise_prob=1.0, gain_prob=1.0, reverb_prob=1.0, bandlimit_prob=1.0)
FAST = DataConfig(max_seconds=1.0, batch_size=4, eval_batch_size=4, shuffle_buffer=16, bucket_buffer=16)


def tone(freq=440.0, seconds=1.0, amp=0.3):
    t = torch.arange(int(seconds * SR), dtype=torch.float32) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


def db(x):
    return 10 * math.log10(float(x))


def power(x):
    return float(x.double().pow(2).mean())


def band_power(x, low, high):
    spec = torch.fft.rfft(x.double()).abs().pow(2)
    f = torch.fft.rfftfreq(x.numel(), 1 / SR)
    return float(spec[(f >= low) & (f < high)].sum())


def peak_freq(x):
    spec = torch.fft.rfft(x.double()).abs()
    return float(torch.fft.rfftfreq(x.numel(), 1 / SR)[spec.argmax()])


# ------------------------------------------------------------------------------------- each transform


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_pitch_by_the_factor(factor):
    x = tone(440.0, 2.0)
    y = A.speed(x, factor)
    assert y.numel() == pytest.approx(x.numel() / factor, abs=2)
    assert peak_freq(y) == pytest.approx(440.0 * factor, abs=2)  # resampling moves pitch too (documented)


@pytest.mark.parametrize("colour", A.NOISE_COLOURS)
@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_additive_noise_has_the_requested_snr(colour, snr):
    x = tone(300.0, 1.0)
    noise = A.coloured_noise(x.numel(), colour, torch.Generator().manual_seed(1))
    y = A.add_noise(x, noise, snr)
    assert db(power(x) / power(y - x)) == pytest.approx(snr, abs=0.5)


def test_noise_colours_have_their_spectral_slope():
    """White is flat, pink loses ~3 dB per octave, brown ~6 dB: compare two octave bands."""
    gen = torch.Generator().manual_seed(0)
    slopes = {}
    for c in A.NOISE_COLOURS:
        n = A.coloured_noise(SR * 4, c, gen)
        assert power(n) == pytest.approx(1.0, rel=1e-3)
        slopes[c] = db(band_power(n, 2000, 4000) / band_power(n, 1000, 2000))
    assert slopes["white"] == pytest.approx(3.0, abs=0.5)  # twice the bandwidth, same density
    assert slopes["pink"] == pytest.approx(0.0, abs=0.5)
    assert slopes["brown"] == pytest.approx(-3.0, abs=0.5)


@pytest.mark.parametrize("gain_db", [-6.0, 3.5])
def test_gain_changes_rms_by_the_decibels_asked(gain_db):
    x = tone(amp=0.1)
    assert db(power(A.gain(x, gain_db)) / power(x)) == pytest.approx(gain_db, abs=1e-3)


def _schroeder_rt60(h: torch.Tensor) -> float:
    """RT60 from the Schroeder backward integral: the -5..-25 dB slope (T20) extrapolated to 60 dB."""
    e = h.double().pow(2).flip(0).cumsum(0).flip(0)
    edc = 10 * torch.log10(e / e[0])
    i5, i25 = int((edc > -5).sum()), int((edc > -25).sum())
    return 60.0 * (i25 - i5) / (20.0 * SR)


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_rir_energy_decays_60_db_at_the_rt60_asked(rt60):
    rir = A.synthetic_rir(rt60, torch.Generator().manual_seed(0), drr_db=3.0)
    assert rir[0] == 1.0
    tail = rir[1:]
    assert _schroeder_rt60(tail) == pytest.approx(rt60, rel=0.1)
    assert db(1.0 / power(tail) / tail.numel()) == pytest.approx(3.0, abs=0.01)  # direct-to-reverberant ratio


def test_reverberation_lengthens_and_smears_a_click():
    x = torch.zeros(SR // 2)
    x[100] = 1.0
    rir = A.synthetic_rir(0.5, torch.Generator().manual_seed(0), drr_db=0.0)
    y = A.reverberate(x, rir, keep_length=False)
    assert y.numel() == x.numel() + rir.numel() - 1
    late = y[100 + int(0.05 * SR) :]  # 50 ms after the click: silence in x, the reverberant tail in y
    assert power(late) > 1e-3 * power(y) and float(x[100 + int(0.05 * SR) :].abs().max()) == 0.0
    kept = A.reverberate(tone(), rir)
    assert kept.numel() == SR and power(kept) == pytest.approx(power(tone()), rel=1e-3)


def test_lowpass_and_telephone_remove_energy_above_the_cutoff():
    low, high = tone(500.0), tone(6000.0)
    x = low + high
    y = A.lowpass(x, 3000.0)
    assert db(band_power(y, 5500, 6500) / band_power(x, 5500, 6500)) < -20
    assert db(band_power(y, 400, 600) / band_power(x, 400, 600)) > -1
    t = A.telephone(x)
    assert t.numel() == x.numel()
    assert db(band_power(t, 5500, 6500) / band_power(x, 5500, 6500)) < -40  # nothing above 4 kHz
    assert db(band_power(t, 400, 600) / band_power(x, 400, 600)) > -2
    h = A.highpass(tone(100.0) + tone(2000.0), 800.0)
    assert db(band_power(h, 50, 150) / band_power(tone(100.0), 50, 150)) < -20


def test_noise_files_are_read_with_soundfile(tmp_path):
    (tmp_path / "sub").mkdir()
    noise = np.random.default_rng(0).standard_normal(22_050 * 2).astype(np.float32) * 0.1
    sf.write(tmp_path / "sub" / "n.flac", noise, 22_050)
    (tmp_path / "notes.txt").write_text("not audio")
    files = A.noise_files(str(tmp_path))
    assert [str(f) for f in files] == [str(tmp_path / "sub" / "n.flac")]
    aug = A.Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["file"], noise_dir=str(tmp_path), noise_snr_db=[5, 5]))
    x = tone()
    y = aug.apply(x, "k", 7)
    assert db(power(x) / power(y - x)) == pytest.approx(5.0, abs=0.5)


def test_noise_shards_are_read_member_by_member(tmp_path):
    """A noise corpus packed as tar shards (lakd's shard writer here; MUSAN in `tar` works the same): each audio
    member is one recording, read by its offset. The noise is a 3 kHz tone, so the added signal is that tone."""
    from lakd.data.shards import ShardWriter

    t = np.arange(SR * 2) / SR
    with ShardWriter(tmp_path / "musan", "noise", max_count=2) as w:
        for i in range(3):
            meta = {"emotion": "neutral", "language": "xx", "speaker": "n", "corpus": "noise", "split": "train"}
            w.write(f"n{i}", meta, (0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))
    clips = A.noise_files(str(tmp_path / "musan"))
    assert [c.member for c in clips] == ["n0.flac", "n1.flac", "n2.flac"] and len({c.path for c in clips}) == 2
    cfg = AugmentConfig(noise_prob=1.0, noise_types=["file"], noise_dir=str(tmp_path / "musan"), noise_snr_db=[10, 10])
    x = tone(440.0)
    added = A.Augmenter(cfg).apply(x, "k", 3) - x
    assert peak_freq(added) == pytest.approx(3000, abs=5) and db(power(x) / power(added)) == pytest.approx(10, abs=0.5)
    (tmp_path / "empty").mkdir()
    bad = replace(cfg, noise_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no .wav/.flac/.ogg files and no .tar shards"):
        A.Augmenter(bad).apply(x, "k", 3)


# ------------------------------------------------------------------------------------- the pipeline


def test_augmenter_is_deterministic_per_seed_and_differs_for_another():
    x = tone() + 0.01 * torch.randn(SR, generator=torch.Generator().manual_seed(0))
    a, b, c = (A.Augmenter(ALL_ON, max_samples=SR) for _ in range(3))
    ya, yb, yc = a.apply(x, "k", 11), b.apply(x, "k", 11), c.apply(x, "k", 12)
    assert torch.equal(ya, yb)
    assert not torch.equal(ya, yc)
    assert ya.numel() <= SR and float(ya.abs().max()) <= 1.0 and torch.isfinite(ya).all()
    assert torch.equal(x, tone() + 0.01 * torch.randn(SR, generator=torch.Generator().manual_seed(0)))  # input kept


def test_babble_is_made_of_other_utterances():
    aug = A.Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["babble"], noise_snr_db=[0, 0]))
    other = tone(200.0)
    aug.apply(other, "other", 1)  # seen by the worker before
    x = tone(3000.0)
    noise = aug.apply(x, "me", 2) - x
    assert band_power(noise, 150, 250) > 100 * band_power(noise, 2900, 3100)  # the other voice, not this one


def _batches(loader):
    return [(b["keys"], b["input_values"], b["attention_mask"]) for b in loader]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("aug")
    return str(make_tone_corpus(d / "train", {"en": 12, "fi": 12, "fr": 8}, shard_size=6, seconds=(0.5, 0.95)))


def test_evaluation_batches_are_identical_with_and_without_augmentation(corpus):
    plain = _batches(build_loader(corpus, DEFAULT_LABELS, LANGS, cfg=FAST, train=False))
    aug = _batches(build_loader(corpus, DEFAULT_LABELS, LANGS, cfg=replace(FAST, augment=ALL_ON), train=False))
    assert len(plain) == len(aug) > 0
    for (k1, x1, m1), (k2, x2, m2) in zip(plain, aug):
        assert k1 == k2 and torch.equal(x1, x2) and torch.equal(m1, m2)


def _train(corpus, augment, seed=0, workers=0, epoch=0):
    cfg = replace(FAST, augment=augment, num_workers=workers, epoch_samples=16)
    loader = build_loader(corpus, DEFAULT_LABELS, LANGS, cfg=cfg, train=True, seed=seed, epoch=epoch)
    return {k: x[m.bool()] for keys, xs, ms in _batches(loader) for k, x, m in zip(keys, xs, ms)}


def test_training_crops_are_augmented_deterministically_whatever_the_worker_count(corpus):
    on = replace(ALL_ON, noise_types=["white", "pink", "brown"])  # babble depends on stream neighbours
    clean, first, again = _train(corpus, AugmentConfig()), _train(corpus, on), _train(corpus, on)
    assert first.keys() == clean.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert sum(not torch.equal(first[k][: clean[k].numel()], clean[k]) for k in first) == len(first)
    other_seed = _train(corpus, on, seed=1)
    assert any(k in first and not torch.equal(other_seed[k], first[k]) for k in other_seed)
    # two workers read the samples in another order (clips shorter than max_seconds: no crop, so the clean
    # audio is the same); a sample read in both gets the same augmentation: the seed does not depend on the worker
    two = _train(corpus, on, workers=2)
    clean_two = _train(corpus, AugmentConfig(), workers=2)
    shared = [k for k in two if k in first and torch.equal(clean_two[k], clean[k])]
    assert len(shared) >= 4 and all(torch.equal(two[k], first[k]) for k in shared)


# ------------------------------------------------------------------------------------- config


def test_augment_settings_are_in_the_config_dict_and_overridable():
    cfg = load_config(None, ["data.augment.speed_prob=0.5", "data.augment.speed_factors=0.9,1.1"])
    assert cfg.data.augment.speed_factors == [0.9, 1.1]
    d = cfg.to_dict()["data"]["augment"]  # what W&B receives as the run config
    assert d["speed_prob"] == 0.5 and d["noise_snr_db"] == [5.0, 20.0] and "reverb_rt60" in d
    assert Config().data.augment == AugmentConfig()  # off by default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.augment.noise_prob=1.5", "data.augment.noise_prob must be a number >= 0 and <= 1"),
        ("data.augment.noise_types=white,purple", "data.augment.noise_types must be one of"),
        ("data.augment.gain_db=6,-6", "data.augment.gain_db must be [low, high] with low <= high"),
        ("data.augment.reverb_rt60=0.3,0.5,0.7", "data.augment.reverb_rt60 must be a [low, high] pair"),
        ("data.augment.speed_factors=0.1", "data.augment.speed_factors[0] must be a number >= 0.5"),
        ("data.augment.speed_factors=fast", "data.augment.speed_factors[0]: cannot read 'fast' as float"),
        ("data.augment.bandlimit_types=radio", "data.augment.bandlimit_types must be one of"),
    ],
)
def test_bad_augment_settings_are_refused_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_file_noise_needs_a_noise_directory(tmp_path):
    with pytest.raises(ConfigError, match="data.augment.noise_dir must be a directory"):
        load_config(None, ["data.augment.noise_prob=1", "data.augment.noise_types=file"])
    cfg = load_config(
        None, ["data.augment.noise_prob=1", "data.augment.noise_types=file", f"data.augment.noise_dir={tmp_path}"]
    )
    assert cfg.data.augment.noise_dir == str(tmp_path)


# ------------------------------------------------------------------------------------- end to end


def test_a_teacher_trains_with_every_augmentation_on(tmp_path):
    """A real `lakd train teacher` on the tiny config with all transforms on: it trains and evaluates."""
    from tiny_run import tiny_run

    config = tiny_run(tmp_path)
    sets = [f"data.augment.{n}_prob=1.0" for n in ("speed", "noise", "gain", "reverb", "bandlimit")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lakd.cli", "train", "teacher", "--language", "en", "-c", str(config)]
    r = subprocess.run([*cmd, *(a for s in sets for a in ("--set", s))], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    settings = json.loads((tmp_path / "run" / "teachers" / "en" / "settings.json").read_text())["settings"]
    assert settings["data.augment.reverb_prob"] == 1.0  # a changed augmentation is a changed run (config diff)
    assert (tmp_path / "run" / "teachers" / "en" / "best").is_dir()


def test_bench_data_measures_with_and_without_augmentation(tmp_path, corpus):
    from lakd.bench.data import all_augmentations, bench_data

    out = tmp_path / "data-augment.json"
    rep = bench_data(corpus, worker_counts=(0,), batch_size=4, max_batches=2, out_json=out, augment=all_augmentations())
    saved = json.loads(out.read_text())
    assert [(r["num_workers"], r["augment"]) for r in saved["results"]] == [(0, "off"), (0, "on")]
    assert saved["augment"]["reverb_prob"] == 1.0 and set(saved["augment_ratio"]) == {"0"}
    on, off = (r["samples_per_s"] for r in reversed(rep["results"]))
    assert saved["augment_ratio"]["0"] == pytest.approx(on / off, abs=1e-3)


# ------------------------------------------------------------------------------------- who augments


def test_apply_to_student_leaves_the_teachers_un_augmented_and_their_settings_unchanged():
    from lakd.config.diff import result_settings

    plain = load_config(None, [])
    student_only = load_config(None, ["data.augment.noise_prob=0.5", "data.augment.apply_to=student"])
    both = load_config(None, ["data.augment.noise_prob=0.5"])
    assert A.augment_for(student_only.data, "teachers").augment == AugmentConfig()
    assert A.augment_for(student_only.data, "student") is student_only.data
    assert A.augment_for(both.data, "teachers") is both.data
    # a teacher of the student-only run is the plain run's teacher (and shared with it in experiment grids)
    assert result_settings(student_only, "teachers") == result_settings(plain, "teachers")
    assert result_settings(student_only, "cache") == result_settings(plain, "cache")
    assert result_settings(both, "teachers") != result_settings(plain, "teachers")
    assert result_settings(student_only, "student") != result_settings(plain, "student")
    with pytest.raises(ConfigError, match="data.augment.apply_to must be one of"):
        load_config(None, ["data.augment.apply_to=student,critic"])
