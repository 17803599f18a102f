"""Hugging Face export: transformers alone (another process, offline, lakd never imported) loads an exported
teacher / plain student as the stock *ForSequenceClassification class and a language-aware student through its
custom code, and the audio-classification pipeline gives lakd's probabilities; the model card's metadata."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from tiny_models import LABELS, TINY_BACKBONE
from typer.testing import CliRunner

import lakd
from lakd.cli import app
from lakd.config import ModelConfig
from lakd.export import export_model
from lakd.models.ser import SERModel

LANGS = ["en", "fi", "fr"]
RATE = 22050  # not 16 kHz: the pipeline's resampling and lakd's must agree too

# what a user without lakd runs: only transformers, offline
SCRIPT = r"""
import json, sys
import numpy as np
from transformers import AutoModelForAudioClassification, pipeline

jobs, audio_path, rate = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
audio = np.load(audio_path)
out = {}
for job in jobs:
    model, info = AutoModelForAudioClassification.from_pretrained(
        job["dir"], trust_remote_code=job["remote"], output_loading_info=True
    )
    pipe = pipeline("audio-classification", model=job["dir"], trust_remote_code=job["remote"], device="cpu")
    scores = {}
    for lang in job["languages"]:
        kwargs = {} if lang is None else {"language": lang}
        result = pipe({"raw": audio, "sampling_rate": rate}, **kwargs)
        scores[str(lang)] = {d["label"]: d["score"] for d in result}
    out[job["name"]] = {
        "pipeline": type(pipe).__name__,
        "model": type(model).__name__,
        "missing": list(info["missing_keys"]),
        "unexpected": list(info["unexpected_keys"]),
        "scores": scores,
    }
out["lakd_imported"] = any(m == "lakd" or m.startswith("lakd.") for m in sys.modules)
print("RESULT " + json.dumps(out))
"""


def _checkpoint(root, name, family="wav2vec2", student=False, normalize=False, seed=0, group_norm=False, stats=False):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        family=family,
        backbone={**TINY_BACKBONE, "feat_extract_norm": "group" if group_norm else "layer"},
        freeze_feature_encoder=False,
        normalize_audio=normalize,
        language_embedding=student,
        hierarchical_attention=student,
        attention_depth=2,
        attention_dim=16,
        attention_stats=stats,
    )
    model = SERModel(cfg, LABELS, LANGS)
    with torch.no_grad():
        model.head.weight.mul_(20)  # a trained-looking head: probabilities far from uniform
        if student:  # zero-initialised: make the languages differ
            torch.nn.init.normal_(model.language_projection.weight, std=0.5)
        for pool in model.pool.frame_pools if stats else []:  # starts as [I 0]: make the std count
            torch.nn.init.normal_(pool.stats.weight, std=0.2)
    return model.save_pretrained(root / name / "best")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    specs = {
        "teacher": dict(normalize=True),  # the feature extractor must normalise as lakd does
        "hubert_teacher": dict(family="hubert", group_norm=True),  # HuBERT-base style: no attention mask
        "plain_student": dict(family="wavlm", seed=1),
        "student": dict(student=True, seed=2),
        "stats_student": dict(student=True, seed=3, stats=True),  # attentive statistics pooling
    }
    out = {}
    for name, spec in specs.items():
        ckpt = _checkpoint(root, name, **spec)
        if name == "student":  # through the CLI, with an evaluation report beside the checkpoint for the card
            _write_report(ckpt.parent / "eval")
            res = CliRunner().invoke(
                app, ["export", "--format", "hf", "--checkpoint", str(ckpt), "--out", str(root / f"{name}_hf")]
            )
            assert res.exit_code == 0, res.output
            info = json.loads(res.stdout)
        else:
            info = export_model(ckpt, root / f"{name}_hf", fmt="hf")
        out[name] = (ckpt, info)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(1.3 * RATE)) + 0.02).astype(np.float32)
    np.save(root / "audio.npy", audio)
    jobs = [
        {
            "name": n,
            "dir": i["path"],
            "remote": i["custom_code"],
            "languages": [*LANGS, None] if n.endswith("student") and n != "plain_student" else [None],
        }
        for n, (_, i) in out.items()
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(root / "hf_home")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(jobs), str(root / "audio.npy"), str(RATE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT ") :])
    return out, audio, result


def _write_report(directory):
    from lakd.eval.report import build_report, write_report

    y = [i % 4 for i in range(24)]
    pred = {"y_true": y, "y_pred": [0] * 6 + y[6:], "languages": [LANGS[i % 3] for i in range(24)]}
    write_report(build_report(pred, LABELS, n_bootstrap=20), directory, figures=False)


@pytest.mark.parametrize(
    "name,cls",
    [
        ("teacher", "Wav2Vec2ForSequenceClassification"),
        ("hubert_teacher", "HubertForSequenceClassification"),
        ("plain_student", "WavLMForSequenceClassification"),
    ],
)
def test_teachers_and_plain_students_are_stock_transformers_models(exports, name, cls):
    out, audio, result = exports
    ckpt, info = out[name]
    r = result[name]
    assert not result["lakd_imported"]
    assert r["model"] == cls and not info["custom_code"] and r["pipeline"] == "AudioClassificationPipeline"
    assert r["missing"] == [] and r["unexpected"] == []  # the trained head is there, nothing newly initialised
    assert not any(f.endswith(".py") for f in info["files"]) and "preprocessor_config.json" in info["files"]
    with open(os.path.join(info["path"], "preprocessor_config.json")) as f:
        pre = json.load(f)
    assert pre["sampling_rate"] == 16000 and pre["do_normalize"] == (name == "teacher")
    assert pre["return_attention_mask"] == (name != "hubert_teacher")  # as lakd: no mask for group-norm encoders
    want = lakd.load(ckpt).predict(audio, RATE)
    assert r["scores"]["None"] == pytest.approx(want, abs=1e-5)
    assert max(want.values()) > 0.4  # a head far from uniform, so a wrong mapping would show


@pytest.mark.parametrize("name", ["student", "stats_student"])
def test_language_aware_student_through_custom_code_and_the_language_argument(exports, name):
    out, audio, result = exports
    ckpt, info = out[name]
    r = result[name]
    assert info["custom_code"] and r["model"] == "LakdForAudioClassification"
    assert r["pipeline"] == "LakdAudioClassificationPipeline" and r["missing"] == [] and r["unexpected"] == []
    predictor = lakd.load(ckpt)
    for lang in [*LANGS, None]:
        assert r["scores"][str(lang)] == pytest.approx(predictor.predict(audio, RATE, language=lang), abs=1e-5)
    assert r["scores"]["fi"] != pytest.approx(r["scores"]["None"], abs=1e-4)  # the language matters
    with open(os.path.join(info["path"], "config.json")) as f:
        config = json.load(f)
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_lakd.LakdForAudioClassification"
    assert config["id2label"] == {str(i): l for i, l in enumerate(LABELS)} and config["languages"] == LANGS
    assert "_name_or_path" not in config["backbone_config"]  # no local paths in a published config


def test_model_card_metadata(exports):
    from huggingface_hub import ModelCard

    out, _, _ = exports
    _, info = out["student"]
    card = ModelCard.load(os.path.join(info["path"], "README.md"))
    meta = yaml.safe_load(card.content.split("---")[1])
    assert meta["language"] == LANGS and meta["pipeline_tag"] == "audio-classification"
    assert meta["library_name"] == "transformers" and meta["labels"] == LABELS and "custom_code" in meta["tags"]
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    report = json.loads((out["student"][0].parent / "eval" / "metrics.json").read_text())
    assert results[(None, "recall")] == pytest.approx(100 * report["metrics"]["overall"]["ua"], abs=0.01)
    assert results[("fi", "accuracy")] == pytest.approx(100 * report["metrics"]["groups"]["fi"]["wa"], abs=0.01)
    assert 'language="en"' in card.text and "trust_remote_code=True" in card.text
    # a teacher without a report: a card that says so, stock usage
    teacher_card = ModelCard.load(os.path.join(out["teacher"][1]["path"], "README.md"))
    assert teacher_card.data.eval_results is None and "No evaluation report" in teacher_card.text
    assert "trust_remote_code" not in teacher_card.text


def test_model_card_of_a_one_language_teacher_claims_only_that_language(tmp_path):
    """An FT-Mono teacher's lakd.json lists the run's whole language table; its card's `language` tag and first
    line must name the one language it was trained on, or the hub lists an English model under Finnish."""
    from huggingface_hub import ModelCard

    torch.manual_seed(0)
    cfg = ModelConfig(family="wav2vec2", backbone=TINY_BACKBONE, freeze_feature_encoder=False)
    ckpt = SERModel(cfg, LABELS, LANGS).save_pretrained(
        tmp_path / "teacher_fi" / "best", extra_meta={"kind": "ft-mono", "languages_trained": ["fi"]}
    )
    info = export_model(ckpt, tmp_path / "hf", fmt="hf")
    card = ModelCard.load(os.path.join(info["path"], "README.md"))
    assert card.data.language == ["fi"]
    assert f"({', '.join(LABELS)}) for fi, exported" in card.text
    assert json.loads((ckpt / "lakd.json").read_text())["languages"] == LANGS  # the checkpoint keeps its table
    assert card.data.eval_results is None  # no report yet

    # the pipeline's report of every FT-Mono teacher together (<run>/eval/ft-mono/test): the card takes fi's part
    groups = {lang: {"n": 40, "ua": ua, "wa": ua + 0.05} for lang, ua in zip(LANGS, (0.5, 0.625, 0.75))}
    combined = {
        "title": "FT-Mono",
        "n": 120,
        "metrics": {"overall": {"n": 120, "ua": 0.6, "wa": 0.6}, "groups": groups},
    }
    (tmp_path / "eval" / "ft-mono" / "test").mkdir(parents=True)
    (tmp_path / "eval" / "ft-mono" / "test" / "metrics.json").write_text(json.dumps(combined))
    info = export_model(ckpt, tmp_path / "hf2", fmt="hf")
    card = ModelCard.load(os.path.join(info["path"], "README.md"))
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {
        (None, "recall"): 62.5,
        (None, "accuracy"): 67.5,
        ("fi", "recall"): 62.5,
        ("fi", "accuracy"): 67.5,
    }
    assert "Test split of" in card.text and "40 utterances" in card.text
