"""Accuracy-versus-budget curves of every sampling strategy over one pool of n samples per problem.

A pool holds, per problem, n samples (answer, verifier reward, optional reward-model score, completion
tokens). For each strategy and each k in a grid the curve holds every problem's expected accuracy with k
samples (exact where a formula exists, seeded Monte-Carlo otherwise) and its expected cost per query on
every axis (samples, tokens, FLOPs, seconds, dollars); `results_json` adds bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from datawall.economics.cost import AXES, CostModel
from datawall.economics.prices import ApiPrice
from datawall.errors import DatawallError
from datawall.testtime.estimators import DRAWS, best_of_k, bootstrap_ci, coverage_at_k, vote_at_k
from datawall.testtime.strategies import STRATEGIES

# the strategies that pick among a pool of samples, in registry order ("pass@k" is best-of-n with the
# verifier as oracle: coverage)
POOL_STRATEGIES = tuple(s.name for s in STRATEGIES.values() if s.pool)


@dataclass
class ProblemPool:
    """The n samples drawn for one problem."""

    answers: list[str | None]
    rewards: np.ndarray
    completion_tokens: np.ndarray
    prompt_tokens: int = 0
    scores: np.ndarray | None = None
    seconds: float = math.nan  # measured wall time of drawing all n samples, when known

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        self.completion_tokens = np.asarray(self.completion_tokens, dtype=np.int64)
        n = len(self.rewards)
        if n == 0 or len(self.answers) != n or len(self.completion_tokens) != n:
            raise DatawallError(f"a problem's pool needs one answer, reward and token count per sample "
                                f"(got {len(self.answers)}, {n}, {len(self.completion_tokens)})")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64)
            if self.scores.shape != (n,):
                raise DatawallError(f"a problem's pool has {n} samples but {len(self.scores)} scores")

    @property
    def n(self) -> int:
        return len(self.rewards)


def pools_from_rows(rows: Iterable[dict]) -> list[ProblemPool]:
    """Group samples.jsonl rows (problem, sample, answer, reward, tokens; optional score, prompt_tokens)."""
    grouped: dict[object, list[dict]] = {}
    for i, row in enumerate(rows, 1):
        missing = [key for key in ("problem", "sample", "answer", "reward", "tokens") if key not in row]
        if missing:
            raise DatawallError(f"sample row {i}: missing field {missing[0]!r}")
        grouped.setdefault(row["problem"], []).append(row)
    pools = []
    for problem, group in grouped.items():
        group.sort(key=lambda r: r["sample"])
        has_score = ["score" in r and r["score"] is not None for r in group]
        if any(has_score) and not all(has_score):
            raise DatawallError(f"problem {problem!r}: some samples have a score and some do not")
        pools.append(ProblemPool(
            answers=[r["answer"] for r in group],
            rewards=np.array([r["reward"] for r in group], dtype=np.float64),
            completion_tokens=np.array([r["tokens"] for r in group], dtype=np.int64),
            prompt_tokens=int(group[0].get("prompt_tokens", 0)),
            scores=np.array([r["score"] for r in group], dtype=np.float64) if all(has_score) else None,
        ))
    return pools


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n (n itself included)."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


@dataclass
class Curve:
    """One strategy: per-problem expected accuracy (P x K) and expected cost per query on every axis."""

    name: str
    ks: np.ndarray
    accuracy: np.ndarray
    cost: dict[str, np.ndarray] = field(default_factory=dict)

    def mean_accuracy(self) -> np.ndarray:
        """Accuracy over problems at each k."""
        return self.accuracy.mean(axis=0)

    def budget(self, axis: str = "flops") -> np.ndarray:
        """Mean cost per query at each k on `axis` (samples, tokens, flops, seconds, dollars)."""
        if axis not in self.cost:
            raise DatawallError(f"unknown budget axis {axis!r}; axes: {', '.join(self.cost)}")
        return self.cost[axis].mean(axis=0)

    def subset(self, mask: np.ndarray) -> Curve:
        """The curve restricted to the problems where mask is true."""
        return Curve(self.name, self.ks, self.accuracy[mask], {a: c[mask] for a, c in self.cost.items()})

    def rows(self, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[dict]:
        """results.json entries: n, accuracy, ci_low, ci_high, tokens/flops/dollars_per_query (None if unknown)."""
        lo, hi = bootstrap_ci(self.accuracy, n_boot, level, seed)
        acc = self.mean_accuracy()
        tokens, flops, dollars = (self.budget(a) for a in ("tokens", "flops", "dollars"))
        return [{"n": int(k), "accuracy": _num(acc[i]), "ci_low": _num(lo[i]), "ci_high": _num(hi[i]),
                 "tokens_per_query": _num(tokens[i]), "flops_per_query": _num(flops[i]),
                 "dollars_per_query": _num(dollars[i])} for i, k in enumerate(self.ks)]


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _costs(pools: Sequence[ProblemPool], ks: Sequence[int], cost: CostModel) -> dict[str, np.ndarray]:
    per = [cost.expected(p.prompt_tokens, p.completion_tokens, ks, p.seconds) for p in pools]
    return {axis: np.stack([c[axis] for c in per]) for axis in AXES}


def strategy_curves(pools: Sequence[ProblemPool], strategies: Sequence[str] | None = None,
                    ks: Sequence[int] | None = None, cost: CostModel | None = None, draws: int = DRAWS,
                    seed: int = 0) -> dict[str, Curve]:
    """Curves of each strategy over the pool (default: all those the pool has scores for), seeded."""
    if not pools:
        raise DatawallError("no problems in the sample pool")
    scored = all(p.scores is not None for p in pools)
    names = list(strategies) if strategies is not None else [s for s in POOL_STRATEGIES
                                                                if scored or not STRATEGIES[s].scorer]
    for name in names:
        if name not in POOL_STRATEGIES:
            raise DatawallError(f"unknown sampling strategy {name!r}; strategies: {', '.join(POOL_STRATEGIES)}")
        if STRATEGIES[name].scorer and not scored:
            raise DatawallError(f"strategy {name!r} needs a reward-model score on every sample")
    n_min = min(p.n for p in pools)
    ks = default_ks(n_min) if ks is None else sorted({int(k) for k in ks})
    if ks[0] < 1 or ks[-1] > n_min:
        raise DatawallError(f"sample counts k must be in 1..{n_min} (the smallest pool), got {ks[0]}..{ks[-1]}")
    cost = cost or CostModel(ApiPrice(kind="api", input_per_million=0.0, output_per_million=0.0))
    costs = _costs(pools, ks, cost)
    curves = {}
    for s, name in enumerate(names):
        acc = np.empty((len(pools), len(ks)))
        for i, p in enumerate(pools):
            # one stream per (seed, strategy, problem): a problem's estimate does not depend on the others
            rng = np.random.default_rng([seed, s, i])
            if name == "pass@k":
                acc[i] = coverage_at_k(p.rewards, ks)
            elif name == "best-of-n":
                acc[i] = best_of_k(p.rewards, p.scores, ks)
            else:
                weights = p.scores if name == "weighted-majority" else None
                acc[i] = vote_at_k(p.answers, p.rewards, ks, weights, draws, rng)
        curves[name] = Curve(name, np.array(ks), acc, costs)
    return curves


def single_curve(name: str, rewards: Sequence[float], prompt_tokens: Sequence[int],
                 completion_tokens: Sequence[int], cost: CostModel | None = None,
                 seconds: Sequence[float] | None = None) -> Curve:
    """A one-point curve (k = 1) for a strategy that draws one completion per problem, e.g. greedy."""
    cost = cost or CostModel(ApiPrice(kind="api", input_per_million=0.0, output_per_million=0.0))
    secs = [math.nan] * len(rewards) if seconds is None else seconds
    pools = [ProblemPool([None], [r], [t], int(p), seconds=s)
             for r, p, t, s in zip(rewards, prompt_tokens, completion_tokens, secs, strict=True)]
    return Curve(name, np.array([1]), np.asarray(rewards, dtype=np.float64)[:, None], _costs(pools, [1], cost))


def rows_curve(name: str, rows_by_x: dict[int, list[dict]], cost: CostModel, samples_per_query=None) -> Curve:
    """A curve over x (e.g. beam N or thinking budget) from one row per problem per x, in problem order.

    Each row holds its measured reward, prompt_tokens, completion_tokens, flops and seconds per query;
    samples_per_query(x) gives the samples axis (default x itself).
    """
    xs = sorted(rows_by_x)
    P = len(rows_by_x[xs[0]])
    acc = np.empty((P, len(xs)))
    axes = {a: np.empty((P, len(xs))) for a in AXES}
    for k, x in enumerate(xs):
        for i, r in enumerate(rows_by_x[x]):
            acc[i, k] = r["reward"]
            axes["samples"][i, k] = x if samples_per_query is None else samples_per_query(x)
            axes["tokens"][i, k] = r["prompt_tokens"] + r["completion_tokens"]
            axes["flops"][i, k] = r["flops"]
            axes["seconds"][i, k] = r["seconds"]
            # prices are linear in tokens, FLOPs or seconds, so a query's summed usage is priced at once
            axes["dollars"][i, k] = cost.dollars(r["prompt_tokens"], r["completion_tokens"], r["flops"], r["seconds"])
    return Curve(name, np.array(xs), acc, axes)


def gain_rows(curve: Curve, reference: Curve, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[dict]:
    """Paired accuracy gain of `curve` over `reference`'s first point per problem, with a bootstrap interval.

    Both run on the same problems, so resampling problems keeps each one's pair together: the interval of the
    difference is much narrower than two separate intervals suggest (their overlap is not a test).
    """
    diff = curve.accuracy - reference.accuracy[:, :1]
    lo, hi = bootstrap_ci(diff, n_boot, level, seed)
    return [{"n": int(k), "gain": _num(g), "ci_low": _num(lo[i]), "ci_high": _num(hi[i])}
            for i, (k, g) in enumerate(zip(curve.ks, diff.mean(axis=0), strict=True))]


def results_json(curves: dict[str, Curve], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The `think` results.json object: {"strategies": name -> rows} and, with greedy, each one's paired gain."""
    out = {"strategies": {name: c.rows(n_boot, level, seed) for name, c in curves.items()}}
    greedy = curves.get("greedy")
    if greedy is not None:
        out["vs_greedy"] = {name: gain_rows(c, greedy, n_boot, level, seed) for name, c in curves.items()
                            if name != "greedy" and len(c.accuracy) == len(greedy.accuracy)}
    return out
