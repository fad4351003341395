"""The test-time lever: more samples per query on the baseline checkpoint(s), one think run per seed.

Sampled strategies are compared with greedy decoding of the same checkpoints on the same problems, and placed
on the compute axis relative to the baseline: its estimated greedy cost plus what sampling measurably adds to
the measured greedy cost, so the greedy point sits on the baseline and the extra costs are exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field, field_validator

from datawall.study.jobs import Job
from datawall.study.levers.base import Count, Float, Lever, LeverSection, Point, Series
from datawall.study.levers.measure import Z95, accuracy_se, combine, interval, sampled_safety_point
from datawall.testtime.strategies import STRATEGIES, VERIFIER_ONLY, resolve_strategies, step_phrase

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "test_time"


class TestTime(LeverSection):
    """More samples per query on the baseline checkpoint(s)."""

    __test__ = False  # a spec section, not a pytest class

    strategies: list[str] = Field(["majority", "pass@k"], description="strategies beside greedy decoding: "
                                  + ", ".join(VERIFIER_ONLY) + " (a study trains no reward model yet)")
    n: list[Count] = Field([1, 2, 4, 8], description="samples per query")
    problems: Count | None = Field(None, description="held-out problems (default: world.eval_problems)")
    temperature: Annotated[Float, Field(ge=0)] = 1.0

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return resolve_strategies(v, allowed=VERIFIER_ONLY)

    @field_validator("n")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one sample count")
        return sorted(set(v))


def problems(spec: StudySpec) -> int:
    """Held-out problems of the think runs."""
    return spec.levers.test_time.problems or spec.world.eval_problems


def think_config(spec: StudySpec, model_key: str, seed: int) -> dict:
    """The think job config sampling the baseline checkpoint `model_key`."""
    tt = spec.levers.test_time
    return {"model": model_key, "task": spec.world.task, "task_args": dict(spec.world.task_args),
            "problems": problems(spec), "n_max": max(tt.n), "strategies": ["greedy", *tt.strategies],
            "temperature": tt.temperature, "seed": seed, "device": spec.train.device}


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """One think run per seed on that seed's baseline checkpoint: max(n) samples plus a greedy one per problem."""
    queries = problems(spec) * (max(spec.levers.test_time.n) + 1)
    thinks = tuple(plan.add(Job("think", think_config(spec, key, seed), deps=(key,)),
                            queries * plan.query_flops(base.setting.size), NAME)
                   for seed, key in zip(spec.world.seeds, base.pretrain, strict=True))
    return [Point(NAME, base.setting, base.pretrain, thinks)]


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """One point per (strategy, n) of the think runs on the baseline checkpoint(s), averaged over seeds."""
    tt = plan.spec.levers.test_time
    (point,) = mine
    thinks = [results[k] for k in point.jobs]
    secs_per_flop = base["train_seconds"] / base["train_flops"] if base["train_flops"] > 0 else math.nan
    greedy = [next(iter(t["strategies"]["greedy"])) for t in thinks]
    shift = base["inference_flops_per_query"] - float(np.mean([r["flops_per_query"] for r in greedy]))
    out = []
    for strategy in dict.fromkeys(["greedy", *tt.strategies]):
        s = STRATEGIES[strategy]
        # one sample is one sample: the oracle's pick of 1 repeats majority@1
        ns = [1] if not s.pool else [n for n in tt.n if n > 1 or not s.oracle]
        for n in ns:
            rows = [next((r for r in t["strategies"][strategy] if r["n"] == n), None) for t in thinks]
            if any(r is None for r in rows):
                continue
            acc, se = combine([r["accuracy"] for r in rows], [accuracy_se(r) for r in rows])
            q_flops = float(np.mean([r["flops_per_query"] for r in rows])) + shift
            q_dollars = price.dollars(0.0, 0.0, q_flops, q_flops * secs_per_flop)
            lo, hi = interval(acc, se)
            out.append({
                "lever": NAME, "size": base["size"], "epochs": base["epochs"], "strategy": strategy, "n": n,
                "oracle": s.oracle, "seeds": len(rows), "runs": list(point.jobs),
                "params": base["params"], "train_flops": base["train_flops"], "train_seconds": base["train_seconds"],
                "train_dollars": base["train_dollars"], "inference_flops_per_query": q_flops,
                "dollars_per_query": q_dollars,
                "tokens_per_query": float(np.mean([r["tokens_per_query"] for r in rows])),
                "compute": base["train_flops"] + q_flops * plan.spec.queries.expected,
                "dollars": base["train_dollars"] + q_dollars * plan.spec.queries.expected,
                "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
                "accuracy_seeds": [r["accuracy"] for r in rows], "eval_loss": None, "eval_loss_seeds": [],
                "paired_gain_seeds": _vs_greedy(thinks, strategy, n),
            } | sampled_safety_point(thinks, strategy, n))  # a world with hazard cases: the returned sample's caveats
    return out


def _vs_greedy(thinks: list[dict], strategy: str, n: int) -> list[list[float]] | None:
    """Each think run's own paired gain over greedy on the same problems, as [gain, standard error] per seed."""
    if strategy == "greedy":
        return None
    rows = [next((r for r in t.get("vs_greedy", {}).get(strategy, []) if r["n"] == n), None) for t in thinks]
    if any(r is None for r in rows):
        return None
    return [[r["gain"], (r["ci_high"] - r["ci_low"]) / (2 * Z95)] for r in rows]


def label(p: dict, base: dict) -> str:
    """"sampling 4 answers and voting"; greedy decoding is the reference."""
    if p["n"] == 1 and p["strategy"] != "greedy":
        return "one temperature sample instead of greedy decoding"
    return step_phrase(p["strategy"], p["n"])


def reference(points: list[dict], base: dict) -> dict:
    """Greedy decoding of the same checkpoints on the same problems."""
    return next((p for p in points if p["strategy"] == "greedy"), base)


def laws(plan: Plan, mine: list[Point], points: list[dict], results: dict[str, dict]) -> dict:
    """The coverage law c(k) = exp(a k^b) the first think run fitted to pass@k."""
    return {"coverage_law": results[mine[0].jobs[0]].get("coverage_law")} if mine and mine[0].jobs else {}


def _oracle(strategy: str) -> bool:
    return STRATEGIES[strategy].oracle


def series(name: str, points: list[dict]) -> list[Series]:
    """One series per strategy: diamonds decode once, triangles are the oracle (an upper bound), circles vote."""
    out = []
    for strategy in dict.fromkeys(p["strategy"] for p in points):
        s = STRATEGIES[strategy]
        mine = sorted((p for p in points if p["strategy"] == strategy), key=lambda p: p["compute"])
        marker = "D" if not s.pool else "^" if s.oracle else "o"
        out.append((f"{name}: {strategy}" + (" (oracle)" if s.oracle else ""), mine, marker))
    return out


def plots(summary: dict) -> list[tuple[bytes, str]]:
    """Accuracy against samples per query for each strategy."""
    from datawall.report.figures import new_figure, png_bytes

    pts = summary["levers"].get(NAME)
    if not pts:
        return []
    fig, (ax,) = new_figure(size=(6.5, 4.2))
    for i, strategy in enumerate(dict.fromkeys(p["strategy"] for p in pts)):
        mine = sorted((p for p in pts if p["strategy"] == strategy), key=lambda p: p["n"])
        n = [p["n"] for p in mine]
        y = 100 * np.array([p["accuracy"] for p in mine])
        err = 100 * np.array([[p["accuracy"] - p["ci_low"] for p in mine], [p["ci_high"] - p["accuracy"]
                                                                          for p in mine]])
        ax.errorbar(n, y, yerr=err, fmt="o-", capsize=3, color=f"C{i + 1}",
                    label=strategy + (" (oracle: the verifier picks)" if _oracle(strategy) else ""))
    ax.set_xscale("log", base=2)
    ns = sorted({p["n"] for p in pts})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("samples per query n")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("Test-time compute on the baseline checkpoint")
    ax.legend(fontsize=8)
    return [(png_bytes(fig), "accuracy vs samples per query")]


def describe_law(name: str, law: dict) -> str | None:
    """The coverage law in words."""
    if name != "coverage_law":
        return None
    if "a" in law:
        return f"pass@k c(k) = exp(a k^b): a = {law['a']:.3g}, b = {law['b']:.3g}"
    return f"not fitted: {law.get('error', 'no fit')}"


LEVER = Lever(name=NAME, section=TestTime, title="Test-time compute (samples per query)",
              noun="more samples per query", color="C1", jobs=jobs, points=points, label=label,
              tag=lambda p: f"{p['strategy']}@{p['n']}", reference=reference, laws=laws, series=series,
              plots=plots, describe_law=describe_law)
