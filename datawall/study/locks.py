"""Per-run file locks (fcntl.flock): one process at a time runs (or resumes, or deletes) a run directory.

A lock lives in STORE/locks/<kind>-<key>.lock, outside the run directory, so removing a run never removes
the lock a waiter holds open. The kernel drops a flock when its holder exits, even on SIGKILL, so a crashed
run never leaves a stale lock behind. On a cluster the store must sit on a filesystem whose flock works
across hosts (NFSv4, CephFS, Lustre mounted with -o flock).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RunLock:
    """An exclusive lock on one run; use as a context manager or call acquire()/release()."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True, record: bool = True) -> bool:
        """Take the lock (waiting when blocking); False if non-blocking and held. record: note our host and pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            # gc may have unlinked the file while we waited on it: then our lock guards nothing; lock the new one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                if not record:
                    return True
                holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode(), 0)
                return True
            os.close(fd)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def unlink(self) -> None:
        """Remove the lock file while holding it (waiters notice and retry on a fresh file)."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at path (tested with a non-blocking flock)."""
    if not path.exists():
        return False
    lock = RunLock(path)
    if lock.acquire(blocking=False, record=False):
        lock.release()
        return False
    return True


def holder(path: Path) -> dict | None:
    """Who holds (or last held) the lock: {host, pid, since}, or None."""
    try:
        return json.loads(path.read_text() or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
