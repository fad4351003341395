"""`datawall synth generate`: real teachers (a trained checkpoint, a transformers model, a scripted HTTP endpoint)
write solutions; filters, dedup, costs, resumption, the problems after the first U, and one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_run import run, run_json
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from local_server import running
from tiny_arith import TASK, one_thread, trained_policy
from typer.testing import CliRunner

from datawall.cli import app
from datawall.data import Tokenizer, task_docs
from datawall.errors import DatawallError
from datawall.synth.dedup import duplicates, jaccard, shingles
from datawall.synth.diversity import answer_entropy, distinct_n, diversity, minhash_similarity
from datawall.synth.filters import Draw, answer_key, choose, rank
from datawall.synth.generate import DROP_REASONS

ARITH = ("--task", "arith", "--task-args", "digits=2")
PROBLEMS = {p.prompt: p for p in TASK.problems("train", 400)}  # what the scripted endpoint can answer
ROW_KEYS = {"problem", "prompt", "solution", "answer", "correct", "kept", "dropped", "samples", "agreement", "score"}
RESULT_KEYS = {"generated", "kept", "kept_precision", "flops", "dollars", "flops_per_kept", "diversity", "teacher",
               "strategy", "filter", "dropped", "cost", "sampling", "start", "problems", "task", "seed"}




def rows_of(out) -> list[dict]:
    return [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]


def right(p) -> str:
    return TASK.solution(p)


def wrong(p, by: int = 1) -> str:
    return f"..\n..\n#### {int(p.answer) + by}"


class Teacher:
    """An OpenAI-compatible endpoint whose choice j for problem p is `script(p, j)`; it keeps every request and
    answers 503 once `fail_after` requests have been served."""

    def __init__(self, script, fail_after: int | None = None):
        self.script, self.fail_after = script, fail_after
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/completions")(self.answer)
        self.app.post("/v1/chat/completions")(self.answer)

    async def answer(self, request: Request):
        body = await request.json()
        if self.fail_after is not None and len(self.bodies) >= self.fail_after:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        self.bodies.append(body)
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        p = PROBLEMS[text.rsplit("\n\n", 1)[-1]]  # the asked problem comes last, after any few-shot examples
        texts = [self.script(p, j) for j in range(body["n"])]
        choices = [{"index": j, "finish_reason": "stop",
                    **({"message": {"role": "assistant", "content": t}} if "messages" in body else {"text": t})}
                   for j, t in enumerate(texts)]
        out = sum(map(len, texts))
        return {"choices": choices, "usage": {"prompt_tokens": len(text), "completion_tokens": out,
                                              "total_tokens": len(text) + out}}


def endpoint(port: int) -> tuple[str, ...]:
    return ("--endpoint", f"http://127.0.0.1:{port}/v1", "--api-model", "teacher", "--retries", "0")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """The tiny trained 2-digit-addition model: often wrong, sometimes right."""
    with one_thread():
        yield trained_policy(tmp_path_factory.getbasetemp(), steps=800)


# --- the filters, dedup and diversity on their own ---------------------------------------------------------

def d(answer, correct=False, score=None, text=None) -> Draw:
    return Draw(text or f"#### {answer}", answer, correct, score)


def test_majority_ranks_the_most_common_answer_first_and_answers_compare_by_value():
    draws = [d("7"), d("85", True), d("85.0", True), d(None), d("+85", True), d("7")]
    assert answer_key("85.0") == answer_key("+85") == answer_key("85") and answer_key(" a  b ") == "a b"
    assert rank(draws, "majority") == [1, 2, 4, 0, 5, 3]
    c = choose(draws, "majority", "none")
    assert (c.index, c.kept, c.agreement) == (1, True, 0.5)
    # the consensus filter needs no verifier, and a tie at the top is no consensus
    assert choose(draws, "majority", "majority").kept
    assert choose(draws, "majority", "majority", min_agreement=0.6).dropped == "no_consensus"
    assert choose([d("1"), d("2")], "majority", "majority").dropped == "no_consensus"
    assert choose([d(None), d(None)], "majority", "majority").dropped == "no_answer"


def test_verifier_rejection_keeps_the_next_ranked_right_sample_and_names_why_it_drops():
    draws = [d("7"), d("7"), d("85", True)]
    c = choose(draws, "majority", "verifier")
    assert (c.top, c.index, c.kept, c.dropped, c.agreement) == (0, 2, True, None, pytest.approx(1 / 3))
    assert choose([d("7"), d("7")], "majority", "verifier").dropped == "wrong"
    assert choose([d(None)], "sample", "verifier").dropped == "no_answer"
    # best-of ranks by score; the ORM filter keeps the first ranked sample at or above the threshold
    scored = [d("1", score=0.2), d("2", score=0.9), d("3", score=0.6)]
    assert rank(scored, "best-of") == [1, 2, 0]
    assert choose(scored, "best-of", "orm", orm_threshold=0.9).index == 1
    assert choose(scored, "sample", "orm", orm_threshold=0.5).index == 1  # in drawing order
    assert choose(scored, "best-of", "orm", orm_threshold=0.95).dropped == "below_threshold"


def test_duplicates_are_exact_then_near_by_jaccard_and_the_first_stays():
    long = "First add the units, carry the ten, then add the tens and the carry to get the sum. "
    texts = [long + "#### 85", "x  y\n", long + "#### 86", "x y", "something else entirely #### 3", long + "#### 85"]
    assert jaccard(shingles(texts[0]), shingles(texts[2])) >= 0.9
    assert duplicates(texts, 0.9) == [None, None, "near_duplicate", "duplicate", None, "duplicate"]
    assert duplicates(texts[:3], 1.0) == [None, None, None]  # only identical shingle sets at threshold 1


def test_diversity_numbers_on_known_texts():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a"], 2) is None
    assert answer_entropy(["1", "1.0", "2", "2", None]) == pytest.approx(1.0)
    assert answer_entropy([None]) is None
    pairwise, nearest, n = minhash_similarity(["the same text here"] * 3)
    assert (pairwise, nearest, n) == (1.0, 1.0, 3)
    pairwise, nearest, _ = minhash_similarity(["the same text here", "the same text here", "zzzzzzqqqqqq"])
    assert pairwise == pytest.approx(1 / 3, abs=0.05) and nearest == pytest.approx(2 / 3, abs=0.05)
    assert set(diversity(["a"], ["1"])) >= {"distinct_1", "distinct_4", "answer_entropy", "minhash_mean_pairwise",
                                            "minhash_self_similarity"}


# --- real runs ---------------------------------------------------------------------------------------------

def test_trained_teacher_verifier_keeps_only_right_ones_none_keeps_its_errors(policy, tmp_path):
    base = ("synth", "generate", "--model", str(policy), *ARITH, "--problems", "40", "--start", "2000",
            "--strategy", "majority@4", "--cache", str(tmp_path / "cache.sqlite"))
    verified = run_json(*base, "--filter", "verifier", "--out", str(tmp_path / "verified"))
    unfiltered = run_json(*base, "--filter", "none", "--out", str(tmp_path / "none"))
    v_rows, n_rows = rows_of(tmp_path / "verified"), rows_of(tmp_path / "none")
    assert verified["kept"] >= 1 and verified["kept_precision"] == 1.0
    assert all(r["correct"] for r in v_rows if r["kept"]) and {r["dropped"] for r in v_rows if not r["kept"]} <= {
        "wrong", "no_answer"}
    # no filter: every problem kept, the teacher's errors too, and the verifier's truth still reported
    assert unfiltered["kept"] == 40 and unfiltered["kept_precision"] == unfiltered["teacher_accuracy"] < 1.0
    assert verified["teacher_accuracy"] == unfiltered["teacher_accuracy"]  # the filter changes what is kept, not it
    assert verified["kept"] >= sum(r["correct"] for r in n_rows)  # rejection also finds right minority samples
    assert unfiltered["kept_precision"] == sum(r["correct"] for r in n_rows) / 40
    # the same samples (a shared cache): the second run drew none, and was charged the same generation cost
    assert verified["sampling"] == {"drawn": 160, "from_cache": 0}
    assert unfiltered["sampling"] == {"drawn": 0, "from_cache": 160}
    assert unfiltered["flops"] == verified["flops"] > 0 and verified["flops_per_kept"] == pytest.approx(
        verified["flops"] / verified["kept"])
    assert [r["problem"] for r in v_rows] == list(range(2000, 2040)) and all(r["samples"] == 4 for r in v_rows)
    assert all(set(r) == ROW_KEYS and r["prompt"] == TASK.problem("train", r["problem"]).prompt for r in v_rows)
    assert verified["teacher"]["backend"] == "local" and verified["strategy"] == "majority@4"
    assert RESULT_KEYS <= set(verified) and set(verified["dropped"]) == set(DROP_REASONS)
    assert json.loads((tmp_path / "verified" / "result.json").read_text()) == verified
    assert (tmp_path / "verified" / "DONE").exists() and json.loads(
        (tmp_path / "verified" / "config.json").read_text())["settings"]["filter"] == "verifier"
    div = verified["diversity"]
    assert div["synthetic"]["texts"] == div["human"]["texts"] == verified["kept"]  # compared at the same size
    assert 0 < div["human"]["distinct_1"] <= 1 and "of the 2,000 real train problems" in div["human_source"]
    assert unfiltered["diversity"]["human"]["answer_entropy"] > 4  # 40 sums of two 2-digit numbers


def test_problems_start_after_the_first_u_real_tokens(tmp_path):
    teacher = Teacher(lambda p, j: right(p))
    with running(teacher.app) as port:
        res = run_json("synth", "generate", *endpoint(port), *ARITH, "--problems", "5", "--skip-unique-tokens",
                       "1k", "--strategy", "greedy", "--out", str(tmp_path / "o"))
    docs = task_docs(TASK, Tokenizer.for_chars(TASK.alphabet), "train", unique_tokens=1000)
    assert sum(map(len, docs)) >= 1000 > sum(map(len, docs[:-1]))
    assert res["start"] == res["first_problem"] == len(docs) and res["skip_unique_tokens"] == 1000
    assert [r["problem"] for r in rows_of(tmp_path / "o")] == list(range(len(docs), len(docs) + 5))
    real = {TASK.problem("train", i).prompt for i in range(len(docs))}
    assert not real & {b["prompt"] for b in teacher.bodies}
    assert res["diversity"]["human"]["texts"] == 5 and res["kept_precision"] == 1.0
    assert f"5 of the {len(docs):,} real train problems" in res["diversity"]["human_source"]


def test_filter_none_reports_the_teachers_errors_and_costs_from_its_usage(tmp_path):
    teacher = Teacher(lambda p, j: wrong(p) if p.index % 3 == 0 else right(p))
    with running(teacher.app) as port:
        args = ("synth", "generate", *endpoint(port), *ARITH, "--problems", "12", "--strategy", "sample",
                "--api-params", "1e6", "--cache", str(tmp_path / "c.sqlite"))
        none = run_json(*args, "--filter", "none", "--out", str(tmp_path / "none"))
        verifier = run_json(*args, "--filter", "verifier", "--out", str(tmp_path / "verifier"))
    assert (none["kept"], none["kept_precision"]) == (12, pytest.approx(8 / 12))
    assert (verifier["kept"], verifier["kept_precision"], verifier["dropped"]["wrong"]) == (8, 1.0, 4)
    assert len(teacher.bodies) == 12  # the second run read every sample from the shared cache
    # 2 N per prompt token once, then 2 N per completion token after the first (read off the prefill)
    want = sum(2e6 * (len(p.prompt) + len(right(p) if p.index % 3 else wrong(p)) - 1)
               for p in TASK.problems("train", 12))
    assert none["flops"] == pytest.approx(want) and none["dollars"] == pytest.approx(want / 5e10 / 3600 * 0.09)
    assert verifier["flops_per_kept"] == pytest.approx(want / 8)


def test_majority_consensus_keeps_agreed_answers_without_a_verifier(tmp_path):
    def script(p, j):
        if p.index % 3 == 0:
            return right(p) if j < 3 else wrong(p)  # 3 of 4 right
        if p.index % 3 == 1:
            return right(p) if j < 2 else wrong(p)  # a tie: no consensus
        return wrong(p, 2) if j < 3 else right(p)  # 3 of 4 agree on a wrong answer: kept, wrong
    teacher = Teacher(script)
    with running(teacher.app) as port:
        args = ("synth", "generate", *endpoint(port), *ARITH, "--problems", "9", "--strategy", "majority@4",
                "--filter", "majority", "--cache", str(tmp_path / "c.sqlite"))
        res = run_json(*args, "--out", str(tmp_path / "m"))
    rows = {r["problem"]: r for r in rows_of(tmp_path / "m")}
    assert [rows[i]["kept"] for i in range(9)] == [True, False, True] * 3
    assert {rows[i]["dropped"] for i in (1, 4, 7)} == {"no_consensus"}
    assert all(rows[i]["correct"] and rows[i]["agreement"] == 0.75 for i in (0, 3, 6))
    assert not any(rows[i]["correct"] for i in (2, 5, 8))
    assert (res["kept"], res["kept_precision"], res["dropped"]["no_consensus"]) == (6, 0.5, 3)


def test_min_agreement_that_nothing_meets_is_a_failure_with_the_rows_written(tmp_path):
    teacher = Teacher(lambda p, j: right(p) if j < 3 else wrong(p))
    with running(teacher.app) as port:
        result = run("synth", "generate", *endpoint(port), *ARITH, "--problems", "4", "--strategy", "majority@4",
                     "--filter", "majority", "--min-agreement", "0.8", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, DatawallError), result.output
    assert "kept none of the 4 solutions (dropped: no_consensus 4)" in str(result.exception)
    assert [r["dropped"] for r in rows_of(tmp_path / "o")] == ["no_consensus"] * 4
    assert json.loads((tmp_path / "o" / "result.json").read_text())["kept"] == 0
    assert not (tmp_path / "o" / "DONE").exists()


def test_exact_and_near_duplicates_are_dropped_with_their_reasons(tmp_path):
    long = ("To add two numbers we first add their units digits and write down the units of that sum; when the sum "
            "reaches ten we carry one to the next column. Then we add the tens digits together with any carry, and "
            "the digits we wrote, read from the left, give the total. Checking: subtracting one addend from the "
            "total must give back the other addend. ")

    def script(p, j):
        if p.index % 3 == 0:
            return "#### 7"  # the same text for different problems
        if p.index % 3 == 1:
            return long + f"#### {p.answer}"  # a template: only the answer changes
        return f"{p.prompt} means {p.answer}\n#### {p.answer}"
    teacher = Teacher(script)
    with running(teacher.app) as port:
        args = ("synth", "generate", *endpoint(port), *ARITH, "--problems", "9", "--strategy", "greedy",
                "--filter", "none", "--cache", str(tmp_path / "c.sqlite"))
        by_solution = run_json(*args, "--dedup-on", "solution", "--out", str(tmp_path / "s"))
        by_example = run_json(*args, "--out", str(tmp_path / "e"))
        none = run_json(*args, "--no-dedup", "--out", str(tmp_path / "n"))
    rows = rows_of(tmp_path / "s")
    assert [r["dropped"] for r in rows] == [None, None, None, "duplicate", "near_duplicate", None,
                                            "duplicate", "near_duplicate", None]
    assert (by_solution["kept"], by_solution["dropped"]["duplicate"], by_solution["dropped"]["near_duplicate"]) == (
        5, 2, 2)
    # as whole examples (prompt + solution) "#### 7" after different prompts is no duplicate; the template still is
    assert [r["dropped"] for r in rows_of(tmp_path / "e")] == [None, None, None, None, "near_duplicate", None,
                                                              None, "near_duplicate", None]
    assert (by_example["kept"], none["kept"]) == (7, 9)


def test_a_killed_run_resumes_without_redrawing_and_a_done_run_is_read_back(tmp_path):
    out = tmp_path / "o"
    teacher = Teacher(lambda p, j: right(p), fail_after=20)  # dies in the second batch of 16 problems
    with running(teacher.app) as port:
        args = ("synth", "generate", *endpoint(port), *ARITH, "--problems", "40", "--strategy", "majority@2",
                "--filter", "none", "--concurrency", "1", "--out", str(out))
        killed = run(*args)
        assert isinstance(killed.exception, DatawallError) and "HTTP 503" in str(killed.exception)
        assert not (out / "DONE").exists() and not (out / "synthetic.jsonl").exists()
        teacher.fail_after = None
        res = run_json(*args)
        assert res["sampling"] == {"drawn": 48, "from_cache": 32} and len(teacher.bodies) == 20 + 24
        back = run_json(*args)
        assert back == res and len(teacher.bodies) == 44  # DONE: read back, nothing asked
    assert res["kept"] == 40 and (out / "DONE").exists()


def test_other_settings_in_the_same_out_are_refused(tmp_path):
    teacher = Teacher(lambda p, j: right(p))
    with running(teacher.app) as port:
        base = ("synth", "generate", *endpoint(port), *ARITH, "--problems", "3", "--out", str(tmp_path / "o"))
        run_json(*base)
        result = run(*base, "--filter", "none")
    assert isinstance(result.exception, DatawallError)
    assert "holds a run with other settings (settings.filter: 'verifier', now 'none')" in str(result.exception)


def test_chat_and_fewshot_reach_the_teacher_but_rows_hold_the_plain_prompt(tmp_path):
    teacher = Teacher(lambda p, j: right(p))
    with running(teacher.app) as port:
        res = run_json("synth", "generate", *endpoint(port), *ARITH, "--problems", "3", "--start", "300",
                       "--chat", "--fewshot", "2", "--out", str(tmp_path / "o"))
    assert res["kept"] == 3 and all([m["role"] for m in b["messages"]] == ["user", "assistant"] * 2 + ["user"]
                                    for b in teacher.bodies)
    assert [r["prompt"] for r in rows_of(tmp_path / "o")] == [p.prompt for p in TASK.problems("train", 3, 300)]


def test_an_hf_teacher_writes_rows(tmp_path):
    pytest.importorskip("transformers")
    from hf_llama import random_llama

    path = random_llama(tmp_path / "hf")
    res = run_json("synth", "generate", "--hf", str(path), *ARITH, "--problems", "3", "--strategy", "greedy",
                   "--filter", "none", "--max-tokens", "6", "--out", str(tmp_path / "o"))
    assert res["teacher"]["backend"] == "hf" and res["generated"] == res["kept"] == 3 and res["flops"] > 0


def test_best_of_k_with_a_reward_model_and_the_orm_threshold(policy, tmp_path):
    from datawall.model.reward_head import RewardModel
    from datawall.rewards.scorers import RewardScorer

    rm = RewardModel.from_policy(policy, "orm")
    torch.manual_seed(0)
    with torch.no_grad():
        rm.head.weight.normal_(0, 1.0)  # a random judge: scores that differ from sample to sample
    orm = rm.save(tmp_path / "orm")
    base = ("synth", "generate", "--model", str(policy), *ARITH, "--problems", "12", "--start", "2000",
            "--strategy", "best-of-4", "--orm", str(orm), "--no-dedup", "--cache", str(tmp_path / "c.sqlite"))
    best = run_json(*base, "--filter", "none", "--out", str(tmp_path / "best"))
    rows = rows_of(tmp_path / "best")
    scorer = RewardScorer(orm)
    for r in rows:
        assert r["score"] == pytest.approx(scorer(TASK.problem("train", r["problem"]), [r["solution"]])[0], abs=1e-5)
    threshold = sorted(r["score"] for r in rows)[6]
    kept = run_json(*base, "--filter", "orm", "--orm-threshold", str(threshold), "--out", str(tmp_path / "t"))
    t_rows = rows_of(tmp_path / "t")
    assert all(r["score"] >= threshold for r in t_rows if r["kept"])
    assert {r["dropped"] for r in t_rows if not r["kept"]} <= {"below_threshold"}
    assert kept["kept"] == sum(r["score"] >= threshold for r in rows) >= 6  # best-of ranks the top score first
    c = best["cost"]
    assert c["scoring_flops"] > 0 and best["flops"] == pytest.approx(c["generation_flops"] + c["scoring_flops"])
    assert best["reward_model"]["kind"] == "orm" and best["orm"] == str(orm.resolve())
    assert math.isfinite(best["dollars"]) and c["scoring_dollars_included"]


@pytest.mark.parametrize("args, message", [
    (("--strategy", "majority@x"), "--strategy: 'majority@x' is not a strategy; give greedy, sample, majority@K"),
    (("--strategy", "majority@1"), "majority needs K >= 2 samples"),
    (("--strategy", "best-of-4"), "--strategy best-of-4 needs --orm DIR"),
    (("--filter", "orm"), "--filter 'orm' needs --orm DIR"),
    (("--filter", "majority", "--strategy", "greedy"), "--filter 'majority' needs K >= 2 samples"),
    (("--min-agreement", "0.5"), "--min-agreement goes with --filter 'majority'"),
    (("--start", "3", "--skip-unique-tokens", "1k"), "give --start or --skip-unique-tokens, not both"),
    (("--strategy", "majority@4", "--temperature", "0"), "draws 4 identical samples"),
    (("--orm", "/nowhere"), "--orm goes with --strategy best-of-K or --filter 'orm'"),
    (("--filter", "best"), "--filter: Input should be 'none', 'verifier', 'majority' or 'orm'"),
    (("--skip-unique-tokens", "lots"), "--skip-unique-tokens: cannot read 'lots' as a count"),
])
def test_bad_settings_are_one_line(tmp_path, args, message):
    result = run("synth", "generate", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", *ARITH,
                 "--out", str(tmp_path / "o"), *args)
    assert isinstance(result.exception, DatawallError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_teachers_that_cannot_be_loaded_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(("--model", str(tmp_path / "missing")), "no such model directory"),
             (("--model", str(tmp_path / "empty")), str(tmp_path / "empty")),
             (("--hf", str(tmp_path / "empty")), "not a Hugging Face model directory"),
             (("--model", str(tmp_path / "empty"), "--hf", str(tmp_path / "empty")), "give exactly one of"),
             (("--endpoint", "ftp://x", "--api-model", "m"), "expected an http(s) URL")]
    for args, message in cases:
        result = run("synth", "generate", *args, *ARITH, "--out", str(tmp_path / "o"))
        assert isinstance(result.exception, DatawallError), (args, result.output)
        assert message in str(result.exception), args
    result = run("synth", "generate", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", *ARITH,
                 "--retries", "0", "--problems", "2", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, DatawallError) and "127.0.0.1:9" in str(result.exception)
    assert not (tmp_path / "o" / "DONE").exists()


def test_more_problems_than_the_split_has_is_one_line(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": i, "split": "train"}) + "\n" for i in range(3))
                    + json.dumps({"question": "t", "answer": 1, "split": "test"}) + "\n")
    result = run("synth", "generate", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", "--task",
                 f"jsonl:{path}", "--problems", "5", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, DatawallError) and "--problems 5 from train problem 0" in str(result.exception)
    result = run("synth", "generate", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", "--task",
                 f"jsonl:{path}", "--skip-unique-tokens", "1M", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, DatawallError) and "--skip-unique-tokens 1,000,000" in str(result.exception)


def test_synth_help_names_its_commands():
    result = CliRunner().invoke(app, ["synth", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "generate" in result.stdout
    text = " ".join(result.stdout.split())
    assert all(word in text for word in ("(generate)", "(compare)", "(iterate)", "(collapse)"))
    commands = text.split("Commands", 1)[1]
    assert all(f" {name} " in commands for name in ("generate", "compare", "iterate", "collapse"))
