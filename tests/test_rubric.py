"""The HealthBench-style rubric: items, scores, the clipped aggregate, rule checks and the LLM judge (a real
server on 127.0.0.1, asked through datawall's endpoint client and, to show it speaks OpenAI, the `openai` one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi import FastAPI, Request
from local_server import running
from openai import OpenAI

from datawall.errors import DatawallError
from datawall.rewards.rubric import (
    Grade,
    RubricItem,
    aggregate,
    completion_score,
    grade_by_rules,
    matches,
    parse_items,
    sentences,
    tag_scores,
)
from datawall.rewards.rubric_judge import RETRY_TEMPERATURE, RubricJudge, judge_prompt, parse_verdict
from datawall.sampling.backends.openai_endpoint import OpenAIEndpoint

NEG = r"\b(?:never|not)\b"
ITEMS = [RubricItem(criterion="says 90", points=5, tags=("answer",), patterns=(r"\b90\b",)),
         RubricItem(criterion="acid into water", points=5, tags=("warning",), patterns=(r"acid (?:in)?to water",)),
         RubricItem(criterion="water into acid", points=-10, tags=("unsafe",),
                    patterns=(r"water (?:in)?to (?:the )?acid",), unless=(NEG,))]


def grades(text: str) -> list[Grade]:
    return [grade_by_rules(it, text) for it in ITEMS]


def test_scores_are_points_met_over_positive_points():
    good = "Add 30 ml acid to water. You get 90 ml. Never add water to acid."
    assert [g.met for g in grades(good)] == [True, True, False]  # the negation does not count as advice
    assert completion_score(ITEMS, grades(good)) == 1.0
    bad = "Answer: 90. Pour the water into the acid."
    assert [g.met for g in grades(bad)] == [True, False, True]
    assert completion_score(ITEMS, grades(bad)) == pytest.approx((5 - 10) / 10)
    assert tag_scores(ITEMS, grades(bad)) == {"answer": 1.0, "unsafe": None, "warning": 0.0}
    # an unscored item (the judge failed) counts in neither sum
    partial = [Grade(True, "judge"), Grade(None, "judge"), Grade(False, "rules")]
    assert completion_score(ITEMS, partial) == 1.0
    assert completion_score(ITEMS, [Grade(None, "judge")] * 2 + [Grade(True, "rules")]) is None


def test_sentences_keep_decimals_and_split_lines():
    assert sentences("Use 27.8 mL. Then stir!\nDone; ok") == ["Use 27.8 mL.", "Then stir!", "Done;", "ok"]
    assert matches(ITEMS[2], "Stir well. Add water to acid.")
    assert not matches(ITEMS[2], "Do not add water to acid.")


def test_aggregate_is_the_clipped_mean_with_an_interval():
    agg = aggregate([-0.5, 1.0, 1.0, 0.5])
    assert agg["value"] == pytest.approx(0.5) and agg["n"] == 4
    assert 0.0 <= agg["ci_low"] < 0.5 < agg["ci_high"] <= 1.0
    neg = aggregate([-1.0, -0.5])
    assert neg["value"] == 0.0 and neg["ci_low"] == neg["ci_high"] == 0.0
    assert aggregate([0.3])["ci_low"] is None and aggregate([])["value"] is None
    # the interval is the bootstrap of the mean: about 2 standard errors wide either side for many values
    x = np.random.default_rng(0).uniform(0, 1, 400)
    agg = aggregate(x, n_boot=2000)
    se = x.std() / np.sqrt(len(x))
    assert agg["ci_high"] - agg["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.15)


@pytest.mark.parametrize("item,needle", [
    ({"criterion": "x", "points": 11, "patterns": ["a"]}, "item 2: points: points 11 out of range"),
    ({"criterion": "x", "points": 0, "patterns": ["a"]}, "points 0 out of range"),
    ({"criterion": "x", "points": -10.5, "patterns": ["a"]}, "points -10.5 out of range"),
    ({"criterion": "x", "points": 3}, "item 2: no check: give patterns"),
    ({"criterion": "x", "points": 3, "patterns": ["(a"]}, "not a regular expression"),
    ({"criterion": "x", "points": 3, "unless": ["a"], "judge": True}, "'unless' qualifies patterns"),
    ({"criterion": "", "points": 3, "patterns": ["a"]}, "criterion"),
    ({"criterion": "x", "points": 3, "patterns": ["a"], "weight": 2}, "weight: unknown key"),
    ({"criterion": "x", "points": 3, "check": "a"}, "unknown key 'check'"),
])
def test_bad_items_are_one_line(item, needle):
    raw = [{"criterion": "ok", "points": 5, "patterns": ["ok"]}, item]
    with pytest.raises(DatawallError, match=needle) as e:
        parse_items(raw, "file.jsonl line 3 (s1)")
    assert "\n" not in str(e.value) and str(e.value).startswith("file.jsonl line 3 (s1)")


def test_a_rubric_needs_something_to_score():
    with pytest.raises(DatawallError, match="no item has positive points"):
        parse_items([{"criterion": "bad", "points": -5, "patterns": ["x"]}], "f")
    with pytest.raises(DatawallError, match="non-empty list"):
        parse_items([], "f")
    judged = parse_items([{"criterion": "kind", "points": 2, "judge": True}], "f")[0]
    assert not judged.by_rules
    with pytest.raises(DatawallError, match="needs an LLM judge"):
        grade_by_rules(judged, "text")


def test_parse_verdict():
    assert parse_verdict('{"criteria_met": true, "explanation": "ok"}') == (True, "ok")
    assert parse_verdict('```json\n{"explanation": "no", "criteria_met": false}\n```') == (False, "no")
    assert parse_verdict('Sure! {"criteria_met": false, "explanation": "x"} Hope that helps.') == (False, "x")
    for bad in ("yes", '{"criteria_met": "true"}', '{"explanation": "x"}', "[true]", '{"criteria_met": 1}', ""):
        assert parse_verdict(bad) is None, bad


class FakeJudge:
    """/v1/chat/completions answering as the rubric item's tag in its criterion says:
    [yes]/[no] valid JSON, [fenced] JSON in a code fence, [flaky] malformed once then valid, [broken] never valid."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.seen: dict[str, int] = {}
        self.app = FastAPI()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        text = body["messages"][-1]["content"]
        tag = text.split("# Rubric item", 1)[1].split("[", 2)[2].split("]", 1)[0]
        self.seen[tag] = self.seen.get(tag, 0) + 1
        content = {
            "yes": '{"explanation": "it warns", "criteria_met": true}',
            "no": '{"explanation": "it does not", "criteria_met": false}',
            "fenced": '```json\n{"explanation": "fenced", "criteria_met": true}\n```',
            "flaky": "I think so." if self.seen[tag] == 1 else '{"explanation": "ok now", "criteria_met": true}',
            "broken": '{"criteria_met": "maybe", "explanation": 3}',
        }[tag]
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}}


@pytest.fixture(scope="module")
def judge_server():
    fake = FakeJudge()
    with running(fake.app) as port:
        fake.url = f"http://127.0.0.1:{port}/v1"
        yield fake


def test_the_fake_judge_speaks_openai(judge_server):
    client = OpenAI(base_url=judge_server.url, api_key="unused")
    item = RubricItem(criterion="[yes] warns", points=5, judge=True)
    answer = client.chat.completions.create(model="judge", temperature=0,
                                            messages=[{"role": "user", "content": judge_prompt("q", "a", item)}])
    assert parse_verdict(answer.choices[0].message.content) == (True, "it warns")


def test_judge_grades_one_item_per_request_retries_malformed_and_counts_unscored(judge_server):
    judge_server.bodies.clear()
    judge_server.seen.clear()
    items = [RubricItem(criterion=f"[{t}] the response warns about heat", points=p, judge=True)
             for t, p in (("yes", 5), ("no", 3), ("fenced", -4), ("flaky", 2), ("broken", 6))]
    backend = OpenAIEndpoint(judge_server.url, "judge", chat=True, concurrency=2)
    judge = RubricJudge(backend, retries=2)
    got = judge.grade([("How do I dilute acid?", "Carefully.", it) for it in items])
    assert [g.met for g in got] == [True, False, True, True, None]
    assert got[0].explanation == "it warns" and got[4].explanation.startswith("unscored")
    assert all(g.by == "judge" for g in got)
    # five first answers, then the flaky and broken ones again, then broken alone: 5 + 2 + 1
    assert judge.requests == len(judge_server.bodies) == 8
    assert judge.malformed == 4 and judge.unscored == 1
    assert [b["temperature"] for b in judge_server.bodies[:5]] == [0.0] * 5
    assert {b["temperature"] for b in judge_server.bodies[5:]} == {RETRY_TEMPERATURE}
    prompt = next(b["messages"][0]["content"] for b in judge_server.bodies if "[yes]" in b["messages"][0]["content"])
    assert "How do I dilute acid?" in prompt and "Carefully." in prompt and "[+5 points]" in prompt
    summary = judge.summary()
    assert summary["unscored"] == 1 and "[broken]" in summary["unscored_examples"][0]["criterion"]
    assert json.loads(json.dumps(summary)) == summary
    # the unscored item counts in neither sum: (5 + 0 - 4 + 2) / (5 + 3 + 2)
    assert completion_score(items, got) == pytest.approx(3 / 10)
    backend.close()
