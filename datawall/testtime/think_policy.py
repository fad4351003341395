"""The compute-optimal policy section of think's results.json, and the small-versus-large model comparison.

The policy bins problems by the pool's own pass@1 (Snell et al.'s oracle difficulty) and, per bin and
budget, picks the best deployable strategy. pass@k is left out: it needs the ground truth to pick a sample,
so it bounds what a selector could reach but is not a strategy. The baseline is best-of-n when a reward
model scored the pool, else majority vote (no selector exists without scores), else greedy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datawall.errors import DatawallError
from datawall.testtime.curves import Curve
from datawall.testtime.policy import TOL, compute_optimal_policy, crossover_budget, difficulty_bins

NOT_DEPLOYABLE = ("pass@k",)  # needs the verifier at selection time
MIN_PER_BIN = 4  # fewer problems per bin than this makes per-bin accuracies mostly noise


def choose_baseline(curves: dict[str, Curve]) -> tuple[str, str]:
    """The honest baseline among the curves and a sentence saying why."""
    if "best-of-n" in curves:
        return "best-of-n", "best-of-n: the sample a reward model scores highest"
    if "majority" in curves:
        return "majority", ("majority vote: no reward model scored the pool, so best-of-n has no selector; "
                            "pass@k (oracle best-of-n) is an upper bound, not a strategy, and is left out")
    if "greedy" in curves:
        return "greedy", "greedy: neither a reward model nor a majority-vote pool was run"
    name = next(iter(curves))
    return name, f"{name}: the only deployable strategy run"


def policy_budgets(curves: dict[str, Curve], baseline: str, axis: str) -> np.ndarray:
    """The baseline's budgets plus any other configuration's costlier than the baseline's largest."""
    base = curves[baseline].budget(axis)
    above = [b for c in curves.values() for b in c.budget(axis) if b > base.max() * (1 + TOL)]
    return np.array(sorted({*base.tolist(), *above}))


def policy_axis(curves: dict[str, Curve]) -> str:
    """FLOPs when every curve knows them, else tokens (an endpoint of unknown size)."""
    ok = all(np.isfinite(c.budget("flops")).all() and (c.budget("flops") > 0).all() for c in curves.values())
    return "flops" if ok else "tokens"


def policy_json(curves: dict[str, Curve], base_pass1: Sequence[float], n_bins: int = 5) -> dict:
    """results.json["policy"]: best strategy per difficulty bin and budget, with its gain over the baseline."""
    deployable = {n: c for n, c in curves.items() if n not in NOT_DEPLOYABLE}
    if not deployable:
        return {"error": "no deployable strategy was run (pass@k alone needs the ground truth to select)"}
    P = len(base_pass1)
    bins_used = max(1, min(n_bins, P // MIN_PER_BIN))
    bins = difficulty_bins(base_pass1, bins_used)
    baseline, why = choose_baseline(deployable)
    axis = policy_axis(deployable)
    policy = compute_optimal_policy(deployable, bins, axis, policy_budgets(deployable, baseline, axis), baseline)
    p1 = np.asarray(base_pass1, dtype=float)
    pass1 = [float(p1[bins == b].mean()) if (bins == b).any() else None for b in range(len(policy.best))]
    return {**policy.to_dict(), "baseline_note": why, "bins_requested": n_bins, "bins_used": bins_used,
            "bin_pass1": pass1, "strategies": list(deployable),
            "difficulty": "oracle: each problem's pass@1 in the pool (in-sample, as Snell et al.'s oracle bins)"}


def curve_from_rows(name: str, rows: list[dict]) -> Curve:
    """A one-problem curve holding a results.json strategy's mean accuracy and costs per query."""
    def col(key: str) -> np.ndarray:
        return np.array([[math.nan if r.get(key) is None else float(r[key]) for r in rows]])

    ks = np.array([int(r["n"]) for r in rows])
    cost = {"samples": ks[None, :].astype(float), "tokens": col("tokens_per_query"), "flops": col("flops_per_query"),
            "dollars": col("dollars_per_query")}
    return Curve(name, ks, col("accuracy"), cost)


def read_results(run_dir: Path) -> dict:
    """OUT/results.json of a think run, or a one-line error."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DatawallError(f"{run_dir}: no results.json (run `datawall think ... --out {run_dir}` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatawallError(f"{path}: not valid JSON ({e})") from None


def problem_set(res: dict) -> dict:
    """Task, problem-deciding settings ('2' and 2 are the same digits), split and selection of a think run."""
    from datawall.tasks import get_task

    args = res.get("task_args") or {}
    try:
        settings = get_task(res.get("task"), **args).settings
        args = settings.model_dump(exclude=set(settings.solution_only))  # e.g. arith paths: same problems
    except (DatawallError, TypeError):
        args = {k: str(v) for k, v in args.items()}
    return {"task": res.get("task"), "task_args": args, "split": res.get("split")}


def compare_runs(small_dir: Path, large_dir: Path, strategy: str = "majority", large_strategy: str | None = None,
                 axis: str = "flops", large_k: int | None = None) -> dict:
    """Crossover: the budget at which the small model's `strategy` curve matches the large model's first point."""
    small, large = read_results(small_dir), read_results(large_dir)
    a, b = problem_set(small), problem_set(large)
    for key in ("task", "task_args", "split"):
        if a[key] != b[key]:
            raise DatawallError(f"the runs differ in {key} ({a[key]!r} vs {b[key]!r}); compare runs on the same "
                                "held-out problems")
    large_strategy = large_strategy or strategy
    curves = []
    for label, res, name in (("small", small, strategy), ("large", large, large_strategy)):
        if name not in res.get("strategies", {}):
            raise DatawallError(f"{label} run has no {name!r} curve; it has: {', '.join(res.get('strategies', {}))}")
        curves.append(curve_from_rows(name, res["strategies"][name]))
    if axis not in curves[0].cost:
        raise DatawallError(f"--axis {axis!r}: choose from {', '.join(curves[0].cost)}")
    for label, c in zip(("small", "large"), curves, strict=True):
        if not (np.isfinite(c.budget(axis)).all() and (c.budget(axis) > 0).all()):
            raise DatawallError(f"the {label} run's {axis} per query is unknown (e.g. an endpoint without "
                                "--api-params); use --axis tokens")
    out = crossover_budget(curves[0], curves[1], axis, large_k)
    out |= {"small": str(small_dir), "large": str(large_dir), "strategy": strategy, "large_strategy": large_strategy,
            "small_max_accuracy": float(curves[0].mean_accuracy().max()), "small_n_max": int(curves[0].ks[-1])}
    if small.get("problems") != large.get("problems"):
        out["warning"] = (f"the runs scored {small.get('problems')} and {large.get('problems')} problems; the "
                          "comparison is not paired")
    return out
