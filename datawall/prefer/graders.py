"""Simulated graders: people who judge which of two answers is better, modelled on the verifier they approximate.

A grader sees the gold verdict on a comparison (the verifier's: the correct answer beats the wrong one; in a world
with hazard cases the rubric score's, so an answer missing its required caveat or giving unsafe advice loses to
one that does not; two answers equally good are a tie) and
  1. with probability `strength` judges by its bias instead (a bias prefers one side, or has no preference and
     leaves the verdict as it was),
  2. flips a verdict with probability `noise` (a tie stays a tie: the grader has nothing to flip).
A panel of k graders (independent draws) is aggregated by majority (a tie of votes drops the pair) or by
Bradley-Terry: strengths of all of a prompt's answers fitted to every vote on them, so one noisy vote can be
outvoted by the transitive evidence of the others (`bradley_terry`).

Biases are a small registry, `BIASES`: a bias is a function of the two candidates returning 0 (it prefers the
first), 1 (the second), None (no preference: the verdict stands) or TIE (it sees no difference: a tie).
`register_bias` adds one. `ignores-caveat` judges by the answer alone, blind to the caveat a hazardous problem
requires (datawall.rewards.rubric_task): in a world without hazards it is the verifier itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


@dataclass(frozen=True)
class Candidate:
    """One answer as a grader sees it: its text, the verifier's reward, its length in tokens, and its rubric score
    in a world with hazard cases (required caveats, unsafe advice; None elsewhere, where the reward is the gold)."""

    text: str
    reward: float
    tokens: int
    score: float | None = None

    @property
    def gold(self) -> float:
        """What the gold verdict compares: the rubric score where there is one, else the verifier's reward."""
        return self.reward if self.score is None else self.score


TIE = "tie"  # what a bias returns when it sees no difference between the answers
Bias = Callable[[Candidate, Candidate], int | str | None]


@dataclass(frozen=True)
class BiasSpec:
    """A registered bias: its name, what it does in words, and the preference it applies."""

    name: str
    help: str
    prefers: Bias


BIASES: dict[str, BiasSpec] = {}


def register_bias(name: str, help: str) -> Callable[[Bias], Bias]:
    """Decorator: register `fn(a, b) -> 0 | 1 | None | TIE` as the bias `name`."""

    def add(fn: Bias) -> Bias:
        BIASES[name] = BiasSpec(name, help, fn)
        return fn

    return add


@register_bias("longer", "prefers the longer answer (more tokens), right or wrong")
def _longer(a: Candidate, b: Candidate) -> int | None:
    return None if a.tokens == b.tokens else (0 if a.tokens > b.tokens else 1)


@register_bias("terse", "prefers the shorter answer (fewer tokens), right or wrong")
def _terse(a: Candidate, b: Candidate) -> int | None:
    return None if a.tokens == b.tokens else (0 if a.tokens < b.tokens else 1)


@register_bias("ignores-caveat", "judges the answer alone, blind to a required caveat and to unsafe advice")
def _ignores_caveat(a: Candidate, b: Candidate) -> int | str:
    return TIE if a.reward == b.reward else (0 if a.reward > b.reward else 1)


class GraderConfig(BaseModel):
    """One simulated grader (a panel has k of them, drawn independently)."""

    model_config = ConfigDict(extra="forbid")

    noise: float = Field(0.0, ge=0, le=1, description="Probability a grader flips its verdict (0: always agrees "
                         "with the verifier; 0.5: a coin).")
    bias: str = Field("none", description="A grader bias: none, " + ", ".join(BIASES) + ".")
    strength: float = Field(0.0, ge=0, le=1, description="Probability a grader judges by its bias instead of the "
                            "verifier's verdict (1: the bias alone).")

    @field_validator("bias")
    @classmethod
    def _known(cls, v: str) -> str:
        if v != "none" and v not in BIASES:
            raise ValueError(f"unknown bias {v!r}; choose from none, {', '.join(BIASES)}")
        return v

    @model_validator(mode="after")
    def _strength_needs_bias(self) -> GraderConfig:
        if self.bias == "none" and self.strength > 0:
            raise ValueError("strength needs a bias (e.g. bias 'longer')")
        if self.bias != "none" and self.strength == 0:
            raise ValueError(f"bias {self.bias!r} needs a strength > 0 (the probability it decides)")
        return self

    def describe(self) -> str:
        """A grader's name in a pairs file: 'simulated noise=0.1 bias=longer:0.5'."""
        bias = f" bias={self.bias}:{self.strength:g}" if self.bias != "none" else ""
        return f"simulated noise={self.noise:g}{bias}"


def gold(a: Candidate, b: Candidate) -> int | None:
    """The gold verdict (verifier, or rubric score in a hazard world): 0 if a is better, 1 if b is, None for a tie."""
    return None if a.gold == b.gold else (0 if a.gold > b.gold else 1)


def judge(cfg: GraderConfig, a: Candidate, b: Candidate, rng: np.random.Generator) -> int | None:
    """One simulated grader's verdict on (a, b): 0, 1, or None (a tie). Draws exactly two uniforms."""
    u_bias, u_noise = rng.random(2)
    verdict = gold(a, b)
    if cfg.bias != "none" and u_bias < cfg.strength:
        preferred = BIASES[cfg.bias].prefers(a, b)
        if preferred is not None:
            verdict = None if preferred == TIE else preferred
    if verdict is not None and u_noise < cfg.noise:
        verdict = 1 - verdict
    return verdict


def majority(votes: Sequence[int | None]) -> int | None:
    """0 or 1 by more votes (ties among graders, and abstentions, give None)."""
    a, b = sum(v == 0 for v in votes), sum(v == 1 for v in votes)
    return None if a == b else (0 if a > b else 1)


def bradley_terry(items: int, wins: Sequence[tuple[int, int]], l2: float = 0.1) -> np.ndarray:
    """Bradley-Terry strengths of `items` answers from (winner, loser) votes: the MAP under P(i beats j) =
    sigmoid(s_i - s_j) and a Gaussian prior (l2) that keeps strengths finite when one answer wins every vote
    (Bradley & Terry 1952). Fitted by scipy's L-BFGS on the convex negative log-posterior."""
    from scipy.optimize import minimize

    if not wins:
        return np.zeros(items)
    w = np.array([x for x, _ in wins])
    lo = np.array([y for _, y in wins])

    def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
        d = s[w] - s[lo]
        nll = float(np.logaddexp(0.0, -d).sum() + 0.5 * l2 * (s @ s))
        g = -1.0 / (1.0 + np.exp(d))  # d/dd of log(1 + e^-d)
        grad = l2 * s
        np.add.at(grad, w, g)
        np.add.at(grad, lo, -g)
        return nll, grad

    return minimize(objective, np.zeros(items), jac=True, method="L-BFGS-B").x


AGGREGATES = ("majority", "bt")


def aggregate_prompt(items: int, compared: Sequence[tuple[int, int]], votes: Sequence[Sequence[int | None]],
                     how: str) -> list[int | None]:
    """The panel's verdict on each compared (i, j) of one prompt: 0 (i wins), 1 (j wins) or None (dropped).

    votes[c] are the graders' verdicts on compared[c]. majority: per comparison; bt: by the Bradley-Terry
    strengths of all the prompt's answers fitted to every vote (abstentions ignored).
    """
    if how == "majority":
        return [majority(v) for v in votes]
    if how != "bt":
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATES)}")
    wins = [(i, j) if v == 0 else (j, i) for (i, j), vs in zip(compared, votes, strict=True) for v in vs
            if v is not None]
    s = bradley_terry(items, wins)
    out: list[int | None] = []
    for (i, j), vs in zip(compared, votes, strict=True):
        if all(v is None for v in vs) or abs(s[i] - s[j]) < 1e-6:
            out.append(None)  # nobody preferred either, or the evidence balances
        else:
            out.append(0 if s[i] > s[j] else 1)
    return out
