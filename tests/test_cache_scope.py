"""distill.cache_scope own-language: a per-language teacher cached on its own language only (linear in the number
of languages, not quadratic), its rows for other languages zeros that route weighting ignores."""

import json

import pytest
import torch
from cache_fixtures import LANGS, make_shards, save_teacher, write

from lakd.config import ConfigError, load_config
from lakd.distill.cache import CacheMissError, TeacherCache
from lakd.distill.losses import distillation_loss, teacher_weights

KEYS = [f"utt{i:03d}" for i in range(12)]
KEY_LANGS = [LANGS[i % 3] for i in range(12)]  # make_shards: language = LANGS[i % 3]


@pytest.fixture
def both(tmp_path):
    shards = make_shards(tmp_path / "data")
    teachers = {
        "en": save_teacher(tmp_path / "t_en", 32, 0),
        "fi": save_teacher(tmp_path / "t_fi", 24, 1),
        "multi": save_teacher(tmp_path / "t_multi", 16, 2),
    }
    write(shards, teachers, tmp_path / "all")
    manifest = write(shards, teachers, tmp_path / "own", scope="own-language")
    return shards, teachers, tmp_path, manifest


def test_each_language_teacher_runs_on_its_own_language_and_the_multi_teacher_on_all(both):
    _, teachers, root, manifest = both
    entries = manifest["teachers"]
    # each language teacher: its own language and fr, which has no teacher of its own (route mixes all for it)
    assert (entries["en"]["covers"], entries["en"]["num_samples"]) == (["en", "fr"], 8)
    assert (entries["fi"]["covers"], entries["fi"]["num_samples"]) == (["fi", "fr"], 8)
    assert (entries["multi"]["scope"], entries["multi"]["num_samples"]) == ("all", 12)
    own, full = TeacherCache(root / "own", teachers), TeacherCache(root / "all", teachers)
    assert len(own) == 12 and "utt001" in own  # covered by the multi teacher (and fi's own)
    o_logits, o_embeds = own.lookup(KEYS, KEY_LANGS)
    f_logits, f_embeds = full.lookup(KEYS, KEY_LANGS)
    for k, lang in enumerate(["en", "fi", None]):
        mine = torch.tensor([lang is None or x in (lang, "fr") for x in KEY_LANGS])  # fr has no teacher
        # the same knowledge where it is held (other batches, other padding: equal to float tolerance)
        assert torch.allclose(o_logits[k][mine], f_logits[k][mine], atol=1e-5)
        assert torch.allclose(o_embeds[k][mine], f_embeds[k][mine], atol=1e-5)
        assert (o_logits[k][~mine] == 0).all() and (o_embeds[k][~mine] == 0).all()


def test_route_weighting_gives_the_same_loss_from_either_cache(both):
    _, teachers, root, _ = both
    ids = torch.tensor([LANGS.index(x) for x in KEY_LANGS])
    student = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 4
    losses = []
    for which in ("all", "own"):
        t_logits, _ = TeacherCache(root / which, teachers).lookup(KEYS, KEY_LANGS)
        w = teacher_weights("route", student, t_logits, ids, ["en", "fi", None], LANGS)
        losses.append(distillation_loss(student, t_logits, labels, w, 5.0, 0.5)["loss"])
    assert torch.allclose(losses[0], losses[1])


def test_a_lookup_without_languages_is_refused_naming_the_teacher_and_its_language(both):
    _, teachers, root, _ = both
    message = r"teacher 'en' .* the samples of en, fr only: pass the samples' languages"
    with pytest.raises(CacheMissError, match=message):
        TeacherCache(root / "own", teachers).lookup(["utt001"])  # a fi sample


def test_a_rerun_with_another_scope_recomputes_the_language_teachers_only(both):
    shards, teachers, root, _ = both
    before = json.loads((root / "own" / "manifest.json").read_text())["teachers"]
    after = write(shards, teachers, root / "own", scope="all")["teachers"]
    assert after["en"]["scope"] == "all" and after["en"]["num_samples"] == 12
    assert after["multi"]["seconds"] == before["multi"]["seconds"]  # kept, not recomputed


def test_own_language_is_refused_with_cosine_weighting_at_load():
    message = "distill.cache_scope own-language .*weighting 'cosine-batch' weighs every teacher"
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, ["distill.cache_scope=own-language", "distill.weighting=cosine-batch"])
    assert "\n" not in str(e.value)
    assert load_config(None, ["distill.cache_scope=own-language"]).distill.cache_scope == "own-language"


@pytest.mark.slow
def test_cache_and_distill_with_an_own_language_cache_through_the_cli(tmp_path):
    import os
    import subprocess
    import sys

    from tiny_run import tiny_run

    config = tiny_run(tmp_path, languages=["en", "fi"])
    own = ["--set", "distill.use_cache=true", "--set", "distill.cache_scope=own-language"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["train", "teacher", "--language", "en"], ["train", "teacher", "--language", "fi"], ["cache", *own],
                 ["distill", *own]):  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "lakd.cli", *args, "-c", str(config)], capture_output=True, text=True,
                           env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "cache" / "manifest.json").read_text())
    assert {n: e["covers"] for n, e in manifest["teachers"].items()} == {"en": ["en"], "fi": ["fi"]}
    assert sum(e["num_samples"] for e in manifest["teachers"].values()) == 16  # each sample cached once, not twice
    assert (tmp_path / "run" / "student" / "best" / "lakd.json").exists()


def test_a_grid_variant_with_an_own_language_cache_gets_its_own_cache_unit(tmp_path):
    from lakd.config import Config
    from lakd.experiments.grids import grid_from_dict
    from lakd.experiments.plan import plan_experiment

    cfg = Config(name="t", languages=["en", "fi"], labels=["anger", "happiness", "neutral", "sadness"])
    cfg.data.train = cfg.data.dev = cfg.data.test = "/nonexistent"
    grid = grid_from_dict(
        {
            "variants": [
                {"from": "la-mtkd"},
                {"name": "la-own", "from": "la-mtkd", "set": {"distill.cache_scope": "own-language"}},
            ]
        }
    )
    stages = {s.name: s for s in plan_experiment(cfg, grid, [0], tmp_path / "exp").stages}
    assert sorted(stages["cache"].items) == ["s0", "s0.own-language"]
    assert stages["cache"].specs["s0.own-language"].cfg.distill.cache_scope == "own-language"
    assert stages["student"].specs["la-own.s0"].needs["cache"] == ("s0.own-language",)
    assert len(stages["teachers"].items) == 2  # the teachers are shared: only the cache differs
