"""Atomic writes: a reader or a crash never sees a half-written file or directory."""

import os

import pytest

from datawall.atomic import atomic_directory, atomic_write_text, previous_directory


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_directory_swaps_in_a_whole_directory(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as tmp:
        (tmp / "w").write_text("1")
        assert not final.exists()  # nothing visible until the block succeeds
    with atomic_directory(final) as tmp:
        (tmp / "w").write_text("2")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
    assert (final / "w").read_text() == "2" and (final / "sub" / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failure_inside_the_block_keeps_the_old_directory(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as tmp:
        (tmp / "w").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("disk on fire")
    assert (final / "w").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_crash_between_the_renames_leaves_the_old_copy_findable(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as tmp:
        (tmp / "w").write_text("old")
    os.rename(final, tmp_path / ".ckpt.old-123-abc")  # what a kill after the first rename leaves
    assert previous_directory(final) == tmp_path / ".ckpt.old-123-abc"
    assert previous_directory(tmp_path / "other") is None
