"""The file layer (lakd.io): atomic writes, permissions that follow the umask, directory swaps, tar shards."""

import json
import os
import stat
import tarfile

import pytest

from lakd.io import (
    TarShardWriter,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    backup_dir,
    create_temp_dir,
    replace_dir,
    resolve_dir,
)


@pytest.fixture
def umask():
    """`umask(value)` sets the process umask for one test; it is restored afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_dirs_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_json(tmp_path / "b.json", {"k": 1})
    with TarShardWriter(tmp_path / "shards", "s", max_count=1) as w:
        w.add_sample([("k.txt", b"hello")])
    new_dir = create_temp_dir(tmp_path / "model")
    assert _mode(tmp_path / "a.bin") == file_mode
    assert _mode(tmp_path / "b.json") == file_mode
    assert _mode(tmp_path / "shards" / "s-000000.tar") == file_mode
    assert _mode(new_dir) == dir_mode


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})
    assert target.read_text() == '{\n "v": 1\n}\n'

    def broken(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_replace_dir_swaps_and_recovers_an_interrupted_swap(tmp_path):
    final = tmp_path / "last"
    for version in ("1", "2"):
        stage = create_temp_dir(final)
        (stage / "v").write_text(version)
        assert replace_dir(stage, final) == final
        assert (final / "v").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # a crash between the two renames: only the backup exists; readers find it, the next swap restores it first
    os.replace(final, backup_dir(final))
    assert resolve_dir(final) == backup_dir(final)
    stage = create_temp_dir(final)
    (stage / "v").write_text("3")
    replace_dir(stage, final)
    assert (final / "v").read_text() == "3" and resolve_dir(final) == final
    assert not backup_dir(final).exists()
    assert resolve_dir(tmp_path / "nothing") is None


def test_tar_shard_writer_rotates_renames_and_aborts(tmp_path):
    finished = []

    class Recording(TarShardWriter):
        def shard_finished(self, path, num_samples):
            finished.append((path.name, num_samples))

    with Recording(tmp_path, "c", max_count=2) as w:
        for i in range(5):
            w.add_sample([(f"k{i}.npz", bytes([i]) * 10)])
    assert finished == [("c-000000.tar", 2), ("c-000001.tar", 2), ("c-000002.tar", 1)]
    with tarfile.open(tmp_path / "c-000001.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["k2.npz", "k3.npz"]
    assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)

    with pytest.raises(RuntimeError):
        with TarShardWriter(tmp_path / "x", "c", max_count=10) as w:
            w.add_sample([("a.npz", b"1")])
            raise RuntimeError("stop")
    assert list((tmp_path / "x").iterdir()) == []  # the unfinished shard and its temp file are gone
