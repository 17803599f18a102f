"""Metrics against hand-computed numbers; bootstrap CI behaviour; report files."""

import json
import math

import numpy as np
import pytest

from lakd.eval.metrics import bootstrap_ci, classification_metrics, grouped_metrics
from lakd.eval.report import build_report, format_table, write_report

LABELS = ["anger", "happiness", "neutral", "sadness"]


def test_classification_metrics_hand_computed():
    # anger: 3 refs, 2 right; happiness: 1 ref, 1 right; neutral: 2 refs, 0 right; sadness: no refs
    y_true = [0, 0, 0, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 0, 3]
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["n"] == 6
    assert m["wa"] == pytest.approx(3 / 6)
    # UA over the 3 classes present: (2/3 + 1 + 0) / 3
    assert m["ua"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["per_class_recall"] == {"anger": pytest.approx(2 / 3), "happiness": 1.0, "neutral": 0.0, "sadness": None}
    assert m["support"] == {"anger": 3, "happiness": 1, "neutral": 2, "sadness": 0}
    assert m["classes_present"] == ["anger", "happiness", "neutral"]
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    assert m["confusion_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert m["confusion_normalized"][3] == [0, 0, 0, 0]
    # F1: anger P=2/3 R=2/3 -> 2/3; happiness P=1/2 R=1 -> 2/3; neutral 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # precision: anger 2 of 3 predicted, happiness 1 of 2, neutral never predicted (undefined), sadness 0 of 1
    assert m["per_class_precision"] == {
        "anger": pytest.approx(2 / 3),
        "happiness": 0.5,
        "neutral": None,
        "sadness": 0.0,
    }
    assert m["per_class_f1"] == {
        "anger": pytest.approx(2 / 3),
        "happiness": pytest.approx(2 / 3),
        "neutral": 0.0,
        "sadness": None,
    }
    assert m["predicted"] == {"anger": 3, "happiness": 2, "neutral": 0, "sadness": 1}
    json.dumps(m)  # plain python types


def test_label_names_and_bad_input():
    m = classification_metrics(["anger", "sadness"], ["anger", "anger"], LABELS)
    assert m["ua"] == pytest.approx(0.5) and m["wa"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'joy' is not one of"):
        classification_metrics(["joy"], ["anger"], LABELS)
    with pytest.raises(ValueError, match="index 7 is outside"):
        classification_metrics([7], [0], LABELS)
    with pytest.raises(ValueError, match="3 items but y_pred has 2"):
        classification_metrics([0, 1, 2], [0, 1], LABELS)


def test_grouped_metrics_per_language_and_mean():
    y_true = [0, 1, 0, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    langs = ["en", "en", "fi", "fi", "fi", "fi"]
    g = grouped_metrics(y_true, y_pred, langs, LABELS)
    assert set(g["groups"]) == {"en", "fi"}
    assert g["groups"]["en"]["ua"] == 1.0 and g["groups"]["en"]["n"] == 2
    # fi: anger 0/1, happiness 1/1, neutral 1/2
    assert g["groups"]["fi"]["ua"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert g["groups"]["fi"]["wa"] == pytest.approx(2 / 4)
    assert g["overall"]["wa"] == pytest.approx(4 / 6)
    assert g["mean_ua"] == pytest.approx((1.0 + 0.5) / 2)


def _noisy_predictions(n, acc, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    wrong = rng.random(n) > acc
    p = np.where(wrong, (y + rng.integers(1, 4, n)) % 4, y)
    return y, p


def test_bootstrap_contains_point_and_narrows_with_sample_size():
    widths = []
    for n_items in (100, 2000):
        y, p = _noisy_predictions(n_items, 0.7, seed=1)
        ci = bootstrap_ci(y, p, "ua", n=400, seed=0)
        assert ci["low"] <= ci["point"] <= ci["high"]
        assert ci["point"] == pytest.approx(classification_metrics(y, p, LABELS)["ua"])
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(20) scaling, with margin
    # same seed -> same interval; a callable metric works too
    y, p = _noisy_predictions(200, 0.6, seed=2)
    assert bootstrap_ci(y, p, "wa", n=200, seed=3) == bootstrap_ci(y, p, "wa", n=200, seed=3)
    ci = bootstrap_ci(y, p, lambda t, q: float((t == q).mean()), n=200, seed=3)
    assert ci["low"] == pytest.approx(bootstrap_ci(y, p, "wa", n=200, seed=3)["low"])


def test_speaker_clustered_bootstrap_is_wider_when_speakers_differ():
    # 20 speakers with very different accuracies: utterances within a speaker are correlated
    y, p, spk = [], [], []
    for s in range(20):
        acc = 0.95 if s % 2 else 0.35
        ys, ps = _noisy_predictions(50, acc, seed=100 + s)
        y += ys.tolist()
        p += ps.tolist()
        spk += [f"spk{s}"] * 50
    plain = bootstrap_ci(y, p, "wa", n=500, seed=0)
    clustered = bootstrap_ci(y, p, "wa", n=500, seed=0, clusters=spk)
    assert clustered["clustered"] and not plain["clustered"]
    assert clustered["point"] == plain["point"]
    assert (clustered["high"] - clustered["low"]) > 1.5 * (plain["high"] - plain["low"])
    assert clustered["low"] <= clustered["point"] <= clustered["high"]


def test_report_files(tmp_path):
    y, p = _noisy_predictions(60, 0.7, seed=4)
    langs = ["en"] * 30 + ["fi"] * 30
    pred = {
        "y_true": y.tolist(),
        "y_pred": p.tolist(),
        "languages": langs,
        "keys": [f"k{i}" for i in range(60)],
        "speakers": [f"s{i % 6}" for i in range(60)],
        "probs": np.full((60, 4), 0.25),
    }
    report = build_report(pred, LABELS, n_bootstrap=50, seed=0, title="unit test")
    assert report["bootstrap"]["unit"] == "speaker"
    files = write_report(report, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert data["metrics"]["groups"]["en"]["n"] == 30
    assert data["metrics"]["overall"]["ua_ci"]["low"] <= data["metrics"]["overall"]["ua"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| en |" in md and "| overall |" in md and "confusion/overall_normalized.png" in md
    # per-class precision and F1 beside recall
    assert "| class | n | recall % | precision % | F1 % |" in md
    assert "Precision per class (%)" in md and "F1 per class (%)" in md
    overall = data["metrics"]["overall"]
    anger = f"{100 * overall['per_class_recall']['anger']:.1f} | {100 * overall['per_class_precision']['anger']:.1f}"
    assert f"| anger | {overall['support']['anger']} | {anger} |" in md
    for name in ("overall", "en", "fi"):
        for kind in ("counts", "normalized"):
            png = tmp_path / "rep" / "confusion" / f"{name}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "rep" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("key,language,speaker,label,prediction,correct,p_anger")
    assert len(rows) == 61 and set(files) >= {"json", "markdown", "predictions"}
    # no speakers -> utterance bootstrap
    pred.pop("speakers")
    assert build_report(pred, LABELS, n_bootstrap=10)["bootstrap"]["unit"] == "utterance"


def test_format_table():
    rows = [{"system": "LA-MTKD", "ua": 0.71234, "n": 3}, {"system": "FT-Multi", "ua": math.nan, "n": None}]
    md = format_table(rows)
    assert md.splitlines()[0] == "| system | ua | n |"
    assert "| LA-MTKD | 0.712 | 3 |" in md and "| FT-Multi | nan | – |" in md
    plain = format_table(rows, ["system", "ua"], fmt="plain")
    assert plain.splitlines()[1].startswith("LA-MTKD ")
    from rich.table import Table

    assert isinstance(format_table(rows, fmt="rich"), Table)
    with pytest.raises(ValueError, match="fmt must be"):
        format_table(rows, fmt="html")


def test_speaker_bootstrap_falls_back_to_utterances_with_too_few_speakers():
    # one speaker: a speaker bootstrap would always redraw the same speaker (a zero-width interval)
    ys, ps = _noisy_predictions(60, 0.6, seed=3)
    one = bootstrap_ci(ys, ps, "ua", n=300, seed=0, clusters=["only"] * 60)
    assert not one["clustered"] and one["high"] - one["low"] > 0.05
    assert one == bootstrap_ci(ys, ps, "ua", n=300, seed=0)
    five = bootstrap_ci(ys, ps, "ua", n=300, seed=0, clusters=[f"s{i % 5}" for i in range(60)])
    assert five["clustered"]
