"""A worked solution's steps and one score for a whole solution from its step scores."""

from __future__ import annotations

import math
from collections.abc import Sequence

from datawall.errors import DatawallError

AGGREGATES = ("last", "min", "product")


def split_steps(completion: str) -> list[str]:
    """A solution's steps: its lines, each keeping its newline, so that ''.join(steps) == completion."""
    return completion.splitlines(keepends=True) if completion else []


def aggregate(step_scores: Sequence[float], how: str = "min") -> float:
    """One score for a whole solution from its step scores: the last one, the minimum or the product."""
    if how not in AGGREGATES:
        raise DatawallError(f"unknown aggregate {how!r}; choose from {', '.join(AGGREGATES)}")
    if len(step_scores) == 0:
        raise DatawallError("aggregate: a solution needs at least one step score")
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    return float(math.prod(step_scores))
