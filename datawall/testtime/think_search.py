"""The search strategies of `datawall think`: PRM-guided beam search over a grid of N, and thinking budgets.

Both draw through the sample cache (a re-run samples nothing), write one row per problem and setting to
OUT/beam.jsonl and OUT/thinking.jsonl (rewritten whole, atomically, each run), and return curves on the
same cost axes as the pool's strategies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from datawall.atomic import atomic_write_text
from datawall.economics.cost import CostModel
from datawall.progress import progress_bar
from datawall.sampling.backends import Backend
from datawall.sampling.sample_cache import SampleCache
from datawall.tasks import Problem
from datawall.testtime.beam_search import BeamConfig, StepScorer, beam_curve, beam_rows, beam_search, scorer_flops_fn
from datawall.testtime.curves import Curve
from datawall.testtime.thinking_budget import ThinkingConfig, force_budget, forced_rows, thinking_curve, thinking_json


def run_beam(task, backend: Backend, problems: Sequence[Problem], grid: Sequence[int], base: BeamConfig,
             scorer: StepScorer, cost: CostModel, cache: SampleCache, out: Path, quiet: bool = False
             ) -> tuple[Curve, dict]:
    """Beam search at every N of the grid; writes OUT/beam.jsonl; returns the curve and a summary."""
    rows_by_n: dict[int, list[dict]] = {}
    drawn = 0
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("beam search", total=len(problems) * len(grid), rate="", info="problems x N")
        for n in grid:
            cfg = BeamConfig(**{**base.__dict__, "n": n})
            results, d = beam_search(backend, problems, scorer, cfg, cost, cache, on_done=lambda _: bar.advance(job))
            rows_by_n[n] = beam_rows(problems, results, task, cfg)
            drawn += d
    _write_rows(out / "beam.jsonl", [r for n in grid for r in rows_by_n[n]])
    counted = scorer_flops_fn(scorer) is not None
    summary = {"expand": base.expand, "aggregate": base.aggregate, "grid": list(grid), "drawn": drawn,
               "max_tokens": base.max_tokens, "temperature": base.temperature,
               "scorer_flops": "counted" if counted else "not counted (the step scorer does not report its FLOPs)",
               "finished": {str(n): sum(r["finished"] for r in rows) / len(rows) for n, rows in rows_by_n.items()}}
    return beam_curve(rows_by_n, cost), summary


def run_thinking(task, backend: Backend, problems: Sequence[Problem], cfg: ThinkingConfig, cost: CostModel,
                 cache: SampleCache, out: Path, n_boot: int = 1000, quiet: bool = False) -> tuple[Curve, dict]:
    """Budget forcing at every budget; writes OUT/thinking.jsonl; returns the curve and results["thinking_budget"]."""
    rows_by_budget: dict[int, list[dict]] = {}
    drawn = 0
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("thinking budgets", total=len(cfg.budgets), rate="", info="budgets")
        for b in cfg.budgets:
            results, d = force_budget(backend, problems, b, cfg, cost, cache)
            rows_by_budget[b] = forced_rows(problems, results, task, b)
            drawn += d
            bar.advance(job)
    _write_rows(out / "thinking.jsonl", [r for b in cfg.budgets for r in rows_by_budget[b]])
    curve = thinking_curve(rows_by_budget, cost)
    return curve, {**thinking_json(curve, rows_by_budget, cfg, n_boot, cfg.seed), "drawn": drawn}


def _write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
