"""jsonl tasks against hostile files: deep nesting, huge numbers, raw line separators, repeated rows (issue 17
item 1, issue 10); and answer parsing that stays bounded however many digits a number has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datawall.errors import DatawallError
from datawall.tasks import answers_match, get_task
from datawall.tasks.base import parse_number

DATAWALL = str(Path(sys.executable).parent / "datawall")


def write(tmp_path, lines: list[str], name: str = "p.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def rows(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"question": f"What is {i} plus {i}?", "answer": 2 * i}) for i in range(start, start + n)]


@pytest.mark.parametrize("bad", ["[" * 200_000 + "]" * 200_000,
                                 '{"question": "q", "answer": 1, "x": ' + "[" * 200_000 + "]" * 200_000 + "}",
                                 "{" * 100_000])
def test_deep_nesting_is_one_line_naming_file_and_line(tmp_path, bad):
    path = write(tmp_path, [*rows(2), bad])
    with pytest.raises(DatawallError) as e:
        get_task(f"jsonl:{path}")
    assert str(e.value).startswith(f"{path}:3: invalid JSON")


def test_an_answer_with_5000_digits_is_kept_exactly(tmp_path):
    digits = "7" * 5000
    path = write(tmp_path, [*rows(3), '{"question": "Big?", "answer": ' + digits + ', "split": "test"}',
                            '{"question": "Bigger float?", "answer": 1e400, "split": "test"}',
                            '{"question": "Trailing zero?", "answer": 2.50, "split": "test"}'])
    task = get_task(f"jsonl:{path}")
    by_q = {p.meta["question"]: p for p in task.problems("test", task.size("test"))}
    big = by_q["Big?"]
    assert big.answer == digits and task.solution(big) == "#### " + digits
    assert task.verify(big, "#### " + digits) == 1.0 and task.verify(big, "#### " + digits[:-1] + "8") == 0.0
    assert by_q["Bigger float?"].answer == "1e400"  # as written: never rounded to inf
    assert by_q["Trailing zero?"].answer == "2.50" and task.verify(by_q["Trailing zero?"], "#### 2.5") == 1.0


@pytest.mark.parametrize("line", ['{"question": "q", "answer": NaN}', '{"question": "q", "answer": Infinity}',
                                  '{"question": "q", "answer": -Infinity}'])
def test_nan_and_infinity_are_not_json(tmp_path, line):
    path = write(tmp_path, [line])
    with pytest.raises(DatawallError, match=r":1: invalid JSON \(.*is not a JSON value"):
        get_task(f"jsonl:{path}")


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "q", "answer": 1, "solution": 12}, "'solution' must be a string, got number"),
    ({"question": 5, "answer": 1}, "'question' must be a non-empty string"),
    ({"question": "q", "answer": 1, "split": 1}, "'split' must be one of train, test, got number"),
    ({"question": "q", "answer": None}, "'answer' must be a string or a number, got null"),
])
def test_wrong_types_are_named_in_json_terms(tmp_path, row, message):
    with pytest.raises(DatawallError, match=message):
        get_task(f"jsonl:{write(tmp_path, [json.dumps(row)])}")


def test_parse_number_is_bounded_in_digits_and_exponent():
    # a giant integer or power of ten is never built: these return at once (an unbounded parse would hang)
    for text in ["9" * 5000, "1" * 41, "1e400", "1e-999999999", "1" * 5000 + "/" + "3" * 5000, "1,000" * 2000]:
        assert parse_number(text) is None, text[:20]
        assert answers_match(text, text) and not answers_match(text, "1")  # as text: equal to itself only
    assert parse_number("1" * 40) == int("1" * 40) and parse_number("1e99") == 10**99
    assert parse_number("1,234,567") == 1234567 and parse_number("3/4") * 4 == 3


def test_a_raw_line_separator_inside_a_string_is_text(tmp_path):
    question = "first part\u2028second part\u2029third\x85fourth\x0cfifth"
    line = json.dumps({"question": question, "answer": 3}, ensure_ascii=False)
    assert "\u2028" in line  # raw, not escaped
    path = write(tmp_path, [*rows(4), line, *rows(4, start=10)])
    task = get_task(f"jsonl:{path}", test_fraction=0)
    assert task.size("train") == 9
    p = next(p for p in task.problems("train", 9) if p.meta["question"] == question)
    assert p.meta["line"] == 5 and "\u2028" in p.prompt and task.verify(p, task.solution(p)) == 1.0
    assert task.problem("train", 8).meta["line"] == 9  # lines are counted by "\n" only


def test_crlf_and_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows(3)).encode() + b"\r\n")
    assert get_task(f"jsonl:{path}", test_fraction=0).size("train") == 3


def test_repeated_rows_are_skipped_and_counted(tmp_path):
    q = json.dumps({"question": "What is 1 plus 1?", "answer": 2})
    again = json.dumps({"question": "  What is 1 plus 1?  ", "answer": "2.0", "solution": "1+1=2\n#### 2"})
    path = write(tmp_path, [*rows(5, start=3), q, q, again, *rows(5, start=3)])
    task = get_task(f"jsonl:{path}", test_fraction=0)
    problems = task.problems("train", task.size("train"))
    assert len(problems) == 6 and len({p.prompt for p in problems}) == 6  # no prompt twice in a split
    first = next(p for p in problems if p.meta["question"] == "What is 1 plus 1?")
    assert first.meta["line"] == 6 and task.solution(first) == "#### 2"  # the first row is the one kept
    assert task.repeats_skipped == 7 and "7 repeated rows skipped" in task.describe()
    clean = get_task(f"jsonl:{write(tmp_path, rows(3), 'clean.jsonl')}")
    assert clean.repeats_skipped == 0 and "rows skipped" not in clean.describe().split(": ", 1)[1]


def test_a_repeat_with_another_answer_is_refused_naming_both_lines(tmp_path):
    path = write(tmp_path, [*rows(2), json.dumps({"question": "What is 1 plus 1?", "answer": 3})])
    with pytest.raises(DatawallError) as e:
        get_task(f"jsonl:{path}", test_fraction=0)
    assert str(e.value).startswith(f"{path}:3: this question is also on line 2, with answer '2', not '3'")


def test_tasks_show_reports_the_skipped_rows(tmp_path):
    path = write(tmp_path, [*rows(3), *rows(3)])
    proc = subprocess.run([DATAWALL, "tasks", "show", f"jsonl:{path}", "--json", "--task-args", "test_fraction=0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["size"] == 3 and "3 repeated rows skipped" in out["description"]


def test_console_script_gives_one_line_for_a_hostile_file(tmp_path):
    path = write(tmp_path, ["[" * 200_000 + "]" * 200_000])
    proc = subprocess.run([DATAWALL, "tasks", "show", f"jsonl:{path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {path}:1: invalid JSON") and proc.stderr.count("\n") == 1
