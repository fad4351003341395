"""The preference lever in a real tiny study, through the CLI: its section, its prefer jobs on the baseline
checkpoint, its points on the one compute/dollar axis with the graders' dollars counted, and its report."""

import json

import pytest

from datawall.errors import DatawallError
from datawall.study.jobs import Job
from datawall.study.plan import make_plan
from datawall.study.spec import parse_spec
from tests.study_tiny import lever_spec, run_study

SPEC = lever_spec("tiny-preference", """
[levers.preference]
noise = [0.0, 0.4]
prompts = 30
n = 8
epochs = 1
price = "human-grader"
""", epochs=40, queries=1e5)


def _spec(**preference):
    data = {"world": {"task": "arith", "task_args": {"digits": 1, "ops": "add,sub,mul"}, "unique_examples": 200,
                      "eval_problems": 40, "seeds": [0, 1]},
            "train": {"seq_len": 32}, "baseline": {"epochs": 3},
            "levers": {"scale": {"enabled": False}, "repetition": {"enabled": False},
                       "test_time": {"enabled": False}, "synthetic": {"enabled": False}, "preference": preference}}
    return parse_spec(data, "t.toml")


def test_the_section_is_checked_and_plans_one_job_per_noise_and_seed():
    spec = _spec(noise=[0.3, 0.0, 0.3], prompts=30)
    assert spec.levers.preference.noise == [0.0, 0.3]
    plan = make_plan(spec)
    jobs = [j for j in plan.jobs if j.kind == "prefer"]
    assert len(jobs) == 4 and {plan.lever_of[j.key] for j in jobs} == {"preference"}
    base = [j.key for j in plan.jobs if j.kind == "pretrain"]
    for j in jobs:
        assert j.deps[0] in base and j.config["model"] == j.deps[0]
        assert j.config["first_problem"] == 200  # prompts past the U real examples
        assert plan.est_flops[j.key] > 0 and plan.label(j.key).startswith("prefer 30 prompts, graders flip ")
    for bad, msg in ((dict(bias="longer"), "needs a strength"), (dict(noise=[]), "at least one grader noise"),
                     (dict(noise=[1.5]), "less than or equal to 1"), (dict(loss="kto"), "loss")):
        with pytest.raises(DatawallError, match=msg):
            _spec(**bad)
    with pytest.raises(DatawallError, match="levers.preference.price: price entry 'local-cpu' is a flops price"):
        make_plan(_spec(price="local-cpu"))
    with pytest.raises(DatawallError, match="prefer job config"):
        Job("prefer", {"model": "k", "task": "arith", "grader": {"noise": 2}}, deps=("k",))


def test_a_tiny_study_places_preference_points_with_graders_dollars(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    args = [str(spec), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--workers", "0", "--json"]
    result = run_study(*args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    points = summary["levers"]["preference"]
    base = summary["baseline"]
    assert [p["noise"] for p in points] == [0.0, 0.4]
    runs = {p.name: p for p in (tmp_path / "store" / "runs").iterdir()}
    for p in points:
        (key,) = p["runs"]
        result = json.loads((runs[f"prefer-{key}"] / "result.json").read_text())
        assert p["accuracy"] == pytest.approx(result["accuracy"]) and p["pairs"] == result["pairs"] > 0
        # the graders are paid per comparison, at the price table's human-grader entry
        assert result["grader_comparisons"] > 0
        assert p["grader_dollars"] == pytest.approx(result["grader_comparisons"] * 1.00)
        assert p["train_flops"] == pytest.approx(base["train_flops"] + result["flops"])
        assert p["dollars"] > base["dollars"] + p["grader_dollars"] - 1e-9
        assert p["compute"] > base["compute"] and p["label"].startswith("tuning on")
        assert (runs[f"prefer-{key}"] / "pairs.jsonl").is_file()
        assert (runs[f"prefer-{key}"] / "train" / "checkpoint" / "model.safetensors").is_file()
    assert points[1]["label_accuracy"] < points[0]["label_accuracy"] == 1.0  # the noisy graders mislabel
    assert all(p["paired"] for p in points)  # scored on the baseline's problems: paired gains
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "Preference tuning" in md
    again = run_study(*args)  # every run reused
    assert again.exit_code == 0 and json.loads((tmp_path / "out" / "summary.json").read_text())["levers"][
        "preference"] == points
