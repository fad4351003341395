"""Estimators over a pool of n samples per problem: pass@k, best-of-k, maj@k and weighted maj@k.

Every estimator answers "what is the expected accuracy of a strategy that sees k samples" by taking the
expectation over uniformly random size-k subsets (without replacement) of the n samples drawn. pass@k and
best-of-k by score have exact formulas; votes are estimated by seeded Monte-Carlo subsampling.
Bootstrap intervals resample problems, not samples (the problems are the population we generalise to).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datawall.errors import DatawallError

DRAWS = 1000  # Monte-Carlo subsets per (problem, k): standard error <= 0.5 / sqrt(1000) ~ 0.016 per problem


def _check_nk(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise DatawallError(f"k must be between 1 and the number of samples n={n}, got k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, numerically stable form)."""
    if not 0 <= c <= n:
        raise DatawallError(f"correct count c must be between 0 and n={n}, got c={c}")
    _check_nk(n, k)
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def subset_ratios(n: int, k: int) -> np.ndarray:
    """h[m] = C(m, k) / C(n, k) for m = 0..n: the chance a random k-subset avoids n - m given samples."""
    _check_nk(n, k)
    m = np.arange(1, n + 1)
    # C(m-1, k) / C(m, k) = (m - k) / m; the factor at m = k is 0, which zeroes every h[m < k]
    factors = (m - k) / m
    h = np.ones(n + 1)
    h[:-1] = np.cumprod(factors[::-1])[::-1]
    return np.maximum(h, 0.0)


def best_of_k(rewards: Sequence[float], scores: Sequence[float], ks: Sequence[int]) -> np.ndarray:
    """Expected reward of the highest-scoring sample in a random k-subset, exactly, for each k in ks.

    Ties in score are broken uniformly at random. The selected sample lies in the score level j (a_j samples
    score higher, g_j tie at that score) exactly when the subset avoids the a_j and hits the g_j:
    P_j = [C(n - a_j, k) - C(n - a_j - g_j, k)] / C(n, k), which is C(n - j, k - 1) / C(n, k) without ties.
    """
    r, s = np.asarray(rewards, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if r.shape != s.shape or r.ndim != 1:
        raise DatawallError(f"rewards and scores must be equal-length 1-D arrays, got {r.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise DatawallError("scores must be finite numbers")
    n = len(r)
    levels, inverse, sizes = np.unique(-s, return_inverse=True, return_counts=True)  # best score first
    mean_reward = np.bincount(inverse, weights=r) / sizes
    above = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty(len(ks))
    for i, k in enumerate(ks):
        h = subset_ratios(n, int(k))
        out[i] = np.dot(h[n - above] - h[n - above - sizes], mean_reward)
    return out


def coverage_at_k(rewards: Sequence[float], ks: Sequence[int]) -> np.ndarray:
    """Expected best reward in a random k-subset (the verifier as oracle); equals pass@k for 0/1 rewards."""
    return best_of_k(rewards, rewards, ks)


def _answer_ids(answers: Sequence[str | None]) -> tuple[np.ndarray, int]:
    """Integer id per sample (-1 for None, an unparseable answer) and the number of distinct answers."""
    index: dict[str, int] = {}
    ids = np.array([-1 if a is None else index.setdefault(a, len(index)) for a in answers], dtype=np.int64)
    return ids, len(index)


def vote_at_k(answers: Sequence[str | None], rewards: Sequence[float], ks: Sequence[int],
              weights: Sequence[float] | None = None, draws: int = DRAWS,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Expected reward of the (weighted) majority answer of a random k-subset, for each k.

    k = 1 and k = n are exact; other k are estimated from `draws` seeded random subsets.
    A sample whose answer is None casts no vote; a subset with no votes scores 0. The reward of an answer is
    the mean reward of the pool's samples that gave it. Ties are broken uniformly at random, and the
    tie-break is averaged exactly (the tied answers' mean reward) rather than sampled.
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if len(answers) != n:
        raise DatawallError(f"got {len(answers)} answers for {n} rewards")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise DatawallError("vote weights (scores) must be one finite, non-negative number per sample")
    for k in ks:
        _check_nk(n, int(k))
    ids, A = _answer_ids(answers)
    if A == 0:
        return np.zeros(len(ks))
    voted = ids >= 0
    answer_reward = np.bincount(ids[voted], r[voted], A) / np.bincount(ids[voted], minlength=A)
    ids = np.where(ids < 0, A, ids)  # a spare column collects the vote-less samples
    w = np.where(ids == A, 0.0, w)
    everything = np.zeros((1, A + 1))
    np.add.at(everything[0], ids, w)
    exact = {1: float(np.mean(np.where(w > 0, np.append(answer_reward, 0.0)[ids], 0.0))),
             n: float(_vote_value(everything[:, :A], answer_reward)[0])}
    out = np.array([exact.get(int(k), np.nan) for k in ks])
    sampled = sorted({int(k) for k in ks} - set(exact))
    if not sampled:
        return out
    rng = rng or np.random.default_rng(0)
    # one random permutation per draw; its first k entries are a uniform random k-subset for every k
    order = rng.random((draws, n)).argsort(axis=1)[:, : sampled[-1]]
    counts = np.zeros((draws, A + 1))
    at = np.arange(draws)
    for j in range(sampled[-1]):
        counts[at, ids[order[:, j]]] += w[order[:, j]]
        if j + 1 in sampled:
            out[np.asarray(ks) == j + 1] = _vote_value(counts[:, :A], answer_reward).mean()
    return out


def _vote_value(votes: np.ndarray, answer_reward: np.ndarray) -> np.ndarray:
    """Per row of vote totals: the winning answer's reward, averaged over tied winners; 0 without votes."""
    top = votes.max(axis=1, keepdims=True)
    winners = (votes >= top * (1 - 1e-12)) & (top > 0)
    tied = winners.sum(axis=1)
    return np.where(tied > 0, (winners @ answer_reward) / np.maximum(tied, 1), 0.0)


def majority_at_k(answers: Sequence[str | None], rewards: Sequence[float], ks: Sequence[int],
                  draws: int = DRAWS, rng: np.random.Generator | None = None) -> np.ndarray:
    """maj@k: expected reward of the most frequent answer in a random k-subset (Monte-Carlo), for each k."""
    return vote_at_k(answers, rewards, ks, None, draws, rng)


def weighted_majority_at_k(answers: Sequence[str | None], rewards: Sequence[float], scores: Sequence[float],
                           ks: Sequence[int], draws: int = DRAWS,
                           rng: np.random.Generator | None = None) -> np.ndarray:
    """Weighted maj@k: the answer with the largest sum of (non-negative) scores wins (Monte-Carlo)."""
    return vote_at_k(answers, rewards, ks, scores, draws, rng)


def bootstrap_ci(per_problem: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean over problems (axis 0), resampling problems with replacement (seeded).

    Columns (e.g. one per k) are resampled together, so intervals of different k come from the same replicates.
    """
    x = np.asarray(per_problem, dtype=np.float64)
    P = len(x)
    if P == 0:
        raise DatawallError("cannot bootstrap over zero problems")
    if not 0 < level < 1:
        raise DatawallError(f"confidence level must be in (0, 1), got {level}")
    counts = np.random.default_rng(seed).multinomial(P, np.full(P, 1.0 / P), size=n_boot)
    means = counts @ x / P
    q = (1.0 - level) / 2.0
    return np.quantile(means, q, axis=0), np.quantile(means, 1.0 - q, axis=0)
