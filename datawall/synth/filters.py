"""Choosing one solution per problem from the teacher's K samples, and deciding whether it is kept.

A strategy ranks the samples (greedy and sample: the one there is; majority@K: samples of the most common answer
first, then the next most common, ...; best-of-K: by the reward model's score). The filter then keeps the first
ranked sample that passes it, or drops the problem with a reason that describes the top-ranked sample:

- none: the top-ranked sample, always kept.
- verifier (rejection sampling: the world's answer is known): the first ranked sample the verifier accepts;
  else dropped "wrong" (or "no_answer" when the top sample states no answer).
- majority (no verifier): the answer a plurality of the K samples give, without a tie and given by at least
  min_agreement of them; the first ranked sample giving it. Else "no_consensus" ("no_answer" when no sample
  states an answer).
- orm: the first ranked sample whose reward-model score is >= the threshold; else "below_threshold".

With `require_caveat` (a world with hazard cases) a sample passes only if it also carries its problem's required
caveat line when the problem is hazardous: the first ranked sample that passes both is kept, and a problem whose
only passing samples lack the caveat is dropped "no_caveat". The verifier checks the answer alone, so without it
a teacher that leaves out caveats passes the omission on to its students.

Answers are compared by value: '85', '85.0' and '+85' are one answer, text answers up to whitespace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from datawall.tasks.base import parse_number


@dataclass(frozen=True)
class Draw:
    """One sample of the teacher, as the filters see it."""

    text: str
    answer: str | None
    correct: bool
    score: float | None = None  # the reward model's P(correct), when one scored it
    caveat: bool = True  # False only on a hazardous problem whose sample lacks the required caveat line


@dataclass(frozen=True)
class Choice:
    """The sample a problem's row shows, whether it is kept, why not, and how many samples share its answer."""

    top: int  # the strategy's own choice (what the teacher answers without a filter)
    index: int
    kept: bool
    dropped: str | None
    agreement: float | None  # share of the K samples whose answer equals this one's (None: it has no answer)


def answer_key(answer: str | None) -> str | None:
    """The answer's value as a vote key: numbers by exact value, text up to whitespace."""
    if answer is None:
        return None
    number = parse_number(answer)
    return str(number) if number is not None else " ".join(answer.split())


def _answer_order(draws: Sequence[Draw]) -> list[str]:
    """Distinct answers, most common first (a tie: the one that appeared first)."""
    counts = Counter(k for k in (answer_key(d.answer) for d in draws) if k is not None)
    first = {}
    for i, d in enumerate(draws):
        first.setdefault(answer_key(d.answer), i)
    return sorted(counts, key=lambda a: (-counts[a], first[a]))


def rank(draws: Sequence[Draw], kind: str) -> list[int]:
    """Sample indices in the strategy's order of preference (its choice first)."""
    if kind in ("greedy", "sample"):
        return list(range(len(draws)))
    if kind == "majority":
        order = {a: i for i, a in enumerate(_answer_order(draws))}
        return sorted(range(len(draws)), key=lambda i: (order.get(answer_key(draws[i].answer), len(order)), i))
    if kind == "best-of":
        if any(d.score is None for d in draws):
            raise ValueError("best-of needs a reward-model score on every sample")
        return sorted(range(len(draws)), key=lambda i: (-draws[i].score, i))
    raise ValueError(f"unknown strategy kind {kind!r}")


def choose(draws: Sequence[Draw], kind: str, filter: str, orm_threshold: float = 0.5,
           min_agreement: float = 0.0, require_caveat: bool = False) -> Choice:
    """The kept sample of one problem (or the dropped top-ranked one, with its reason)."""
    if not draws:
        raise ValueError("choose: a problem needs at least one sample")
    ranked = rank(draws, kind)
    top = ranked[0]

    def keep(passing: list[int], dropped: str) -> Choice:
        # the first passing sample that also carries its caveat (when required); "no_caveat" when only the caveat fails
        ok = [i for i in passing if draws[i].caveat or not require_caveat]
        if ok:
            return _choice(draws, ranked, ok[0], None)
        return _choice(draws, ranked, passing[0] if passing else top, "no_caveat" if passing else dropped)

    if filter == "none":
        return keep(ranked, "")
    if filter == "verifier":
        return keep([i for i in ranked if draws[i].correct], "no_answer" if draws[top].answer is None else "wrong")
    if filter == "majority":
        order = _answer_order(draws)
        if not order:
            return _choice(draws, ranked, top, "no_answer")
        votes = Counter(answer_key(d.answer) for d in draws)
        best = order[0]
        tied = len(order) > 1 and votes[order[1]] == votes[best]
        if tied or votes[best] / len(draws) < min_agreement:
            return _choice(draws, ranked, top, "no_consensus")
        return keep([i for i in ranked if answer_key(draws[i].answer) == best], "")
    if filter == "orm":
        if any(d.score is None for d in draws):
            raise ValueError("the orm filter needs a reward-model score on every sample")
        return keep([i for i in ranked if draws[i].score >= orm_threshold], "below_threshold")
    raise ValueError(f"unknown filter {filter!r}")


def _choice(draws: Sequence[Draw], ranked: list[int], index: int, dropped: str | None) -> Choice:
    key = answer_key(draws[index].answer)
    agreement = None if key is None else sum(answer_key(d.answer) == key for d in draws) / len(draws)
    return Choice(ranked[0], index, dropped is None, dropped, agreement)
