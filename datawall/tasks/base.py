"""The task protocol: problems, worked solutions, answer extraction and verification."""

from __future__ import annotations

import random
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from datawall.errors import DatawallError
from datawall.tasks.answers import extract, strict_answer
from datawall.tasks.splits import (
    MAX_PROBLEMS,
    SPLITS,
    TEST_FRACTION,
    Walk,
    check_split,
    split_of,
    stable_seed,
    walk_for,
)

ANSWER_PREFIX = "#### "
CAVEAT_MARK = "!"  # a worked solution's caveat line starts with it (datawall's own worlds)
MAX_TRIES = 2000  # rejection-sampling budget for one problem of one split
COUNT_LIMIT = 250_000  # a world with at most this many keys is counted exactly (about a second of hashing)

# Bounded digits and exponent: a model's "1e999999999" must not allocate a giant integer.
_NUMBER = re.compile(r"[+-]?(?:\d{1,40}(?:\.\d{0,40})?|\.\d{1,40})(?:[eE][+-]?\d{1,2})?")
_FRACTION = re.compile(r"[+-]?\d{1,40}/\d{1,40}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


class TaskIndexError(DatawallError, IndexError):
    """A problem index outside the split (negative, or past the end of a finite split)."""


class TaskSettings(BaseModel):
    """Base for task settings: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Settings that change only the worked solutions: excluded from the problem seeds, so that two worlds
    # differing only in them pose the very same problems.
    solution_only: ClassVar[frozenset[str]] = frozenset()
    # Settings added after runs were recorded: left out of `as_text` at their default, so a world's description
    # reads as it did before them (arith's hazard_rate=0).
    quiet_default: ClassVar[frozenset[str]] = frozenset()

    def seed_text(self) -> str:
        """The settings that decide which problems are drawn, as JSON (part of every problem's seed)."""
        return self.model_dump_json(exclude=set(self.solution_only))

    def as_text(self) -> str:
        """The settings as 'k=v,k=v' (the form --task-args accepts)."""
        fields = type(self).model_fields
        return ",".join(f"{k}={v}" for k, v in self.model_dump().items()
                        if v is not None and not (k in self.quiet_default and v == fields[k].default))


@dataclass(frozen=True)
class Hazard:
    """What a hazardous problem's answer must say, and what it must not.

    `caveat` is the required line, exactly (its content depends on the problem, so it cannot be memorised as
    one string; a line that differs does not count). `unsafe` holds regular expressions, each matching advice
    that is unsafe for this problem (searched line by line); `kind` names the hazard for reports.
    """

    caveat: str
    kind: str
    unsafe: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One problem: what the model is given, the canonical answer, and task-specific details."""

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    key: str = ""  # canonical identity; decides the split
    split: str = ""
    index: int = -1


extract_final_answer = strict_answer  # the strict reading; its one implementation is in answers.py


def parse_number(text: str) -> Fraction | None:
    """Read '1,234', '-3.5', '2e3', '3/4' (optionally with a trailing '.') exactly, or None."""
    s = _THOUSANDS.sub("", text.strip()).removesuffix(".").strip()
    if _NUMBER.fullmatch(s) or _FRACTION.fullmatch(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def answers_match(got: str, want: str, tolerance: float = 0.0) -> bool:
    """Numeric comparison when both sides are numbers (relative tolerance), else whitespace-normalized equality."""
    a, b = parse_number(got), parse_number(want)
    if a is not None and b is not None:
        return abs(a - b) <= Fraction(tolerance) * max(1, abs(b))
    return " ".join(got.split()) == " ".join(want.split())


def settings_error(task: str, err: ValidationError) -> DatawallError:
    """One clear line naming the first bad setting."""
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "settings"
    if e["type"] == "extra_forbidden":
        return DatawallError(f"{task}: unknown setting {key!r}")
    msg = e["msg"].removeprefix("Value error, ")
    if not e["loc"]:
        return DatawallError(f"{task}: {msg}")
    value = e["input"]
    shown = value if isinstance(value, str) and value.strip() == value and value else repr(value)
    return DatawallError(f"{task}: bad setting {key}={shown}: {msg}")


class Task(ABC):
    """A family of verifiable problems generated or read deterministically per (settings, split, index)."""

    name: str
    summary: ClassVar[str] = ""
    Settings: ClassVar[type[TaskSettings]] = TaskSettings
    numeric_answers: ClassVar[bool] = True  # a flexible reading may fall back to the text's last number
    # What separates solved few-shot examples from each other and from the asked prompt (lm-eval's
    # fewshot_delimiter), and the strings that end a completion besides eos (lm-eval's `until`): a model that
    # runs past its answer into the next example's prompt is cut there. datawall's own worlds end at eos.
    fewshot_separator: ClassVar[str] = "\n\n"
    stop: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: TaskSettings):
        self.settings = settings

    @classmethod
    def create(cls, **settings: Any) -> Task:
        """Validate `settings` (strings are coerced, e.g. digits='3') and build the task."""
        try:
            validated = cls.Settings(**settings)
        except ValidationError as e:
            raise settings_error(cls.name, e) from None
        return cls(validated)

    @abstractmethod
    def problem(self, split: str, index: int) -> Problem:
        """Problem number `index` of `split`; the same arguments always give the same problem."""

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """Problems start..start+n-1 of `split`."""
        return [self.problem(split, i) for i in range(start, start + n)]

    @abstractmethod
    def solution(self, problem: Problem) -> str:
        """The worked reference solution (follows the prompt), ending with the line '#### <answer>'."""

    def extract_answer(self, text: str, how: str = "strict") -> str | None:
        """The answer a completion gives: on its last '#### ' line (strict) or as free text says it (flexible)."""
        return extract(text, how, self.numeric_answers)

    def verify(self, problem: Problem, completion: str, how: str = "strict") -> float:
        """Reward in [0, 1]: 1.0 when the answer read `how` (see datawall.tasks.answers) matches the problem's."""
        got = self.extract_answer(completion, how)
        return 1.0 if got is not None and answers_match(got, problem.answer) else 0.0

    def size(self, split: str) -> int | None:
        """Number of problems in `split`, or None while it is unknown (an unbounded or uncounted generator)."""
        check_split(split)
        return None

    @property
    def has_hazards(self) -> bool:
        """Whether some problems are hazardous (their worked solutions carry a caveat line)."""
        return False

    def hazard(self, problem: Problem) -> Hazard | None:
        """The problem's hazard (required caveat, unsafe advice), or None for a safe problem."""
        return None

    @property
    @abstractmethod
    def alphabet(self) -> str:
        """Every character a prompt or solution can contain, sorted."""

    def describe(self) -> str:
        """One line: name, settings and what the problems are."""
        return f"{self.name} [{self.settings.as_text()}]: {self.summary}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.settings.as_text()}>"

    @staticmethod
    def _check_index(index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TaskIndexError(f"problem index must be an int, got {index!r}")
        if index < 0:
            raise TaskIndexError(f"problem index must be >= 0, got {index}")
        return index


class GeneratedTask(Task):
    """A task whose problems are sampled from a seeded generator; splits come from a hash of the key.

    Problem i of a split is its i-th distinct problem: candidates drawn from per-index seeds, repeats skipped
    (see datawall.tasks.splits). Asking past the split's last distinct problem is a TaskIndexError.
    """

    test_fraction: ClassVar[float] = TEST_FRACTION

    @abstractmethod
    def _generate(self, rng: random.Random) -> Problem:
        """Sample one problem (prompt, answer, meta, key) from `rng`, ignoring splits."""

    def _all_keys(self, limit: int) -> list[str] | None:
        """Every key `_generate` can produce, or None when that is unknown or would take more than ~`limit` steps."""
        return None

    def problem(self, split: str, index: int) -> Problem:
        check_split(split)
        self._check_index(index)
        if index >= MAX_PROBLEMS:
            raise TaskIndexError(f"{self._label()}: problem index {index:,} is beyond the {MAX_PROBLEMS:,} distinct "
                                 "problems a generated split lists")
        walk = self._walk(split)
        with walk.lock:
            found = walk.extend(index, lambda j: self._draw(split, j), lambda p: p.key,
                                lambda: self._split_size(split))
            if found is None:
                raise TaskIndexError(f"{self._label()}: the {split} split has only {walk.size:,} distinct problems "
                                     f"(asked for problem {index:,}, counting from 0)")
        j, p = found
        return replace(p if p is not None else self._draw(split, j), split=split, index=index)

    def size(self, split: str) -> int | None:
        """Distinct problems in `split` once known: counted for small worlds, or found when the walk ran dry."""
        walk = self._walk(check_split(split))
        with walk.lock:
            walk.count_once(lambda: self._split_size(split))
            return walk.size

    def _draw(self, split: str, j: int) -> Problem:
        """Candidate j of `split`: drawn from its own seed until a problem of the split turns up."""
        # One seed per (task, settings, split, candidate): the same draws in every process, and those of the
        # versions that drew problem i from seed i (a world without repeats poses the very same problems).
        rng = random.Random(stable_seed(self.name, self._seed_text, split, j))
        for _ in range(MAX_TRIES):
            p = self._generate(rng)
            if split_of(self.name, p.key, self.test_fraction) == split:
                return p
        raise DatawallError(f"{self._label()}: no {split} problem found in {MAX_TRIES} tries; "
                            "these settings allow too few distinct problems")

    @cached_property
    def _seed_text(self) -> str:
        return self.settings.seed_text()  # settings are frozen; dumping them per draw would cost more than the draw

    @cached_property
    def _identity(self) -> tuple:
        """What decides the problems: the generator's class, name, seeded settings and split fraction."""
        cls = type(self)
        return (cls.__module__, cls.__qualname__, self.name, self._seed_text, self.test_fraction)

    def _walk(self, split: str) -> Walk:
        return walk_for((*self._identity, split))

    def _split_size(self, split: str) -> int | None:
        """The exact number of distinct problems in `split` when the world can list its keys, else None."""
        with _COUNTS_LOCK:
            identity = self._identity
            if identity not in _COUNTS:
                keys = self._all_keys(COUNT_LIMIT)
                if keys is None:
                    _COUNTS[identity] = None
                else:
                    counts = Counter(split_of(self.name, k, self.test_fraction) for k in set(keys))
                    _COUNTS[identity] = {s: counts[s] for s in SPLITS}
            counts = _COUNTS[identity]
        return None if counts is None else counts[split]

    def _label(self) -> str:
        return f"{self.name} [{self.settings.as_text()}]"


_COUNTS: dict[tuple, dict[str, int] | None] = {}  # split sizes of counted worlds, per _identity()
_COUNTS_LOCK = threading.Lock()
