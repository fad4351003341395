"""Split membership, per-problem seeds, and the walk that lists a split's distinct problems in order.

Stable hashes throughout (hashlib, never Python's salted hash()), so every process and machine agrees.

A generated split is the sequence of candidates 0, 1, 2, ... (candidate j drawn from the seed of (task,
settings, split, j)) with every repeat of an earlier candidate's key skipped: problem i is the i-th distinct
one. Where no repeat occurs, problem i is candidate i, exactly as when problems were drawn independently.
The accepted candidate numbers are memoised per (task, settings, split) in this module, so asking for
problem i costs one draw once the walk has passed it, and the walk only ever goes as far as someone asks.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from datawall.errors import DatawallError

SPLITS = ("train", "test")
TEST_FRACTION = 0.2  # share of each generated task's problem space that belongs to the held-out split
# A split whose size cannot be counted is declared exhausted after this many consecutive repeats: at least
# REPEATS_MIN, else REPEATS_PER_PROBLEM per distinct problem found. A problem still unfound that the generator
# draws with probability p survives such a streak with chance exp(-p * streak): 2e-9 in a uniform world
# (p = 1 / found), 0.7% for one drawn four times less often than that.
REPEATS_MIN = 2000
REPEATS_PER_PROBLEM = 20
MAX_PROBLEMS = 10**8  # the walk of one split goes no further (its memo would pass ~6 GB)

T = TypeVar("T")


def _digest64(*parts: object) -> int:
    """64 bits of SHA-256 over the parts, joined by a separator that cannot occur in their text."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) derived from the parts."""
    return _digest64(*parts) / 2.0**64


def split_of(namespace: str, key: str, test_fraction: float = TEST_FRACTION) -> str:
    """The split ('train' or 'test') a problem with canonical `key` belongs to; settings play no part."""
    return "test" if unit_hash("split", namespace, key) < test_fraction else "train"


def stable_seed(*parts: object) -> int:
    """A 64-bit seed for random.Random from the parts, identical across processes and machines."""
    return _digest64("seed", *parts)


def check_split(split: str) -> str:
    """Return `split` if it names a split, else raise DatawallError."""
    if split not in SPLITS:
        raise DatawallError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    return split


def key_digest(key: str) -> int:
    """A problem's identity in 64 bits (a set of these is far smaller than one of long program keys)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass
class Walk:
    """How far the walk of one split has gone: the candidate behind each distinct problem found so far."""

    candidates: array = field(default_factory=lambda: array("q"))  # candidate number of distinct problem i
    seen: set[int] = field(default_factory=set)  # key digests of the problems found
    drawn: int = 0  # candidates drawn so far
    streak: int = 0  # consecutive repeats at the end of the walk
    size: int | None = None  # distinct problems in the split, once known
    counted: bool = False  # whether the task was asked to count its split sizes
    exact: bool = False  # size came from counting every key (else from a run of repeats)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_once(self, count: Callable[[], int | None]) -> None:
        """Ask `count()` for the split's exact size, once (None: it cannot be counted). The caller holds `lock`."""
        if not self.counted:
            self.counted = True
            exact = count()
            if exact is not None:
                self.size, self.exact = exact, True

    def extend(self, index: int, draw: Callable[[int], T], key: Callable[[T], str],
               count: Callable[[], int | None]) -> tuple[int, T | None] | None:
        """(candidate number, problem drawn now or None) of distinct problem `index`; None past the split's end.

        `draw(j)` draws candidate j, `key` gives a problem's canonical key, and `count()` the split's exact size
        (None when it cannot be counted; called once, at the first repeat). The caller holds `lock`.
        """
        if index < len(self.candidates):
            return self.candidates[index], None
        if self.size is not None and index >= self.size:
            return None
        while self.size is None or len(self.candidates) < self.size:
            j = self.drawn
            problem = draw(j)
            self.drawn += 1
            digest = key_digest(key(problem))
            if digest not in self.seen:
                self.seen.add(digest)
                self.candidates.append(j)
                self.streak = 0
                if len(self.candidates) > index:
                    return j, problem
                continue
            self.streak += 1
            self.count_once(count)
            if self.exact:
                if self.streak > 1000 * self.size + 10**6:
                    raise DatawallError(f"the generator drew no new problem in {self.streak:,} tries although "
                                        f"the split holds {self.size:,}: the task's count of its keys is wrong")
            elif self.streak >= max(REPEATS_MIN, REPEATS_PER_PROBLEM * len(self.candidates)):
                self.size = len(self.candidates)
        return None


_WALKS: dict[tuple, Walk] = {}
_WALKS_LOCK = threading.Lock()


def walk_for(identity: tuple) -> Walk:
    """The one Walk of a (task, settings, split) identity in this process."""
    with _WALKS_LOCK:
        return _WALKS.setdefault(identity, Walk())


def clear_walks() -> None:
    """Forget every memoised walk (tests use it to replay a walk from scratch)."""
    with _WALKS_LOCK:
        _WALKS.clear()
