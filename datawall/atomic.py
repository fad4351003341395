"""Atomic file writes: a reader (or a crash) never sees a half-written file.

A write that fills the disk raises `DiskFullError` (one line naming the path, the space needed and the space
free) and leaves no temporary file or directory behind; what was there before is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datawall.errors import DatawallError

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


class DiskFullError(DatawallError):
    """A write ran out of disk space (nothing partial was left behind)."""


def format_bytes(n: float) -> str:
    """A byte count for people: 512 B, 1.3 MB, 2.0 GB (powers of 1000, like df -H)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def disk_size(path: str | Path) -> int:
    """Bytes a file or a directory tree holds (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def free_space(path: str | Path) -> int:
    """Bytes free on the filesystem holding path (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_space(path: str | Path, need: int, what: str) -> None:
    """Raise DiskFullError before writing `what` (need bytes) beside path when the disk cannot hold it."""
    free = free_space(Path(path).parent)
    if need > free:
        raise DiskFullError(f"{path}: not enough disk space for {what} ({format_bytes(need)} needed, "
                            f"{format_bytes(free)} free)")


def is_disk_full(error: BaseException) -> bool:
    """Whether error (or an exception it was raised from or during) says the disk or quota is full.

    torch.save's zip writer reports a full disk as `unexpected pos` with the OSError as its context, and
    safetensors as a SafetensorError whose text carries the OS message: the chain and the text are both read.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(text in str(e) for text in _FULL_TEXTS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _disk_full(path: Path, partial: Path, before: int) -> DiskFullError:
    """The one-line error for a write of path that filled the disk; partial is what it had written so far."""
    written = disk_size(partial)
    free = free_space(path.parent) + written  # what is free once the partial write is removed
    # a replacement is about as big as what it replaces; of a first write we only know it needs more than is free
    space = (f"{format_bytes(before)} needed, {format_bytes(free)} free" if before > free
             else f"more than the {format_bytes(free)} free needed")
    return DiskFullError(f"{path}: no space left on device while writing it ({space})")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) on a temporary file beside path, fsync it, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        full = _disk_full(path, tmp_path, disk_size(path)) if is_disk_full(e) else None
        tmp_path.unlink(missing_ok=True)
        if full is not None:
            raise full from None
        raise


def _umask() -> int:
    """The process umask (reading it requires setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text (UTF-8) to path atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write obj as indented JSON to path atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object a file holds ({} for an absent file when missing_ok); one-line DatawallError naming the
    file when it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise DatawallError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatawallError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatawallError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written; a full disk
    loses nothing: the file is cut back to its last whole line)."""
    line = (json.dumps(obj) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, start)
            if is_disk_full(e):
                raise DiskFullError(f"{path}: no space left on device to append {format_bytes(len(line))} "
                                    f"({format_bytes(free_space(path))} free)") from None
            raise
    finally:
        os.close(fd)


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; when the block succeeds, fsync what it wrote and swap it
    in as `path`. A failure removes the temporary directory and leaves `path` as it was.

    A block that fills the disk raises DiskFullError (one line) instead of the writer's own errors.
    replace=True swaps an existing `path` out first (a crash between the two renames leaves it as
    `.NAME.old-*`, which `previous_directory` finds); replace=False keeps an existing `path` (another process
    that finished first wins) and discards ours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        try:
            yield tmp
            for p in [*tmp.rglob("*"), tmp]:
                if p.is_file() or p.is_dir():
                    fsync_path(p)
        except BaseException as e:
            if is_disk_full(e):
                raise _disk_full(path, tmp, disk_size(path)) from None
            raise
        if not path.exists():
            try:
                os.rename(tmp, path)
            except OSError:
                if replace or not path.is_dir():
                    raise
        elif replace:
            old = path.parent / f".{path.name}.old-{tag}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def previous_directory(path: str | Path) -> Path | None:
    """The copy an interrupted `atomic_directory(path)` swap left aside (`.NAME.old-*`), newest first, or None."""
    path = Path(path)
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return olds[0] if olds else None
