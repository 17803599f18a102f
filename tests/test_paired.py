"""Paired comparisons: a real gain is significant with a CI excluding 0; identical or equally good systems are not."""

import numpy as np
import pytest

from lakd.eval.paired import align_predictions, paired_comparison


def _systems(n=240, acc_a=0.6, acc_b=0.6, seeds=3, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)

    def predict(acc):
        right = rng.random((seeds, n)) < acc
        wrong = (y[None] + rng.integers(1, c, (seeds, n))) % c
        return np.where(right, y[None], wrong)

    return y, predict(acc_a), predict(acc_b)


def test_identical_systems_have_zero_difference_and_p_one():
    y, a, _ = _systems()
    r = paired_comparison(y, a, a.copy(), n_bootstrap=200, n_permutations=200)
    assert r["diff"] == 0 and r["low"] == 0 == r["high"] and r["p_value"] == 1.0


def test_a_real_gain_is_significant_and_its_ci_excludes_zero():
    y, a, b = _systems(acc_a=0.55, acc_b=0.70)
    r = paired_comparison(y, a, b, n_bootstrap=500, n_permutations=500)
    assert r["diff"] > 0.1 and r["low"] > 0 and r["p_value"] < 0.01
    assert r["seeds"] == 3 and len(r["per_seed_diff"]) == 3 and r["diff_sd"] > 0
    assert r["b_mean"] - r["a_mean"] == pytest.approx(r["diff"])
    # and the reverse comparison is its mirror image
    back = paired_comparison(y, b, a, n_bootstrap=500, n_permutations=500)
    assert back["diff"] == pytest.approx(-r["diff"]) and back["high"] < 0


def test_equally_good_systems_are_called_different_at_about_the_nominal_rate():
    """Under the null, p < 0.05 about 5% of the time and the 95% CI misses 0 about as often (40 replications)."""
    p_hits = ci_hits = 0
    for rep in range(40):
        y, a, b = _systems(n=120, acc_a=0.6, acc_b=0.6, seeds=2, seed=100 + rep)
        r = paired_comparison(y, a, b, n_bootstrap=200, n_permutations=200, seed=rep)
        p_hits += r["p_value"] < 0.05
        ci_hits += not (r["low"] <= 0 <= r["high"])
    assert p_hits <= 6 and ci_hits <= 7, (p_hits, ci_hits)


def test_pairing_is_what_makes_a_small_consistent_gain_visible():
    """B fixes 12 of A's errors and breaks none: unpaired CIs would overlap, the paired test must see it."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    a = np.where(rng.random(300) < 0.6, y, (y + 1) % 4)
    b = a.copy()
    fix = np.flatnonzero(a != y)[:12]
    b[fix] = y[fix]
    r = paired_comparison(y, a, b, metric="wa", n_bootstrap=500, n_permutations=2000)
    assert r["diff"] == pytest.approx(12 / 300) and r["p_value"] < 0.01 and r["low"] > 0


def test_speaker_bootstrap_is_used_with_enough_speakers_and_is_wider():
    rng = np.random.default_rng(2)
    spk = np.repeat(np.arange(10), 30)
    y = rng.integers(0, 4, 300)
    # the gain depends on the speaker: B helps half the speakers a lot and the others not at all
    a = np.where(rng.random(300) < 0.5, y, (y + 1) % 4)
    b = np.where((spk % 2 == 0) & (rng.random(300) < 0.6), y, a)
    utt = paired_comparison(y, a, b, n_bootstrap=1000, n_permutations=10)
    clu = paired_comparison(y, a, b, clusters=spk, n_bootstrap=1000, n_permutations=10)
    assert clu["clustered"] and not utt["clustered"]
    assert clu["high"] - clu["low"] > utt["high"] - utt["low"]
    few = paired_comparison(y, a, b, clusters=spk % 3, n_bootstrap=10, n_permutations=10)
    assert not few["clustered"]  # 3 speakers: utterances are resampled instead


def test_mismatched_inputs_are_refused():
    y, a, b = _systems(seeds=2)
    with pytest.raises(ValueError, match="same seeds and utterances"):
        paired_comparison(y, a, b[:1])
    with pytest.raises(ValueError, match="metric"):
        paired_comparison(y, a, b, metric="f1")


def test_align_predictions_orders_by_key_and_refuses_other_utterances():
    r1 = {"keys": ["b", "a", "c"], "y_true": [1, 0, 2], "y_pred": [1, 1, 2]}
    r2 = {"keys": ["c", "b", "a"], "y_true": [2, 1, 0], "y_pred": [0, 1, 0]}
    keys, (x, z) = align_predictions([r1, r2])
    assert keys == ["a", "b", "c"] and x["y_pred"] == [1, 1, 2] and z["y_pred"] == [0, 1, 0]
    assert x["y_true"] == z["y_true"] == [0, 1, 2]
    with pytest.raises(ValueError, match="1 missing"):
        align_predictions([r1, {"keys": ["a", "b"], "y_true": [0, 1], "y_pred": [0, 1]}])
