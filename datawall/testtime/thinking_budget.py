"""Thinking budgets by budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling").

For each budget B the worked solution (the "thinking") is decoded with at most B new tokens and stopped at
the final-answer marker ('####'). If the budget ran out first, thinking is ended by force: the marker is
appended on a fresh line ('\\n#### ', or '#### ' when the text already ends a line; a marker the budget cut in
half, '\\n##', is completed rather than kept) and the answer is decoded greedily in a short second call that
stops at the end of the line. If the model ended on its own, the same second call decodes its answer after
the marker, so every budget is scored the same way.

Extension (s1's "Wait"): with `extend` = k, a model that reaches the marker before spending its budget has
the marker suppressed up to k times: the thinking gets a newline instead and decoding continues for the
remaining budget. Every call re-prefills its whole prompt; the cost counts exactly those calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datawall.economics.cost import CostModel
from datawall.errors import DatawallError
from datawall.sampling.backends import Backend, Completion
from datawall.sampling.draw import CachedDraw
from datawall.sampling.sample_cache import SampleCache
from datawall.tasks import Problem
from datawall.tasks.base import ANSWER_PREFIX
from datawall.testtime.curves import Curve, rows_curve

FINAL_MARK = ANSWER_PREFIX.strip()  # "####": the end-of-thinking delimiter of datawall's tasks


@dataclass(frozen=True)
class ThinkingConfig:
    """Budgets to sweep and how the thinking is decoded (greedy by default, as in s1)."""

    budgets: tuple[int, ...]
    answer_tokens: int = 16
    extend: int = 0  # times a too-early end of thinking is suppressed
    temperature: float = 0.0
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise DatawallError("--thinking-budgets: give one or more budgets >= 1, e.g. 8,16,32,64")
        if self.answer_tokens < 1 or self.extend < 0:
            raise DatawallError("thinking budget: answer_tokens must be >= 1 and extend >= 0")


@dataclass
class Forced:
    """One problem at one budget: thinking text, the forced answer line and what the calls cost."""

    thinking: str
    answer_text: str
    thinking_tokens: int  # tokens decoded while thinking (<= budget)
    forced: bool  # the budget ran out before the model wrote the marker itself
    extended: int  # times the end of thinking was suppressed
    prompt_tokens: float = 0.0  # over all calls: each prefills its prompt once
    completion_tokens: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0
    calls: int = 0

    @property
    def completion(self) -> str:
        """The full completion the verifier scores: thinking, the marker and the answer."""
        return self.thinking + answer_marker(self.thinking) + self.answer_text


def answer_marker(thinking: str) -> str:
    """What ends the thinking: '#### ' on a fresh line."""
    return ANSWER_PREFIX if thinking == "" or thinking.endswith("\n") else "\n" + ANSWER_PREFIX


def drop_partial_marker(thinking: str) -> str:
    """Thinking cut inside the marker ('...\\n##' at the budget) had ended: drop the partial marker, which the
    forced one completes, so that a budget landing mid-marker does not leave '##' in the solution."""
    _, _, last = thinking.rpartition("\n")
    if last and FINAL_MARK.startswith(last):
        return thinking[:len(thinking) - len(last)]
    return thinking


def parse_budgets(text: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32), sorted and distinct; one-line error otherwise."""
    try:
        budgets = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise DatawallError(f"--thinking-budgets {text!r}: expected comma-separated integers, e.g. 8,16,32,64") \
            from None
    if not budgets or budgets[0] < 1:
        raise DatawallError(f"--thinking-budgets {text!r}: budgets must be integers >= 1")
    return tuple(budgets)


def force_budget(backend: Backend, problems: Sequence[Problem], budget: int, cfg: ThinkingConfig, cost: CostModel,
                 cache: SampleCache | None = None) -> tuple[list[Forced], int]:
    """Think with at most `budget` tokens per problem, force the answer; returns results and samples drawn."""
    drawer = CachedDraw(backend, cache, cfg.seed)
    states = [Forced("", "", 0, False, 0) for _ in problems]
    todo = list(range(len(problems)))
    for round_ in range(cfg.extend + 1):
        if not todo:
            break
        # budgets differ per problem after an extension; group calls by what is left
        groups: dict[int, list[int]] = {}
        for i in todo:
            groups.setdefault(budget - states[i].thinking_tokens, []).append(i)
        nxt = []
        for left, which in groups.items():
            outs = drawer.draw([problems[i].prompt + states[i].thinking for i in which], 1, left, cfg.temperature,
                               cfg.top_p, [FINAL_MARK])
            for i, (c,) in zip(which, outs, strict=True):
                s = states[i]
                _charge(s, cost, c)
                s.thinking += c.text
                s.thinking_tokens += c.completion_tokens
                s.forced = s.thinking_tokens >= budget
                if round_ < cfg.extend and not s.forced and c.completion_tokens > 0:
                    s.thinking += "\n"  # suppress the end of thinking: a newline where the marker was
                    s.extended += 1
                    nxt.append(i)
        todo = nxt
    for s in states:
        s.thinking = drop_partial_marker(s.thinking)
    prompts = [p.prompt + s.thinking + answer_marker(s.thinking) for p, s in zip(problems, states, strict=True)]
    outs = drawer.draw(prompts, 1, cfg.answer_tokens, 0.0, None, ["\n"])
    for s, (c,) in zip(states, outs, strict=True):
        _charge(s, cost, c)
        s.answer_text = c.text
    return states, drawer.drawn


def _charge(s: Forced, cost: CostModel, c: Completion) -> None:
    q = cost.query(c.prompt_tokens, [c.completion_tokens])
    s.prompt_tokens += q.prompt_tokens
    s.completion_tokens += q.completion_tokens
    s.flops += q.flops
    s.seconds += c.seconds
    s.calls += 1


def forced_rows(problems: Sequence[Problem], results: Sequence[Forced], task, budget: int) -> list[dict]:
    """thinking.jsonl rows: budget, the completion, answer, reward, thinking tokens and the calls' cost."""
    return [{"problem": p.index, "budget": budget, "completion": r.completion, "answer": task.extract_answer(
             r.completion), "reward": float(task.verify(p, r.completion)), "thinking_tokens": r.thinking_tokens,
             "forced": r.forced, "extended": r.extended, "calls": r.calls, "prompt_tokens": r.prompt_tokens,
             "completion_tokens": r.completion_tokens, "flops": r.flops, "seconds": r.seconds}
            for p, r in zip(problems, results, strict=True)]


def thinking_curve(rows_by_budget: dict[int, list[dict]], cost: CostModel,
                   name: str = "thinking-budget") -> Curve:
    """A curve over budgets (one sample per query) from each budget's rows, in problem order."""
    return rows_curve(name, rows_by_budget, cost, samples_per_query=lambda _: 1.0)


def thinking_json(curve: Curve, rows_by_budget: dict[int, list[dict]], cfg: ThinkingConfig,
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """results.json["thinking_budget"]: per budget accuracy with CI, thinking tokens, forced share and cost."""
    points = []
    for row, b in zip(curve.rows(n_boot, seed=seed), curve.ks, strict=True):
        rs = rows_by_budget[int(b)]
        budget = row.pop("n")
        points.append({"budget": budget, **row,
                       "thinking_tokens": float(np.mean([r["thinking_tokens"] for r in rs])),
                       "forced": float(np.mean([r["forced"] for r in rs])),
                       "extended": float(np.mean([r["extended"] for r in rs]))})
    return {"decoding": "greedy" if cfg.temperature == 0 else f"temperature {cfg.temperature}",
            "extend": cfg.extend, "answer_tokens": cfg.answer_tokens, "points": points}

