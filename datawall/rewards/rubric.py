"""Rubric scoring in the HealthBench format (Arora et al. 2025, openai/simple-evals healthbench_eval.py).

A rubric is a list of items, each a criterion with points in [-10, 10]: positive for what a good answer does
(the right answer, a required warning), negative for what it must not do (unsafe advice). An item is checked
by its rule (regular expressions, any of which matching counts as met), by a function (the task worlds' own
items), or by an LLM judge (`datawall.rewards.rubric_judge`) that answers one item at a time.

A completion's score is the points of the items it meets over the positive points possible, so unsafe advice
can push it below 0 and the best is 1; an item the judge could not grade is left out of both sums and counted.
The aggregate over completions is their mean clipped to [0, 1], with a bootstrap interval over completions;
per-tag scores (`tags`, e.g. "caveat") are computed the same way over each tag's items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datawall.errors import DatawallError

MAX_POINTS = 10
MAX_PATTERN = 500  # characters: a rule is a phrase, not a program


class RubricItem(BaseModel):
    """One criterion: its text (what a judge reads), points in [-10, 10] and how it is checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    criterion: str = Field(min_length=1, description="what the response does, in words (the judge reads it)")
    points: float = Field(description="points when met: positive for what a good answer does, negative for "
                          "what it must not do; -10 to 10, not 0")
    tags: tuple[str, ...] = Field((), description="labels for per-tag scores, e.g. 'warning', 'unsafe'")
    patterns: tuple[str, ...] = Field((), description="regular expressions (case-insensitive); the item is met "
                                      "when any of them matches a sentence of the response")
    unless: tuple[str, ...] = Field((), description="regular expressions: a sentence that matches one of them "
                                    "does not count (a negation: 'never add water to acid')")
    judge: bool = Field(False, description="graded by an LLM judge when one is given (needed without patterns)")
    check: Callable[[str], bool] | None = Field(None, exclude=True, description="a function of the response "
                                                "(items built in code, e.g. a task's verifier)")

    @field_validator("points")
    @classmethod
    def _points(cls, v: float) -> float:
        if not -MAX_POINTS <= v <= MAX_POINTS or v == 0:
            raise ValueError(f"points {v:g} out of range: give -{MAX_POINTS} to {MAX_POINTS}, not 0")
        return v

    @field_validator("patterns", "unless")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if len(p) > MAX_PATTERN:
                raise ValueError(f"pattern of {len(p)} characters (at most {MAX_PATTERN})")
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a regular expression ({e})") from None
        return v

    @model_validator(mode="after")
    def _has_check(self) -> RubricItem:
        if not self.patterns and not self.judge and self.check is None:
            raise ValueError("no check: give patterns (rules), or judge: true for an LLM judge")
        if self.unless and not self.patterns:
            raise ValueError("'unless' qualifies patterns; give patterns too")
        return self

    @property
    def by_rules(self) -> bool:
        """Whether the item can be graded without a judge."""
        return bool(self.patterns) or self.check is not None


def parse_items(raw: Any, where: str) -> list[RubricItem]:
    """Rubric items from a list of JSON objects; a bad one is one DatawallError naming `where` and the item."""
    if not isinstance(raw, list) or not raw:
        raise DatawallError(f"{where}: 'rubrics' must be a non-empty list of items")
    items = []
    for i, obj in enumerate(raw, 1):
        if isinstance(obj, dict) and "check" in obj:
            raise DatawallError(f"{where}, item {i}: unknown key 'check' (rules are 'patterns')")
        try:
            items.append(RubricItem.model_validate(obj))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            raise DatawallError(f"{where}, item {i}: {field + ': ' if field else ''}{msg}") from None
    if not any(item.points > 0 for item in items):
        raise DatawallError(f"{where}: no item has positive points, so no score is possible")
    return items


@dataclass(frozen=True)
class Grade:
    """Whether one item is met by one completion (None: the judge could not grade it), and who decided."""

    met: bool | None
    by: str  # "rules", "check" or "judge"
    explanation: str = ""


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The text cut at line breaks and at . ! ? ; followed by a space ('27.8 mL' stays whole)."""
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def matches(item: RubricItem, text: str) -> bool:
    """Whether a sentence of `text` matches one of the item's patterns and none of its `unless` (case-insensitive)."""
    def hit(patterns: tuple[str, ...], s: str) -> bool:
        return any(re.search(p, s, re.IGNORECASE) for p in patterns)

    return any(hit(item.patterns, s) and not hit(item.unless, s) for s in sentences(text))


def grade_by_rules(item: RubricItem, completion: str) -> Grade:
    """The item graded by its function or its patterns."""
    if item.check is not None:
        return Grade(bool(item.check(completion)), "check")
    if item.patterns:
        return Grade(matches(item, completion), "rules")
    raise DatawallError(f"rubric item {item.criterion!r} needs an LLM judge (it has no patterns)")


def completion_score(items: Sequence[RubricItem], grades: Sequence[Grade]) -> float | None:
    """Points met over positive points possible (HealthBench); unscored items count in neither; None if no
    positive item was graded."""
    possible = sum(it.points for it, g in zip(items, grades, strict=True) if it.points > 0 and g.met is not None)
    if possible == 0:
        return None
    return sum(it.points for it, g in zip(items, grades, strict=True) if g.met) / possible


def tag_scores(items: Sequence[RubricItem], grades: Sequence[Grade]) -> dict[str, float | None]:
    """The score over each tag's items alone (None where the tag has no positive item graded)."""
    tags = sorted({t for it in items for t in it.tags})
    out = {}
    for tag in tags:
        picked = [(it, g) for it, g in zip(items, grades, strict=True) if tag in it.tags]
        out[tag] = completion_score([it for it, _ in picked], [g for _, g in picked])
    return out


def bootstrap_mean(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                   clip: bool = False) -> dict:
    """{"value", "ci_low", "ci_high", "n"}: the mean (clipped to [0, 1] when `clip`) and a percentile bootstrap
    interval over the values (None with fewer than two); {"value": None, ...} when there are none."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(x) == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    fix: Callable[[np.ndarray], np.ndarray] = (lambda m: np.clip(m, 0.0, 1.0)) if clip else (lambda m: m)
    value = float(fix(np.array(x.mean())))
    if len(x) < 2:
        return {"value": value, "ci_low": None, "ci_high": None, "n": 1}
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    means = fix(x[idx].mean(axis=1))
    q = (1 - level) / 2
    return {"value": value, "ci_low": float(np.quantile(means, q)), "ci_high": float(np.quantile(means, 1 - q)),
            "n": int(len(x))}


def aggregate(scores: Sequence[float | None], n_boot: int = 1000, seed: int = 0) -> dict:
    """The HealthBench aggregate: the mean completion score clipped to [0, 1], with a bootstrap interval."""
    return bootstrap_mean(scores, n_boot=n_boot, seed=seed, clip=True)
