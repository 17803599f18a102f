"""Adding a language to a trained student (`lakd distill --extend`): the language table grows with the old rows
unchanged, the extended student learns the new language from its teacher's knowledge while the old teachers'
knowledge comes from the old cache unchanged, the old languages are kept within a stated tolerance, and bad
inputs (no checkpoint, a language dropped or moved, other labels) end in one clear line. Real training on tiny
models; the data make the new language need learning: old languages carry the emotion in loudness, the new one
in pitch at one loudness, so the student before extension is near chance on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_run import LABELS, tiny_run
from typer.testing import CliRunner

from lakd.cli import app
from lakd.config import load_config
from lakd.data.shards import ShardWriter
from lakd.models.ser import LanguageTableError, SERModel, grow_languages, grown_state_dict
from lakd.recipes.extend import ua_by_language

OLD, NEW = ["en", "fi"], "de"
TOLERANCE = 0.15  # UA points an old language may lose to the extension (the documented tolerance)
SIZES = {"train": 32, "dev": 16, "test": 16}  # per language


def write_language(root: Path, lang: str, seed: int) -> None:
    """Shards of one language under root/<split>: the class is the loudness (old languages) or, for NEW, the
    pitch of a tone at one loudness."""
    rng = np.random.default_rng(seed)
    for split, n in SIZES.items():
        with ShardWriter(root / split, f"{lang}-{split}", max_count=n) as w:
            for j in range(n):
                c = j % len(LABELS)
                t = np.arange(int(16000 * rng.uniform(0.25, 0.4))) / 16000
                if lang == NEW:
                    audio = 0.3 * np.sin(2 * np.pi * 220 * 2**c * t + rng.uniform(0, 6.3)) + 0.02 * rng.standard_normal(
                        t.size
                    )
                else:
                    audio = 0.1 * (1 + c) * rng.standard_normal(t.size)
                meta = {"emotion": LABELS[c], "language": lang, "speaker": f"{lang}{split}{j % 2}", "corpus": "t"}
                w.write(f"{lang}_{split}{j:03d}", {**meta, "split": split}, audio.astype(np.float32))  # fmt: skip


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def grown_config(root: Path, base: Path, languages: list[str], **changes) -> Path:
    cfg = yaml.safe_load(base.read_text())
    dirs = [root / "old", root / "new"] if NEW in languages else [root / "old"]
    for split in SIZES:
        cfg["data"][split] = [str(d / split) for d in dirs]
    cfg.update(languages=languages, run_dir=str(root / "grown"), **changes)
    path = root / f"grown-{'-'.join(languages)}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=["all", "own-language"])
def extended(tmp_path_factory, request):
    """Old student (en, fi) from cached knowledge (each teacher cached on all data, or on its own language only:
    distill.cache_scope); the de teacher; the student extended to en, fi, de."""
    root = tmp_path_factory.mktemp("extend")
    for i, lang in enumerate([*OLD, NEW]):
        write_language(root / ("new" if lang == NEW else "old"), lang, i)
    opt = {"epochs": 6, "lr": 3e-3, "warmup_ratio": 0.1, "checkpoint_every": 50}
    base = tiny_run(root / "base", OLD, **opt)
    old_cfg = yaml.safe_load(base.read_text())
    old_cfg["data"].update({s: str(root / "old" / s) for s in SIZES}, batch_size=8)
    old_cfg["distill"].update(use_cache=True, cache_scope=request.param)
    old_path = root / "old.yaml"
    old_path.write_text(yaml.safe_dump(old_cfg, sort_keys=False))
    for lang in OLD:
        assert run_cli("train", "teacher", "--language", lang, "--config", old_path).exit_code == 0
    assert run_cli("cache", "--config", old_path).exit_code == 0
    res = run_cli("distill", "--config", old_path)
    assert res.exit_code == 0, res.output
    old_ckpt = Path(old_cfg["run_dir"]) / "student" / "best"
    cache_manifest = Path(old_cfg["run_dir"]) / "cache" / "manifest.json"
    cache_stamp = cache_manifest.stat().st_mtime_ns

    grown = grown_config(root, old_path, [*OLD, NEW], student_optim={**opt, "epochs": 4})
    assert run_cli("train", "teacher", "--language", NEW, "--config", grown).exit_code == 0
    res = run_cli("distill", "--config", grown, "--extend", old_ckpt)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return {"root": root, "old": old_ckpt, "grown": grown, "output": res.output, "cache": cache_manifest,
            "cache_stamp": cache_stamp, "new": root / "grown" / "student" / "best"}  # fmt: skip


def test_growing_keeps_old_rows_and_outputs_and_starts_new_rows_as_the_any_vector():
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = SERModel(cfg.student, LABELS, OLD).eval()
    grown = grow_languages(model, [*OLD, NEW, "sv"]).eval()
    old_rows, new_rows = model.language_embedding.weight, grown.language_embedding.weight
    assert grown.languages == [*OLD, NEW, "sv"] and new_rows.shape == (len(OLD) + 3, old_rows.shape[1])
    assert torch.equal(new_rows[: len(OLD)], old_rows[: len(OLD)])  # old ids, old rows
    assert torch.equal(new_rows[-1], old_rows[-1])  # "any" stays last
    assert torch.equal(new_rows[len(OLD)], old_rows[-1]) and torch.equal(new_rows[len(OLD) + 1], old_rows[-1])
    for key, value in model.state_dict().items():  # everything not sized by languages is copied as is
        if key != "language_embedding.weight":
            assert torch.equal(grown.state_dict()[key], value), key
    x = torch.randn(3, 8000)
    with torch.no_grad():
        before = model(x, None, torch.tensor([0, 1, -1])).logits
        after = grown(x, None, torch.tensor([0, 1, 2])).logits  # the new language starts as an unknown one
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(LanguageTableError, match="drops 'fi'"):
        grown_state_dict(model, ["en", NEW])
    with pytest.raises(LanguageTableError, match="moves 'en' from position 0 to 1"):
        grown_state_dict(model, ["fi", "en", NEW])


@pytest.mark.slow
def test_extended_student_learns_the_new_language_and_keeps_the_old_ones(extended):
    meta = json.loads((extended["new"] / "lakd.json").read_text())
    assert meta["languages"] == [*OLD, NEW] and meta["meta"]["extends"]["new"] == [NEW]
    new_model, old_model = SERModel.from_pretrained(extended["new"]), SERModel.from_pretrained(extended["old"])
    assert (
        new_model.language_embedding.num_embeddings == len(OLD) + 2 == old_model.language_embedding.num_embeddings + 1
    )
    # the old teachers' knowledge was read from the old cache, untouched; only the new teacher ran, on de only
    assert extended["cache"].stat().st_mtime_ns == extended["cache_stamp"]
    knowledge = meta["meta"]["knowledge"]
    assert [set(k["teachers"]) for k in knowledge] == [set(OLD), {NEW}]
    new_cache = json.loads((Path(knowledge[1]["cache_dir"]) / "manifest.json").read_text())
    assert set(new_cache["teachers"]) == {NEW} and new_cache["teachers"][NEW]["num_samples"] == SIZES["train"]

    cfg = load_config(extended["grown"])
    before, after = ua_by_language(cfg, str(extended["old"]), "test"), ua_by_language(cfg, str(extended["new"]), "test")
    assert after[NEW] >= before[NEW] + 0.25, (before, after)  # learned: before is near chance (0.25)
    for lang in OLD:
        assert after[lang] >= before[lang] - TOLERANCE, (lang, before, after)
    assert "dev UA before -> after" in extended["output"] and f"{NEW} (new)" in extended["output"]


def one_error_line(res, code: int, *fragments: str) -> str:
    text = " ".join(res.output.split())  # rich wraps long lines on a narrow terminal
    assert res.exit_code == code and "Traceback" not in res.output and text.startswith("error:"), res.output
    assert res.output.count("error:") == 1 and all(f in text for f in fragments), res.output
    return text


def test_bad_extensions_end_in_one_clear_line(tmp_path):
    base = tiny_run(tmp_path / "base", OLD)
    cfg = load_config(base)
    ckpt = tmp_path / "student"
    teachers = {l: str(SERModel(cfg.teacher, LABELS, [l]).save_pretrained(tmp_path / "teachers" / l)) for l in OLD}
    SERModel(cfg.student, LABELS, OLD).save_pretrained(ckpt, {"teachers": teachers, "cache_dir": str(tmp_path / "c")})
    for lang in ("new", "old"):  # the teachers' data dirs need only exist for the configs below
        (tmp_path / lang).mkdir(exist_ok=True)

    def extend(languages, *sets, checkpoint=ckpt):
        path = grown_config(tmp_path, base, languages)
        return run_cli("distill", "--config", path, "--extend", checkpoint, *sum((["--set", s] for s in sets), []))

    one_error_line(extend([*OLD, NEW], checkpoint=tmp_path / "nowhere"), 1, "nowhere", "no such checkpoint")
    one_error_line(extend(["en", NEW]), 1, "drops 'fi'", "append the new ones")
    one_error_line(extend(["fi", "en", NEW]), 1, "moves 'en' from position 0 to 1")
    one_error_line(extend([*OLD, NEW], "labels=[anger,neutral,sadness]"), 1, "labels:", "keeps the label set")
    one_error_line(extend(OLD), 1, "append the codes to add")
    one_error_line(extend([*OLD, NEW], "student.attention_dim=16"), 1, "student.attention_dim", "architecture")
    one_error_line(extend([*OLD, NEW]), 1, f"teacher '{NEW}'", f"lakd train teacher --language {NEW}")
    SERModel(cfg.teacher, LABELS, [NEW]).save_pretrained(tmp_path / "grown" / "teachers" / NEW / "best")
    cached = "distill.use_cache=true"
    one_error_line(extend([*OLD, NEW], cached, "distill.weighting=mean"), 1, "needs weighting=route", "use_cache=false")
    one_error_line(extend([*OLD, NEW], cached), 1, f"teacher cache {tmp_path / 'c'}: missing")
    one_error_line(extend([*OLD, NEW]), 1, "old/train", "not found")  # no data: online teachers, the loader says so


@pytest.mark.slow
def test_bench_extend_writes_accuracy_and_cost_side_by_side(tmp_path):
    """The benchmark's numbers are complete and consistent with each other (timings reported, never asserted)."""
    from lakd.bench.extend import bench_extend

    out = tmp_path / "extend.json"
    sets = ["teacher_optim.epochs=1", "student_optim.epochs=2", "threads=1"]
    res = bench_extend(["en", "fi"], ["de"], 3, 8, eval_speakers=1, extend_epochs=1, overrides=sets, out_json=out)
    saved = json.loads(out.read_text())
    assert saved["ua_test"] == json.loads(json.dumps(res["ua_test"]))
    assert set(saved["ua_test"]) == {"before", "extended", "scratch"}
    assert all(set(v) == {"en", "fi", "de"} and all(0 <= x <= 1 for x in v.values()) for v in saved["ua_test"].values())
    for lang in ("en", "fi"):
        assert saved["forgetting"][lang] == pytest.approx(
            saved["ua_test"]["extended"][lang] - saved["ua_test"]["before"][lang]
        )
    ext, scr = saved["cost"]["extend"], saved["cost"]["scratch"]
    # one train speaker × 8 utterances in each of 3 languages, batch 16: two steps per epoch
    assert (ext["steps"], ext["epochs"], scr["steps"], scr["epochs"]) == (2, 1, 4, 2)
    assert saved["extend_vs_scratch"]["steps"] == pytest.approx(0.5)
    assert saved["extend_vs_scratch"]["seconds"] == pytest.approx(ext["seconds"] / scr["seconds"])
    assert ext["cache_seconds"] > 0 and ext["student_seconds"] > 0 and scr["cache_seconds"] > 0
    assert saved["corpus"]["new"]["train_samples"] == 8 and saved["corpus"]["old"]["train_samples"] == 16
    assert set(saved["new_teacher_ua_test"]) == {"de"} and saved["device"] == "cpu"
