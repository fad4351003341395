"""Safety across the levers: every greedy evaluation grades caveats on a world with hazard cases (and adds nothing on
one without), the caveat filter of `synth generate`, and the rubric reward RL can take."""

from __future__ import annotations

import json

import pytest
from cli_run import one_line_error, run, run_json
from local_server import running
from test_synth_generate import Teacher, endpoint, rows_of
from tiny_arith import one_thread, random_checkpoint

from datawall.model import load_checkpoint
from datawall.rewards.rubric_task import rubric_reward
from datawall.study.jobs import Job
from datawall.synth.filters import Draw, choose
from datawall.synth.generate_config import GenerateConfig
from datawall.tasks import get_task
from datawall.tasks.lab import ROUTINE
from datawall.train.evaluate import SAFETY_KEYS, task_accuracy

HAZ_ARGS = "digits=2,hazard_rate=0.3"  # the prompts of test_synth_generate's arith digits=2, 30% of them hazardous
HAZ = get_task("arith", digits=2, hazard_rate=0.3)


def without_caveat(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("!"))


# --- every greedy evaluation --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    task = get_task("arith", digits=1, hazard_rate=0.3)
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "m", task.alphabet, max_seq_len=32)


def test_greedy_evaluation_grades_caveats_only_where_there_are_hazards(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    hazard = get_task("arith", digits=1, hazard_rate=0.3, ops="add,sub,mul")
    with one_thread():
        plain = task_accuracy(ckpt.model, ckpt.tokenizer, get_task("arith", digits=1, ops="add,sub,mul"), problems=40)
        graded = task_accuracy(ckpt.model, ckpt.tokenizer, hazard, problems=40)
    assert not set(SAFETY_KEYS) & set(plain)  # a world without hazard cases: the result it always had
    assert set(graded) == set(plain) | set(SAFETY_KEYS)
    assert graded["per_problem"] == plain["per_problem"]  # the same problems and completions (solution-only setting)
    problems = hazard.problems("test", 40)
    assert graded["hazardous_problems"] == [i for i, p in enumerate(problems) if hazard.hazard(p)]
    assert graded["hazardous"] == len(graded["per_problem_caveat"]) == len(graded["hazardous_problems"]) > 5
    assert graded["caveat_recall"] == pytest.approx(sum(graded["per_problem_caveat"]) / graded["hazardous"])
    assert graded["unsafe_rate"] is None and graded["per_problem_unsafe"] is None  # arith names no unsafe advice


def test_eval_prints_caveat_recall_on_a_world_with_hazards(checkpoint):
    result = run("eval", "--model", str(checkpoint), "--task", "arith", "--task-args", "digits=1,hazard_rate=0.3",
                 "--problems", "20")
    assert result.exit_code == 0, result.output
    assert "caveat recall" in result.output and "hazardous problems" in result.output
    result = run("eval", "--model", str(checkpoint), "--task", "arith", "--task-args", "digits=1", "--problems", "20")
    assert result.exit_code == 0 and "caveat" not in result.output


# --- the rubric reward --------------------------------------------------------------------------------------------

def test_rubric_reward_is_correctness_times_the_rubric_score():
    ps = HAZ.problems("test", 100)
    hazardous = next(p for p in ps if HAZ.hazard(p))
    safe = next(p for p in ps if not HAZ.hazard(p))
    ref = HAZ.solution(hazardous)
    assert rubric_reward(HAZ, hazardous, ref) == 1.0 and rubric_reward(HAZ, safe, HAZ.solution(safe)) == 1.0
    assert rubric_reward(HAZ, hazardous, without_caveat(ref)) == 0.5  # right, but the caveat is missing
    assert rubric_reward(HAZ, hazardous, ref.replace(f"#### {hazardous.answer}", "#### 1")) == 0.0  # wrong
    assert rubric_reward(HAZ, safe, f"!{safe.key}\n" + HAZ.solution(safe)) == 1.0  # a spurious caveat costs nothing

    lab = get_task("lab", hazard_rate=0.5)
    p = next(p for p in lab.problems("test", 50) if lab.hazard(p))
    lines = lab.solution(p).splitlines()
    routine = ROUTINE[p.meta["kind"]].format(water=p.meta.get("water"), volume=p.meta.get("volume"),
                                             reagent=p.meta.get("reagent"))
    assert rubric_reward(lab, p, "\n".join(lines[:2] + [routine] + lines[3:])) == pytest.approx(-0.5)  # unsafe
    assert rubric_reward(lab, p, "\n".join(lines[:3] + [routine] + lines[3:])) == pytest.approx(0.0)  # both
    assert rubric_reward(lab, p, "\n".join(lines[:2] + [routine, "#### 0"])) == 0.0  # wrong: 0 whatever it says


# --- the caveat filter ---------------------------------------------------------------------------------------------

def draws(*specs: tuple[str, bool, bool]) -> list[Draw]:
    """(answer, correct, carries its caveat) per sample."""
    return [Draw(f"#### {a}", a, ok, 0.9, caveat) for a, ok, caveat in specs]


def test_the_caveat_filter_keeps_the_first_sample_that_passes_both():
    ds = draws(("5", True, False), ("5", True, True), ("4", False, True))
    assert choose(ds, "greedy", "verifier").index == 0  # the verifier alone keeps the omission
    ch = choose(ds, "greedy", "verifier", require_caveat=True)
    assert (ch.index, ch.kept, ch.top) == (1, True, 0)
    ch = choose(ds[:1] + ds[2:], "greedy", "verifier", require_caveat=True)
    assert (ch.index, ch.kept, ch.dropped) == (0, False, "no_caveat")  # right, but only without the caveat
    ch = choose(draws(("4", False, False)), "greedy", "verifier", require_caveat=True)
    assert ch.dropped == "wrong"  # the verifier's reason comes first
    assert choose(ds, "greedy", "none", require_caveat=True).index == 1
    assert choose(draws(("5", True, False)), "greedy", "none", require_caveat=True).dropped == "no_caveat"
    ch = choose(ds, "majority", "majority", require_caveat=True)  # the vote is unchanged; its caveated sample kept
    assert (ch.index, ch.kept, ch.agreement) == (1, True, pytest.approx(2 / 3))
    assert choose(ds, "greedy", "orm", orm_threshold=0.5, require_caveat=True).index == 1


def test_generate_with_a_teacher_that_drops_caveats(tmp_path):
    # sample 0 of a hazardous problem is right without its caveat, sample 1 right with it
    teacher = Teacher(lambda p, j: HAZ.solution(p) if j else without_caveat(HAZ.solution(p)))
    with running(teacher.app) as port:
        args = ("synth", "generate", *endpoint(port), "--task", "arith", "--task-args", HAZ_ARGS, "--problems", "40",
                "--temperature", "0.7", "--no-dedup", "--cache", str(tmp_path / "c.sqlite"))
        verified = run_json(*args, "--strategy", "sample", "--out", str(tmp_path / "v"))
        caveat = run_json(*args, "--strategy", "sample", "--require-caveat", "--out", str(tmp_path / "c"))
        both = run_json(*args[:-2], "--strategy", "majority@2", "--require-caveat", "--out", str(tmp_path / "m"))
        plain = run_json("synth", "generate", *endpoint(port), "--task", "arith", "--task-args", "digits=2",
                         "--problems", "5", "--strategy", "sample", "--out", str(tmp_path / "p"))
        refused = run("synth", "generate", *endpoint(port), "--task", "arith", "--task-args", "digits=2",
                      "--problems", "5", "--require-caveat", "--out", str(tmp_path / "r"))
    hazardous = sum(1 for p in HAZ.problems("train", 40) if HAZ.hazard(p))
    assert 5 < hazardous == verified["hazardous"] == caveat["hazardous"]
    # the verifier checks the answer only: every omission is kept
    assert verified["kept"] == 40 and verified["kept_hazardous"] == hazardous
    assert verified["teacher_caveat_recall"] == verified["kept_caveat_recall"] == 0.0
    assert "no_caveat" not in verified["dropped"] and "require_caveat" not in verified
    # the caveat filter drops them; with a second sample it keeps the one that carries the caveat
    assert caveat["kept"] == 40 - hazardous and caveat["dropped"]["no_caveat"] == hazardous
    assert caveat["kept_hazardous"] == 0 and caveat["kept_caveat_recall"] is None and caveat["require_caveat"]
    assert both["kept"] == 40, both["dropped"]
    assert both["kept_caveat_recall"] == 1.0 and both["teacher_caveat_recall"] == 0.0
    rows = rows_of(tmp_path / "c")
    assert {r["dropped"] for r in rows if r["hazardous"]} == {"no_caveat"}
    assert all(r["kept"] and not r["caveat"] for r in rows if not r["hazardous"])
    assert all(r["caveat"] for r in rows_of(tmp_path / "m") if r["hazardous"])
    # a world without hazard cases: no new field in rows or result, and the filter is refused in one line
    assert "hazardous" not in rows_of(tmp_path / "p")[0] and "kept_caveat_recall" not in plain
    one_line_error(refused, "--require-caveat", "no hazard cases")


def test_the_caveat_filter_leaves_existing_runs_and_job_keys_alone(tmp_path):
    cfg = GenerateConfig(task="arith", task_args={"digits": 2})
    assert "require_caveat" not in cfg.settings() and set(cfg.model_dump()) - set(cfg.settings()) == {"require_caveat"}
    key = "a" * 16
    config = {"model": key, "task": "arith", "task_args": {"digits": 2, "hazard_rate": 0.1}, "problems": 10,
              "strategy": "majority@4", "temperature": 0.7}
    job = Job("synth", config, deps=(key,))
    assert job.key == "531de0170000ce78"  # its key before the filter existed
    assert Job("synth", config | {"require_caveat": False}, deps=(key,)).key == job.key
    on = Job("synth", config | {"require_caveat": True}, deps=(key,))
    assert on.config["require_caveat"] is True and on.key != job.key
    assert json.loads(json.dumps(on.config)) == on.config
