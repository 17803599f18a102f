"""Speaker-independent split helpers: sizes, assignment, folds and leak detection."""

import numpy as np
import pytest

from lakd.data.shards import ShardWriter
from lakd.data.splits import (
    SplitLeakError,
    assign_speaker_splits,
    check_shard_dirs,
    contiguous_folds,
    fold_assignment,
    leave_one_group_out,
    natural_sorted,
    resolve_split_sizes,
    validate_speaker_splits,
)


def test_resolve_split_sizes_counts_and_fractions():
    assert resolve_split_sizes(6, {"train": 4, "dev": 1, "test": 1}) == {"train": 4, "dev": 1, "test": 1}
    assert resolve_split_sizes(6, {"train": 2 / 3, "dev": 1 / 6, "test": 1 / 6}) == {"train": 4, "dev": 1, "test": 1}
    # small n: every split asked for still gets a speaker
    assert resolve_split_sizes(3, {"train": 0.8, "dev": 0.1, "test": 0.1}) == {"train": 1, "dev": 1, "test": 1}
    sizes = resolve_split_sizes(17, {"train": 0.7, "dev": 0.15, "test": 0.15})
    assert sum(sizes.values()) == 17 and sizes["train"] == 12


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"train": 4, "dev": 1}, "sum to 5, but there are 6"),
        ({"train": 0.5, "dev": 0.2, "test": 0.2}, "sum to 0.9"),
        ({"train": 4, "dev": 0.5}, "mix counts and fractions"),
        ({"train": -1, "dev": 7}, "non-negative"),
    ],
)
def test_resolve_split_sizes_errors(spec, match):
    with pytest.raises(SplitLeakError, match=match):
        resolve_split_sizes(6, spec)


def test_assign_speaker_splits_is_a_partition_and_seeded():
    speakers = [f"s{i:02d}" for i in range(20)]
    a = assign_speaker_splits(speakers, dev=0.1, test=0.2, seed=3)
    assert set(a) == set(speakers)
    by = {s: [k for k, v in a.items() if v == s] for s in ("train", "dev", "test")}
    assert (len(by["train"]), len(by["dev"]), len(by["test"])) == (14, 2, 4)
    validate_speaker_splits(by)
    assert assign_speaker_splits(speakers, dev=0.1, test=0.2, seed=3) == a
    assert assign_speaker_splits(speakers, dev=0.1, test=0.2, seed=4) != a
    counts = assign_speaker_splits(speakers, dev=2, test=3, seed=0)
    assert sorted(counts.values()).count("test") == 3 and list(counts.values()).count("dev") == 2
    with pytest.raises(SplitLeakError, match="no training speaker"):
        assign_speaker_splits(["a", "b"], dev=1, test=1)


def test_assign_speaker_splits_balances_gender():
    speakers = [f"s{i:02d}" for i in range(12)]
    genders = {s: ("f" if i < 6 else "m") for i, s in enumerate(speakers)}
    a = assign_speaker_splits(speakers, dev=2, test=2, seed=1, genders=genders)
    for split in ("dev", "test"):
        assert sorted(genders[s] for s, v in a.items() if v == split) == ["f", "m"]


def test_folds_and_leave_one_group_out():
    assert natural_sorted(["10", "9", "1"]) == ["1", "9", "10"]
    folds = contiguous_folds([f"a{i:02d}" for i in range(1, 25)], 6)
    assert [len(f) for f in folds] == [4] * 6 and folds[-1] == ["a21", "a22", "a23", "a24"]
    last = fold_assignment(folds, 6)
    assert last["test"] == folds[5] and last["dev"] == folds[4] and len(last["train"]) == 16
    first = fold_assignment(folds, 1)
    assert first["test"] == folds[0] and first["dev"] == folds[5]  # dev wraps around
    logo = leave_one_group_out(["S3", "S1", "S2", "S4"])
    assert [f["test"] for f in logo] == [["S1"], ["S2"], ["S3"], ["S4"]]
    for f in logo:
        validate_speaker_splits({k: f[k] for k in ("train", "dev", "test")})
        assert f["dev"] and f["dev"] != f["test"] and len(f["train"]) == 2
    with pytest.raises(SplitLeakError, match="fold must be in 1..6"):
        fold_assignment(folds, 7)
    with pytest.raises(SplitLeakError, match="at least 3 folds"):
        fold_assignment([["a"], ["b"]], 1)


def test_validate_speaker_splits_names_the_leak():
    with pytest.raises(SplitLeakError, match=r"train and test share 1 speaker\(s\): spk2"):
        validate_speaker_splits({"train": ["spk1", "spk2"], "dev": ["spk3"], "test": ["spk2", "spk4"]})
    validate_speaker_splits({"train": ["a"], "dev": ["b"], "test": ["c"]})


def test_check_shard_dirs_reads_index_files(tmp_path):
    def write(split, speakers):
        with ShardWriter(tmp_path / split, prefix="en") as w:
            for i, spk in enumerate(speakers):
                w.write(
                    f"{split}_{i}",
                    {"emotion": "neutral", "language": "en", "speaker": spk, "corpus": "t", "split": split},
                    audio=np.zeros(160, np.float32),
                )

    write("train", ["a", "b"])
    write("dev", ["c"])
    write("test", ["d"])
    assert check_shard_dirs(tmp_path) == {"train": ["a", "b"], "dev": ["c"], "test": ["d"]}
    write("test", ["a"])
    with pytest.raises(SplitLeakError, match="train and test share 1 speaker"):
        check_shard_dirs(tmp_path)
