"""Test-time compute: estimators over sample pools, cost per query, strategy curves, coverage law, policy.

    from datawall.testtime import pools_from_rows, strategy_curves, results_json, CostModel
    curves = strategy_curves(pools_from_rows(rows), cost=CostModel.for_backend("local-cpu", config=cfg))
    results_json(curves)   # {"strategies": name -> [{n, accuracy, ci_low, ci_high, ..._per_query}]}

Nothing here imports torch (FLOPs from a model's shape import datawall.model.flops on first use). The names
below load on first use, so that the light modules (the strategy registry, ThinkConfig) can be imported by
the command line without numpy and scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "datawall.economics.cost": ("AXES", "CostModel", "QueryCost"),
    "datawall.economics.prices": ("ApiPrice", "FlopsPrice", "GpuHourPrice", "PriceTable", "load_prices"),
    "datawall.testtime.coverage_law": ("CoverageLaw", "fit_coverage_law"),
    "datawall.testtime.strategies": ("STRATEGIES", "Strategy"),
    "datawall.testtime.curves": ("Curve", "ProblemPool", "default_ks", "pools_from_rows", "results_json",
                                 "single_curve", "strategy_curves"),
    "datawall.testtime.estimators": ("best_of_k", "bootstrap_ci", "coverage_at_k", "majority_at_k", "pass_at_k",
                                     "subset_ratios", "vote_at_k", "weighted_majority_at_k"),
    "datawall.testtime.policy": ("Policy", "accuracy_at", "accuracy_within", "compute_optimal_policy",
                                 "crossover_budget", "difficulty_bins"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


__all__ = sorted(_HOME)
