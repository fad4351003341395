"""Exact and near-duplicate removal of synthetic examples: MinHash LSH (datasketch) over character 5-grams.

Texts are compared after collapsing whitespace. An exact duplicate has the same normalised text as an earlier
kept one; a near duplicate's 5-gram set has Jaccard similarity >= threshold with an earlier kept one's. LSH
(Broder 1997; datasketch's MinHashLSH) proposes the candidates in about linear time, and the exact Jaccard of
the two 5-gram sets confirms each, so no pair below the threshold is ever dropped. The LSH bands are tuned to
LSH_SLACK below the threshold: tuned to the threshold itself they find a pair right at it only ~30% of the
time (0.9, 128 permutations); this way ~99.9%, at the price of more candidates to confirm. The first of a group
stays: rows are visited in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHINGLE = 5  # characters per shingle: long enough to tell texts apart, short enough for a line of arithmetic
NUM_PERM = 128
SEED = 1
LSH_SLACK = 0.2


def normalise(text: str) -> str:
    """Whitespace runs as one space, ends stripped."""
    return " ".join(text.split())


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """Character k-grams of the normalised text (a shorter text is its own one shingle)."""
    s = normalise(text)
    if len(s) <= k:
        return {s}
    return {s[i:i + k] for i in range(len(s) - k + 1)}


def minhashes(sets: Sequence[set[str]]):
    """One datasketch MinHash per shingle set (same permutations, so signatures compare)."""
    from datasketch import MinHash

    return MinHash.bulk([[s.encode() for s in sorted(x)] for x in sets], num_perm=NUM_PERM, seed=SEED)


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def duplicates(texts: Sequence[str], threshold: float = 0.9) -> list[str | None]:
    """Per text: None (kept), "duplicate" or "near_duplicate" of an earlier kept text."""
    from datasketch import MinHashLSH

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    sets = [shingles(t) for t in texts]
    hashes = minhashes(sets)
    lsh = MinHashLSH(threshold=min(max(threshold - LSH_SLACK, 0.05), 0.95), num_perm=NUM_PERM)
    seen: dict[str, int] = {}
    out: list[str | None] = []
    for i, text in enumerate(texts):
        norm = normalise(text)
        if norm in seen:
            out.append("duplicate")
            continue
        near = any(jaccard(sets[i], sets[j]) >= threshold for j in lsh.query(hashes[i]))
        if near:
            out.append("near_duplicate")
            continue
        seen[norm] = i
        lsh.insert(i, hashes[i])
        out.append(None)
    return out


def signature_matrix(texts: Sequence[str]) -> np.ndarray:
    """[n, NUM_PERM] MinHash signatures of the texts' shingle sets (equal columns estimate Jaccard)."""
    if not texts:
        return np.zeros((0, NUM_PERM), dtype=np.uint64)
    return np.stack([m.hashvalues for m in minhashes([shingles(t) for t in texts])])
