"""`make demo`'s own report: its recommendation and ranking recomputed from its summary.json (tests/summary_check.py).

The demo writes runs/study-quick; run `make demo` before `make test` to have it checked. Without it the test is
skipped, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from summary_check import check_summary

DEMO = Path(__file__).resolve().parents[1] / "runs" / "study-quick" / "summary.json"


@pytest.mark.skipif(not DEMO.exists(), reason="no runs/study-quick/summary.json: run `make demo` first")
def test_the_demo_recommendation_follows_from_its_summary():
    s = json.loads(DEMO.read_text())
    check_summary(s)
    assert all(s["levers"][lv] for lv in s["levers"]), "every lever has at least one point"
