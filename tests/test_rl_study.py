"""The rl lever in a real (tiny) study: planned as an rl run per seed on the baseline checkpoint, measured on the
one compute axis with RL's sampling and training FLOPs, and reported."""

from __future__ import annotations

import json

from study_tiny import lever_spec, run_study

from datawall.study.jobs import Job
from datawall.study.levers import LEVERS
from datawall.study.plan import make_plan
from datawall.study.spec import parse_spec

SPEC = lever_spec("tiny-rl", """
[levers.rl]
enabled = true
steps = 3
prompts_per_step = 4
group = 4
loss = "grpo"
""")


def test_rl_is_opt_in_and_plans_one_run_per_seed_on_the_baseline():
    import tomllib

    others_off = {name: {"enabled": False} for name in LEVERS if name != "rl"}
    off = make_plan(parse_spec({"levers": others_off}, "s.toml"))
    assert [j.kind for j in off.jobs] == ["pretrain"]  # a spec that does not ask for RL runs none
    data = tomllib.loads(SPEC)
    data["world"]["seeds"] = [0, 1]
    plan = make_plan(parse_spec(data, "s.toml"))
    rl = [j for j in plan.jobs if j.kind == "rl"]
    base = [j for j in plan.jobs if j.kind == "pretrain"]
    assert len(rl) == 2 and {j.deps[0] for j in rl} == {j.key for j in base}
    assert all(plan.lever_of[j.key] == "rl" and plan.est_flops[j.key] > 0 for j in rl)
    job = rl[0]
    assert job.config["first_problem"] == 200 and job.config["steps"] == 3 and job.config["loss"] == "grpo"
    assert plan.label(job.key) == "rl grpo, 3 steps of 4 x 4, seed 0"
    assert Job("rl", dict(job.config), deps=job.deps).key == job.key  # resolved configs are stable


def test_a_study_with_rl_reports_its_point(tmp_path):
    spec = tmp_path / "rl.toml"
    spec.write_text(SPEC)
    result = run_study(str(spec), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--workers",
                       "0", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (point,) = summary["levers"]["rl"]
    base = summary["baseline"]
    assert point["rl_steps"] == 3 and point["rl_flops"] > 0 and point["rl_sample_flops"] > 0
    assert point["train_flops"] == base["train_flops"] + point["rl_flops"]
    assert point["compute"] > base["compute"] and point["dollars"] > base["dollars"]
    assert 0 <= point["ci_low"] <= point["accuracy"] <= point["ci_high"] <= 1
    assert point["label"] == LEVERS["rl"].label(point, base)
    (run,) = point["runs"]
    result_json = json.loads((tmp_path / "store" / "runs" / f"rl-{run}" / "result.json").read_text())
    assert result_json["accuracy_after"] == point["accuracy"] and result_json["steps"] == 3
    assert result_json["accuracy_before"] == base["accuracy"]  # the same greedy problems as the baseline's
    assert "RL with verifiable rewards" in (tmp_path / "out" / "report.html").read_text()
