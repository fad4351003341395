"""The test-time strategies datawall knows: one registry, read by `datawall think`, ThinkConfig, the curves and
the study's test_time lever (so a strategy's name, aliases and needs are written once).

A strategy either draws from the shared pool of n temperature samples per problem (`pool`: a point per n,
computed by `curves.strategy_curves`), or draws its own completions (greedy decoding; beam search).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from datawall.errors import DatawallError


@dataclass(frozen=True)
class Strategy:
    """One way to turn test-time samples into an answer, and what it needs."""

    name: str
    summary: str  # one line for --help and the docs
    phrase: str  # a step in words, `{n}` the samples per query: "sampling {n} answers and voting"
    aliases: tuple[str, ...] = ()
    pool: bool = True  # picks among the shared pool of temperature samples (one curve point per n)
    scorer: bool = False  # needs an outcome scorer: a reward model scoring each whole sample
    step_scorer: bool = False  # needs a step scorer: a process reward model guiding the search
    oracle: bool = False  # picks with the verifier, which a deployed system lacks: an upper bound, never a step


# the pool strategies in the order `strategy_curves` computes them by default
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("greedy", "one greedy (temperature 0) completion per problem", "greedy decoding", pool=False),
    Strategy("pass@k", "best-of-n with the verifier as oracle (coverage: any of n samples is right)",
             "keeping the best of {n} samples (oracle verifier)", aliases=("pass", "best-of-n-oracle"), oracle=True),
    Strategy("majority", "majority vote over the n samples' answers", "sampling {n} answers and voting",
             aliases=("maj",)),
    Strategy("best-of-n", "the sample a reward model scores highest", "keeping the best of {n} samples by a "
             "reward model", scorer=True),
    Strategy("weighted-majority", "vote weighted by reward-model scores", "sampling {n} answers and voting, "
             "weighted by a reward model", scorer=True),
    Strategy("beam", "step-level beam search guided by a process reward model (N candidates per step)",
             "beam search over {n} candidates per step", pool=False, step_scorer=True),
)}
ALIASES: dict[str, str] = {alias: s.name for s in STRATEGIES.values() for alias in s.aliases}
DEFAULT_STRATEGIES = ("greedy", "majority", "pass@k")
# what a run without reward models can compute (the study trains none yet)
VERIFIER_ONLY = tuple(s.name for s in STRATEGIES.values() if not (s.scorer or s.step_scorer))


def resolve_strategies(names: str | Iterable[str], allowed: Iterable[str] | None = None) -> list[str]:
    """Names (comma-separated or a list) to canonical strategy names, aliases resolved, repeats dropped.

    Raises ValueError with the reason (callers turn it into their one-line error).
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    if not all(isinstance(s, str) for s in items):
        raise ValueError("strategies are names, e.g. greedy,majority,pass@k")
    out = [ALIASES.get(s.strip(), s.strip()) for s in items if s.strip()]
    allowed = tuple(STRATEGIES if allowed is None else allowed)
    if not out:
        raise ValueError(f"give at least one of {', '.join(allowed)}")
    for name in out:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
        if name not in allowed:
            raise ValueError(f"{name!r} {_needs(STRATEGIES[name])}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(out))


def _needs(s: Strategy) -> str:
    return "needs a process reward model" if s.step_scorer else "needs a reward model"


def check_scorers(strategies: Iterable[str], scorer: object | None, step_scorer: object | None) -> None:
    """One line when a strategy needs a reward model that was not given."""
    for name in strategies:
        s = STRATEGIES[name]
        if s.scorer and scorer is None:
            raise DatawallError(f"--strategies: {name!r} needs a reward model to score samples "
                                "(--orm DIR or --prm DIR; train one with `datawall reward train`)")
        if s.step_scorer and step_scorer is None:
            raise DatawallError(f"--strategies: {name!r} needs a step scorer (a process reward model, --prm DIR)")


def step_phrase(name: str, n: int) -> str:
    """A step of this strategy in words: "sampling 4 answers and voting"."""
    return STRATEGIES[name].phrase.format(n=n)
