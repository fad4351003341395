"""Strategy curves over a sample pool, results.json, the coverage law fit, the compute-optimal policy, crossover."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.testtime import (
    ApiPrice,
    CostModel,
    Curve,
    ProblemPool,
    accuracy_at,
    best_of_k,
    compute_optimal_policy,
    crossover_budget,
    difficulty_bins,
    fit_coverage_law,
    pass_at_k,
    pools_from_rows,
    results_json,
    single_curve,
    strategy_curves,
)

FREE = ApiPrice(kind="api", input_per_million=0.0, output_per_million=0.0)


def random_pool(problems: int = 30, n: int = 16, seed: int = 0) -> list[ProblemPool]:
    rng = np.random.default_rng(seed)
    pools = []
    for _ in range(problems):
        answers = [None if rng.random() < 0.1 else str(rng.integers(0, 4)) for _ in range(n)]
        rewards = np.array([1.0 if a == "0" else 0.0 for a in answers])
        pools.append(ProblemPool(answers, rewards, rng.integers(1, 40, n), prompt_tokens=int(rng.integers(5, 20)),
                                 scores=rewards * 0.5 + rng.random(n)))
    return pools


def test_curves_use_the_exact_estimators_and_expected_costs():
    pools = random_pool()
    curves = strategy_curves(pools, cost=CostModel(FREE, params=1000.0), draws=300)
    assert set(curves) == {"pass@k", "majority", "best-of-n", "weighted-majority"}
    ks = [1, 2, 4, 8, 16]
    for c in curves.values():
        assert c.ks.tolist() == ks and c.accuracy.shape == (30, 5)
    expected_pass = np.mean([[pass_at_k(16, int(p.rewards.sum()), k) for k in ks] for p in pools], axis=0)
    assert curves["pass@k"].mean_accuracy() == pytest.approx(expected_pass, abs=1e-12)
    assert curves["best-of-n"].accuracy[3] == pytest.approx(best_of_k(pools[3].rewards, pools[3].scores, ks))
    mean_reward = np.mean([p.rewards.mean() for p in pools])
    assert curves["majority"].mean_accuracy()[0] == pytest.approx(mean_reward, abs=1e-12)
    assert np.all(np.diff(curves["pass@k"].mean_accuracy()) >= 0)
    tokens = np.mean([[p.prompt_tokens + k * p.completion_tokens.mean() for k in ks] for p in pools], axis=0)
    assert curves["majority"].budget("tokens") == pytest.approx(tokens)
    assert curves["majority"].budget("samples").tolist() == ks
    flops = np.mean([[2000.0 * (p.prompt_tokens + k * (p.completion_tokens - 1).mean()) for k in ks]
                     for p in pools], axis=0)
    assert curves["best-of-n"].budget("flops") == pytest.approx(flops)


def test_results_json_contract_and_determinism():
    pools = random_pool()
    out = results_json(strategy_curves(pools, draws=200, seed=1), n_boot=200, seed=2)
    again = results_json(strategy_curves(pools, draws=200, seed=1), n_boot=200, seed=2)
    assert out == again
    other = results_json(strategy_curves(pools, draws=200, seed=5), n_boot=200, seed=2)
    assert other["strategies"]["majority"] != out["strategies"]["majority"]
    assert other["strategies"]["pass@k"] == out["strategies"]["pass@k"]  # exact: no seed involved
    json.dumps(out, allow_nan=False)
    keys = {"n", "accuracy", "ci_low", "ci_high", "tokens_per_query", "flops_per_query", "dollars_per_query"}
    for rows in out["strategies"].values():
        assert [r["n"] for r in rows] == [1, 2, 4, 8, 16]
        for r in rows:
            assert set(r) == keys
            assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
            assert r["flops_per_query"] is None and r["dollars_per_query"] == 0.0  # no model shape given


def test_pools_from_rows_groups_sorts_and_validates():
    rows = [{"problem": p, "sample": s, "completion": "", "answer": f"{p}{s}", "reward": float(s == 1),
             "tokens": 10 + s, "prompt_tokens": 7} for p in (3, 1) for s in (2, 0, 1)]
    pools = pools_from_rows(rows)
    assert [p.answers for p in pools] == [["30", "31", "32"], ["10", "11", "12"]]
    assert pools[0].completion_tokens.tolist() == [10, 11, 12] and pools[0].prompt_tokens == 7
    assert pools[0].scores is None
    with pytest.raises(DatawallError, match="sample row 1: missing field 'reward'"):
        pools_from_rows([{"problem": 0, "sample": 0, "answer": "1", "tokens": 3}])
    mixed = [dict(rows[0], score=0.5), rows[1]]
    with pytest.raises(DatawallError, match="some samples have a score"):
        pools_from_rows(mixed)
    with pytest.raises(DatawallError, match="needs a reward-model score"):
        strategy_curves(pools, ["best-of-n"])
    with pytest.raises(DatawallError, match="unknown sampling strategy"):
        strategy_curves(pools, ["beam"])
    with pytest.raises(DatawallError, match="sample counts k"):
        strategy_curves(pools, ks=[1, 4])
    assert list(strategy_curves(pools)) == ["pass@k", "majority"]


def test_single_curve_for_greedy():
    c = single_curve("greedy", [1.0, 0.0, 1.0, 1.0], [5, 6, 7, 8], [10, 10, 12, 12], CostModel(FREE, params=10.0))
    rows = c.rows(n_boot=100)
    assert len(rows) == 1 and rows[0]["n"] == 1 and rows[0]["accuracy"] == 0.75
    assert rows[0]["tokens_per_query"] == pytest.approx(6.5 + 11)
    assert rows[0]["flops_per_query"] == pytest.approx(20.0 * (6.5 + 10))


def test_coverage_law_recovers_its_parameters():
    ks = 2.0 ** np.arange(13)
    a, b = -2.0, -0.4
    exact = fit_coverage_law(ks, np.exp(a * ks**b))
    assert exact.a == pytest.approx(a, rel=1e-10) and exact.b == pytest.approx(b, rel=1e-10)
    assert exact.r2 == pytest.approx(1.0) and exact.rmse < 1e-12
    rng = np.random.default_rng(0)
    noisy = np.exp(a * ks**b * np.exp(rng.normal(0, 0.03, len(ks))))
    fit = fit_coverage_law(ks, noisy)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, abs=0.02)
    assert fit.r2 > 0.99 and fit.points == 13
    k = fit.samples_for(0.9)
    assert fit.predict(k) == pytest.approx(0.9)
    assert set(fit.to_dict()) >= {"a", "b", "r2", "rmse"}
    with pytest.raises(DatawallError, match="at least 2 points"):
        fit_coverage_law([1, 2, 4], [0.0, 1.0, 1.0])


def test_coverage_law_fits_pass_at_k_of_a_heavy_tailed_pool():
    # per-problem pass@1 drawn from a Beta with a heavy left tail gives an aggregate power law (Schaeffer 2025)
    rng = np.random.default_rng(1)
    p1 = rng.beta(0.3, 3.0, 2000)
    ks = 2 ** np.arange(11)
    coverage = np.array([np.mean(1 - (1 - p1) ** k) for k in ks])
    fit = fit_coverage_law(ks, coverage)
    assert fit.b < 0 and fit.a < 0 and fit.r2 > 0.95


def policy_pool(cost: CostModel | None = None) -> tuple[dict[str, Curve], list[ProblemPool]]:
    """Easy problems: the right answer is the plurality but the reward model prefers wrong ones (majority wins).
    Hard problems: a wrong answer is the majority but the reward model ranks the right one first (best-of-n wins).
    """
    pools = []
    for _ in range(10):
        answers = ["1"] * 7 + [f"w{i}" for i in range(9)]
        scores = [0.1] * 7 + [0.9] * 9
        pools.append(ProblemPool(answers, [1.0] * 7 + [0.0] * 9, [10] * 16, 5, scores))
    for _ in range(10):
        answers = ["1"] * 2 + ["9"] * 14
        scores = [0.95] * 2 + [0.1] * 14
        pools.append(ProblemPool(answers, [1.0] * 2 + [0.0] * 14, [30] * 16, 5, scores))
    # no k = 2: with all-distinct wrong answers maj@2 = maj@1 exactly, a tie left to Monte-Carlo noise
    curves = strategy_curves(pools, ["majority", "best-of-n", "pass@k"], [1, 4, 8, 16], cost, draws=2000)
    return curves, pools


def test_policy_picks_different_strategies_per_bin_and_measures_the_gain():
    curves, pools = policy_pool()
    base = curves["pass@k"].accuracy[:, 0]
    bins = difficulty_bins(base, n_bins=2)
    assert bins.tolist() == [0] * 10 + [1] * 10  # 0 = easiest
    deployable = {k: curves[k] for k in ("majority", "best-of-n")}
    policy = compute_optimal_policy(deployable, bins, axis="samples")
    assert policy.budgets.tolist() == [1, 4, 8, 16]
    assert policy.best[0][0] == policy.best[1][0] == "best-of-n@1"  # at k = 1 all strategies tie: keep the baseline
    assert [b.split("@")[0] for b in policy.best[0][1:]] == ["majority"] * 3
    assert [b.split("@")[0] for b in policy.best[1][1:]] == ["best-of-n"] * 3
    # best-of-n on easy problems only gets worse with k, so within any budget its best is k = 1
    assert policy.baseline[0] == pytest.approx([7 / 16] * 4)
    easy_bon = best_of_k(pools[0].rewards, pools[0].scores, [1, 4, 8, 16])
    assert easy_bon[0] == pytest.approx(7 / 16) and easy_bon[-1] == 0.0
    maj_easy = curves["majority"].subset(bins == 0).mean_accuracy()
    assert policy.gain[0] == pytest.approx(np.maximum.accumulate(maj_easy) - 7 / 16)
    assert policy.gain[0, -1] == pytest.approx(1.0 - 7 / 16)  # all 16: the 7 right answers outvote 9 singletons
    assert policy.gain[1] == pytest.approx(0.0)
    assert policy.overall == pytest.approx(0.5 * policy.accuracy[0] + 0.5 * policy.accuracy[1])
    assert policy.overall_gain == pytest.approx(0.5 * policy.gain[0])
    summary = policy.to_dict()
    json.dumps(summary, allow_nan=False)
    assert summary["bin_sizes"] == [10, 10]


def test_policy_on_the_flops_axis_compares_at_equal_compute():
    curves, _ = policy_pool(CostModel(FREE, params=1000.0))
    bins = np.array([0] * 10 + [1] * 10)
    policy = compute_optimal_policy({k: curves[k] for k in ("majority", "best-of-n")}, bins, axis="flops",
                                    budgets=[1.0, 2000.0 * (5 + 9 * 4), 1e9])
    assert policy.best[0][0] is None and np.isnan(policy.overall[0])  # nothing fits in 1 FLOP
    # 4 samples of 10 tokens fit in the easy bin; hard completions are 30 tokens, so only 1 sample fits there
    assert policy.best[0][1] == "majority@4" and policy.best[1][1] == "best-of-n@1"
    assert policy.best[0][2] == "majority@16" and policy.best[1][2] == "best-of-n@16"
    with pytest.raises(DatawallError, match="baseline strategy"):
        compute_optimal_policy({"majority": curves["majority"]}, bins)


def synthetic_curve(name: str, ks, acc, flops_per_sample: float) -> Curve:
    ks = np.asarray(ks)
    cost = {"samples": np.tile(ks, (1, 1)).astype(float), "flops": np.tile(ks * flops_per_sample, (1, 1))}
    return Curve(name, ks, np.asarray(acc, dtype=float)[None, :], cost)


def test_crossover_budget_interpolates_in_log_compute():
    ks = 2 ** np.arange(7)
    small = synthetic_curve("small", ks, 0.2 + 0.1 * np.log2(ks), 1e6)
    large = synthetic_curve("large", [1, 2], [0.45, 0.6], 1e8)
    hit = crossover_budget(small, large)
    assert hit["small_samples"] == pytest.approx(2**2.5)
    assert hit["small_budget"] == pytest.approx(1e6 * 2**2.5)
    assert hit["ratio"] == pytest.approx(1e6 * 2**2.5 / 1e8)
    assert crossover_budget(small, large, large_k=2)["small_samples"] == pytest.approx(2**4)
    assert accuracy_at(small, 1e6 * 2**2.5) == pytest.approx(0.45)
    never = crossover_budget(small, synthetic_curve("huge", [1], [0.95], 1e8))
    assert never["small_budget"] is None and never["target_accuracy"] == 0.95
    first = crossover_budget(small, synthetic_curve("weak", [1], [0.1], 1e8))
    assert first["small_budget"] == 1e6 and first["small_samples"] == 1
    with pytest.raises(DatawallError, match="no point at k=4"):
        crossover_budget(small, large, large_k=4)


def test_paired_gain_over_greedy_is_narrower_than_two_intervals():
    """Same problems: a strategy right wherever greedy is, plus on 4 of 40 more, gains +0.1 with an interval above 0."""
    greedy_acc = np.array([i % 2 for i in range(40)], dtype=float)[:, None]
    better = greedy_acc.copy()
    better[[0, 2, 4, 6]] = 1.0
    ks = np.array([1])
    costs = {a: np.ones((40, 1)) for a in ("samples", "tokens", "flops", "seconds", "dollars")}
    curves = {"greedy": Curve("greedy", ks, greedy_acc, costs), "majority": Curve("majority", ks, better, costs)}
    out = results_json(curves, n_boot=500, seed=0)
    g, m = out["strategies"]["greedy"][0], out["strategies"]["majority"][0]
    assert m["ci_low"] < g["ci_high"]  # the two intervals overlap ...
    (gain,) = out["vs_greedy"]["majority"]
    assert gain["gain"] == pytest.approx(0.1) and 0 < gain["ci_low"] < 0.1 < gain["ci_high"]  # ... the pair does not
    assert "greedy" not in out["vs_greedy"]
