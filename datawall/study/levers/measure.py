"""Measured points that levers share: accuracies over seeds with intervals, a trained setting's point on the
one compute/dollar axis, and the loss-vs-training-compute law of the training levers.

Total compute of a point = its training FLOPs + inference FLOPs per query x expected queries. Intervals are
normal approximations built from each run's 95% interval (binomial over held-out problems for greedy accuracy,
bootstrap over problems for sampled strategies) plus the spread across seeds when there are two or more.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from datawall.errors import DatawallError
from datawall.laws.power import fit_power_law
from datawall.study.levers.base import Point

if TYPE_CHECKING:
    from datawall.study.plan import Plan

Z95 = 1.959964


def accuracy_se(result: dict) -> float:
    """Standard error of an accuracy from its 95% interval."""
    lo, hi = result.get("ci_low"), result.get("ci_high")
    if lo is None or hi is None:
        return 0.0
    return max(0.0, (hi - lo) / (2 * Z95))


def combine(accs: list[float], ses: list[float]) -> tuple[float, float]:
    """Mean over seeds and its standard error: problem sampling plus (with 2+ seeds) the seeds' spread."""
    k = len(accs)
    var = float(np.mean(np.square(ses))) / k
    if k >= 2:
        var += float(np.var(accs, ddof=1)) / k
    return float(np.mean(accs)), math.sqrt(var)


def paired_gain(point: list, ref: list) -> tuple[float, float] | None:
    """Gain over a reference scored on the same problems, and its standard error, from per-problem rewards.

    point and ref: one list of per-problem rewards per seed (the same problems in the same order). The gain of
    seed s is the mean of its per-problem differences; the standard error combines each seed's problem sampling
    (the spread of the differences, which is small when both models get the same problems right) with the
    seeds' spread, as `combine` does. None when either side lacks the rewards or they do not line up.
    """
    if not point or len(point) != len(ref) or any(x is None for x in (*point, *ref)):
        return None
    diffs = [np.asarray(a, dtype=float) - np.asarray(b, dtype=float) for a, b in zip(point, ref, strict=True)]
    if any(len(d) < 2 or len(a) != len(b) for d, a, b in zip(diffs, point, ref, strict=True)):
        return None
    return combine([float(d.mean()) for d in diffs], [float(d.std(ddof=1)) / math.sqrt(len(d)) for d in diffs])


def interval(acc: float, se: float) -> tuple[float, float]:
    """The 95% normal interval of an accuracy, clipped to [0, 1]."""
    return max(0.0, acc - Z95 * se), min(1.0, acc + Z95 * se)


def pretrain_point(plan: Plan, point: Point, results: dict[str, dict], price) -> dict:
    """A trained setting averaged over seeds: accuracy, eval loss, training and total compute and dollars."""
    rs = [results[k] for k in point.pretrain]
    acc, se = combine([r["accuracy"] for r in rs], [accuracy_se(r) for r in rs])
    train_flops = float(np.mean([r["flops"] for r in rs]))
    wall = float(np.mean([r["wall_seconds"] for r in rs]))
    secs_per_flop = wall / train_flops if train_flops > 0 else math.nan
    q_flops = plan.infer_flops[point.setting.size]
    train_dollars = price.dollars(0.0, 0.0, train_flops, wall)
    q_dollars = price.dollars(0.0, 0.0, q_flops, q_flops * secs_per_flop)
    losses = [r.get("eval_loss") for r in rs]
    lo, hi = interval(acc, se)
    return {
        "lever": point.lever, "size": point.setting.size, "epochs": point.setting.epochs, "strategy": "greedy",
        "n": 1, "oracle": False, "seeds": len(rs), "runs": list(point.pretrain),
        "params": rs[0].get("params"), "train_flops": train_flops, "train_seconds": wall,
        "train_dollars": train_dollars, "inference_flops_per_query": q_flops, "dollars_per_query": q_dollars,
        "compute": train_flops + q_flops * plan.spec.queries.expected,
        "dollars": train_dollars + q_dollars * plan.spec.queries.expected,
        "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
        "accuracy_seeds": [r["accuracy"] for r in rs],
        "per_problem_seeds": [r.get("per_problem") for r in rs],  # for paired gains; not written to summary.json
        "eval_loss": float(np.mean(losses)) if all(x is not None for x in losses) else None,
        "eval_loss_seeds": losses,
    }


LOSS_FORM = "eval loss = E + A (C / C0)^-alpha, C = training FLOPs"


def fit_loss_vs_compute(points: list[dict]) -> dict:
    """eval loss = E + A (C/C0)^-alpha over training FLOPs (datawall.laws.fit_power_law); needs 4+ budgets."""
    pts = [p for p in points if p.get("eval_loss") is not None]
    C = np.array([p["train_flops"] for p in pts], dtype=float)
    L = np.array([p["eval_loss"] for p in pts], dtype=float)
    distinct = len(np.unique(np.round(np.log10(C), 6))) if len(C) else 0
    if distinct < 4:
        return {"form": LOSS_FORM, "fit": None, "reason": f"{distinct} distinct training budgets: too few for a "
                                                          "3-parameter law (need 4)"}
    try:
        fit = fit_power_law(C, L)
    except DatawallError as e:
        return {"form": LOSS_FORM, "fit": None, "reason": f"did not converge ({e})"}
    return {"form": LOSS_FORM, "fit": {**fit.law.params(), "rmse": fit.rmse(C, L), "points": len(pts)}}


def training_laws(plan: Plan, mine: list[Point], points: list[dict], results: dict[str, dict]) -> dict:
    """The law a training lever adds: held-out loss against its training FLOPs."""
    return {"loss_vs_train_compute": fit_loss_vs_compute(points)}
