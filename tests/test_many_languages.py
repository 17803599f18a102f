"""Adding languages is configuration: the built-in `tiny8` config (8 espeak-ng languages) runs the whole pipeline —
synthesized shards -> one teacher per language -> teacher-knowledge cache -> student -> evaluation — with no code
that names a language. Tiny models, 3 speakers × 8 utterances per language, one epoch each, the job graph run in
this process (debug executor) to keep it near a minute; slow, so marked `slow`."""

import json

import pytest
from tiny_models import TINY_RUN
from typer.testing import CliRunner

from lakd.cli import app
from lakd.config import load_config
from lakd.data.synth import check_languages, load_sentences, open_engine
from lakd.models.ser import SERModel

LANGS = ["en", "fi", "fr", "de", "es", "it", "sv", "et"]


def test_tiny8_config_lists_eight_languages_each_with_its_own_sentences_and_voice():
    cfg = load_config("tiny8")
    assert cfg.languages == LANGS and cfg.synth
    check_languages(open_engine(), LANGS)  # espeak-ng speaks each (UnknownLanguageError otherwise)
    texts = {}
    for lang in LANGS:
        sentences, source = load_sentences(lang)
        assert source == lang and len(sentences) == 20 and len(set(sentences)) == 20, lang
        texts[lang] = set(sentences)
    for a in LANGS:  # a language's list is its own, not a copy of another's
        assert all(len(texts[a] & texts[b]) == 0 for b in LANGS if b != a), a


@pytest.mark.slow
def test_eight_languages_through_the_whole_pipeline(tmp_path):
    run_dir = tmp_path / "run"
    sets = [*TINY_RUN, "launch.executor=debug"]
    res = CliRunner().invoke(
        app, ["demo", "--config", "tiny8", "--run-dir", str(run_dir), *sum((["--set", s] for s in sets), [])]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)

    # every language has its own teacher, trained on that language only
    for lang in LANGS:
        meta = json.loads((run_dir / "teachers" / lang / "best" / "lakd.json").read_text())
        assert meta["meta"]["languages_trained"] == [lang] and meta["meta"]["kind"] == "ft-mono", lang
    manifest = json.loads((run_dir / "cache" / "manifest.json").read_text())
    assert {name: t["language"] for name, t in manifest["teachers"].items()} == {l: l for l in LANGS}
    assert all(t["num_samples"] == 8 * 8 for t in manifest["teachers"].values())  # every teacher saw all train data

    # the student's language table: one row per language, plus the shared "any" row
    student = SERModel.from_pretrained(run_dir / "student" / "best")
    assert student.languages == LANGS
    assert student.language_embedding.num_embeddings == len(LANGS) + 1
    assert json.loads((run_dir / "student" / "best" / "lakd.json").read_text())["meta"]["teachers"].keys() == set(LANGS)

    # evaluation reports all eight languages, each on its own test speaker's 8 utterances
    report = json.loads((run_dir / "eval" / "la-mtkd" / "test" / "metrics.json").read_text())
    groups = report["metrics"]["groups"]
    assert set(groups) == set(LANGS)
    assert all(g["n"] == 8 and 0.0 <= g["ua"] <= 1.0 for g in groups.values())
    table = (run_dir / "results.md").read_text()
    assert all(f"{lang} UA" in table for lang in LANGS)
