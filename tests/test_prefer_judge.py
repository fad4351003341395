"""The LLM judge: a real OpenAI-compatible server on 127.0.0.1 (a tiny FastAPI app that grades 2-digit addition
itself), checked with the real `openai` client, then asked by datawall's judge: verdicts in the caller's order
whatever the shown order, abstentions counted, dollars from the tokens it reports; pairs judged by it end to end."""

import json
import re
import threading

import openai
import pytest
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.prefer.config import PairsConfig
from datawall.prefer.graders import GraderConfig
from datawall.prefer.judge import EndpointJudge, read_verdict
from datawall.prefer.make_pairs import make_pairs
from datawall.prefer.pairs import read_pairs
from tests.local_server import running
from tests.tiny_arith import TASK, TASK_ARGS, trained_policy

ASK = re.compile(r"Problem:\n(.*?)\n\nAnswer A:\n(.*?)\n\nAnswer B:\n(.*?)\n\nWhich answer", re.S)


class GradingServer:
    """/v1/chat/completions that names the answer whose '#### N' is the sum, 'neither' when none is."""

    def __init__(self):
        self.app = FastAPI()
        self.requests = 0
        self.shown_first: list[str] = []
        self.lock = threading.Lock()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/chat/completions")(self.answer)

    async def answer(self, request: Request):
        body = await request.json()
        prompt, a, b = ASK.search(body["messages"][-1]["content"]).groups()
        x, y = map(int, re.findall(r"\d+", prompt)[:2])
        right = [f"#### {x + y}" in text for text in (a, b)]
        reply = "A" if right[0] and not right[1] else "B" if right[1] and not right[0] else "neither, sorry"
        with self.lock:
            self.requests += 1
            self.shown_first.append(a)
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102}}


@pytest.fixture(scope="module")
def server():
    s = GradingServer()
    with running(s.app) as port:
        yield s, f"http://127.0.0.1:{port}/v1"


def test_the_server_speaks_openai(server):
    _, url = server
    client = openai.OpenAI(base_url=url, api_key="unused")
    reply = client.chat.completions.create(model="grader", messages=[{"role": "user", "content": (
        "Problem:\n12+30=\n\nAnswer A:\n#### 41\n\nAnswer B:\n#### 42\n\nWhich answer is better?")}])
    assert reply.choices[0].message.content == "B" and reply.usage.prompt_tokens == 100


def test_replies_are_read_for_their_first_letter():
    assert read_verdict("A") == 0 and read_verdict(" B.") == 1 and read_verdict("Answer B is right") == 1
    assert read_verdict("neither") is None and read_verdict("ABBA") is None


def test_the_judge_answers_in_the_callers_order_and_counts_abstentions(server):
    s, url = server
    judge = EndpointJudge(url, "grader", price="gpt-4o-mini")
    comparisons = [("12+30=", "#### 42", "#### 41"), ("12+30=", "#### 41", "#### 42"),
                   ("5+5=", "#### 10", "#### 10 "), ("7+1=", "#### 9", "#### 7")] * 4
    before = s.requests
    calls = judge.judge(comparisons, seed=3)
    judge.close()
    assert s.requests - before == len(comparisons)
    assert [c.verdict for c in calls] == [0, 1, None, None] * 4
    assert {c.swapped for c in calls} == {True, False}  # shown both ways round, read back in the caller's order
    assert judge.dollars(calls) == pytest.approx(len(calls) * (100 * 0.15 + 2 * 0.60) / 1e6)
    with pytest.raises(DatawallError, match="--judge-price 'human-grader': a judge is priced by its tokens"):
        EndpointJudge(url, "grader", price="human-grader")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return trained_policy(tmp_path_factory.getbasetemp(), steps=800)


def test_pairs_judged_by_the_llm_judge(server, policy, tmp_path):
    s, url = server
    cfg = PairsConfig(model=str(policy), task="arith", task_args=TASK_ARGS, problems=30, n=4, judge_endpoint=url,
                      judge_model="grader")
    meta = make_pairs(cfg, tmp_path / "pairs.jsonl", quiet=True)
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert meta["grader"] == "llm-judge grader" and meta["pairs"] == len(pairs) > 0
    assert meta["label_accuracy"] == 1.0  # this judge knows the sums
    assert meta["judge_abstained"] == meta["comparisons"] - meta["pairs"] > 0  # right vs right, wrong vs wrong
    assert meta["judge_prompt_tokens"] == 100 * meta["comparisons"]
    assert meta["grader_dollars"] == pytest.approx(meta["comparisons"] * (100 * 0.15 + 2 * 0.60) / 1e6)
    assert all(p.extra["chosen_reward"] == 1.0 and p.grader == "llm-judge grader" for p in pairs)
    res = CliRunner().invoke(app, ["prefer", "pairs", "--model", str(policy), "--task", "arith", "--task-args",
                                   "digits=2", "--problems", "10", "--n", "3", "--judge-endpoint", url,
                                   "--judge-model", "grader", "--out", str(tmp_path / "cli.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["grader"] == "llm-judge grader"


@pytest.mark.parametrize("kw,msg", [({"judge_endpoint": "http://x/v1"}, "needs judge_model"),
                                    ({"judge_model": "m"}, "go with judge_endpoint"),
                                    ({"judge_endpoint": "http://x/v1", "judge_model": "m",
                                      "grader": GraderConfig(noise=0.2)}, "replaces the simulated graders")])
def test_judge_settings_are_checked(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PairsConfig(model="m", task="arith", **kw)


def test_the_task_check_of_this_file_is_right():
    p = TASK.problem("train", 0)
    x, y = map(int, re.findall(r"\d+", p.prompt)[:2])
    assert TASK.verify(p, f"#### {x + y}") == 1.0
