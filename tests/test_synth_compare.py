"""`datawall synth compare`: error agreement, KL(student || teacher) and exceeding the teacher, on hand-made answers
and on real checkpoints (a model against itself, against another, against one with another vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_run import run, run_json
from tiny_arith import TASK, one_thread, random_checkpoint, trained_policy

from datawall.synth.compare import Answer, bootstrap_ratio, resemblance

ARITH = ("--task", "arith", "--task-args", "digits=2")




def a(answer: str | None, correct: bool) -> Answer:
    return Answer(f"#### {answer}", answer, correct)


def test_resemblance_counts_copied_errors_by_value_and_exceeding_the_teacher():
    student = [a("5", True), a("7", False), a("8.0", False), a(None, False), a("3", True), a("9", False)]
    teacher = [a("5", True), a("7", False), a("8", False), a(None, False), a("2", False), a("4", True)]
    r = resemblance(student, teacher)
    # copied: problems 1 and 2 (8.0 == 8 by value); 3 has no answer; 5 is wrong where the teacher is right
    assert r["copied_errors"] == 2 and r["student_errors"] == 4 and r["teacher_errors"] == 4
    assert r["error_agreement"] == pytest.approx(2 / 6) and r["error_agreement_of_errors"] == pytest.approx(2 / 4)
    assert r["exceeds_teacher"] == pytest.approx(1 / 6) and r["trails_teacher"] == pytest.approx(1 / 6)
    assert r["student_accuracy"] == pytest.approx(2 / 6) and r["answer_agreement"] == pytest.approx(3 / 6)
    lo, hi = r["error_agreement_ci"]
    assert lo < 2 / 6 < hi and 0 <= lo and hi <= 1
    # a student with no errors has no share of errors to report
    none = resemblance([a("5", True)], [a("6", False)])
    assert none["error_agreement_of_errors"] is None and none["exceeds_teacher"] == 1.0


def test_bootstrap_interval_holds_the_ratio_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    num, den = rng.exponential(1.0, 400), rng.integers(5, 15, 400).astype(float)
    lo, hi = bootstrap_ratio(num, den)
    assert lo < num.sum() / den.sum() < hi
    lo4, hi4 = bootstrap_ratio(np.tile(num, 4), np.tile(den, 4))
    assert hi4 - lo4 < (hi - lo) * 0.7


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A weak trained policy (answers in the right format, mostly wrong), and an untrained model."""
    with one_thread():
        weak = trained_policy(tmp_path_factory.getbasetemp(), steps=200)
    other = random_checkpoint(tmp_path_factory.mktemp("cmp") / "random", TASK.alphabet, max_seq_len=48)
    return weak, other


@pytest.mark.learned  # the 200-step policy states answers, most of them wrong
def test_a_model_compared_with_itself_copies_every_error_and_has_zero_kl(models, tmp_path):
    weak, _ = models
    with one_thread():
        r = run_json("synth", "compare", str(weak), str(weak), *ARITH, "--problems", "40", "--out",
                     str(tmp_path / "self.json"))
    answered_wrong = r["copied_errors"]
    assert r["student_accuracy"] == r["teacher_accuracy"] and r["exceeds_teacher"] == 0 == r["trails_teacher"]
    assert r["student_errors"] > 0 and answered_wrong > 0
    # every wrong answer it states is its teacher's (only errors without an answer are not copies)
    rows = [json.loads(line) for line in (tmp_path / "self.json.problems.jsonl").read_text().splitlines()]
    assert answered_wrong == sum(1 for x in rows if not x["student_correct"] and x["student"] is not None)
    assert r["kl"] == pytest.approx(0.0, abs=1e-6) and r["kl_tokens"] > 0
    assert json.loads((tmp_path / "self.json").read_text()) == r and len(rows) == 40


def test_two_different_models_have_positive_kl_and_other_vocabularies_have_none(models, tmp_path):
    weak, untrained = models
    with one_thread():
        r = run_json("synth", "compare", str(weak), str(untrained), *ARITH, "--problems", "20")
    assert r["kl"] > 0.1 and r["kl_ci"][0] < r["kl"] < r["kl_ci"][1]
    assert r["error_agreement"] == 0  # the untrained model states no answer to copy
    foreign = random_checkpoint(tmp_path / "foreign", TASK.alphabet + "xyz", max_seq_len=48)
    with one_thread():
        r = run_json("synth", "compare", str(weak), str(foreign), *ARITH, "--problems", "10")
    assert r["kl"] is None and "different tokenizers" in r["kl_note"]


def test_a_teacher_that_cannot_be_loaded_is_one_line(models, tmp_path):
    weak, _ = models
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    for teacher, words in ((tmp_path / "missing", "no such model directory"), (broken, "config.json")):
        result = run("synth", "compare", str(weak), str(teacher), *ARITH)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert words in str(result.exception), result.exception
    result = run("synth", "compare", str(weak), str(weak), *ARITH, "--problems", "0")
    assert result.exit_code != 0 and "--problems must be positive" in str(result.exception)
