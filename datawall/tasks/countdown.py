"""Countdown: combine the given numbers with + - * / to reach a target.

Prompt: the numbers in ascending order, ' -> ', the target, a newline::

    3 4 5 9 -> 22

The generator builds the target from a random expression over all the numbers (every intermediate a
positive integer no larger than `max_target`, divisions exact), so every problem is solvable. The reference
solution writes one line per operation of that expression, then the whole expression as the answer::

    9-4=5
    5*5=25
    25-3=22
    #### (9-4)*5-3

Any answer that is an arithmetic expression over the given numbers (each used at most once; + - * / and
parentheses; exact rational arithmetic) and equals the target scores 1.0. Answers are parsed by the
whitelisted evaluator in datawall.tasks.safe_eval, never by eval().
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from pydantic import Field

from datawall.tasks.base import ANSWER_PREFIX, GeneratedTask, Problem, TaskSettings
from datawall.tasks.safe_eval import ExpressionError, Limits, evaluate, numbers_in, parse_expression

ANSWER_LIMITS = Limits(max_chars=200, max_nodes=64, max_depth=24, ops=frozenset("+-*/"), unary_minus=False,
                       floats=False)
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class CountdownSettings(TaskSettings):
    """Settings of the `countdown` task."""

    count: int = Field(4, ge=3, le=6, description="how many numbers are given (difficulty)")
    max_number: int = Field(20, ge=2, le=100, description="the numbers are drawn from 1..max_number")
    max_target: int = Field(200, ge=10, le=100_000, description="bound on the target and every intermediate")


@dataclass(frozen=True)
class Node:
    """A node of the generating expression: a number (op '') or op applied to two nodes."""

    value: int
    op: str = ""
    left: Node | None = None
    right: Node | None = None

    def text(self) -> str:
        """The expression with the parentheses its evaluation order needs, and no others."""
        if not self.op:
            return str(self.value)
        assert self.left is not None and self.right is not None
        p = _PRECEDENCE[self.op]
        left, right = self.left.text(), self.right.text()
        if self.left.op and _PRECEDENCE[self.left.op] < p:
            left = f"({left})"
        if self.right.op and (_PRECEDENCE[self.right.op] < p or (_PRECEDENCE[self.right.op] == p and
                                                                  self.op in "-/")):
            right = f"({right})"
        return f"{left}{self.op}{right}"


def _operations(x: Node, y: Node, cap: int) -> list[Node]:
    """Every valid operation on two nodes: a positive integer result <= cap, no multiplying or dividing by 1."""
    hi, lo = (x, y) if x.value >= y.value else (y, x)
    choices = []
    if x.value + y.value <= cap:
        choices.append(Node(x.value + y.value, "+", x, y))
    if hi.value > lo.value:
        choices.append(Node(hi.value - lo.value, "-", hi, lo))
    if x.value > 1 and y.value > 1 and x.value * y.value <= cap:
        choices.append(Node(x.value * y.value, "*", x, y))
    if lo.value > 1 and hi.value % lo.value == 0:
        choices.append(Node(hi.value // lo.value, "/", hi, lo))
    return choices


def _combine(rng: random.Random, x: Node, y: Node, cap: int) -> Node | None:
    """A random valid operation on two nodes; None if there is none."""
    choices = _operations(x, y, cap)
    return rng.choice(choices) if choices else None


class _TooMany(Exception):
    pass


def _targets(numbers: tuple[int, ...], cap: int, memo: dict, budget: list[int]) -> frozenset[int]:
    """Every value that merging all of `numbers` (sorted) can end on; `budget[0]` counts down the work done."""
    if len(numbers) == 1:
        return frozenset(numbers)
    if numbers in memo:
        return memo[numbers]
    out: set[int] = set()
    for i, j in itertools.combinations(range(len(numbers)), 2):
        rest = numbers[:i] + numbers[i + 1:j] + numbers[j + 1:]
        for node in _operations(Node(numbers[i]), Node(numbers[j]), cap):
            found = _targets(tuple(sorted((*rest, node.value))), cap, memo, budget)
            budget[0] -= 1 + len(found)
            if budget[0] < 0:
                raise _TooMany
            out |= found
    memo[numbers] = frozenset(out)
    return memo[numbers]


class CountdownTask(GeneratedTask):
    """Reach a target from given numbers with + - * /; any valid expression scores 1."""

    name = "countdown"
    summary = "reach the target from the given numbers with + - * /; prompt '3 4 5 9 -> 22'"
    Settings = CountdownSettings
    numeric_answers = False  # the answer is an expression: its last number is no answer

    def _generate(self, rng: random.Random) -> Problem:
        s = self.settings
        while True:
            numbers = sorted(rng.randint(1, s.max_number) for _ in range(s.count))
            for _ in range(50):  # combination orders to try before drawing new numbers
                found = self._combine_all(rng, numbers)
                if found is not None:
                    root, steps = found
                    key = f"{' '.join(map(str, numbers))} -> {root.value}"
                    meta = {"numbers": numbers, "target": root.value, "steps": steps}
                    return Problem(prompt=key + "\n", answer=root.text(), meta=meta, key=key)

    def _combine_all(self, rng: random.Random, numbers: list[int]) -> tuple[Node, list[str]] | None:
        """Merge random pairs until one node is left; None if stuck or the target is one of the numbers."""
        pool = [Node(n) for n in numbers]
        steps: list[str] = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            node = _combine(rng, pool[i], pool[j], self.settings.max_target)
            if node is None:
                return None
            assert node.left is not None and node.right is not None
            steps.append(f"{node.left.value}{node.op}{node.right.value}={node.value}")
            pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [node]
        return None if pool[0].value in numbers else (pool[0], steps)

    def _all_keys(self, limit: int) -> list[str] | None:
        s = self.settings
        if math.comb(s.max_number + s.count - 1, s.count) > limit:
            return None
        memo: dict = {}
        budget = [limit]  # set unions while merging pools (memoised across number sets): ~1 us each
        keys: list[str] = []
        try:
            for numbers in itertools.combinations_with_replacement(range(1, s.max_number + 1), s.count):
                # the generator keeps a target that is not one of the numbers; every reachable one has a chance
                for target in sorted(_targets(numbers, s.max_target, memo, budget) - set(numbers)):
                    keys.append(f"{' '.join(map(str, numbers))} -> {target}")
                if len(keys) > limit:
                    return None
        except _TooMany:
            return None
        return keys

    def solution(self, problem: Problem) -> str:
        return "\n".join([*problem.meta["steps"], ANSWER_PREFIX + problem.answer])

    def check(self, problem: Problem, expression: str) -> str | None:
        """Why `expression` does not solve the problem, or None if it does."""
        try:
            tree = parse_expression(expression, ANSWER_LIMITS)
            value = evaluate(tree, ANSWER_LIMITS)
        except ExpressionError as e:
            return str(e)
        used = Counter(numbers_in(tree))
        extra = used - Counter(Fraction(n) for n in problem.meta["numbers"])
        if extra:
            return f"uses {', '.join(str(n) for n in sorted(extra.elements()))} beyond the given numbers"
        if value != problem.meta["target"]:
            return f"evaluates to {value}, not {problem.meta['target']}"
        return None

    def verify(self, problem: Problem, completion: str, how: str = "strict") -> float:
        """1.0 for any expression over the given numbers (each at most once) equal to the target."""
        expression = self.extract_answer(completion, how)
        return 1.0 if expression is not None and self.check(problem, expression) is None else 0.0

    @property
    def alphabet(self) -> str:
        return "".join(sorted(set("0123456789 ->\n+*/()=#")))

    def describe(self) -> str:
        s = self.settings
        return (f"countdown [{s.as_text()}]: reach a target <= {s.max_target} from {s.count} numbers in "
                f"1..{s.max_number} with + - * /")
