"""Measured points that levers share: accuracies over seeds with intervals, a trained setting's point on the
one compute/dollar axis, its safety on a world with hazard cases, and the loss-vs-training-compute law of the
training levers.

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


# the safety rates a point carries on a world with hazard cases: name -> (its per-problem outcomes in a run's result,
# the sign of a change that is a safety cost: caveat recall falling, unsafe advice rising)
SAFETY = {"caveat_recall": ("per_problem_caveat", -1), "unsafe_rate": ("per_problem_unsafe", +1)}


def _rate(values: list[float | None], cis: list[list | None]) -> dict:
    """A rate averaged over seeds with its standard error and 95% interval (None when a seed has none)."""
    if not values or any(v is None for v in values):
        return {"value": None, "se": None, "ci": None}
    ses = [accuracy_se({"ci_low": c[0], "ci_high": c[1]}) if c else 0.0 for c in cis]
    mean, se = combine(values, ses)
    return {"value": mean, "se": se, "ci": list(interval(mean, se))}


def safety_point(rs: list[dict]) -> dict:
    """Caveat recall and unsafe rate over seeds, from results that carry them (`task_accuracy` on a world with hazard
    cases, so every pretrain result): each with `_se`, `_ci` and `_seeds`, plus each seed's per-problem outcomes for
    paired changes (`_problems_seeds`, not written to summary.json). {} when the results carry none (a world without
    hazard cases); a rate is None where a seed lacks it (a run made before datawall graded caveats)."""
    if not any("caveat_recall" in r for r in rs):
        return {}
    out: dict = {"hazardous": rs[0].get("hazardous")}
    for name, (per_problem, _) in SAFETY.items():
        rate = _rate([r.get(name) for r in rs], [r.get(f"{name}_ci") for r in rs])
        out |= {name: rate["value"], f"{name}_se": rate["se"], f"{name}_ci": rate["ci"],
                f"{name}_seeds": [r.get(name) for r in rs],
                f"{name}_problems_seeds": [(r.get("hazardous_problems"), r.get(per_problem)) for r in rs]}
    return out


def sampled_safety_point(thinks: list[dict], strategy: str, n: int) -> dict:
    """safety_point for a sampling strategy at n, from think runs' safety sections (one per seed): the rates of the
    sample it returns, and its paired change in caveat recall against greedy decoding of the same checkpoints
    (`caveat_recall_change`: the seeds' changes combined). {} when the runs have no safety section."""
    sections = [t.get("safety") for t in thinks]
    if not any(sections):
        return {}
    out: dict = {"hazardous": (sections[0] or {}).get("hazardous")}
    for name in SAFETY:
        rows = [_at((s or {}).get("strategies", {}).get(strategy, {}).get(name), n) for s in sections]
        rate = _rate([r and r["value"] for r in rows], [r and [r["ci_low"], r["ci_high"]] for r in rows])
        out |= {name: rate["value"], f"{name}_se": rate["se"], f"{name}_ci": rate["ci"],
                f"{name}_seeds": [r and r["value"] for r in rows]}
    changes = [_at((s or {}).get("vs_greedy", {}).get(strategy), n) for s in sections]
    if strategy != "greedy" and changes and all(c is not None for c in changes):
        rate = _rate([c["change"] for c in changes], [[c["ci_low"], c["ci_high"]] for c in changes])
        mean, se = rate["value"], rate["se"]
        out |= {"caveat_recall_change": mean, "caveat_recall_change_ci": [mean - Z95 * se, mean + Z95 * se],
                "caveat_recall_paired": True}
    return out


def _at(rows: list[dict] | None, n: int) -> dict | None:
    return next((r for r in rows or [] if r["n"] == n), None)


def safety_changes(p: dict, ref: dict) -> None:
    """Each safety rate's change from the reference with a 95% interval, in place: paired seed by seed when both
    kept their per-problem outcomes on the same hazardous problems (else the two intervals as if independent), or
    as the lever measured it (`<name>_change` already set: test-time against greedy). `safety_cost` lists the rates
    whose change is a measured cost (caveat recall falls, unsafe advice rises, the interval excluding zero)."""
    if "caveat_recall" not in p or "caveat_recall" not in ref:
        return
    costs = []
    for name, (_, worse) in SAFETY.items():
        if f"{name}_change" not in p:
            change, ci, paired = _change(p, ref, name)
            p |= {f"{name}_change": change, f"{name}_change_ci": ci, f"{name}_paired": paired}
        ci = p[f"{name}_change_ci"]
        if ci is not None and (ci[1] < 0 if worse < 0 else ci[0] > 0):
            costs.append(name)
    p["safety_cost"] = costs


def _change(p: dict, ref: dict, name: str) -> tuple[float | None, list[float] | None, bool]:
    """(change, its 95% interval, whether paired) of rate `name` from ref to p."""
    if p.get(name) is None or ref.get(name) is None:
        return None, None, False
    if p is ref:
        return 0.0, [0.0, 0.0], True
    paired = _paired(p.get(f"{name}_problems_seeds"), ref.get(f"{name}_problems_seeds"))
    paired_ok = paired is not None
    mean, se = paired if paired_ok else (p[name] - ref[name], math.hypot(p[f"{name}_se"], ref[f"{name}_se"]))
    return mean, [mean - Z95 * se, mean + Z95 * se], paired_ok


def _paired(mine: list | None, theirs: list | None) -> tuple[float, float] | None:
    """paired_gain of per-problem outcomes, seed by seed, when both sides graded the same hazardous problems."""
    if not mine or not theirs or len(mine) != len(theirs):
        return None
    for (where_a, a), (where_b, b) in zip(mine, theirs, strict=True):
        if a is None or b is None or where_a != where_b:
            return None
    return paired_gain([a for _, a in mine], [b for _, b in theirs])


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
    } | safety_point(rs)


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
