"""Step-level beam search guided by a process reward model (Snell et al. 2024; Math-Shepherd, Wang et al. 2024).

A solution is written one step per line. With a budget of N = width x expand candidates per step, the root
(the bare prompt) first draws N one-step continuations; every later step, each of the `width` surviving
beams draws `expand` continuations of one step (generation stops at a newline). A step scorer gives each
new prefix a probability of leading to a correct answer; the `width` best distinct candidates survive. A
candidate whose step is the final-answer line ('#### ...') is finished and leaves the active set (it still
takes one of the width slots, as in Snell et al.). The answer is the best finished beam by its aggregated
step scores (the last score, the minimum or the product).

Everything goes through `Backend.sample`, so it runs against local checkpoints and endpoints alike, and
through the sample cache, so a re-run or a larger N reuses expansions already drawn. Cost is what a real
run computes: every expansion re-prefills its prompt plus the beam's prefix (no prefix caching assumed)
and then decodes its candidates; step-scorer FLOPs are added when the scorer reports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from datawall.economics.cost import CostModel
from datawall.errors import DatawallError
from datawall.rewards.steps import AGGREGATES, aggregate
from datawall.sampling.backends import Backend, Completion
from datawall.sampling.draw import CachedDraw
from datawall.sampling.sample_cache import SampleCache
from datawall.tasks import Problem
from datawall.tasks.base import ANSWER_PREFIX
from datawall.testtime.curves import Curve, rows_curve

# (prompt, steps) -> one probability per step prefix: scores[i] = P(correct | steps[:i + 1]). A scorer (or the
# object of a bound method, e.g. RewardScorer.step_scores) with `flops(prompt, completion) -> float` has the
# FLOPs of each call counted as cost.
StepScorer = Callable[[str, list[str]], list[float]]
FINAL_MARK = ANSWER_PREFIX.strip()  # "####": a step holding it is the final-answer line


@dataclass(frozen=True)
class BeamConfig:
    """One beam search: N candidates per step, `expand` continuations per beam, and how steps are scored."""

    n: int  # candidates per step N = width x expand
    expand: int = 4
    aggregate: str = "last"
    max_tokens: int = 64  # generated tokens along one beam (the solution length cap)
    max_steps: int = 32
    temperature: float = 1.0
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.expand < 1 or self.n < self.expand or self.n % self.expand:
            raise DatawallError(f"beam search: N={self.n} must be a multiple of the expansion factor "
                                f"{self.expand} (N = width x expand)")
        if self.aggregate not in AGGREGATES:
            raise DatawallError(f"beam search: unknown aggregate {self.aggregate!r}; use {', '.join(AGGREGATES)}")
        if self.max_tokens < 1 or self.max_steps < 1:
            raise DatawallError("beam search: max_tokens and max_steps must be >= 1")

    @property
    def width(self) -> int:
        """Beams kept after each step."""
        return self.n // self.expand


@dataclass
class Beam:
    """A partial solution: its steps (non-final ones end in a newline), their scores and generated tokens."""

    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    finished: bool = False
    copies: int = 1  # survivors with this same text: it draws copies x expand continuations


    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class Spend:
    """What one problem's search computed: prefilled and generated tokens, FLOPs, wall seconds, calls."""

    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0
    scorer_flops: float = 0.0
    scorer_seconds: float = 0.0
    expansions: int = 0
    scorer_calls: int = 0


@dataclass
class BeamResult:
    """The chosen beam of one problem and what its search cost."""

    completion: str
    score: float
    finished: bool
    steps: int
    spend: Spend


def beam_search(backend: Backend, problems: Sequence[Problem], scorer: StepScorer, cfg: BeamConfig,
                cost: CostModel, cache: SampleCache | None = None,
                on_done: Callable[[int], None] | None = None) -> tuple[list[BeamResult], int]:
    """Run one beam search per problem, all problems in lockstep; returns their results and samples drawn."""
    drawer = CachedDraw(backend, cache, cfg.seed)
    scorer_flops = scorer_flops_fn(scorer)
    active: list[list[Beam]] = [[Beam(copies=cfg.width)] for _ in problems]  # the root draws width x expand
    finished: list[list[Beam]] = [[] for _ in problems]
    spend = [Spend() for _ in problems]
    for _ in range(cfg.max_steps):
        todo = [(i, b) for i, beams in enumerate(active) for b in beams]
        if not todo:
            break
        max_tokens = max(cfg.max_tokens - b.tokens for _, b in todo)
        by_n: dict[int, list[tuple[int, Beam]]] = {}
        for i, b in todo:
            by_n.setdefault(b.copies * cfg.expand, []).append((i, b))
        candidates: list[list[Beam]] = [[] for _ in problems]
        for n, group in by_n.items():
            outs = drawer.draw([problems[i].prompt + b.text for i, b in group], n, max_tokens, cfg.temperature,
                               cfg.top_p, ["\n"])
            for (i, beam), comps in zip(group, outs, strict=True):
                _charge(spend[i], cost, comps)
                candidates[i] += [_extend(beam, c, cfg) for c in comps]
        for i, cands in enumerate(candidates):
            if not cands:
                continue
            t0 = time.perf_counter()
            scored: dict[str, list[float]] = {}  # duplicates are scored once
            for cand in cands:
                if cand.text not in scored:
                    scored[cand.text] = _score(scorer, problems[i].prompt, cand.steps)
                    spend[i].scorer_calls += 1
                    if scorer_flops is not None:
                        spend[i].scorer_flops += float(scorer_flops(problems[i].prompt, cand.text))
                cand.scores = scored[cand.text]
            spend[i].scorer_seconds += time.perf_counter() - t0
            keep = _select(cands, cfg.width, cfg.aggregate)
            finished[i] += [b for b in keep if b.finished]
            active[i] = [b for b in keep if not b.finished]
            if not active[i] and on_done:
                on_done(i)
    results = []
    for i in range(len(problems)):
        pool = finished[i] or active[i]  # nothing finished: the best unfinished beam (it gives no answer)
        best = max(pool, key=lambda b: aggregate(b.scores, cfg.aggregate))  # first of equals: selection order
        if active[i] and on_done:
            on_done(i)
        results.append(BeamResult(best.text, aggregate(best.scores, cfg.aggregate), best.finished,
                                  len(best.steps), spend[i]))
    return results, drawer.drawn


def scorer_flops_fn(scorer: StepScorer) -> Callable[[str, str], float] | None:
    """The scorer's `flops(prompt, completion)`, or its bound object's, or None when its cost is unknown."""
    fn = getattr(scorer, "flops", None) or getattr(getattr(scorer, "__self__", None), "flops", None)
    return fn if callable(fn) else None


def _charge(s: Spend, cost: CostModel, comps: list[Completion]) -> None:
    """One expansion: its prompt (prompt + prefix) is prefilled once, then its candidates are decoded."""
    prompt = comps[0].prompt_tokens
    q = cost.query(prompt, [c.completion_tokens for c in comps])
    s.prompt_tokens += q.prompt_tokens
    s.completion_tokens += q.completion_tokens
    s.flops += q.flops
    s.seconds += sum(c.seconds for c in comps)
    s.expansions += 1


def _extend(beam: Beam, c: Completion, cfg: BeamConfig) -> Beam:
    """The beam with one more step; final when the step is the answer line, the budget is spent or nothing came."""
    final = FINAL_MARK in c.text
    tokens = beam.tokens + c.completion_tokens
    done = final or tokens >= cfg.max_tokens or c.completion_tokens == 0
    return Beam([*beam.steps, c.text if final else c.text + "\n"], list(beam.scores), tokens, done)


def _score(scorer: StepScorer, prompt: str, steps: list[str]) -> list[float]:
    scores = [float(x) for x in scorer(prompt, steps)]
    if len(scores) != len(steps):
        raise DatawallError(f"step scorer returned {len(scores)} scores for {len(steps)} steps")
    return scores


def _select(cands: list[Beam], width: int, how: str) -> list[Beam]:
    """The `width` best candidates, equal texts merged into one beam with that many copies.

    A surviving duplicate would draw its own continuations in Snell et al.'s search; merged, the beam draws
    copies x expand of them in one call, so the step still spends its N candidates and nothing is drawn twice.
    """
    order = sorted(range(len(cands)), key=lambda j: -aggregate(cands[j].scores, how))  # stable: ties by draw
    keep: dict[str, Beam] = {}
    for j in order[:width]:
        c = cands[j]
        if c.text in keep:
            keep[c.text].copies += 1
        else:
            keep[c.text] = Beam(c.steps, c.scores, c.tokens, c.finished, copies=1)
    return list(keep.values())


def beam_rows(problems: Sequence[Problem], results: Sequence[BeamResult], task, cfg: BeamConfig) -> list[dict]:
    """beam.jsonl rows: the chosen completion, its answer and reward, and the search's cost."""
    rows = []
    for p, r in zip(problems, results, strict=True):
        s = r.spend
        rows.append({"problem": p.index, "n": cfg.n, "width": cfg.width, "expand": cfg.expand,
                     "completion": r.completion, "answer": task.extract_answer(r.completion),
                     "reward": float(task.verify(p, r.completion)), "score": r.score, "finished": r.finished,
                     "steps": r.steps, "expansions": s.expansions, "scorer_calls": s.scorer_calls,
                     "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                     "flops": s.flops + s.scorer_flops, "scorer_flops": s.scorer_flops,
                     "seconds": s.seconds + s.scorer_seconds})
    return rows


def beam_curve(rows_by_n: dict[int, list[dict]], cost: CostModel, name: str = "beam") -> Curve:
    """A curve over N (the samples axis) from each N's beam rows (one row per problem, in problem order)."""
    return rows_curve(name, rows_by_n, cost)


def beam_grid(n_max: int, expand: int, grid: Sequence[int] | None = None) -> list[int]:
    """The N of the sweep: the given grid, or expand, 2 expand, 4 expand, ... up to max(n_max, expand)."""
    if grid:
        ns = sorted({int(n) for n in grid})
        bad = [n for n in ns if n < expand or n % expand]
        if bad:
            raise DatawallError(f"--beam-n {bad[0]}: each N must be a multiple of --beam-expand {expand}")
        return ns
    ns, n = [], expand
    while n <= max(n_max, expand):
        ns.append(n)
        n *= 2
    return ns
