"""Scoring `think`'s sample pool with a reward model, and charging the scoring to the strategies that use it.

Scores are computed after sampling, on every sample of the pool, so a pool drawn without a reward model (or
with another one) is scored afresh rather than mixed; they are written to OUT/scores.jsonl (samples.jsonl holds
only what the policy produced). Reading one sample of t tokens costs the reward model one forward pass,
~2 N_rm t FLOPs plus attention; a strategy that scores k samples adds k times the pool's mean to its FLOPs per
query, and to its dollars when the price is per FLOP (a time- or token-priced backend says nothing about what
the reward model's forward passes cost, so there the dollars stay the policy's and results.json says so).
No torch here: the scorer object brings the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from datawall.atomic import atomic_write_text
from datawall.economics.prices import FlopsPrice
from datawall.tasks import Problem
from datawall.testtime.curves import Curve


@runtime_checkable
class SampleScorer(Protocol):
    """A reward model as think sees it: scores of a problem's completions, what one score costs, and a name."""

    identity: dict

    def __call__(self, problem: Problem, completions: list[str]) -> list[float]: ...

    def flops(self, prompt: str, completion: str) -> float: ...


def score_rows(rows: dict[tuple[int, int], dict], problems: Sequence[Problem], n: int, scorer, progress=None
               ) -> np.ndarray:
    """Set row["score"] on samples 0..n-1 of every problem (in memory); FLOPs of each score [P, n] (NaN if unknown)."""
    flops = np.full((len(problems), n), math.nan)
    costed = isinstance(scorer, SampleScorer)
    for i, p in enumerate(problems):
        mine = [rows[(p.index, j)] for j in range(n)]
        scores = scorer(p, [r["completion"] for r in mine])
        for j, (r, s) in enumerate(zip(mine, scores, strict=True)):
            r["score"] = float(s)
            if costed:
                flops[i, j] = scorer.flops(p.prompt, r["completion"])
        if progress is not None:
            progress(n)
    return flops


def write_scores(path: Path, rows: dict[tuple[int, int], dict], problems: Sequence[Problem], n: int,
                 name: str) -> None:
    """OUT/scores.jsonl: one {problem, sample, score, reward_model} line per scored sample (atomically)."""
    lines = [json.dumps({"problem": p.index, "sample": j, "score": rows[(p.index, j)]["score"], "reward_model": name})
             for p in problems for j in range(n)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def charge_scoring(curve: Curve, flops: np.ndarray, price) -> Curve:
    """The curve with k scores' FLOPs (and dollars, under a per-FLOP price) added to each query at k samples.

    A scorer whose cost is unknown (NaN FLOPs) leaves the curve as it is; scoring_summary says so.
    """
    if not np.isfinite(flops).all():
        return curve
    extra = np.nanmean(flops, axis=1)[:, None] * curve.ks[None, :].astype(np.float64)
    cost = dict(curve.cost)
    cost["flops"] = cost["flops"] + extra
    if isinstance(price, FlopsPrice):
        cost["dollars"] = cost["dollars"] + np.vectorize(lambda f: price.dollars(0.0, 0.0, f))(extra)
    return replace(curve, cost=cost)


def scoring_summary(scorer, flops: np.ndarray, price, strategies: Sequence[str]) -> dict:
    """results.json's reward_model entry: which model scored, which strategies, and what scoring costs."""
    known = bool(np.isfinite(flops).all())
    return {**getattr(scorer, "identity", {"name": getattr(scorer, "__name__", type(scorer).__name__)}),
            "strategies": list(strategies),
            "flops_per_sample": float(flops.mean()) if known else None,
            "flops_included": known,
            "dollars_included": known and isinstance(price, FlopsPrice),
            "note": "strategies that score k samples add k x flops_per_sample (the pool's mean, per problem) "
                    "to flops_per_query" + ("" if isinstance(price, FlopsPrice) else
                                            "; dollars_per_query excludes scoring (this price is not per FLOP)")}
