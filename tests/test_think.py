"""`datawall think`: local and endpoint backends, the sample cache, resume, n > 1 fallback and retries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from local_server import free_port, running
from tiny_arith import random_checkpoint
from typer.testing import CliRunner

from datawall.commands.think import register
from datawall.errors import DatawallError
from datawall.sampling.backends.openai_endpoint import EndpointError, OpenAIEndpoint
from datawall.serve import create_app
from datawall.tasks import get_task
from datawall.testtime.think import select_problems

TASK = get_task("arith", digits=1)
STRATEGY_KEYS = {"n", "accuracy", "ci_low", "ci_high", "tokens_per_query", "flops_per_query", "dollars_per_query"}
ANSWERS = {p.prompt: p.answer for p in TASK.problems("test", 10)}
ROW_KEYS = {"problem", "sample", "completion", "answer", "reward", "tokens"}


def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.callback()(lambda: None)  # keep `think` a subcommand
    register(app)
    return app


def think(*args: str):
    return CliRunner().invoke(cli(), ["think", "--task", "arith", "--task-args", "digits=1", *args])


def think_json(*args: str) -> dict:
    result = think(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])




@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random-weight model over the arith alphabet (accuracy near 0, but real samples and costs)."""
    return random_checkpoint(tmp_path_factory.mktemp("think") / "tiny", TASK.alphabet, max_seq_len=64)


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_results(res: dict, problems: int, n_max: int) -> None:
    assert list(res["strategies"]) == ["greedy", "majority", "pass@k"]
    assert [r["n"] for r in res["strategies"]["greedy"]] == [1]
    for name in ("majority", "pass@k"):
        assert [r["n"] for r in res["strategies"][name]][-1] == n_max
    acc = [r["accuracy"] for r in res["strategies"]["pass@k"]]
    assert acc == sorted(acc)  # coverage never falls with more samples
    for rows in res["strategies"].values():
        for r in rows:
            assert set(r) == STRATEGY_KEYS
            assert 0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1
    assert res["problems"] == problems and res["n_max"] == n_max
    assert "coverage_law" in res


def test_local_run_rerun_and_resume(tmp_path, ckpt):
    out = tmp_path / "out"
    args = ("--model", str(ckpt), "--problems", "5", "--n-max", "4", "--temperature", "1.5", "--out", str(out))
    res = think_json(*args)
    check_results(res, 5, 4)
    assert res["sampling"] == {"drawn": 25, "from_cache": 0, "from_files": 0}
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == 20 and all(ROW_KEYS <= r.keys() for r in rows)
    assert sorted((r["problem"], r["sample"]) for r in rows) == [(i, j) for i in range(5) for j in range(4)]
    for r in rows:
        assert r["reward"] == TASK.verify(TASK.problem("test", r["problem"]), r["completion"])
    mean_reward = np.mean([r["reward"] for r in rows])
    assert res["strategies"]["majority"][0]["accuracy"] == pytest.approx(mean_reward)
    assert res["strategies"]["pass@k"][0]["accuracy"] == pytest.approx(mean_reward)
    assert res["strategies"]["pass@k"][0]["flops_per_query"] > 0
    assert res["strategies"]["pass@k"][0]["dollars_per_query"] > 0
    assert len(rows_of(out / "greedy.jsonl")) == 5
    for name in ("report.html", "accuracy_vs_samples.png", "accuracy_vs_flops.png", "accuracy_vs_dollars.png"):
        assert (out / name).stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()

    again = think_json(*args)  # a re-run draws nothing
    assert again["sampling"] == {"drawn": 0, "from_cache": 0, "from_files": 25}
    assert again["strategies"] == res["strategies"]

    # interrupted mid-write: 7 rows and a torn line survive; the cache still has the rest
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:7]) + lines[7][:10])
    resumed = think_json(*args)
    assert resumed["sampling"] == {"drawn": 0, "from_cache": 13, "from_files": 12}
    assert resumed["strategies"] == res["strategies"]

    # without the cache only the missing samples are drawn, with fresh seeds (no copies of the first ones)
    (out / "samples.jsonl").write_text("".join(lines[:8]))
    (out / "cache.sqlite").unlink()
    resumed = think_json(*args)
    assert resumed["sampling"]["drawn"] == 12
    rows = rows_of(out / "samples.jsonl")
    assert sorted((r["problem"], r["sample"]) for r in rows) == [(i, j) for i in range(5) for j in range(4)]

    more = think_json(*args[:2], "--problems", "6", "--n-max", "6", *args[6:])  # a bigger pool extends this one
    # 2 more samples of each of the 5 problems, 6 of the new one, and its greedy answer
    assert more["sampling"] == {"drawn": 17, "from_cache": 0, "from_files": 25}
    check_results(more, 6, 6)

    changed = think(*args[:-2], "--out", str(out), "--seed", "1")
    assert isinstance(changed.exception, DatawallError) and "seed" in str(changed.exception)


def test_held_out_problems_are_the_first_k_of_the_split_and_never_repeat(tmp_path, ckpt):
    res = think_json("--model", str(ckpt), "--problems", "6", "--n-max", "2", "--out", str(tmp_path / "out"))
    assert res["problem_indices"] == list(range(6))
    prompts = [TASK.problem("test", i).prompt for i in res["problem_indices"]]
    assert len(set(prompts)) == 6
    rows = rows_of(tmp_path / "out" / "samples.jsonl")
    assert sorted({r["problem"] for r in rows}) == res["problem_indices"]
    size = TASK.size("test")  # 1-digit sums: 100 pairs, about a fifth held out
    assert len(select_problems(TASK, "test", size)) == size
    with pytest.raises(DatawallError, match=rf"only {size} distinct problems"):
        select_problems(TASK, "test", size + 1)


def test_endpoint_against_datawall_serve(tmp_path, ckpt):
    with running(create_app(ckpt)) as port:
        res = think_json("--endpoint", f"http://127.0.0.1:{port}/v1", "--api-model", "tiny", "--problems", "3",
                         "--n-max", "3", "--concurrency", "2", "--out", str(tmp_path), "--api-params", "1e5",
                         "--price", "gpt-4o-mini")
    check_results(res, 3, 3)
    assert res["sampling"]["drawn"] == 12
    rows = rows_of(tmp_path / "samples.jsonl")
    assert len(rows) == 9 and all(r["prompt_tokens"] > 0 for r in rows)
    assert all(r["dollars_per_query"] > 0 and r["flops_per_query"] > 0 for r in res["strategies"]["pass@k"])


def test_hf_backend_reads_the_checkpoint_with_transformers(tmp_path, ckpt):
    pytest.importorskip("transformers")
    res = think_json("--hf", str(ckpt), "--problems", "2", "--n-max", "2", "--out", str(tmp_path))
    check_results(res, 2, 2)
    assert res["backend"].startswith("hf:") and res["sampling"]["drawn"] == 6
    rows = rows_of(tmp_path / "greedy.jsonl")
    assert all(r["prompt_tokens"] == len(TASK.problem("test", r["problem"]).prompt) + 1 for r in rows)  # + bos
    assert res["strategies"]["pass@k"][0]["flops_per_query"] > 0


class FakeEndpoint:
    """An OpenAI-style /v1/completions that refuses n > 1 and fails its first `failures` requests."""

    def __init__(self, failures: list[int] | None = None):
        self.failures = list(failures or [])
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/completions")(self.completions)

    async def completions(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        if self.failures:
            return JSONResponse({"error": {"message": "try later"}}, status_code=self.failures.pop(0))
        if body["n"] > 1:
            return JSONResponse({"error": {"message": "n must be 1 for this model", "param": "n"}},
                                status_code=400)
        # right for even seeds (on the first test problems), wrong for odd ones
        answer = ANSWERS.get(body["prompt"], "x") if body["seed"] % 2 == 0 else "wrong"
        return {"choices": [{"index": 0, "text": f".\n#### {answer}", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}}


@pytest.fixture
def fake():
    endpoint = FakeEndpoint()
    with running(endpoint.app) as port:
        endpoint.url = f"http://127.0.0.1:{port}/v1"
        yield endpoint


def test_n_fallback_and_retries(fake, tmp_path):
    backend = OpenAIEndpoint(fake.url, "fake", concurrency=1, backoff_s=0.01)
    outs = backend.sample(["1+2=", "3+4="], n=3, max_tokens=8, temperature=1.0, top_p=None, stop=None, seed=7)
    assert [len(o) for o in outs] == [3, 3] and backend.single_only
    assert [b["n"] for b in fake.bodies] == [3, 1, 1, 1, 1, 1, 1]  # refused once, then n single requests
    assert len({b["seed"] for b in fake.bodies[1:4]}) == 3  # each single request has its own seed
    assert outs[0][0].completion_tokens == 8 and outs[0][0].prompt_tokens == 5

    fake.bodies.clear()
    fake.failures = [429, 500]
    backend.requests = 0
    outs = backend.sample(["1+2="], n=1, max_tokens=8, temperature=1.0, top_p=None, stop=None, seed=7)
    assert len(outs[0]) == 1 and backend.requests == 3

    fake.failures = [400]
    with pytest.raises(EndpointError, match="HTTP 400: try later"):
        backend.sample(["1+2="], n=1, max_tokens=8, temperature=1.0, top_p=None, stop=None, seed=7)

    res = think_json("--endpoint", fake.url, "--api-model", "fake", "--problems", "4", "--n-max", "4",
                     "--out", str(tmp_path))
    check_results(res, 4, 4)
    rewards = [r["reward"] for r in rows_of(tmp_path / "samples.jsonl")]
    assert 0 < np.mean(rewards) < 1  # the fake is right for about half the seeds
    assert res["strategies"]["pass@k"][0]["flops_per_query"] is None  # unknown size: FLOPs unknown


def test_connection_errors_are_retried_then_reported():
    backend = OpenAIEndpoint(f"http://127.0.0.1:{free_port()}/v1", "x", max_retries=2, backoff_s=0.01)
    with pytest.raises(EndpointError, match="after 2 retries"):
        backend.sample(["1+2="], n=1, max_tokens=8, temperature=1.0, top_p=None, stop=None, seed=0)
    assert backend.requests == 3


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of --model"),
    (("--hf", "m", "--endpoint", "http://x/v1"), "exactly one of --model"),
    (("--model", "m", "--endpoint", "http://x/v1"), "exactly one of --model"),
    (("--endpoint", "http://x/v1"), "--api-model"),
    (("--model", "m", "--strategies", "greedy,vibes"), "unknown strategy 'vibes'"),
    (("--model", "m", "--strategies", "best-of-n"), "reward model"),
    (("--model", "m", "--n-max", "0"), "--n-max: Input should be greater than or equal to 1"),
    (("--model", "m", "--problems", "0"), "--problems: Input should be greater than or equal to 1"),
    (("--model", "m", "--top-p", "1.5"), "--top-p: Input should be less than or equal to 1"),
    (("--model", "m", "--beam-aggregate", "mean"), "--beam-aggregate: Input should be 'last', 'min' or 'product'"),
    (("--model", "m", "--strategies", "beam", "--beam-n", "6"), "--beam-n: 6 is not a multiple of --beam-expand (4)"),
    (("--model", "m", "--strategies", "greedy,beam"), "'beam' needs a step scorer"),
    (("--model", "/no/such/dir"), "no such model directory"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    result = think(*args, "--out", str(tmp_path))
    assert isinstance(result.exception, DatawallError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
