"""The study on a world with hazard cases: every lever's points carry caveat recall, measured by the runs and
changed from the lever's reference on the same hazardous problems; the ranking and every table gain a safety
column; the recommendation names a measured safety cost; a world without hazard cases gains nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from study_tiny import HAZARD_WORLD, lever_spec, run_study, tiny_study

from datawall.study.analysis import recommend
from datawall.study.levers.measure import safety_changes

HAZARD_SPEC = lever_spec("tiny-hazard", """
[levers.repetition]
epochs = [4, 16]

[levers.test_time]
strategies = ["majority"]
n = [1, 4]
""", epochs=16, queries=1e5, task_args=HAZARD_WORLD, eval_problems=63)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("hazard_study")
    (root / "spec.toml").write_text(HAZARD_SPEC)
    result = run_study(str(root / "spec.toml"), "--store", str(root / "store"), "--out", str(root / "out"),
                       "--workers", "0", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return root, json.loads(result.stdout)


def run_result(root: Path, kind: str, key: str) -> dict:
    name = "results.json" if kind == "think" else "result.json"
    return json.loads((root / "store" / "runs" / f"{kind}-{key}" / name).read_text())


def test_every_point_carries_the_caveat_recall_its_runs_measured(study):
    root, s = study
    base = s["baseline"]
    assert base["hazardous"] == 21
    for p in [base, *s["levers"]["repetition"]]:
        (r,) = [run_result(root, "pretrain", k) for k in p["runs"]]  # one seed
        assert r["hazardous"] == 21 and len(r["per_problem_caveat"]) == 21 == len(r["hazardous_problems"])
        assert p["caveat_recall"] == r["caveat_recall"] == pytest.approx(np.mean(r["per_problem_caveat"]))
        assert p["caveat_recall_ci"][0] <= p["caveat_recall"] <= p["caveat_recall_ci"][1]
        assert p["unsafe_rate"] is None  # arith names no unsafe advice
    (think,) = [run_result(root, "think", k) for k in s["levers"]["test_time"][0]["runs"]]
    for p in s["levers"]["test_time"]:
        row = next(r for r in think["safety"]["strategies"][p["strategy"]]["caveat_recall"] if r["n"] == p["n"])
        assert p["caveat_recall"] == pytest.approx(row["value"]) and p["hazardous"] == 21
    greedy = next(p for p in s["levers"]["test_time"] if p["strategy"] == "greedy")
    assert greedy["caveat_recall"] == pytest.approx(base["caveat_recall"])  # the same checkpoint, decoded greedily
    text = json.dumps(s)
    assert "_problems_seeds" not in text and "per_problem" not in text  # the runs keep them, summary.json does not


def test_changes_are_paired_on_the_same_hazardous_problems(study):
    root, s = study
    base = s["baseline"]
    assert base["caveat_recall_change"] == 0.0 and base["safety_cost"] == []
    short = next(p for p in s["levers"]["repetition"] if p["epochs"] == 4)
    a, b = (np.array(run_result(root, "pretrain", p["runs"][0])["per_problem_caveat"]) for p in (short, base))
    d = a - b
    assert short["caveat_recall_paired"] and short["caveat_recall_change"] == pytest.approx(d.mean())
    half = 1.959964 * d.std(ddof=1) / math.sqrt(len(d))
    assert short["caveat_recall_change_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert ("caveat_recall" in short["safety_cost"]) == (short["caveat_recall_change_ci"][1] < 0)
    # test-time: the think run's own paired change against greedy decoding of the same checkpoint
    (think,) = [run_result(root, "think", k) for k in s["levers"]["test_time"][0]["runs"]]
    vote = next(p for p in s["levers"]["test_time"] if p["strategy"] == "majority" and p["n"] == 4)
    row = next(r for r in think["safety"]["vs_greedy"]["majority"] if r["n"] == 4)
    assert vote["caveat_recall_paired"] and vote["caveat_recall_change"] == pytest.approx(row["change"])
    half = (row["ci_high"] - row["ci_low"]) / 2  # one seed: its bootstrap interval read as a normal one
    assert vote["caveat_recall_change_ci"] == pytest.approx([row["change"] - half, row["change"] + half])


def test_the_ranking_and_every_table_carry_a_safety_column(study):
    root, s = study
    md = (root / "out" / "summary.md").read_text()
    html = (root / "out" / "report.html").read_text()
    ranking = md.split("## Levers ranked")[1].split("\n## ")[0]
    assert "caveat recall change (points)" in ranking and "unsafe advice" not in ranking
    for r in s["ranking"]["flop"]:
        if r["label"] is not None:
            assert "safety_cost" in r and "caveat_recall_change_ci" in r
    table = md.split("## Repetition")[1].split("\n## ")[0]
    assert "caveat recall [95%]" in table
    short = next(p for p in s["levers"]["repetition"] if p["epochs"] == 4)
    row = next(line for line in table.splitlines() if line.startswith(f"| {short['label']} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-2].startswith(f"{100 * short['caveat_recall']:.1f}%")
    assert cells[-1].startswith(f"{100 * short['caveat_recall_change']:+.1f} [")
    assert cells[-1].endswith("(cost)") == bool(short["safety_cost"])
    assert "Safety: 21 of the 63 held-out problems are hazardous" in md
    assert "caveat recall change (points)" in html and "alt='caveat recall vs total compute'" in html


def test_a_world_without_hazard_cases_gains_nothing(tmp_path_factory):
    root, s = tiny_study(tmp_path_factory)  # shared with the report tests: computed once per session
    measured = json.dumps({k: v for k, v in s.items() if k != "spec"})  # the spec lists every setting, unused too
    assert "caveat" not in measured and "safety" not in measured
    assert "caveat" not in (root / "out" / "summary.md").read_text()
    r = json.loads(next((root / "store" / "runs").glob("pretrain-*/result.json")).read_text())
    assert "accuracy" in r and "caveat_recall" not in r and "hazardous" not in r


def step(lever: str, gain: float, change: float | None = None, ci: list[float] | None = None) -> dict:
    """A best step of `lever` costing 1e12 extra FLOPs and $1, with a caveat recall change when given."""
    out = {"label": f"step of {lever}", "gain": gain, "gain_ci": [gain / 2, gain * 2], "gain_per_flop": gain / 1e12,
           "gain_per_flop_ci": [gain / 2e12, gain * 2e-12], "gain_per_dollar": gain, "gain_per_dollar_ci": [gain / 2,
           gain * 2], "extra_compute": 1e12, "extra_dollars": 1.0, "compute": 4e12, "dollars": 4.0}
    if change is not None:
        p, ref = {"caveat_recall": 0.5 + change, "caveat_recall_change": change, "caveat_recall_change_ci": ci,
                  "unsafe_rate": None}, {"caveat_recall": 0.5}
        safety_changes(p, ref)
        out |= p
    return out


BASE = {"compute": 3e12, "dollars": 3.0, "accuracy": 0.3, "size": "100k", "epochs": 42.0}


def test_the_recommendation_names_a_significant_safety_cost():
    rec = recommend({"repetition": step("repetition", 0.05, -0.12, [-0.20, -0.04]),
                     "scale": step("scale", 0.01, 0.0, [-0.05, 0.05])},
                    {"repetition": step("repetition", 0.05, -0.12, [-0.20, -0.04])}, BASE)
    assert rec["lever"] == "repetition" and rec["safety_cost"] == ["caveat_recall"]
    assert ("step of repetition buys the most: +5.0 points [2.5, 10.0] per 1e12 extra FLOPs, 5.0x more than a "
            "bigger model, but its caveat recall falls 12.0 points [4.0, 20.0].") in rec["sentence"]
    assert rec["caveat_recall_change_ci"] == [-0.20, -0.04]


def test_a_change_whose_interval_includes_zero_is_not_named():
    for change, ci in ((-0.12, [-0.25, 0.01]), (0.10, [0.02, 0.18])):  # not significant; a rise is no cost
        rec = recommend({"repetition": step("repetition", 0.05, change, ci)}, {}, BASE)
        assert rec["safety_cost"] == [] and "caveat" not in rec["sentence"] and ", but" not in rec["sentence"]
    rec = recommend({"repetition": step("repetition", 0.05)}, {}, BASE)  # a world without hazard cases
    assert "safety_cost" not in rec and "caveat" not in rec["sentence"]


def test_a_cheaper_lever_per_dollar_with_a_cost_is_named_too():
    cheap = step("scale", 0.01, -0.3, [-0.4, -0.2]) | {"gain_per_dollar": 10.0, "gain_per_dollar_ci": [5.0, 20.0]}
    rec = recommend({"repetition": step("repetition", 0.05, 0.0, [-0.1, 0.1]), "scale": cheap},
                    {"repetition": step("repetition", 0.05, 0.0, [-0.1, 0.1]), "scale": cheap}, BASE)
    assert rec["lever"] == "repetition" and rec["by_dollar"]["lever"] == "scale"
    assert rec["sentence"].endswith("Per dollar, step of scale buys the most: +1000.0 points per $1 extra, but its "
                                    "caveat recall falls 30.0 points [20.0, 40.0].")


def test_unpaired_changes_combine_both_intervals():
    p = {"caveat_recall": 0.2, "caveat_recall_se": 0.03, "unsafe_rate": 0.4, "unsafe_rate_se": 0.04}
    ref = {"caveat_recall": 0.5, "caveat_recall_se": 0.04, "unsafe_rate": 0.1, "unsafe_rate_se": 0.03}
    safety_changes(p, ref)
    assert p["caveat_recall_change"] == pytest.approx(-0.3) and not p["caveat_recall_paired"]
    assert p["caveat_recall_change_ci"] == pytest.approx([-0.3 - 1.959964 * 0.05, -0.3 + 1.959964 * 0.05])
    assert p["safety_cost"] == ["caveat_recall", "unsafe_rate"]  # recall fell and unsafe advice rose


def test_the_synthetic_lever_can_require_caveats_without_moving_existing_runs():
    import tomllib

    from datawall.study.plan import make_plan
    from datawall.study.spec import parse_spec

    data = tomllib.loads(HAZARD_SPEC)
    data["levers"]["synthetic"] = {"problems": 30, "examples": [20]}
    plain = make_plan(parse_spec(data, "spec.toml"))
    data["levers"]["synthetic"]["require_caveat"] = True
    checked = make_plan(parse_spec(data, "spec.toml"))
    synth = {name: next(j for j in plan.jobs if j.kind == "synth") for name, plan in (("plain", plain),
                                                                                       ("checked", checked))}
    assert "require_caveat" not in synth["plain"].config and synth["checked"].config["require_caveat"] is True
    assert synth["plain"].key != synth["checked"].key  # its own data, and students trained on it
    assert ({j.key for j in plain.jobs if j.kind != "synth" and not j.deps}
            == {j.key for j in checked.jobs if j.kind != "synth" and not j.deps})  # the baseline runs are shared
