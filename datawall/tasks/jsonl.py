"""Your own problems from a JSON Lines file: `jsonl:PATH`.

One JSON object per line with "question" (string) and "answer" (string or number), optionally "solution"
(string, the worked solution) and "split" ("train" or "test"); other keys are ignored. Lines end at "\n"
only (a raw U+2028 inside a string is text, as JSON allows). Blank lines are skipped; any other line that is
not such an object is an error naming file:line, and so is one nested too deeply to parse. Numbers are
kept as written ('2.50', a 5,000-digit integer), never rounded through a float or an int.

GSM8K rows work as they are: when "answer" holds a worked solution ending in a '#### 72' line, that text
is the solution and 72 the answer; so do MATH-style rows (`question_field=problem,answer_field=solution`):
an answer holding a worked solution with a \\boxed{...} answer is that solution, and the last box's contents
the answer. Without a solution, the reference solution is the line '#### <answer>'. The field names are
settings: `question_field`, `answer_field`, `solution_field` (defaults: question, answer, solution).

Prompt: ``Question: <question>\\nAnswer:\\n``; the solution follows on the next line and ends with
``#### <answer>``; a completion stops at ``\\n\\nQuestion:`` (where a few-shot prompt's next example would
begin). A completion's last '#### ' line is compared with the answer: numerically when both are
numbers (commas in '1,234' are ignored; relative `tolerance`), else as whitespace-normalized text.

Split: the row's "split" if present, else a stable hash of the question (share `test_fraction` is held
out). With `split=all` the file is a benchmark: every row is a held-out ("test") problem, whatever its
"split" field says, and the train split is empty, so `eval` / `think` score the whole file. A question
that appears in both splits is an error, so train and test never share a problem; a row that repeats an
earlier row's question in the same split is skipped (it is not a second problem; `describe` counts them),
unless its answer differs, which is an error naming both lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datawall.errors import DatawallError
from datawall.tasks.answers import boxed_answer
from datawall.tasks.base import (
    ANSWER_PREFIX,
    Problem,
    Task,
    TaskIndexError,
    TaskSettings,
    answers_match,
    extract_final_answer,
    parse_number,
)
from datawall.tasks.splits import SPLITS, check_split, split_of

PROMPT = "Question: {question}\nAnswer:\n"
STOP = ("\n\nQuestion:",)  # the next few-shot example begins: the answer is over


class _Number:
    """A JSON number as written in the file (json's parse_int/parse_float hook): no float or int conversion."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _kind(value: Any) -> str:
    """The JSON type name of a parsed value."""
    if isinstance(value, _Number):
        return "number"
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _parse(line: str, where: str) -> Any:
    """One line as JSON, numbers kept as text; DatawallError naming `where` for anything that is not JSON."""
    try:
        return json.loads(line, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise DatawallError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None
    except ValueError as e:  # NaN / Infinity
        raise DatawallError(f"{where}: invalid JSON ({e})") from None
    except RecursionError:  # json's C scanner gives up cleanly at the interpreter's recursion limit
        raise DatawallError(f"{where}: invalid JSON (nested too deeply)") from None


class JsonlSettings(TaskSettings):
    """Settings of a `jsonl:PATH` task."""

    path: str = Field(description="the JSON Lines file")
    test_fraction: float = Field(0.2, ge=0.0, le=1.0, description="held-out share for rows without 'split'")
    tolerance: float = Field(1e-6, ge=0.0, description="relative tolerance of numeric answers")
    split: Literal["auto", "all"] = Field("auto", description="auto: the row's 'split', else a hash of the "
                                          "question; all: every row is a held-out problem (a benchmark file)")
    question_field: str = Field("question", min_length=1, description="the key holding the question")
    answer_field: str = Field("answer", min_length=1, description="the key holding the answer")
    solution_field: str = Field("solution", min_length=1, description="the key holding a worked solution")


def _canonical_answer(text: str) -> str:
    """'1,234' -> '1234' for numbers; other answers are kept as written (trimmed)."""
    text = text.strip()
    number = parse_number(text)
    if number is None or "," not in text:
        return text
    return str(number.numerator) if number.denominator == 1 else text.replace(",", "")


def _row(obj: Any, where: str, fields: tuple[str, str, str] = ("question", "answer", "solution")
         ) -> dict[str, str]:
    """Validate one parsed line; returns question, answer, solution and split (may be '')."""
    question_key, answer_key, solution_key = fields
    if not isinstance(obj, dict):
        raise DatawallError(f"{where}: expected a JSON object, got {_kind(obj)}")
    for key in (question_key, answer_key):
        if key not in obj:
            raise DatawallError(f"{where}: missing key {key!r}")
    question, answer = obj[question_key], obj[answer_key]
    if not isinstance(question, str) or not question.strip():
        raise DatawallError(f"{where}: {question_key!r} must be a non-empty string")
    if not isinstance(answer, str | _Number):
        raise DatawallError(f"{where}: {answer_key!r} must be a string or a number, got {_kind(answer)}")
    answer = (answer.text if isinstance(answer, _Number) else answer).strip()
    if not answer:
        raise DatawallError(f"{where}: {answer_key!r} is empty")
    solution = obj.get(solution_key) if solution_key != answer_key else None
    if solution is not None and not isinstance(solution, str):
        raise DatawallError(f"{where}: {solution_key!r} must be a string, got {_kind(solution)}")
    split = obj.get("split", "")
    if split != "" and split not in SPLITS:
        shown = repr(split) if isinstance(split, str) else _kind(split)
        raise DatawallError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {shown}")
    # GSM8K: the answer holds the worked solution, its '#### ' line the answer; MATH: its last \\boxed{}
    final = extract_final_answer(answer)
    if final is None:
        final = boxed_answer(answer)
    if final is not None:
        solution, answer = answer if solution is None else solution, final
    if solution is None or not solution.strip():
        solution = ANSWER_PREFIX + answer
    else:
        solution = solution.strip()
        final = extract_final_answer(solution)
        if final is None:
            solution += "\n" + ANSWER_PREFIX + answer
        elif not answers_match(final, answer):
            raise DatawallError(f"{where}: the solution's final line gives {final!r} but {answer_key!r} is {answer!r}")
    return {"question": question.strip(), "answer": _canonical_answer(answer), "solution": solution, "split": split}


class JsonlTask(Task):
    """Problems from a JSON Lines file of {"question", "answer"} rows (GSM8K format works as is)."""

    name = "jsonl"
    summary = "your problems from a JSON Lines file: jsonl:PATH with {question, answer[, solution, split]} rows"
    Settings = JsonlSettings
    stop = STOP

    def __init__(self, settings: JsonlSettings):
        super().__init__(settings)
        self.name = f"jsonl:{settings.path}"
        self.path = Path(settings.path).expanduser()
        self._rows: dict[str, list[Problem]] = {s: [] for s in SPLITS}
        self._load()

    def _load(self) -> None:
        s: JsonlSettings = self.settings  # type: ignore[assignment]
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise DatawallError(f"{s.path}: no such file") from None
        except OSError as e:
            raise DatawallError(f"{s.path}: cannot read ({e.strerror or e})") from None
        self.digest = hashlib.sha256(data).hexdigest()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DatawallError(f"{s.path}: not UTF-8 text (byte {e.start})") from None
        seen: dict[str, tuple[str, int, str]] = {}  # question -> (split, line, answer) of its first row
        self.repeats_skipped = 0
        # lines end at "\n" only: str.splitlines() would also split at U+2028, U+0085, form feeds ... inside strings
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            where = f"{s.path}:{lineno}"
            row = _row(_parse(line, where), where, (s.question_field, s.answer_field, s.solution_field))
            if s.split == "all":  # a benchmark file: every row is held out
                split = "test"
            else:
                split = row["split"] or split_of("jsonl", row["question"], s.test_fraction)
            first = seen.get(row["question"])
            if first is not None:
                other, other_line, other_answer = first
                if other != split:
                    raise DatawallError(f"{where}: this question is also in the {other} split (line {other_line})")
                if not answers_match(row["answer"], other_answer, s.tolerance):
                    raise DatawallError(f"{where}: this question is also on line {other_line}, with answer "
                                        f"{other_answer!r}, not {row['answer']!r}; which one is right is ambiguous")
                self.repeats_skipped += 1  # the same problem again is not a second problem of its split
                continue
            seen[row["question"]] = (split, lineno, row["answer"])
            meta = {"question": row["question"], "solution": row["solution"], "line": lineno}
            self._rows[split].append(Problem(prompt=PROMPT.format(question=row["question"]), answer=row["answer"],
                                             meta=meta, key=row["question"], split=split,
                                             index=len(self._rows[split])))
        if not seen:
            raise DatawallError(f"{s.path}: no problems (the file is empty)")

    def problem(self, split: str, index: int) -> Problem:
        rows = self._rows[check_split(split)]
        self._check_index(index)
        if index >= len(rows):
            raise TaskIndexError(f"{self.name}: index {index} is past the end of the {split} split "
                                 f"({len(rows)} problems)")
        return rows[index]

    def solution(self, problem: Problem) -> str:
        return problem.meta["solution"]

    def verify(self, problem: Problem, completion: str, how: str = "strict") -> float:
        got = self.extract_answer(completion, how)
        ok = got is not None and answers_match(got, problem.answer, self.settings.tolerance)  # type: ignore[attr-defined]
        return 1.0 if ok else 0.0

    def size(self, split: str) -> int | None:
        return len(self._rows[check_split(split)])

    @property
    def alphabet(self) -> str:
        chars = {c for rows in self._rows.values() for p in rows for c in p.prompt + p.meta["solution"]}
        return "".join(sorted(chars))

    def describe(self) -> str:
        n = {s: len(r) for s, r in self._rows.items()}
        skipped = self.repeats_skipped
        repeats = f"; {skipped} repeated row{'s' if skipped != 1 else ''} skipped" if skipped else ""
        return f"{self.name}: {n['train']} train + {n['test']} test problems{repeats} (sha256 {self.digest[:12]})"
