"""Reading a completion's final answer: strict ('#### N', what datawall's worked solutions end with) and
flexible (what a real model writes when nobody taught it the format), as lm-evaluation-harness scores GSM8K.

Flexible reading, first match wins: the last `\\boxed{...}` (or `\\fbox{...}`); the last '#### ' line; the last
"the answer is X" / "answer: X"; and, for numeric tasks, the last number anywhere (lm-eval's
`flexible-extract`). A number is cleaned of `$`, thousands commas and a trailing full stop, so '$1,234.' reads
as '1234'; `answers_match` then compares numbers exactly (12.0 equals 12).
"""

from __future__ import annotations

import re

from datawall.errors import DatawallError

EXTRACTIONS = ("strict", "flexible")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"(?i)\banswer\s*(?:is|:|=)\s*[:=]?\s*(.+)")
# lm-eval's GSM8K flexible-extract: a run of digits, '$', '.' and ',' (two or more), or a lone digit string
_NUMBER = re.compile(r"-?[$0-9.,]{2,}|-?[0-9]+")
_HAS_DIGIT = re.compile(r"[0-9]")


def strict_answer(text: str) -> str | None:
    """The text of the last '#### ' line (surrounding whitespace removed), or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("####"):
            return line[4:].strip() or None
    return None


def boxed_answer(text: str) -> str | None:
    """The contents of the last \\boxed{...} (nested braces kept), or None."""
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[m.end():i - 1].strip()
    return found or None


def clean_number(text: str) -> str:
    """'$1,234.' -> '1234': no dollar signs or commas (as lm-eval's GSM8K filters), no trailing full stop."""
    return text.replace("$", "").replace(",", "").strip().rstrip(".")


def last_number(text: str) -> str | None:
    """The last number in text (lm-eval's flexible-extract), cleaned; None when there is none."""
    for m in reversed(list(_NUMBER.finditer(text))):
        cleaned = clean_number(m.group(0))
        if _HAS_DIGIT.search(cleaned):
            return cleaned
    return None


def _answer_phrase(text: str, numeric: bool) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    said = matches[-1].group(1).strip().strip("*").strip()
    if numeric:
        m = _NUMBER.search(said)
        return clean_number(m.group(0)) if m and _HAS_DIGIT.search(m.group(0)) else None
    return said.rstrip(".").strip() or None


def flexible_answer(text: str, numeric: bool = True) -> str | None:
    """The answer a free-form completion gives (see the module docstring for the order), or None."""
    boxed = boxed_answer(text)
    if boxed is not None:
        return clean_number(boxed) if numeric and _NUMBER.fullmatch(boxed.replace(" ", "")) else boxed
    strict = strict_answer(text)
    if strict is not None:
        return clean_number(strict) if numeric else strict
    phrase = _answer_phrase(text, numeric)
    if phrase is not None:
        return phrase
    return last_number(text) if numeric else None


def extract(text: str, how: str = "strict", numeric: bool = True) -> str | None:
    """The final answer of `text` read `how` ('strict' or 'flexible')."""
    if how == "strict":
        return strict_answer(text)
    if how == "flexible":
        return flexible_answer(text, numeric)
    raise DatawallError(f"unknown answer extraction {how!r}; choose from {', '.join(EXTRACTIONS)}")
