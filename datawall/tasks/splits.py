"""Split membership and per-problem seeds from stable hashes (hashlib, never Python's salted hash())."""

from __future__ import annotations

import hashlib

from datawall.errors import DatawallError

SPLITS = ("train", "test")
TEST_FRACTION = 0.2  # share of each generated task's problem space that belongs to the held-out split


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
