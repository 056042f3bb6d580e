"""Writing files: complete or not at all, the old output kept on failure, modes from the user's
umask."""

import os
import stat

import pytest

import accel
from accel.core.files import atomic_dir, atomic_file
from conftest import make_tiny_unet
from conftest import run_cli as run


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_follow_the_umask_not_the_temporary_folder_s_0700(tmp_path, umask_027, capsys):
    accel.save(accel.load(make_tiny_unet()), tmp_path / "artifact")
    assert mode(tmp_path / "artifact") == 0o750
    # safetensors writes 0600 itself
    assert {mode(p) for p in (tmp_path / "artifact").iterdir()} == {0o640}
    assert (
        run(capsys, "sample", "--n", "2", "--steps", "1", "--out", str(tmp_path / "s.npz"))[0] == 0
    )
    assert mode(tmp_path / "s.npz") == 0o640


def test_a_failed_write_leaves_the_old_output_and_no_temporaries(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f.txt") as partial:
        partial.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"] and (
        tmp_path / "f.txt"
    ).read_text() == "old"


def test_a_completed_write_replaces_the_old_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with atomic_dir(tmp_path / "out", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    with atomic_file(tmp_path / "f.txt") as partial:
        partial.write_text("new")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"] and (
        tmp_path / "f.txt"
    ).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "out"]
