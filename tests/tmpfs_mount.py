"""A small tmpfs for disk-full tests (mounting needs root; tests skip with the reason otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of `size` bytes at path for the block (skip the test when that is not possible)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full tests mount a tmpfs, which needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: int) -> None:
    """Grow (or shrink) the tmpfs mounted at path."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
