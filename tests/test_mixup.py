"""Mixup (lakd.data.mixup): pairs within a language, λ folded to the sample, soft targets, the cached teacher
knowledge mixed like the labels, determinism per (seed, batch keys), config checks, and real training runs."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lakd.config import ConfigError, load_config
from lakd.data.mixup import draw_mix, maybe_mix, mix_batch, targets
from lakd.distill.losses import distillation_loss, mix_teacher_logits

KEYS = [f"utt{i:02d}" for i in range(12)]
LANGS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])


def test_partners_share_the_language_and_lambda_keeps_the_sample_dominant():
    mix = draw_mix(KEYS, LANGS, prob=1.0, alpha=0.4, same_language=True, seed=0)
    assert mix is not None
    own = torch.arange(len(KEYS))
    assert torch.equal(LANGS[mix.partner], LANGS)  # never across languages
    assert (mix.partner != own).all()  # every language has 4 samples here: everyone is paired
    assert ((mix.lam >= 0.5) & (mix.lam <= 1.0)).all() and (mix.lam < 1.0).any()


def test_a_sample_alone_in_its_language_is_not_mixed_and_any_pairs_cross_languages():
    langs = torch.tensor([0, 0, 0, 1])
    mix = draw_mix(KEYS[:4], langs, prob=1.0, alpha=0.4, same_language=True, seed=3)
    assert mix.partner[3] == 3 and mix.lam[3] == 1.0
    crossed = [draw_mix(KEYS, LANGS, 1.0, 0.4, same_language=False, seed=s) for s in range(5)]
    assert any((LANGS[m.partner] != LANGS).any() for m in crossed)


def test_deterministic_for_a_seed_and_batch_and_off_at_probability_zero():
    a = draw_mix(KEYS, LANGS, 0.5, 0.4, True, seed=7)
    b = draw_mix(KEYS, LANGS, 0.5, 0.4, True, seed=7)
    c = draw_mix(KEYS, LANGS, 0.5, 0.4, True, seed=8)
    assert torch.equal(a.partner, b.partner) and torch.equal(a.lam, b.lam)
    assert not (torch.equal(a.partner, c.partner) and torch.equal(a.lam, c.lam))
    assert draw_mix(KEYS, LANGS, 0.0, 0.4, True, seed=7) is None
    half = [draw_mix(KEYS, LANGS, 0.5, 0.4, True, seed=s) for s in range(40)]
    mixed_share = sum(int((m.lam < 1).sum()) for m in half if m is not None) / (40 * len(KEYS))
    assert 0.35 < mixed_share < 0.65  # prob is per sample


def test_waveforms_masks_and_soft_targets_are_mixed_with_the_same_lambda():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 100, generator=gen)
    mask = torch.ones(12, 100, dtype=torch.long)
    mask[0, 60:] = 0  # sample 0 is shorter than its partner
    labels = torch.arange(12) % 4
    batch = {"input_values": x, "attention_mask": mask, "language_ids": LANGS, "labels": labels, "keys": KEYS}
    mix = draw_mix(KEYS, LANGS, 1.0, 0.4, True, seed=1)
    out = mix_batch(batch, mix)
    i, j, lam = 0, int(mix.partner[0]), float(mix.lam[0])
    assert torch.allclose(out["input_values"][i], lam * x[i] + (1 - lam) * x[j])
    assert out["attention_mask"][0].sum() == 100  # the union: the partner's longer audio is in the mix
    assert torch.equal(batch["input_values"], x)  # the caller's batch is not changed in place
    soft = targets(out, mix, 4)
    assert soft.shape == (12, 4) and torch.allclose(soft.sum(1), torch.ones(12))
    assert soft[i, labels[i]] == pytest.approx(lam + (1 - lam) * float(labels[j] == labels[i]))
    assert torch.equal(targets(batch, None, 4), labels)


def test_maybe_mix_follows_the_config_and_leaves_the_batch_alone_when_off():
    cfg = load_config(None, ["data.augment.mixup_prob=1.0", "data.augment.mixup_alpha=1.0"])
    batch = {
        "input_values": torch.randn(12, 50),
        "attention_mask": torch.ones(12, 50, dtype=torch.long),
        "language_ids": LANGS,
        "labels": torch.arange(12) % 4,
        "keys": KEYS,
    }
    mixed, mix = maybe_mix(batch, cfg.data.augment, seed=0)
    assert mix is not None and not torch.equal(mixed["input_values"], batch["input_values"])
    same, none = maybe_mix(batch, load_config(None, []).data.augment, seed=0)
    assert none is None and same is batch


def test_cached_teacher_knowledge_is_mixed_as_probabilities():
    gen = torch.Generator().manual_seed(2)
    t = torch.randn(3, 12, 4, generator=gen)  # [K, B, C]
    mix = draw_mix(KEYS, LANGS, 1.0, 0.4, True, seed=2)
    temperature = 5.0
    mixed = mix_teacher_logits(t, mix, temperature)
    p = F.softmax(t / temperature, -1)
    lam = mix.lam.view(1, -1, 1)
    expected = lam * p + (1 - lam) * p[:, mix.partner]
    assert torch.allclose(F.softmax(mixed / temperature, -1), expected, atol=1e-6)


def test_the_loss_with_soft_targets_is_the_soft_cross_entropy():
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(12, 4, generator=gen, requires_grad=True)
    t = torch.randn(2, 12, 4, generator=gen)
    w = torch.full((12, 2), 0.5)
    labels = torch.arange(12) % 4
    hard = distillation_loss(s, t, labels, w, 2.0, 0.3)
    onehot = distillation_loss(s, t, F.one_hot(labels, 4).float(), w, 2.0, 0.3)
    assert torch.allclose(hard["loss"], onehot["loss"])  # one-hot soft targets == class indices
    mix = draw_mix(KEYS, LANGS, 1.0, 0.4, True, seed=4)
    soft = mix.soft_targets(labels, 4)
    terms = distillation_loss(s, t, soft, w, 2.0, 0.3)
    assert torch.allclose(terms["ce"], -(soft * F.log_softmax(s, -1)).sum(-1).mean())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.augment.mixup_prob=2", "data.augment.mixup_prob must be a number >= 0 and <= 1"),
        ("data.augment.mixup_alpha=0", "data.augment.mixup_alpha must be a number > 0"),
        ("data.augment.mixup_pairs=same-speaker", "data.augment.mixup_pairs must be one of"),
    ],
)
def test_bad_mixup_settings_are_refused_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def _lakd(config, *args, sets=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lakd.cli", *args, "-c", str(config)]
    r = subprocess.run([*cmd, *(a for s in sets for a in ("--set", s))], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_teachers_and_a_cached_student_train_with_mixup(tmp_path):
    """Real runs: two teachers with mixup, the clean cache, and a student whose cached targets are mixed."""
    from tiny_run import tiny_run

    config = tiny_run(tmp_path, languages=["en", "fi"])
    mixup = ["data.augment.mixup_prob=1.0", "data.augment.mixup_alpha=0.4"]
    for lang in ("en", "fi"):
        _lakd(config, "train", "teacher", "--language", lang, sets=mixup)
    _lakd(config, "cache", sets=["distill.use_cache=true"])
    _lakd(config, "distill", sets=[*mixup, "distill.use_cache=true"])
    run = tmp_path / "run"
    settings = json.loads((run / "teachers" / "en" / "settings.json").read_text())["settings"]
    assert settings["data.augment.mixup_prob"] == 1.0  # a changed mixup is a changed run (config diff)
    meta = json.loads((run / "student" / "best" / "lakd.json").read_text())["meta"]
    assert meta["config"]["data"]["augment"]["mixup_prob"] == 1.0 and meta["cache_dir"] == str(run / "cache")
