"""`lakd shards subset`: a low-resource copy of a split, stratified per (language, emotion), deterministic."""

import json
import subprocess
import sys

import pytest
from tiny_run import make_split

from lakd.data.index import ShardIndex
from lakd.data.shards import expand_urls, iter_tar_samples
from lakd.data.subset import SubsetError, parse_keep, subset_split


@pytest.fixture
def split(tmp_path):
    return make_split(tmp_path / "train", "train", ["en", "fi", "fr"], n=96, seed=0)  # 32 per language, 8 per class


def _samples(directory):
    return {k: m for u in expand_urls(directory) for k, m in iter_tar_samples(u)}


def test_a_language_is_cut_per_class_and_the_others_are_copied_byte_for_byte(tmp_path, split):
    record = subset_split(split, tmp_path / "low", {"fi": 0.25}, seed=0, max_count=16)
    src, low = _samples(split), _samples(tmp_path / "low")
    langs = {k: json.loads(m["json"])["language"] for k, m in src.items()}
    assert {k for k in src if langs[k] != "fi"} <= set(low)  # en and fr kept whole
    kept_fi = [k for k in low if langs[k] == "fi"]
    assert len(kept_fi) == 4 * 2  # ceil(0.25 x 8) per emotion
    for emotion, (n, total) in record["counts"]["fi"].items():
        assert (n, total) == (2, 8)
        assert sum(json.loads(low[k]["json"])["emotion"] == emotion for k in kept_fi) == 2
    assert all(low[k] == src[k] for k in low)  # audio and metadata bytes unchanged
    index = ShardIndex.load(tmp_path / "low")  # the library's reader sees the cut in the counts
    assert index.num_samples == 64 + 8
    assert index.counts["fi"] == {e: 2 for e in ("anger", "happiness", "neutral", "sadness")}
    assert json.loads((tmp_path / "low" / "SUBSET.json").read_text())["keep"] == {"fi": 0.25}


def test_the_cut_is_deterministic_for_a_seed(tmp_path, split):
    subset_split(split, tmp_path / "a", {"fi": 0.3}, seed=1)
    subset_split(split, tmp_path / "b", {"fi": 0.3}, seed=1)
    subset_split(split, tmp_path / "c", {"fi": 0.3}, seed=2)
    a, b, c = (set(_samples(tmp_path / d)) for d in "abc")
    assert a == b and a != c and len(a) == len(c)


@pytest.mark.parametrize(
    ("keep", "message"),
    [(["fi=0"], "0 < FRACTION <= 1"), (["fi"], "LANGUAGE=FRACTION"), (["fi=much"], "LANGUAGE=FRACTION")],
)
def test_bad_fractions_are_refused_in_one_line(keep, message):
    with pytest.raises(SubsetError, match=message) as e:
        parse_keep(keep)
    assert "\n" not in str(e.value)


def test_an_unknown_language_or_a_used_destination_is_refused_and_nothing_is_left(tmp_path, split):
    with pytest.raises(SubsetError, match=r"--keep names \['sv'\], not in .* \(its languages: \['en', 'fi', 'fr'\]"):
        subset_split(split, tmp_path / "low", {"sv": 0.1})
    assert not (tmp_path / "low").exists() and not list(tmp_path.glob(".low*"))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    with pytest.raises(SubsetError, match="exists and is not empty"):
        subset_split(split, tmp_path / "used", {"fi": 0.1})
    assert (tmp_path / "used" / "x").read_text() == "mine"


def test_cli(tmp_path, split):
    cmd = [sys.executable, "-m", "lakd.cli", "shards", "subset", str(split), str(tmp_path / "low"), "--keep", "fi=0.1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fi" in r.stdout and (tmp_path / "low" / "index.json").exists()
    r = subprocess.run([*cmd[:-1], "fi=2"], capture_output=True, text=True)
    assert r.returncode != 0 and "0 < FRACTION <= 1" in r.stdout + r.stderr
