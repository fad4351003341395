"""Budget forcing (s1): thinking is cut at exactly B tokens, the answer marker is forced on a fresh line and the
answer decoded greedily; with a large budget it reproduces greedy decoding; `think --thinking-budgets` reports it."""

from __future__ import annotations

import json

import pytest
from tiny_arith import TASK, one_thread, trained_policy
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.testtime.thinking_budget import (
    FINAL_MARK,
    ThinkingConfig,
    answer_marker,
    drop_partial_marker,
    force_budget,
    parse_budgets,
)

PROBLEMS = [TASK.problem("test", i) for i in range(8)]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    with one_thread():
        yield trained_policy(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def backend(policy):
    from datawall.sampling.backends.local import LocalBackend

    return LocalBackend(policy)


def greedy(backend, prompts, max_tokens, stop=None):
    return [row[0] for row in backend.sample(prompts, n=1, max_tokens=max_tokens, temperature=0.0, top_p=None,
                                             stop=stop, seed=0)]


@pytest.mark.learned  # the greedy scratchpad's shape is what the policy learned
def test_budget_cuts_thinking_and_forces_the_answer(backend):
    full = [c.text for c in greedy(backend, [p.prompt for p in PROBLEMS], 40)]
    assert all(FINAL_MARK in t and t.index(FINAL_MARK) > 5 for t in full)  # the policy writes its scratchpad
    cfg = ThinkingConfig(budgets=(3, 5, 8, 40), answer_tokens=6)
    cost = backend.cost_model()
    markers = set()
    for budget in cfg.budgets:
        results, _ = force_budget(backend, PROBLEMS, budget, cfg, cost)
        for p, r, text in zip(PROBLEMS, results, full, strict=True):
            natural = text[:text.index(FINAL_MARK)]
            if budget < len(natural) + len(FINAL_MARK):  # cut after `budget` tokens (characters) of greedy thinking
                assert r.forced and r.thinking == drop_partial_marker(text[:budget]) and r.thinking_tokens == budget
                assert r.thinking == (natural if budget >= len(natural) else text[:budget])  # '##' is not kept
            else:  # ended on its own at the marker (whose tokens were decoded too)
                assert not r.forced and r.thinking == natural and r.thinking_tokens == len(natural) + len(FINAL_MARK)
            marker = "#### " if r.thinking.endswith("\n") else "\n#### "
            assert answer_marker(r.thinking) == marker
            markers.add(marker)
            (answer,) = greedy(backend, [p.prompt + r.thinking + marker], 6, stop=["\n"])
            assert r.answer_text == answer.text
            assert r.completion == r.thinking + marker + answer.text
            # two calls, each prefilling its whole prompt (bos included): thinking, then the forced answer
            assert r.calls == 2
            assert r.prompt_tokens == (len(p.prompt) + 1) + (len(p.prompt + r.thinking + marker) + 1)
            assert r.completion_tokens == r.thinking_tokens + answer.completion_tokens
            second = len(p.prompt + r.thinking + marker) + 1
            assert r.flops == pytest.approx(cost.query(len(p.prompt) + 1, [r.thinking_tokens]).flops
                                            + cost.query(second, [answer.completion_tokens]).flops)
    assert markers == {"#### ", "\n#### "}  # budget 3 ends a line ('cc\n'), budget 5 does not ('cc\ncc')


def test_partial_marker_is_dropped():
    assert drop_partial_marker("cc\ncc\n##") == "cc\ncc\n"
    assert drop_partial_marker("cc\n#") == "cc\n" and drop_partial_marker("##") == ""
    assert drop_partial_marker("cc\ncc") == "cc\ncc" and drop_partial_marker("cc\n#5") == "cc\n#5"


@pytest.mark.learned  # the greedy scratchpad's shape is what the policy learned
def test_suppressing_the_end_of_thinking_continues_it(backend):
    cfg = ThinkingConfig(budgets=(40,), answer_tokens=6, extend=1)
    plain, _ = force_budget(backend, PROBLEMS, 40, ThinkingConfig(budgets=(40,), answer_tokens=6), backend.cost_model())
    waited, _ = force_budget(backend, PROBLEMS, 40, cfg, backend.cost_model())
    for a, b in zip(plain, waited, strict=True):
        assert b.extended == 1 and b.calls == 3
        assert b.thinking.startswith(a.thinking + "\n")  # the marker became a newline, then decoding went on
        assert a.thinking_tokens < b.thinking_tokens <= 40


def test_think_cli_reports_thinking_budgets(tmp_path, policy):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["think", "--model", str(policy),
                                      "--task", "arith", "--task-args", "digits=2", "--problems", "8", "--n-max", "2",
                                      "--thinking-budgets", "40,3,5", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout.strip().splitlines()[-1])
    tb = res["thinking_budget"]
    assert [p["budget"] for p in tb["points"]] == [3, 5, 40] and tb["decoding"] == "greedy"
    for p in tb["points"]:
        assert 0 <= p["ci_low"] <= p["accuracy"] <= p["ci_high"] <= 1
        assert p["thinking_tokens"] <= p["budget"] and p["flops_per_query"] > 0 and p["dollars_per_query"] > 0
    assert [p["forced"] for p in tb["points"]] == [1.0, 1.0, 0.0]
    # a budget above every natural length reproduces greedy decoding exactly
    assert tb["points"][-1]["accuracy"] == res["strategies"]["greedy"][0]["accuracy"]
    rows = [json.loads(line) for line in (out / "thinking.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    greedy_rows = {r["problem"]: r for r in map(json.loads, (out / "greedy.jsonl").read_text().splitlines())}
    for r in rows:
        assert r["reward"] == TASK.verify(TASK.problem("test", r["problem"]), r["completion"])
        if r["budget"] == 40:
            assert r["answer"] == greedy_rows[r["problem"]]["answer"]
    assert "accuracy_vs_thinking_tokens.png" in res["plots"]
    assert "thinking budget (budget forcing)" in (out / "report.html").read_text()


@pytest.mark.parametrize("text, message", [("8,x", "comma-separated integers"), ("0,8", ">= 1"), (",", ">= 1")])
def test_bad_budgets_are_one_line(text, message):
    with pytest.raises(DatawallError, match=message):
        parse_budgets(text)
    assert parse_budgets("64, 8,16,8") == (8, 16, 64)
