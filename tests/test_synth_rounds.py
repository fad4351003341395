"""`datawall synth iterate` (STaR / ReST-EM rounds) and `datawall synth collapse` (generations of models trained on
their predecessors' samples): what each writes, FLOPs per round, what each round fine-tunes, resumption from the
finished pieces, tail classes, and one-line errors."""

from __future__ import annotations

import json

import pytest
from cli_run import run, run_json
from tiny_arith import TASK, one_thread, random_checkpoint, trained_policy

from datawall.synth.rounds import answer_class, tail_classes
from datawall.tasks import get_task

ARITH = ("--task", "arith", "--task-args", "digits=2")
SMALL = ("--tokens", "2k", "--eval-problems", "10", "--real-tokens", "2k", "--batch-size", "8", "--seq-len", "48")




def test_tail_classes_are_the_rarest_answer_lengths_up_to_the_share():
    task = get_task("arith", digits=2, min_digits=1, ops="mul")
    problems = task.problems("test", 500)
    assert answer_class("-12") == 3 and answer_class("144.0") == 3 and answer_class(None) is None
    tail = tail_classes(problems, 0.15)
    assert tail == [1, 2]  # 1- and 2-digit products: 6% and 13% of the held-out problems
    share = sum(answer_class(p.answer) in tail for p in problems) / len(problems)
    assert 0.15 <= share < 0.3
    assert tail_classes(problems, 0.01) == [1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    with one_thread():
        return trained_policy(tmp_path_factory.getbasetemp(), steps=200)


def test_iterate_rounds_report_accuracy_and_flops_and_from_base_fine_tunes_the_base(base, tmp_path):
    out = tmp_path / "rest"
    with one_thread():
        r = run_json("synth", "iterate", "--model", str(base), *ARITH, "--rounds", "2", "--problems", "12",
                     "--strategy", "sample", "--filter", "none", *SMALL, "--out", str(out))
    rows = r["rounds"]
    assert [x["round"] for x in rows] == [0, 1, 2] and r["complete"] and r["start_from"] == "base"
    for x in rows[1:]:
        assert x["kept"] == 12 and x["flops"] == pytest.approx(x["generation_flops"] + x["train_flops"])
        assert 0 <= x["accuracy"] <= 1 and x["generation_flops"] > 0
    assert rows[2]["cumulative_flops"] == pytest.approx(rows[1]["flops"] + rows[2]["flops"])
    # ReST-EM: round 2 fine-tunes the base model, on what round 1's model wrote
    round2 = json.loads((out / "round-2" / "train" / "config.json").read_text())["run"]
    assert round2["init"] == str(base.resolve())
    gen2 = json.loads((out / "round-2" / "data" / "config.json").read_text())
    assert "round-1" in gen2["teacher"]["identity"]
    # the same problems every round, new samples
    problems = [[json.loads(line)["problem"] for line in (out / f"round-{i}" / "data" / "synthetic.jsonl")
                 .read_text().splitlines()] for i in (1, 2)]
    assert problems[0] == problems[1] and min(problems[0]) > 0
    # rerun: every piece is read back
    assert run_json("synth", "iterate", "--model", str(base), *ARITH, "--rounds", "2", "--problems", "12",
                    "--strategy", "sample", "--filter", "none", *SMALL, "--out", str(out)) == r
    # another setting in the same directory is refused
    result = run("synth", "iterate", "--model", str(base), *ARITH, "--rounds", "3", "--problems", "12",
                 "--strategy", "sample", "--filter", "none", *SMALL, "--out", str(out))
    assert result.exit_code != 0 and "rounds: 2, now 3" in str(result.exception)


def test_iterate_from_last_continues_the_last_rounds_model(base, tmp_path):
    out = tmp_path / "star"
    with one_thread():
        r = run_json("synth", "iterate", "--model", str(base), *ARITH, "--rounds", "2", "--problems", "8",
                     "--strategy", "sample", "--filter", "none", "--from", "last", *SMALL, "--out", str(out))
    assert r["start_from"] == "last" and len(r["rounds"]) == 3
    round2 = json.loads((out / "round-2" / "train" / "config.json").read_text())["run"]
    assert round2["init"] == str((out / "round-1" / "train" / "checkpoint").resolve())


def test_iterate_errors_are_one_line(tmp_path):
    untrained = random_checkpoint(tmp_path / "untrained", TASK.alphabet, max_seq_len=48)
    with one_thread():
        result = run("synth", "iterate", "--model", str(untrained), *ARITH, "--rounds", "1", "--problems", "6",
                     "--strategy", "sample", "--filter", "verifier", *SMALL, "--out", str(tmp_path / "none"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "round 1:" in str(result.exception) and "kept none" in str(result.exception)
    assert not (tmp_path / "none" / "round-1" / "data" / "DONE").exists()
    for args, words in ((("--strategy", "best-of-4"), "best-of-K needs a reward model"),
                        (("--strategy", "majority@4", "--temperature", "0"), "temperature"),
                        (("--from", "middle"), "--from: give base")):
        result = run("synth", "iterate", "--model", str(untrained), *ARITH, *args, "--out", str(tmp_path / "x"))
        assert result.exit_code != 0 and words in str(result.exception), (args, result.exception)


COLLAPSE = ("--task", "arith", "--task-args", "digits=1,ops=add", "--real-examples", "30", "--tokens", "3k",
            "--generations", "2", "--samples", "20", "--seeds", "0", "--eval-problems", "15", "--seq-len", "32")


def test_collapse_writes_a_row_per_mode_seed_and_generation_and_resumes(tmp_path):
    out = tmp_path / "collapse"
    with one_thread():
        r = run_json("synth", "collapse", *COLLAPSE, "--out", str(out))
    assert {x["mode"] for x in r["runs"]} == {"replace", "accumulate", "mix"}
    assert len(r["runs"]) == 3 * 1 * 3 and r["complete"]
    for x in r["runs"]:
        assert {"mode", "seed", "generation", "heldout_loss", "accuracy", "tail_accuracy", "diversity"} <= x.keys()
        assert x["heldout_loss"] > 0 and "answer_entropy" in x["diversity"]
    zero = [x for x in r["runs"] if x["generation"] == 0]
    assert len({json.dumps({k: v for k, v in x.items() if k != "mode"}) for x in zero}) == 1  # one shared model
    by = {(x["mode"], x["generation"]): x for x in r["runs"]}
    assert by[("replace", 1)]["real_share"] == 0 and by[("mix", 1)]["real_share"] == pytest.approx(0.1, abs=0.01)
    assert by[("accumulate", 2)]["synthetic_examples"] == 40  # both generations' samples, besides the real ones
    # generation 2 of every mode learns from generation 1's samples of the same problems (the same prompts)
    for mode in ("replace", "accumulate", "mix"):
        assert (out / mode / "seed-0" / "gen-2" / "data" / "DONE").exists()
    assert (out / "collapse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "collapse.json").read_text()) == r | {"seconds": pytest.approx(r["seconds"], abs=1e9)}
    again = run_json("synth", "collapse", *COLLAPSE, "--out", str(out))
    assert again["runs"] == r["runs"]
    result = run("synth", "collapse", *COLLAPSE[:-2], "--seq-len", "40", "--out", str(out))
    assert result.exit_code != 0 and "seq_len: 32, now 40" in str(result.exception)


@pytest.mark.parametrize("args, words", [
    (("--mode", "shrink"), "--modes"),
    (("--real-frac", "1.5"), "--real-frac"),
    (("--seeds", "a,b"), "--seeds"),
    (("--generations", "4000", "--samples", "500"), "the train split has"),
])
def test_collapse_bad_flags_are_one_line(tmp_path, args, words):
    result = run("synth", "collapse", *COLLAPSE, *args, "--out", str(tmp_path / "c"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert words in str(result.exception), result.exception
    assert not (tmp_path / "c").exists()  # nothing written
