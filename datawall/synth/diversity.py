"""How varied a set of worked solutions is: distinct n-grams, answer entropy and MinHash similarity.

- distinct_n (n = 1..4; Li et al. 2016): distinct word n-grams over all n-grams of all texts (words: whitespace
  tokens, so a scratchpad line is a word). 1.0: nothing repeats; near 0: the texts are one template.
- answer_entropy: Shannon entropy in bits of the answers given (by value; a missing answer is not counted).
- minhash_mean_pairwise: mean estimated Jaccard similarity of two texts' character 5-gram sets over all pairs;
  minhash_self_similarity: the mean over texts of the similarity to the most similar other text (how close
  each one's nearest neighbour is: self-BLEU's idea with MinHash). Computed on at most MAX_PAIRWISE texts,
  a seeded sample of them when there are more (`minhash_texts` says how many).

Every one of these depends on how many texts there are, so two sets are compared at the same size
(synth generate samples the human reference solutions down to the number of kept synthetic ones).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from datawall.synth.dedup import signature_matrix
from datawall.synth.filters import answer_key

MAX_PAIRWISE = 1000


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct word n-grams / all word n-grams (None when the texts hold no n-gram)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def answer_entropy(answers: Sequence[str | None]) -> float | None:
    """Entropy in bits of the stated answers' values (None when no answer is stated)."""
    counts = Counter(k for k in map(answer_key, answers) if k is not None)
    total = sum(counts.values())
    if not total:
        return None
    return float(-sum(c / total * math.log2(c / total) for c in counts.values()) + 0.0)


def minhash_similarity(texts: Sequence[str], seed: int = 0) -> tuple[float | None, float | None, int]:
    """(mean pairwise, mean nearest-neighbour) estimated Jaccard similarity, and how many texts were compared."""
    if len(texts) > MAX_PAIRWISE:
        pick = np.random.default_rng(seed).choice(len(texts), MAX_PAIRWISE, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    n = len(texts)
    if n < 2:
        return None, None, n
    sig = signature_matrix(texts)
    same = np.zeros((n, n), dtype=np.float32)
    for col in sig.T:
        same += col[:, None] == col[None, :]
    same /= sig.shape[1]
    np.fill_diagonal(same, np.nan)
    return float(np.nanmean(same)), float(np.nanmax(same, axis=1).mean()), n


def diversity(texts: Sequence[str], answers: Sequence[str | None], seed: int = 0) -> dict:
    """The diversity summary of one set of solutions (see the module docstring)."""
    pairwise, nearest, compared = minhash_similarity(texts, seed)
    return {"texts": len(texts), **{f"distinct_{n}": distinct_n(texts, n) for n in range(1, 5)},
            "answer_entropy": answer_entropy(answers),
            "distinct_answers": len({k for k in map(answer_key, answers) if k is not None}),
            "minhash_mean_pairwise": pairwise, "minhash_self_similarity": nearest, "minhash_texts": compared}
