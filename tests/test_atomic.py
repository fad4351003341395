"""Atomic writes: a reader or a crash never sees a half-written file or directory."""

import errno
import os

import pytest
import torch
from tmpfs_mount import tmpfs

from datawall.atomic import (
    DiskFullError,
    append_jsonl,
    atomic_directory,
    atomic_write,
    atomic_write_text,
    format_bytes,
    is_disk_full,
    previous_directory,
)


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


# --- a full disk -----------------------------------------------------------------------------------------------


def _enospc(*_):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_inside_a_directory_swap_is_one_line_and_keeps_the_old_copy(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_directory(final) as tmp:
        (tmp / "w").write_bytes(b"x" * 5000)
    with pytest.raises(DiskFullError) as err, atomic_directory(final) as tmp:
        (tmp / "w").write_bytes(b"y" * 100)
        _enospc()
    message = str(err.value)
    assert message.startswith(f"{final}: no space left on device") and "\n" not in message
    assert "free needed)" in message  # this disk has room for 5 kB: what the block wanted is unknown
    assert (final / "w").read_bytes() == b"x" * 5000 and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_full_disk_during_a_file_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")
    with pytest.raises(DiskFullError, match="result.json: no space left on device"):
        atomic_write(path, _enospc)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_disk_full_is_recognised_through_the_writers_own_errors():
    try:
        try:
            _enospc()
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as e:  # torch.save to a file object: the OSError is the context
        torch_error = e
    assert torch_error.__context__ is not None and is_disk_full(torch_error)
    assert is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(RuntimeError("unexpected pos 704 vs 598")) and not is_disk_full(OSError(errno.EACCES, "x"))
    assert format_bytes(999) == "999 B" and format_bytes(1_300_000) == "1.3 MB"


def test_on_a_real_full_filesystem_nothing_partial_is_left(tmp_path):
    from safetensors.torch import save_file

    with tmpfs(tmp_path / "small", 256 * 1024) as small:
        log = small / "metrics.jsonl"
        append_jsonl(log, {"step": 1})
        full = r"ckpt: no space left on device while writing it \(more than the [\d.]+ kB free needed\)$"
        with pytest.raises(DiskFullError, match=full), atomic_directory(small / "ckpt") as tmp:
            save_file({"w": torch.zeros(200_000)}, str(tmp / "model.safetensors"))  # 800 kB
        assert sorted(p.name for p in small.iterdir()) == ["metrics.jsonl"]
        with pytest.raises(OSError), open(small / "filler", "wb", buffering=0) as f:  # fill it to the last block
            while True:
                f.write(b"\0" * 4096)
        with pytest.raises(DiskFullError, match="metrics.jsonl: no space left on device to append"):
            append_jsonl(log, {"step": 2, "pad": "x" * 4096})
        assert log.read_text() == '{"step": 1}\n'  # cut back to its last whole line
