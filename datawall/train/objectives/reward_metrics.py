"""Ranking metrics of reward models: the ROC AUC, pooled and within problems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None when a class is absent."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def within_problem_auc(scores: Sequence[float], labels: Sequence[bool], problems: Sequence[int]) -> dict:
    """Mean AUC over the problems that have both right and wrong solutions, and how many there are.

    What best-of-n needs: a pooled AUC can be high just by telling easy problems from hard ones.
    """
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(problems):
        groups.setdefault(q, []).append(i)
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    aucs = [a for idx in groups.values() if (a := auc(s[idx], y[idx])) is not None]
    return {"within_problem_auc": float(np.mean(aucs)) if aucs else None, "mixed_problems": len(aucs)}
