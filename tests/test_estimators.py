"""Estimators: pass@k against exact combinatorics, best-of-k and votes against enumeration and Monte-Carlo."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.testtime import (
    best_of_k,
    bootstrap_ci,
    coverage_at_k,
    majority_at_k,
    pass_at_k,
    subset_ratios,
    vote_at_k,
    weighted_majority_at_k,
)


def exact_pass(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_pass_at_k_matches_exact_combinatorics():
    for n in range(1, 26):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(exact_pass(n, c, k), abs=1e-12), (n, c, k)
    for n, c, k in [(200, 3, 10), (1000, 1, 100), (1000, 999, 1), (512, 37, 256)]:
        assert pass_at_k(n, c, k) == pytest.approx(exact_pass(n, c, k), rel=1e-10)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c = 4 < k: every 5-subset holds a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(DatawallError):
            pass_at_k(n, c, k)


def test_subset_ratios_are_binomial_ratios():
    for n, k in [(1, 1), (7, 3), (20, 20), (30, 1)]:
        expected = [Fraction(math.comb(m, k), math.comb(n, k)) for m in range(n + 1)]
        assert subset_ratios(n, k) == pytest.approx([float(e) for e in expected], abs=1e-14)


def test_coverage_equals_pass_at_k_for_binary_rewards():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rewards = (rng.random(16) < rng.random()).astype(float)
        ks = [1, 2, 4, 8, 16]
        expected = [pass_at_k(16, int(rewards.sum()), k) for k in ks]
        assert coverage_at_k(rewards, ks) == pytest.approx(expected, abs=1e-12)


def enumerate_best_of_k(rewards, scores, k):
    """Mean over all k-subsets of the chosen sample's reward, ties averaged (the random tie-break)."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(rewards)), k))
    for sub in subsets:
        top = max(scores[i] for i in sub)
        tied = [rewards[i] for i in sub if scores[i] == top]
        total += sum(tied) / len(tied)
    return total / len(subsets)


def test_best_of_k_exact_with_and_without_ties():
    rng = np.random.default_rng(2)
    for trial in range(6):
        n = 9
        rewards = rng.random(n).round(2)
        scores = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.random(n)  # ties on odd trials
        ks = list(range(1, n + 1))
        got = best_of_k(rewards, scores, ks)
        assert got == pytest.approx([enumerate_best_of_k(rewards, scores, k) for k in ks], abs=1e-12)


def test_best_of_k_closed_form_without_ties():
    n, k = 12, 4
    rewards = np.zeros(n)
    rewards[5] = 1.0  # the 6th best sample (j = 6) is the only correct one
    scores = -np.arange(n, dtype=float)
    expected = math.comb(n - 6, k - 1) / math.comb(n, k)
    assert best_of_k(rewards, scores, [k])[0] == pytest.approx(expected, abs=1e-14)


def test_best_of_k_matches_monte_carlo():
    rng = np.random.default_rng(3)
    n, k, draws = 30, 5, 20000
    rewards = (rng.random(n) < 0.3).astype(float)
    scores = rewards + rng.normal(0, 0.8, n).round(1)  # noisy, with ties
    picks = np.empty(draws)
    for d in range(draws):
        sub = rng.choice(n, k, replace=False)
        top = sub[scores[sub] == scores[sub].max()]
        picks[d] = rewards[rng.choice(top)]
    se = picks.std() / math.sqrt(draws)
    assert abs(best_of_k(rewards, scores, [k])[0] - picks.mean()) < 4 * se


def enumerate_vote(answers, rewards, k, weights=None):
    """Mean over all k-subsets of the majority answer's reward (ties averaged); the values too, for the spread."""
    weights = [1.0] * len(answers) if weights is None else weights
    pairs = list(zip(answers, rewards, strict=True))
    reward_of = {a: np.mean([r for b, r in pairs if b == a]) for a in set(answers) - {None}}
    values = []
    for sub in itertools.combinations(range(len(answers)), k):
        votes: dict[str, float] = {}
        for i in sub:
            if answers[i] is not None and weights[i] > 0:
                votes[answers[i]] = votes.get(answers[i], 0.0) + weights[i]
        if not votes:
            values.append(0.0)
            continue
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v >= top * (1 - 1e-12)]
        values.append(float(np.mean([reward_of[a] for a in tied])))
    return float(np.mean(values)), float(np.std(values))


def test_majority_matches_exact_enumeration_within_monte_carlo_error():
    answers = ["7", "7", "3", None, "3", "9", "7", None, "5", "3"]
    rewards = [1.0 if a == "7" else 0.0 for a in answers]
    draws = 4000
    ks = [2, 3, 5, 8]
    got = majority_at_k(answers, rewards, ks, draws=draws, rng=np.random.default_rng(4))
    for k, g in zip(ks, got, strict=True):
        mean, sd = enumerate_vote(answers, rewards, k)
        assert abs(g - mean) <= 4 * sd / math.sqrt(draws) + 1e-12, (k, g, mean)


def test_weighted_majority_matches_exact_enumeration_within_monte_carlo_error():
    answers = ["a", "b", "b", None, "c", "a", "b", "c"]
    rewards = [1.0 if a == "a" else 0.0 for a in answers]
    scores = [0.9, 0.2, 0.3, 0.99, 0.5, 0.8, 0.1, 0.4]
    draws = 4000
    ks = [2, 3, 4, 6]
    got = weighted_majority_at_k(answers, rewards, scores, ks, draws=draws, rng=np.random.default_rng(5))
    for k, g in zip(ks, got, strict=True):
        mean, sd = enumerate_vote(answers, rewards, k, scores)
        assert abs(g - mean) <= 4 * sd / math.sqrt(draws) + 1e-12, (k, g, mean)


def test_majority_exact_points_and_none_never_wins():
    answers = ["x", None, "y", "x", None, None, "z"]
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    n = len(answers)
    # k = 1 is exact: the mean reward (None samples score 0 and cast no vote)
    assert majority_at_k(answers, rewards, [1])[0] == pytest.approx(np.mean(rewards), abs=1e-15)
    # k = n is exact: "x" has 2 votes against 3 vote-less samples
    assert majority_at_k(answers, rewards, [n])[0] == 1.0
    # a pool that is all None but one answer: the vote picks that answer whenever it is drawn = pass@k
    lone = [None, None, None, None, "a"]
    got = majority_at_k(lone, [0, 0, 0, 0, 1.0], [1, 2, 3, 5], draws=4000)
    assert got == pytest.approx([pass_at_k(5, 1, k) for k in (1, 2, 3, 5)], abs=0.03)
    assert majority_at_k([None, None], [0.0, 0.0], [1, 2]).tolist() == [0.0, 0.0]
    # a two-way tie is broken at random, in expectation: half the reward
    assert majority_at_k(["a", "b"], [1.0, 0.0], [2])[0] == 0.5


def test_weighted_votes_with_equal_scores_equal_plain_votes():
    rng = np.random.default_rng(6)
    answers = [str(x) for x in rng.integers(0, 4, 20)]
    rewards = [1.0 if a == "2" else 0.0 for a in answers]
    plain = majority_at_k(answers, rewards, [1, 3, 7, 20], rng=np.random.default_rng(9))
    weighted = weighted_majority_at_k(answers, rewards, [0.5] * 20, [1, 3, 7, 20], rng=np.random.default_rng(9))
    assert plain == pytest.approx(weighted, abs=1e-15)


def test_votes_are_seeded_and_validated():
    answers, rewards = ["a", "b", "a", "c"] * 4, [1.0, 0.0, 1.0, 0.0] * 4
    a = vote_at_k(answers, rewards, [3, 5], rng=np.random.default_rng(11))
    b = vote_at_k(answers, rewards, [3, 5], rng=np.random.default_rng(11))
    assert a.tolist() == b.tolist()
    with pytest.raises(DatawallError, match="non-negative"):
        weighted_majority_at_k(answers, rewards, [-1.0] * 16, [2])
    with pytest.raises(DatawallError, match="k must be between"):
        majority_at_k(answers, rewards, [17])


def test_bootstrap_ci_is_seeded_and_sensible():
    rng = np.random.default_rng(7)
    x = (rng.random(400) < 0.5).astype(float)
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=3)
    assert (lo, hi) == bootstrap_ci(x, n_boot=2000, seed=3)
    assert bootstrap_ci(x, n_boot=2000, seed=4) != (lo, hi)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.15)  # normal approximation
    # columns share replicates: a column and its copy get the same interval
    lo2, hi2 = bootstrap_ci(np.column_stack([x, x]), n_boot=500, seed=1)
    assert lo2[0] == lo2[1] and hi2[0] == hi2[1]
    assert bootstrap_ci(np.full(10, 0.25), n_boot=100) == (0.25, 0.25)
    with pytest.raises(DatawallError):
        bootstrap_ci(np.array([]))
