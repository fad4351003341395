"""Any OpenAI-compatible endpoint (/v1/completions or /v1/chat/completions) over httpx.

Requests run in a thread pool (one prompt each, n samples), are retried with exponential backoff on 429,
5xx, timeouts, connection errors and answers that are not a valid completion (validated by the pydantic
models in `openai_schema.py`), and fall back to n single-sample requests when the server refuses n > 1 (a
400 that names n, as some providers and proxies answer). What cannot be retried away is one EndpointError
line naming the URL and, for a malformed answer, the field.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from pydantic import ValidationError

from datawall.economics.cost import CostModel
from datawall.errors import DatawallError
from datawall.model.sampler import check_sampling, is_greedy
from datawall.sampling.backends import Completion, Prompt, mix_seed
from datawall.sampling.backends.openai_schema import ChatCompletionBody, CompletionBody, describe_error
from datawall.tasks.prompting import as_messages

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(DatawallError):
    """The endpoint answered with an error we cannot retry away."""


class OpenAIEndpoint:
    """Samples from `model` served at `base_url` (e.g. http://127.0.0.1:8000/v1)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, chat: bool = False,
                 concurrency: int = 4, timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
                 price: str | None = None, prices: str | None = None, params: float | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise DatawallError(f"--endpoint {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
        if concurrency < 1:
            raise DatawallError(f"--concurrency must be >= 1, got {concurrency}")
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise DatawallError(f"--api-key-env {api_key_env}: that environment variable is not set")
        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if chat else "/completions")
        self.model, self.chat, self.concurrency = model, chat, concurrency
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.price, self.prices, self.params = price, prices, params
        self.identity = f"openai:{base}:{model}:{'chat' if chat else 'completions'}"
        self.single_only = False  # set once the server refuses n > 1
        self.requests = 0  # HTTP requests sent, retries included
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout_s,
                                   limits=httpx.Limits(max_connections=concurrency))

    def sample(self, prompts: list[Prompt], n: int, max_tokens: int, temperature: float, top_p: float | None,
               stop: list[str] | None, seed: int) -> list[list[Completion]]:
        """n completions per prompt, up to `concurrency` requests in flight; a chat endpoint gets chat messages
        as they are (a string as one user message), a completions endpoint only strings."""
        check_sampling(temperature, top_p, "sampling")
        if not self.chat and any(not isinstance(p, str) for p in prompts):
            raise DatawallError(f"{self.url}: chat messages need the chat endpoint (--chat)")
        if is_greedy(temperature):
            temperature = 0.0  # a server may divide by 1e-300 into garbage; 0 is greedy everywhere

        def one(prompt: Prompt) -> list[Completion]:
            return self._prompt(prompt, n, max_tokens, temperature, top_p, stop, seed)

        if self.concurrency == 1 or len(prompts) == 1:
            return [one(p) for p in prompts]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, prompts))

    def _prompt(self, prompt: Prompt, n: int, max_tokens: int, temperature: float, top_p: float | None,
                stop: list[str] | None, seed: int) -> list[Completion]:
        if n > 1 and not self.single_only:
            try:
                return self._request(prompt, n, max_tokens, temperature, top_p, stop, seed)
            except _NRefused:
                self.single_only = True
        # one request per sample; each gets its own seed or a seeded server would repeat one sample n times
        return [c for j in range(n) for c in
                self._request(prompt, 1, max_tokens, temperature, top_p, stop, mix_seed(seed, j) if n > 1 else seed)]

    def _request(self, prompt: Prompt, n: int, max_tokens: int, temperature: float, top_p: float | None,
                 stop: list[str] | None, seed: int) -> list[Completion]:
        body: dict = {"model": self.model, "n": n, "max_tokens": max_tokens, "temperature": temperature,
                      "seed": seed}
        body |= {"messages": as_messages(prompt)} if self.chat else {"prompt": prompt}
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop"] = stop
        start = time.perf_counter()
        answer = self._post(body)
        seconds = time.perf_counter() - start
        choices = sorted(answer.choices, key=lambda c: c.index)
        texts = [(c.message.content or "") if self.chat else c.text for c in choices]
        usage = answer.usage
        total_out = usage.completion_tokens if usage else 0
        # usage reports only the total: share it by text length (exact when every choice has the same length),
        # largest remainders first, so that the shares add up to the total
        outs = _apportion(total_out, [len(t) for t in texts]) if total_out else [len(t) for t in texts]
        prompt_tokens = usage.prompt_tokens if usage else 0
        return [Completion(t, o, prompt_tokens, seconds / n) for t, o in zip(texts, outs, strict=True)]

    def _parse(self, r: httpx.Response, n: int) -> CompletionBody | ChatCompletionBody:
        """The validated answer to a request for n choices; _Malformed (retried) when it is not one."""
        schema = ChatCompletionBody if self.chat else CompletionBody
        try:
            answer = schema.model_validate_json(r.content)
        except ValidationError as e:
            raise _Malformed(describe_error(e, r.content)) from None
        indices = sorted(c.index for c in answer.choices)
        if indices != list(range(n)):
            raise _Malformed(f"choices: asked for {n}, got {len(indices)} with index {indices[:8]}"
                             f"{' ...' if len(indices) > 8 else ''} (expected 0..{n - 1} once each)")
        return answer

    def _post(self, body: dict) -> CompletionBody | ChatCompletionBody:
        """POST with retries on 429/5xx/transport errors/malformed answers (exponential backoff, honouring
        Retry-After)."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            self.requests += 1
            try:
                r = self.client.post(self.url, json=body)
            except httpx.TransportError as e:
                if last:
                    raise EndpointError(f"{self.url}: {type(e).__name__}: {e} "
                                        f"(after {self.max_retries} retries)") from None
                self._sleep(attempt, None)
                continue
            if r.status_code == 200:
                try:
                    return self._parse(r, body["n"])
                except _Malformed as e:
                    if last:
                        raise EndpointError(f"{self.url}: not an OpenAI {'chat ' if self.chat else ''}completion: "
                                            f"{e} (after {self.max_retries} retries)") from None
                    self._sleep(attempt, None)
                    continue
            message = _message(r)
            if r.status_code == 400 and body["n"] > 1 and _names_n(r, message):
                raise _NRefused(message)
            if r.status_code in RETRY_STATUS and not last:
                self._sleep(attempt, r.headers.get("retry-after"))
                continue
            raise EndpointError(f"{self.url}: HTTP {r.status_code}: {message}")
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * 2**attempt
        try:
            delay = max(delay, min(float(retry_after), 60.0)) if retry_after else delay
        except ValueError:
            pass
        time.sleep(delay)

    def cost_model(self) -> CostModel:
        """2 N FLOPs per token when --api-params is given (else unknown), priced by the named entry."""
        return CostModel.for_backend(self.price, params=self.params, prices=self.prices)

    def count_tokens(self, text: str) -> int | None:
        """Unknown: the endpoint's tokenizer is not available here."""
        return None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()


def _apportion(total: int, weights: list[int]) -> list[int]:
    """total split into integers proportional to weights (equal shares when all are 0) that sum to total."""
    weights = weights if any(weights) else [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


class _NRefused(Exception):
    """The server refused n > 1."""


class _Malformed(Exception):
    """A 200 answer that is not a valid completion (retried like a 5xx)."""


def _message(r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
        return str(r.json().get("detail") or r.text[:200])
    except (ValueError, AttributeError):
        return r.text[:200] or r.reason_phrase


def _names_n(r: httpx.Response, message: str) -> bool:
    """Whether a 400 is about the n parameter (its param field, or 'n' as a word in the message)."""
    try:
        err = r.json().get("error")
        if isinstance(err, dict) and err.get("param") == "n":
            return True
    except (ValueError, AttributeError):
        pass
    return re.search(r"(?<![\w-])n(?![\w-])", message) is not None
