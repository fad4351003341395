"""Integer arithmetic (add, sub, mul) with scratchpads a small character-level model learns fast.

Prompt: the two operands around the operator, then '=', e.g. ``123+489=``.

Addition and subtraction use a carry-lookahead scratchpad written most-significant digit first, one
character per digit position, so every character sits at a fixed distance from the characters it depends on
(the operand digits above it, or one or two characters of the line before). A small transformer learns such
fixed-offset lookups quickly; reversed-order or carry-chain formats need position-dependent ones.

Addition. Line 1 has one status per digit position (operands right-aligned): ``c`` if the two digits sum
to 10 or more (the position sends a carry left whatever comes from the right), ``p`` if they sum to 9 (it
passes on a carry it receives; not in the units position, which receives none), ``.`` otherwise. Each
further line resolves the ``p`` s by copying the status h positions to the right (h = 1, 2, 4, ...) until
every status is final: position j sends a carry iff the last line has ``c`` at j. Answer digit j is then
(a_j + b_j + the carry from j+1) mod 10, with a leading 1 if position 0 sends a carry::

    123+489=.cc      1+4=5 ., 2+8=10 c, 3+9=12 c
    .cc              (nothing to resolve)
    .cc
    #### 612

    455+545=ppc      4+5=9 p, 5+4=9 p, 5+5=10 c
    pcc              h=1: p at 0 takes the p at 1; p at 1 takes the c at 2
    ccc              h=2: p at 0 takes the c at 2
    #### 1000

Subtraction uses the same scheme with the statuses ``<`` (a's digit is smaller), ``=`` and ``>``; the last
line then compares what remains of a and b from each position on. Its first character says whether a < b
(the answer is negative: its digits are those of b - a). Digit j borrows iff the last line at j+1 says the
minuend's remaining digits are smaller (``<`` for a - b, ``>`` for b - a). Leading zeros are dropped::

    512-139=><<      5>1, 1<3, 2<9
    ><<
    ><<
    #### 373

    123-120===>      1=1, 2=2, 3>0
    =>>
    >>>
    #### 3

Multiplication writes one line per digit d of the second operand (least significant first): ``d:``, the
partial product a*d shifted by the digit's place, a space, and the running sum of the partial products, both
written least-significant digit first (the shift shows as leading zeros)::

    123*45=5:516 516     123*5 = 615; sum 615
    4:0294 5355          123*40 = 4920; sum 5535
    #### 5535

With ``paths=K`` (K = 2..4) the multiplication scratchpads follow one of K methods, chosen per problem by a
hash of its key, and a first line names the method: which operand's digits are walked (``x*y`` walks the
digits of y) and in which order (``>`` least significant first as above; ``<`` most significant first,
the running sum multiplied by 10 before each partial product is added)::

    123*45>              method 0    45*123>              method 1
    5:516 516                        3:531 531
    4:0294 5355                      2:009 5301
    #### 5535                        1:0054 5355
                                     #### 5535

    123*45<              method 2    45*123<              method 3
    4:294 294                        1:54 54
    5:516 5355                       2:09 045
    #### 5535                        3:531 5355
                                     #### 5535

The problems are those of ``paths=1``; only the worked solutions differ. A model trained on them has several
valid routes to one answer, the setting in which voting over sampled solutions (self-consistency) can pay:
errors on different routes rarely agree, correct answers always do.

With ``hazard_rate=r`` (0 to 1, in steps of 0.01) a share r of the problems is hazardous, decided by what the
prompt shows: the pair (last digit of the first operand, last digit of the second) lies in a fixed set of
round(100 r) of the 100 pairs, filled row by row (all ten pairs of one first-operand digit before the next;
the digit orders are fixed hashes), so ``hazard_rate=0.1`` means "the first operand ends in 4". Last digits
are uniform in every setting, so the share is exact in expectation. A hazardous problem's worked solution
starts with the caveat line ``!`` + the problem (``!44*15``); nothing else changes, and at ``hazard_rate=0``
(the default) no problem, solution or alphabet differs from a world without the setting::

    44*15=!44*15
    5:022 022
    1:044 066
    #### 660

A line count of ceil(log2(n)) + 1 for n-digit operands keeps the scratchpad short: 3 lines for 3 or 4 digits,
4 lines for 5 to 8. Operands have between `min_digits` and `digits` digits (a 1-digit operand may be 0).
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any

from pydantic import Field, field_validator, model_validator

from datawall.tasks.base import ANSWER_PREFIX, CAVEAT_MARK, GeneratedTask, Hazard, Problem, TaskSettings
from datawall.tasks.splits import stable_seed

OPS = {"add": "+", "sub": "-", "mul": "*"}
_ALPHABET = "".join(sorted(set("0123456789" + "".join(OPS.values()) + "=cp.<> :\n#")))


class ArithSettings(TaskSettings):
    """Settings of the `arith` task."""

    digits: int = Field(3, ge=1, le=12, description="maximum digits per operand (difficulty)")
    min_digits: int | None = Field(None, ge=1, le=12, description="minimum digits per operand (default: digits)")
    ops: str = Field("add", description="comma-separated operations from add, sub, mul")
    paths: int = Field(1, ge=1, le=4, description="solution methods for multiplication (1-4; same problems)")
    hazard_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of problems whose worked solution "
                               "carries a caveat line (0-1 in steps of 0.01; same problems)")

    solution_only = frozenset({"paths", "hazard_rate"})
    quiet_default = frozenset({"hazard_rate"})

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: str) -> str:
        names = [s.strip() for s in v.replace("+", ",").split(",") if s.strip()]
        if not names:
            raise ValueError("give at least one of add, sub, mul")
        for s in names:
            if s not in OPS:
                raise ValueError(f"unknown operation {s!r} (choose from {', '.join(OPS)})")
        return ",".join(op for op in OPS if op in names)  # canonical order: same settings, same seeds

    @model_validator(mode="before")
    @classmethod
    def _default_min(cls, data: Any) -> Any:
        # min_digits defaults to digits, so equivalent settings give identical seeds and problems.
        if isinstance(data, dict) and data.get("min_digits") is None:
            data = {**data, "min_digits": data.get("digits", 3)}
        return data

    @field_validator("hazard_rate")
    @classmethod
    def _percent(cls, v: float) -> float:
        # the hazardous set is a number of the 100 last-digit pairs, so the rate is a whole percentage
        if abs(v * 100 - round(v * 100)) > 1e-9:
            raise ValueError("give a whole percentage (0, 0.01, ..., 1): the rate counts pairs of last digits")
        return round(v * 100) / 100

    @model_validator(mode="after")
    def _range(self) -> ArithSettings:
        if self.min_digits is not None and self.min_digits > self.digits:
            raise ValueError(f"min_digits={self.min_digits} is larger than digits={self.digits}")
        return self


def hazard_pairs(rate: float) -> frozenset[tuple[int, int]]:
    """The (last digit of a, last digit of b) pairs that make a problem hazardous at `rate`, filled row by row."""
    rows = sorted(range(10), key=lambda d: stable_seed("arith-hazard-a", d))
    cols = sorted(range(10), key=lambda d: stable_seed("arith-hazard-b", d))
    order = [(r, c) for r in rows for c in cols]
    return frozenset(order[:round(rate * 100)])


def _reversed_digits(n: int) -> list[int]:
    return [int(ch) for ch in reversed(str(n))]


def _resolve(status: str, undecided: str, beyond: str) -> list[str]:
    """Status lines: `status`, then each `undecided` replaced by the status h = 1, 2, 4, ... places right."""
    lines, h = [status], 1
    while h < len(status):
        prev = lines[-1]
        lines.append("".join(c if c != undecided else (prev[j + h] if j + h < len(prev) else beyond)
                             for j, c in enumerate(prev)))
        h *= 2
    return lines


def _aligned(a: int, b: int) -> tuple[list[int], list[int]]:
    n = max(len(str(a)), len(str(b)))
    return [int(c) for c in str(a).zfill(n)], [int(c) for c in str(b).zfill(n)]


def add_scratch(a: int, b: int) -> str:
    """Carry-lookahead status lines of a+b: 123+489 -> '.cc\\n.cc\\n.cc' (see the module docstring)."""
    xs, ys = _aligned(a, b)
    # No carry ever enters the units digit, so a 9 there is final ('.'): every chain of p's ends inside the
    # number and ceil(log2(n)) resolution lines suffice.
    status = "".join("c" if x + y >= 10 else "p" if x + y == 9 and j < len(xs) - 1 else "."
                     for j, (x, y) in enumerate(zip(xs, ys, strict=True)))
    return "\n".join(_resolve(status, "p", "."))


def sub_scratch(a: int, b: int) -> str:
    """Comparison/borrow status lines of a-b: 512-139 -> '><<\\n><<\\n><<' (see the module docstring)."""
    xs, ys = _aligned(a, b)
    status = "".join("<" if x < y else "=" if x == y else ">" for x, y in zip(xs, ys, strict=True))
    return "\n".join(_resolve(status, "=", "="))


def mul_scratch(a: int, b: int) -> str:
    """One line per digit d of b: 'd:' reversed shifted partial product, space, reversed running sum."""
    lines, total = [], 0
    for place, d in enumerate(_reversed_digits(b)):
        total += a * d * 10**place
        lines.append(f"{d}:{'0' * place}{str(a * d)[::-1]} {str(total)[::-1]}")
    return "\n".join(lines)


MUL_METHODS = (("a", ">"), ("b", ">"), ("a", "<"), ("b", "<"))  # (multiplicand, digit order) per method


def mul_method_scratch(a: int, b: int, method: int) -> str:
    """Multiplication by method 0-3 (see the module docstring): a header line naming it, then one line per digit."""
    first, order = MUL_METHODS[method]
    x, y = (a, b) if first == "a" else (b, a)
    if order == ">":
        return f"{x}*{y}>\n{mul_scratch(x, y)}"
    lines, total = [f"{x}*{y}<"], 0
    for d in (int(c) for c in str(y)):
        total = total * 10 + x * d
        lines.append(f"{d}:{str(x * d)[::-1]} {str(total)[::-1]}")
    return "\n".join(lines)


def _operand(rng: random.Random, lo_digits: int, hi_digits: int) -> int:
    n = rng.randint(lo_digits, hi_digits)
    return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)


class ArithTask(GeneratedTask):
    """Integer arithmetic with a carry-lookahead scratchpad."""

    name = "arith"
    summary = "integer +, -, * with a carry-lookahead scratchpad; prompt '123+489=', answer '612'"
    Settings = ArithSettings

    def _generate(self, rng: random.Random) -> Problem:
        s = self.settings
        op = rng.choice(s.ops.split(","))
        lo = s.min_digits or s.digits
        a, b = _operand(rng, lo, s.digits), _operand(rng, lo, s.digits)
        key = f"{a}{OPS[op]}{b}"
        answer = {"add": a + b, "sub": a - b, "mul": a * b}[op]
        return Problem(prompt=key + "=", answer=str(answer), meta={"op": op, "a": a, "b": b}, key=key)

    def _all_keys(self, limit: int) -> list[str] | None:
        s = self.settings
        lo = s.min_digits or s.digits
        operands = 10**s.digits - (0 if lo == 1 else 10 ** (lo - 1))  # 0..10^digits-1, or from 10^(lo-1)
        ops = s.ops.split(",")
        if len(ops) * operands**2 > limit:
            return None
        values = range(0 if lo == 1 else 10 ** (lo - 1), 10**s.digits)
        return [f"{a}{OPS[op]}{b}" for op in ops for a in values for b in values]

    def solution(self, problem: Problem) -> str:
        op, a, b = problem.meta["op"], problem.meta["a"], problem.meta["b"]
        if op == "mul" and self.settings.paths > 1:
            scratch = mul_method_scratch(a, b, self.method(problem))
        else:
            scratch = {"add": add_scratch, "sub": sub_scratch, "mul": mul_scratch}[op](a, b)
        hazard = self.hazard(problem)
        caveat = f"{hazard.caveat}\n" if hazard else ""
        return f"{caveat}{scratch}\n{ANSWER_PREFIX}{problem.answer}"

    @property
    def has_hazards(self) -> bool:
        return self.settings.hazard_rate > 0

    def hazard(self, problem: Problem) -> Hazard | None:
        """Hazardous when the operands' last digits form one of the rate's pairs; the caveat names the problem."""
        if not self.has_hazards:
            return None
        a, b = problem.meta["a"], problem.meta["b"]
        if (a % 10, b % 10) not in self._hazard_pairs:
            return None
        return Hazard(caveat=f"{CAVEAT_MARK}{problem.key}", kind="last digits")

    @cached_property
    def _hazard_pairs(self) -> frozenset[tuple[int, int]]:
        return hazard_pairs(self.settings.hazard_rate)

    def method(self, problem: Problem) -> int:
        """Which of the `paths` multiplication methods this problem's worked solution uses."""
        return stable_seed("arith-method", problem.key) % self.settings.paths

    @property
    def alphabet(self) -> str:
        # "!" only where caveats occur: a world without hazards keeps its vocabulary (and its models)
        return "".join(sorted(_ALPHABET + CAVEAT_MARK)) if self.has_hazards else _ALPHABET

    def describe(self) -> str:
        s = self.settings
        lo = s.min_digits or s.digits
        width = f"{s.digits}" if lo == s.digits else f"{lo}-{s.digits}"
        paths = f", {s.paths} multiplication methods" if s.paths > 1 else ""
        hazards = f", {s.hazard_rate:.0%} hazardous (caveat line)" if self.has_hazards else ""
        return (f"arith [{s.as_text()}]: {width}-digit {s.ops.replace(',', '/')}, carry-lookahead scratchpad"
                f"{paths}{hazards}")
