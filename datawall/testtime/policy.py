"""Compute-optimal test-time policy (Snell et al. 2024) and the small-versus-large crossover budget.

Problems are binned by difficulty: the base model's pass@1 (estimated from its own n samples, so this is
Snell et al.'s "oracle" difficulty), split at quantiles. In each bin and at each budget per query the
policy picks the strategy and k with the best accuracy among configurations that cost at most that budget
(a step rule: every point it reports is achievable, no interpolation); another strategy replaces the
baseline (best-of-n) only when strictly better, and the gain is measured against best-of-n at the same
budget. Selection and evaluation use the same problems, so gains are in-sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from datawall.errors import DatawallError
from datawall.testtime.curves import Curve

TOL = 1e-9  # relative slack when comparing a configuration's cost with a budget (float round-off)


def difficulty_bins(base_pass1: Sequence[float], n_bins: int = 5) -> np.ndarray:
    """Bin per problem by quantiles of base pass@1: 0 = easiest (highest pass@1) .. n_bins - 1 = hardest.

    Tied problems share a bin (the one their mean rank falls in), so with many ties bins can be unequal.
    """
    p = np.asarray(base_pass1, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or n_bins < 1:
        raise DatawallError("difficulty bins need a non-empty 1-D array of pass@1 values and n_bins >= 1")
    frac = (rankdata(-p, method="average") - 0.5) / len(p)  # 0 for the easiest problem
    return np.minimum((frac * n_bins).astype(np.int64), n_bins - 1)


def accuracy_within(curve: Curve, budget: float, axis: str = "flops") -> tuple[float, int | None]:
    """Best accuracy (and its k) among the curve's configurations costing at most `budget`; (nan, None) if none."""
    cost, acc = curve.budget(axis), curve.mean_accuracy()
    ok = np.flatnonzero(cost <= budget * (1 + TOL))
    if len(ok) == 0:
        return float("nan"), None
    i = ok[np.argmax(acc[ok])]
    return float(acc[i]), int(curve.ks[i])


@dataclass
class Policy:
    """Best strategy per difficulty bin and budget, against a baseline at equal cost."""

    axis: str
    budgets: np.ndarray  # (B,) budget per query on `axis`
    bins: np.ndarray  # (P,) difficulty bin of each problem
    best: list[list[str | None]]  # [bin][budget]: "strategy@k" of the best configuration, None if none fits
    accuracy: np.ndarray  # (n_bins, B) accuracy of the best configuration
    baseline: np.ndarray  # (n_bins, B) accuracy of the baseline strategy within the same budget
    baseline_name: str
    overall: np.ndarray  # (B,) accuracy of the per-bin policy over all problems
    overall_baseline: np.ndarray  # (B,) accuracy of the baseline over all problems

    @property
    def gain(self) -> np.ndarray:
        """Per-bin accuracy gain of the policy over the baseline at equal budget."""
        return self.accuracy - self.baseline

    @property
    def overall_gain(self) -> np.ndarray:
        """Overall accuracy gain of the policy over the baseline at equal budget."""
        return self.overall - self.overall_baseline

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN as None)."""
        def clean(a: np.ndarray) -> list:
            return [clean(x) for x in a] if a.ndim > 1 else [float(x) if np.isfinite(x) else None for x in a]

        return {"axis": self.axis, "budgets": clean(self.budgets), "baseline": self.baseline_name,
                "bin_sizes": np.bincount(self.bins, minlength=len(self.best)).tolist(), "best": self.best,
                "accuracy": clean(self.accuracy), "baseline_accuracy": clean(self.baseline),
                "gain": clean(self.gain), "overall": clean(self.overall),
                "overall_baseline": clean(self.overall_baseline), "overall_gain": clean(self.overall_gain)}


def compute_optimal_policy(curves: dict[str, Curve], bins: np.ndarray, axis: str = "flops",
                           budgets: Sequence[float] | None = None, baseline: str = "best-of-n") -> Policy:
    """Per difficulty bin and budget, the best strategy and k, and its gain over `baseline` at equal cost.

    Budgets default to the baseline's mean cost per query at each of its k. Empty bins report NaN.
    """
    if baseline not in curves:
        raise DatawallError(f"baseline strategy {baseline!r} has no curve; curves: {', '.join(curves)}")
    bins = np.asarray(bins, dtype=np.int64)
    for c in curves.values():
        if len(c.accuracy) != len(bins):
            raise DatawallError(f"curve {c.name!r} has {len(c.accuracy)} problems but {len(bins)} bins were given")
    B = np.asarray(curves[baseline].budget(axis) if budgets is None else budgets, dtype=np.float64)
    n_bins = int(bins.max()) + 1
    acc = np.full((n_bins, len(B)), np.nan)
    base = np.full((n_bins, len(B)), np.nan)
    best: list[list[str | None]] = [[None] * len(B) for _ in range(n_bins)]
    for b in range(n_bins):
        mask = bins == b
        if not mask.any():
            continue
        # the baseline goes first: another strategy replaces it only when strictly better
        order = [baseline, *(name for name in curves if name != baseline)]
        sub = {name: curves[name].subset(mask) for name in order}
        for j, budget in enumerate(B):
            base[b, j] = accuracy_within(sub[baseline], budget, axis)[0]
            for name, c in sub.items():
                a, k = accuracy_within(c, budget, axis)
                if k is not None and not a <= acc[b, j]:  # first fitting configuration, or strictly better
                    acc[b, j], best[b][j] = a, f"{name}@{k}"
    weight = np.bincount(bins, minlength=n_bins) / len(bins)
    return Policy(axis, B, bins, best, acc, base, baseline, _weighted(acc, weight), _weighted(base, weight))


def _weighted(acc: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Accuracy over all problems from per-bin accuracies (NaN where any non-empty bin has no configuration)."""
    present = weight > 0
    return (weight[present, None] * acc[present]).sum(axis=0)


def accuracy_at(curve: Curve, budget: float, axis: str = "flops") -> float:
    """The curve's accuracy at `budget`, interpolated linearly in log budget (NaN outside its range)."""
    cost, acc = curve.budget(axis), curve.mean_accuracy()
    if budget < cost[0] * (1 - TOL) or budget > cost[-1] * (1 + TOL):
        return float("nan")
    return float(np.interp(np.log(budget), np.log(cost), acc))


def crossover_budget(small: Curve, large: Curve, axis: str = "flops", large_k: int | None = None) -> dict:
    """Budget per query at which the small model (more samples) first matches the large one at large_k.

    The small curve is interpolated linearly in log budget (and its k in log k) between the first point
    that reaches the large model's accuracy and the one before it. `ratio` < 1 means sampling the small
    model more is cheaper; small_budget is None when the small curve never gets there.
    """
    ks = list(large.ks)
    j = 0 if large_k is None else ks.index(large_k) if large_k in ks else -1
    if j < 0:
        raise DatawallError(f"large model curve has no point at k={large_k}; its k: {ks}")
    target = float(large.mean_accuracy()[j])
    large_budget = float(large.budget(axis)[j])
    cost, acc = small.budget(axis), small.mean_accuracy()
    if (cost <= 0).any() or not np.isfinite(cost).all():
        raise DatawallError(f"crossover on the {axis} axis needs positive, known costs per query")
    out = {"axis": axis, "target_accuracy": target, "large_k": int(ks[j]), "large_budget": large_budget,
           "small_budget": None, "small_samples": None, "ratio": None}
    hit = np.flatnonzero(acc >= target)
    if len(hit) == 0:
        return out
    i = int(hit[0])
    if i == 0:
        budget, samples = float(cost[0]), float(small.ks[0])
    else:
        t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
        budget = float(np.exp((1 - t) * np.log(cost[i - 1]) + t * np.log(cost[i])))
        samples = float(np.exp((1 - t) * np.log(small.ks[i - 1]) + t * np.log(small.ks[i])))
    out.update(small_budget=budget, small_samples=samples, ratio=budget / large_budget)
    return out
