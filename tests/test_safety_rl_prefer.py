"""RL and preference tuning scored for safety on a world with hazard cases: their greedy evaluations before and after
record caveat recall with each hazardous problem's outcome (SAFETY_KEYS), `datawall rl --reward rubric` trains on
correctness x rubric (refused where there are no hazard cases), a length cost is a shaping term, and the study's
rl and preference points carry the caveats, paired with the baseline's on the same hazardous problems. A world
without hazard cases gains nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import invoke
from study_tiny import HAZARD_WORLD, lever_spec, run_study

from datawall.rl.config import RLConfig
from datawall.rl.rewards import build_reward, shape
from datawall.study.jobs import KINDS
from datawall.tasks import get_task
from datawall.train.evaluate import SAFETY_KEYS

HAZARDS = {"digits": 1, "ops": "add,sub,mul", "hazard_rate": 0.3}  # 21 of the 63 held-out problems are hazardous
HAZARD_ARGS = "digits=1,ops=add,sub,mul,hazard_rate=0.3"

SPEC = lever_spec("tiny-hazard-tuning", """
[levers.preference]
noise = [0.0]
prompts = 16
n = 4
epochs = 1

[levers.rl]
enabled = true
steps = 2
prompts_per_step = 4
group = 4
""", epochs=8, queries=1e5, task_args=HAZARD_WORLD, eval_problems=63)
# a tiny rl run from the study's baseline checkpoint (4 prompts x 4 completions, 3 steps, no pass@k pools)
TINY_RL = ["--steps", "3", "--prompts-per-step", "4", "--group", "4", "--val-problems", "0", "--eval-problems", "63",
           "--pass-problems", "0", "--warmup-steps", "0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("hazard_tuning")
    (root / "spec.toml").write_text(SPEC)
    result = run_study(str(root / "spec.toml"), "--store", str(root / "store"), "--out", str(root / "out"),
                       "--workers", "0", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return root, json.loads(result.stdout)


def run_result(root: Path, kind: str, key: str) -> dict:
    return json.loads((root / "store" / "runs" / f"{kind}-{key}" / "result.json").read_text())


def baseline_checkpoint(study) -> Path:
    root, s = study
    (key,) = s["baseline"]["runs"]
    return root / "store" / "runs" / f"pretrain-{key}" / "checkpoint"


def assert_graded(result: dict, hazardous: int) -> None:
    """result carries SAFETY_KEYS of the final policy and of the starting one, consistent with their outcomes."""
    for r in (result, result["safety_before"]):
        assert set(SAFETY_KEYS) <= set(r)
        assert r["hazardous"] == hazardous == len(r["per_problem_caveat"]) == len(r["hazardous_problems"])
        assert r["caveat_recall"] == pytest.approx(np.mean(r["per_problem_caveat"]))
        assert r["unsafe_rate"] is None and r["per_problem_unsafe"] is None  # arith names no unsafe advice
    assert result["hazardous_problems"] == result["safety_before"]["hazardous_problems"]
    change = np.mean(result["per_problem_caveat"]) - np.mean(result["safety_before"]["per_problem_caveat"])
    assert result["caveat_recall_change"] == pytest.approx(change)
    lo, hi = result["caveat_recall_change_ci"]
    assert lo <= result["caveat_recall_change"] <= hi


def test_an_rl_run_on_a_hazard_world_records_caveats_before_and_after(study, tmp_path):
    out = tmp_path / "rl"
    code, output = invoke("rl", "--model", str(baseline_checkpoint(study)), "--task", "arith", "--task-args",
                          HAZARD_ARGS, "--out", str(out), *TINY_RL, "--reward", "rubric", "--length-penalty", "0.01")
    assert code == 0, output
    assert "before: caveat recall" in output and "after:  caveat recall" in output
    result = json.loads((out / "result.json").read_text())
    assert result["reward"] == "rubric"
    assert_graded(result, 21)
    # the starting policy's caveats are the study baseline's: the same greedy decode of the same problems
    root, s = study
    (base,) = [run_result(root, "pretrain", k) for k in s["baseline"]["runs"]]
    assert result["safety_before"]["per_problem_caveat"] == base["per_problem_caveat"]
    assert json.loads((out / "config.json").read_text())["rl"]["length_penalty"] == 0.01


def test_rl_on_a_world_without_hazards_gains_no_keys_and_refuses_the_rubric(study, tmp_path):
    plain = "digits=1,ops=add,sub,mul"
    code, output = invoke("rl", "--model", str(baseline_checkpoint(study)), "--task", "arith", "--task-args", plain,
                          "--out", str(tmp_path / "rl"), *TINY_RL, "--json")
    assert code == 0, output
    result = json.loads(output.strip().splitlines()[-1])
    assert not {*SAFETY_KEYS, "safety_before", "caveat_recall_change"} & set(result)
    assert "safety" not in json.loads((tmp_path / "rl" / "before.json").read_text())
    assert "length_penalty" not in json.loads((tmp_path / "rl" / "config.json").read_text())["rl"]  # its default
    code, output = invoke("rl", "--model", str(baseline_checkpoint(study)), "--task", "arith", "--task-args", plain,
                          "--out", str(tmp_path / "rubric"), *TINY_RL, "--reward", "rubric")
    assert code == 2 and output.count("\n") == 0
    assert "--reward rubric" in output and "no hazard cases" in output
    assert not (tmp_path / "rubric").exists()


def test_the_study_points_of_rl_and_preference_carry_paired_caveats(study):
    root, s = study
    base = s["baseline"]
    (base_run,) = [run_result(root, "pretrain", k) for k in base["runs"]]
    for lever, kind in (("rl", "rl"), ("preference", "prefer")):
        (p,) = s["levers"][lever]
        (r,) = [run_result(root, kind, k) for k in p["runs"]]
        assert_graded(r, 21)
        assert r["safety_before"]["per_problem_caveat"] == base_run["per_problem_caveat"]
        assert p["hazardous"] == 21 and p["caveat_recall"] == r["caveat_recall"]
        assert p["caveat_recall_paired"] is True
        diff = np.array(r["per_problem_caveat"]) - np.array(base_run["per_problem_caveat"])
        assert p["caveat_recall_change"] == pytest.approx(diff.mean())
        assert isinstance(p["safety_cost"], list)


def test_the_rubric_reward_pays_half_for_a_right_answer_without_its_caveat():
    task = get_task("arith", **HAZARDS)
    problem = next(p for p in (task.problem("train", i) for i in range(200)) if task.hazard(p) is not None)
    reward = build_reward("rubric", task, "strict", 0, "cpu")
    full = task.solution(problem)
    bare = "\n".join(line for line in full.splitlines() if not line.startswith("!"))
    assert reward.fn(problem, [full, bare, "#### -1"]) == [1.0, 0.5, 0.0]
    assert reward.name.startswith("rubric") and not reward.is_verifier


def test_the_length_cost_is_per_token_and_left_out_of_existing_run_keys():
    task = get_task("arith", **HAZARDS)
    assert shape([1.0, 1.0, 0.0], task, ["a", "b", "c"], [10, 17, 10], [False] * 3, 0.0, 0.0, 64,
                 length_penalty=0.01) == pytest.approx([0.9, 0.83, -0.1])
    plain = {"model": "k", "task": "arith", "task_args": {"digits": 1}}
    assert "length_penalty" not in KINDS["rl"].resolve(plain)  # at its default: an existing rl job keeps its key
    assert KINDS["rl"].resolve(plain | {"length_penalty": 0.01})["length_penalty"] == 0.01
    assert "length_penalty" not in RLConfig(task="arith").identity()
