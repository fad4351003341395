"""Recompute a study's recommendation and ranking from its summary.json points alone, without datawall.

Used on the tiny study of the tests and on whatever `make demo` left in runs/study-quick (tests/test_demo_summary.py):
the report's sentence must follow from the numbers a reader can see.
"""

from __future__ import annotations

import math

AXES = {"flop": "extra_compute", "dollar": "extra_dollars"}


def power_of_ten(x: float) -> float:
    return 10.0 ** math.floor(math.log10(x)) if x > 0 else 1.0


def best_steps(s: dict, axis: str) -> dict[str, dict | None]:
    """Each lever's point with the highest gain per extra unit of `axis`, recomputed from its gain and extra cost."""
    key, extra = f"gain_per_{axis}", AXES[axis]
    out = {}
    for lever, points in s["levers"].items():
        eligible = []
        for p in points:
            if p[key] is None:  # no extra cost, an oracle, or the reference itself
                assert p["oracle"] or not p[extra] > 0 or not math.isfinite(p[extra]), p["label"]
                continue
            assert not p["oracle"] and p[extra] > 0
            assert math.isclose(p[key], p["gain"] / p[extra], rel_tol=1e-9), p["label"]
            lo, hi = p[f"{key}_ci"]
            assert lo <= p[key] <= hi
            eligible.append(p)
        out[lever] = max(eligible, key=lambda p: p[key]) if eligible else None
    return out


def check_summary(s: dict) -> None:
    """Assert that summary.json's steps, ranking and recommendation follow from its points."""
    rec, base = s["recommendation"], s["baseline"]
    for axis in AXES:
        key = f"gain_per_{axis}"
        steps = best_steps(s, axis)
        ranked = sorted((lv for lv in steps if steps[lv] is not None), key=lambda lv: -steps[lv][key])
        ranking = s["ranking"][axis]
        assert [r["lever"] for r in ranking if r["label"] is not None] == ranked
        assert {r["lever"] for r in ranking} == set(s["levers"])
        for r, nxt in zip(ranking, ranking[1:] + [None], strict=True):
            if r["label"] is None:
                continue
            st = steps[r["lever"]]
            assert r["label"] == st["label"] and r[key] == st[key]
            assert r["significant"] == (st[f"{key}_ci"][0] > 0)
            if nxt is not None and nxt["label"] is not None and r[key] > 0 and nxt[key] > 0:
                assert math.isclose(r["ratio_to_next"], r[key] / nxt[key], rel_tol=1e-9)
            else:
                assert r["ratio_to_next"] is None
        if axis == "flop":
            for lv, st in steps.items():
                assert (s["steps"][lv] is None) == (st is None)
                if st is not None:
                    assert s["steps"][lv]["label"] == st["label"]
            sentence = rec["sentence"]
            assert f"{100 * base['accuracy']:.0f}% held-out" in sentence
            if not ranked:
                assert rec["lever"] is None
                continue
            top = steps[ranked[0]]
            if top[key] <= 0:
                assert rec["lever"] is None and "no lever raised" in sentence
                continue
            assert rec["lever"] == ranked[0] and rec["label"] == top["label"] and top["label"] in sentence
            unit = power_of_ten(top["extra_compute"])
            lo, hi = top[f"{key}_ci"]
            assert f"{100 * unit * top[key]:+.1f} points [{100 * unit * lo:.1f}, {100 * unit * hi:.1f}]" in sentence
            if len(ranked) > 1 and steps[ranked[1]][key] > 0:
                assert f"{top[key] / steps[ranked[1]][key]:.1f}x more than" in sentence
            assert ("interval includes zero" in sentence) == (lo <= 0)
        elif rec["lever"] is not None and ranked and steps[ranked[0]][key] > 0:
            by = rec["by_dollar"]
            assert by["lever"] == ranked[0] and by["gain_per_dollar"] == steps[ranked[0]][key]
