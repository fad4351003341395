"""Reading final answers strictly ('#### N') and flexibly (free text, as lm-eval's GSM8K flexible-extract)."""

from __future__ import annotations

import pytest

from datawall.errors import DatawallError
from datawall.tasks import get_task
from datawall.tasks.answers import boxed_answer, clean_number, extract, flexible_answer, last_number, strict_answer


@pytest.mark.parametrize("text,want", [
    ("She sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18 dollars.", "18"),  # lm-eval's flexible-extract: last number
    ("So the answer is $1,234.", "1234"),
    ("The answer is **-5**.\nQuestion: a new one with 7 apples", "-5"),  # the phrase beats a later number
    ("Answer: 12.0", "12.0"),
    ("first \\boxed{7}, then \\boxed{\\frac{1}{2}} ... 99", "\\frac{1}{2}"),  # the last box, nested braces kept
    ("\\boxed{ 1,000 } is it, not 3", "1000"),
    ("worked\n#### 72\nthen 5 more", "72"),  # a '#### ' line beats the last number
    ("#### $1,000", "1000"),
    ("it costs $3.50.", "3.50"),
    ("no numbers here", None),
    ("\\boxed{unclosed 4", "4"),  # an unclosed box is no box
])
def test_flexible_reading(text, want):
    assert flexible_answer(text) == want


def test_strict_reading_is_the_last_answer_line_only():
    assert strict_answer("The answer is 18.") is None and strict_answer("\\boxed{18}") is None
    assert strict_answer("x\n#### 18\n") == "18" and strict_answer("#### $1,000") == "$1,000"
    assert extract("#### 3", "strict") == extract("#### 3", "flexible") == "3"
    with pytest.raises(DatawallError, match="unknown answer extraction 'loose'; choose from strict, flexible"):
        extract("#### 3", "loose")


def test_pieces():
    assert clean_number(" $1,234. ") == "1234" and clean_number("3.5") == "3.5" and clean_number("-7") == "-7"
    assert last_number("a, b. c") is None and last_number("1, 2, 3.") == "3" and last_number("x-4y") == "-4"
    assert boxed_answer("\\fbox{a{b}c}") == "a{b}c" and boxed_answer("\\boxed{}") is None


def test_tasks_score_both_readings_of_the_same_completion():
    arith = get_task("arith", digits=2)
    p = arith.problem("test", 0)
    free = f"Let me add them up carefully.\nThe answer is {int(p.answer):,}."
    assert arith.verify(p, free) == 0.0 and arith.verify(p, free, "flexible") == 1.0
    assert arith.verify(p, f"{p.answer}.0", "flexible") == 1.0  # 12.0 equals 12
    assert arith.verify(p, "The answer is 0 (no, 1)", "flexible") == float(p.answer == "0")
    # countdown's answer is an expression: flexible reading never falls back to a bare number
    countdown = get_task("countdown")
    c = countdown.problem("test", 0)
    solution = countdown.solution(c)
    expression = strict_answer(solution)
    assert countdown.verify(c, solution, "flexible") == 1.0
    assert countdown.verify(c, f"I get \\boxed{{{expression}}}", "flexible") == 1.0
    assert countdown.verify(c, f"it makes {c.meta['target']}", "flexible") == 0.0
    assert countdown.extract_answer(f"it makes {c.meta['target']}", "flexible") is None
