"""Test-time compute: estimators over sample pools, cost per query, strategy curves, coverage law, policy.

    from datawall.testtime import pools_from_rows, strategy_curves, results_json, CostModel
    curves = strategy_curves(pools_from_rows(rows), cost=CostModel.for_backend("local-cpu", config=cfg))
    results_json(curves)   # {"strategies": name -> [{n, accuracy, ci_low, ci_high, ..._per_query}]}

Nothing here imports torch (FLOPs from a model's shape import datawall.model.flops on first use).
"""

from datawall.economics.cost import AXES, CostModel, QueryCost
from datawall.economics.prices import ApiPrice, FlopsPrice, GpuHourPrice, PriceTable, load_prices
from datawall.testtime.coverage_law import CoverageLaw, fit_coverage_law
from datawall.testtime.curves import (
    STRATEGIES,
    Curve,
    ProblemPool,
    default_ks,
    pools_from_rows,
    results_json,
    single_curve,
    strategy_curves,
)
from datawall.testtime.estimators import (
    best_of_k,
    bootstrap_ci,
    coverage_at_k,
    majority_at_k,
    pass_at_k,
    subset_ratios,
    vote_at_k,
    weighted_majority_at_k,
)
from datawall.testtime.policy import (
    Policy,
    accuracy_at,
    accuracy_within,
    compute_optimal_policy,
    crossover_budget,
    difficulty_bins,
)

__all__ = [
    "AXES",
    "STRATEGIES",
    "ApiPrice",
    "CostModel",
    "CoverageLaw",
    "Curve",
    "FlopsPrice",
    "GpuHourPrice",
    "Policy",
    "PriceTable",
    "ProblemPool",
    "QueryCost",
    "accuracy_at",
    "accuracy_within",
    "best_of_k",
    "bootstrap_ci",
    "compute_optimal_policy",
    "coverage_at_k",
    "crossover_budget",
    "default_ks",
    "difficulty_bins",
    "fit_coverage_law",
    "load_prices",
    "majority_at_k",
    "pass_at_k",
    "pools_from_rows",
    "results_json",
    "single_curve",
    "strategy_curves",
    "subset_ratios",
    "vote_at_k",
    "weighted_majority_at_k",
]
