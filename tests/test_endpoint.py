"""Sampling backends under hostile input: an OpenAI endpoint that answers garbage, and tiny or non-finite
sampling parameters through every backend (local, Hugging Face, endpoint) and `datawall think`."""

from __future__ import annotations

import json

import pytest
import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from local_server import running
from openai import OpenAI
from tiny_arith import random_checkpoint
from typer.testing import CliRunner

from datawall.commands.think import register
from datawall.errors import DatawallError
from datawall.sampling.backends.local import LocalBackend
from datawall.sampling.backends.openai_endpoint import EndpointError, OpenAIEndpoint
from datawall.serve import create_app
from datawall.tasks import get_task

TASK = get_task("arith", digits=1)
GOOD = {"choices": [{"index": 0, "text": ".\n#### 3", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}}
GOOD_CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ".\n#### 3"},
                          "finish_reason": "stop"}], "usage": GOOD["usage"]}


class GarbageEndpoint:
    """/v1/completions and /v1/chat/completions that answer `garbage` (raw bytes) for the first `bad` requests
    (all of them when bad is None), then a valid completion; every request body is kept."""

    def __init__(self):
        self.garbage, self.bad = b"", None
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/completions")(self.answer)
        self.app.post("/v1/chat/completions")(self.answer)

    async def answer(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        if self.bad is None or len(self.bodies) <= self.bad:
            return Response(self.garbage, media_type="application/json")
        return JSONResponse(GOOD_CHAT if "messages" in body else GOOD)


@pytest.fixture(scope="module")
def garbage():
    endpoint = GarbageEndpoint()
    with running(endpoint.app) as port:
        url = f"http://127.0.0.1:{port}/v1"
        endpoint.url = url
        yield endpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("endpoint") / "tiny", TASK.alphabet, max_seq_len=64)


def draw(backend, n: int = 1, temperature: float = 1.0, top_p: float | None = None, seed: int = 7):
    return backend.sample(["1+2="], n=n, max_tokens=8, temperature=temperature, top_p=top_p, stop=None, seed=seed)


def completion(**fields) -> dict:
    return {"index": 0, "text": "x", "finish_reason": "stop"} | fields


GARBAGE = [  # (what the server answers, chat?, n, what the error must say)
    ([GOOD], False, 1, "the body: Input should be an object (got [{"),
    (None, False, 1, "the body: Input should be an object (got null)"),
    ({"choices": ["#### 3"]}, False, 1, "choices[0]: Input should be an object (got \"#### 3\")"),
    ({"choices": [completion(text=3)]}, False, 1, "choices[0].text: Input should be a valid string (got 3)"),
    ({"choices": [completion(index="0")]}, False, 1, "choices[0].index: Input should be a valid integer (got \"0\")"),
    ({"choices": [completion()], "usage": {"prompt_tokens": "5", "completion_tokens": "8"}}, False, 1,
     "usage.prompt_tokens: Input should be a valid integer (got \"5\")"),
    ({"choices": [completion()], "usage": {"prompt_tokens": 5, "completion_tokens": -8}}, False, 1,
     "usage.completion_tokens: Input should be greater than or equal to 0"),
    ({"choices": "#### 3"}, False, 1, "choices: Input should be a valid array (got \"#### 3\")"),
    ({"error": {"message": "overloaded"}}, False, 1, "choices: Field required; the answer holds an error: "
                                                     "{\"message\": \"overloaded\"}"),
    ({"choices": [completion()]}, False, 2, "choices: asked for 2, got 1 with index [0]"),
    ({"choices": [completion(), completion()]}, False, 2, "choices: asked for 2, got 2 with index [0, 0]"),
    ({"choices": [{"index": 0, "message": "#### 3"}]}, True, 1, "choices[0].message: Input should be an object"),
    ({"choices": [{"index": 0, "message": {"content": 3}}]}, True, 1,
     "choices[0].message.content: Input should be a valid string (got 3)"),
    (b"<html>Bad gateway</html>", False, 1, "the answer is not JSON (it starts '<html>Bad gateway</html>')"),
]


@pytest.mark.parametrize("answer, chat, n, message", GARBAGE)
def test_garbage_answers_are_retried_then_one_line_naming_the_field(garbage, answer, chat, n, message):
    garbage.garbage = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    garbage.bad, garbage.bodies = None, []
    backend = OpenAIEndpoint(garbage.url, "m", chat=chat, max_retries=2, backoff_s=0.001)
    with pytest.raises(EndpointError) as e:
        draw(backend, n=n)
    text = str(e.value)
    kind = "chat completion" if chat else "completion"
    assert text.startswith(f"{garbage.url}/{'chat/' if chat else ''}completions: not an OpenAI {kind}: ")
    assert message in text and text.endswith("(after 2 retries)") and "\n" not in text
    assert backend.requests == 3 and len(garbage.bodies) == 3  # retried as for a 5xx


def test_a_garbled_answer_then_a_good_one_succeeds(garbage):
    garbage.garbage, garbage.bad, garbage.bodies = b'{"choices": [{"index": 0, "text": 3}]}', 2, []
    backend = OpenAIEndpoint(garbage.url, "m", max_retries=3, backoff_s=0.001)
    [[c]] = draw(backend)
    assert (c.text, c.completion_tokens, c.prompt_tokens) == (".\n#### 3", 8, 5) and backend.requests == 3
    garbage.bad, garbage.bodies = 0, []
    [[c]] = draw(OpenAIEndpoint(garbage.url, "m", chat=True), n=1)  # chat answers validate too
    assert c.text == ".\n#### 3"


def think(*args: str):
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.callback()(lambda: None)  # keep `think` a subcommand
    register(app)
    return CliRunner().invoke(app, ["think", "--task", "arith", "--task-args", "digits=1", *args])


def test_think_against_a_garbage_endpoint_is_one_clear_line(garbage, tmp_path):
    garbage.garbage, garbage.bad = b'[{"text": 5}]', None
    result = think("--endpoint", garbage.url, "--api-model", "m", "--problems", "2", "--n-max", "2", "--retries", "1",
                   "--out", str(tmp_path))
    assert isinstance(result.exception, EndpointError), result.output
    assert "not an OpenAI completion: the body: Input should be an object" in str(result.exception)
    assert "\n" not in str(result.exception)


def test_tiny_temperatures_are_sent_as_greedy_and_non_finite_ones_never_sent(garbage):
    garbage.bad, garbage.bodies = 0, []
    backend = OpenAIEndpoint(garbage.url, "m")
    draw(backend, temperature=1e-300)
    draw(backend, temperature=5e-324, top_p=1e-300)
    draw(backend, temperature=0.7)
    assert [b["temperature"] for b in garbage.bodies] == [0.0, 0.0, 0.7]
    for bad in (dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_p=float("nan"))):
        with pytest.raises(DatawallError, match="temperature must be a finite number|top_p must be in"):
            draw(backend, **bad)
    assert len(garbage.bodies) == 3


@pytest.mark.parametrize("chat", [False, True])
def test_the_backend_reads_datawall_serve_as_the_openai_client_does(ckpt, chat):
    with running(create_app(ckpt)) as port:
        url = f"http://127.0.0.1:{port}/v1"
        backend = OpenAIEndpoint(url, "tiny", chat=chat)
        ours = backend.sample(["1+2=", "3+4="], n=3, max_tokens=8, temperature=1.0, top_p=None, stop=None, seed=5)
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        for prompt, row in zip(["1+2=", "3+4="], ours, strict=True):
            kw = dict(model="tiny", n=3, max_tokens=8, temperature=1.0, seed=5)
            if chat:
                r = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **kw)
                texts = [c.message.content for c in r.choices]
            else:
                r = client.completions.create(prompt=prompt, **kw)
                texts = [c.text for c in r.choices]
            assert [c.text for c in row] == texts
            assert sum(c.completion_tokens for c in row) == r.usage.completion_tokens
            assert all(c.prompt_tokens == r.usage.prompt_tokens for c in row)


def test_local_and_hf_backends_treat_tiny_temperatures_as_greedy(ckpt):
    local = LocalBackend(ckpt)
    greedy = [c.text for c in draw(local, temperature=0.0)[0]]
    assert [c.text for c in draw(local, n=3, temperature=1e-300)[0]] == greedy * 3
    assert [c.text for c in draw(local, n=3, temperature=1.0, top_p=5e-324)[0]] == greedy * 3
    with pytest.raises(DatawallError, match="temperature must be a finite number"):
        draw(local, temperature=float("nan"))
    pytest.importorskip("transformers")
    from datawall.sampling.backends.hf import HFBackend

    hf = HFBackend(ckpt)
    hf_greedy = [c.text for c in draw(hf, temperature=0.0)[0]]
    assert [c.text for c in draw(hf, n=2, temperature=1e-300)[0]] == hf_greedy * 2
    with pytest.raises(DatawallError, match="temperature must be a finite number"):
        draw(hf, temperature=float("inf"))


def test_think_at_a_tiny_temperature_draws_the_greedy_completion(ckpt, tmp_path):
    result = think("--model", str(ckpt), "--problems", "3", "--n-max", "3", "--temperature", "1e-300", "--out",
                   str(tmp_path), "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    rows = {name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
            for name in ("greedy.jsonl", "samples.jsonl")}
    greedy = {r["problem"]: r["completion"] for r in rows["greedy.jsonl"]}
    assert len(rows["samples.jsonl"]) == 9 and len(greedy) == 3
    assert all(r["completion"] == greedy[r["problem"]] for r in rows["samples.jsonl"])
