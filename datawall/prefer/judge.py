"""An LLM judge over an OpenAI-compatible endpoint: it reads a prompt and two answers and names the better one.

Requests go through datawall's endpoint backend (retries, backoff, validation of the answer's shape), one chat
request per comparison at temperature 0. The two answers are shown in a seeded random order (a judge's position
bias then averages out instead of favouring whichever answer came first), and the reply is read for its first
standalone A or B; a reply naming neither is an abstention, counted and reported, and the comparison makes no pair.
Its dollars are the tokens it read and wrote under an api price entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datawall.economics.prices import ApiPrice, load_prices
from datawall.errors import DatawallError

SYSTEM = "You grade answers to problems. You compare two answers and say which one is correct and better."
TEMPLATE = ("Problem:\n{prompt}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
            "Which answer is better? Reply with exactly one letter: A or B.")
_LETTER = re.compile(r"\b([AB])\b")


def read_verdict(reply: str) -> int | None:
    """0 for A, 1 for B (the first standalone letter of the reply), None when the reply names neither."""
    m = _LETTER.search(reply.strip())
    return None if m is None else "AB".index(m.group(1))


@dataclass
class JudgeCall:
    """One comparison put to the judge: the verdict in the caller's order, and what the call read and wrote."""

    verdict: int | None
    swapped: bool
    reply: str
    prompt_tokens: int
    completion_tokens: int


class EndpointJudge:
    """Judges comparisons with a model served at an OpenAI-compatible `base_url` (/v1/chat/completions)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, price: str = "gpt-4o-mini",
                 prices: str | None = None, concurrency: int = 4, timeout_s: float = 60.0, max_retries: int = 3):
        from datawall.sampling.backends.openai_endpoint import OpenAIEndpoint

        entry = load_prices(prices).get(price)
        if not isinstance(entry, ApiPrice):
            raise DatawallError(f"--judge-price {price!r}: a judge is priced by its tokens; give an api entry "
                                f"(this one is {entry.kind})")
        self.price = entry
        self.backend = OpenAIEndpoint(base_url, model, api_key_env=api_key_env, chat=True, concurrency=concurrency,
                                      timeout_s=timeout_s, max_retries=max_retries)
        self.name = f"llm-judge {model}"

    def judge(self, comparisons: Sequence[tuple[str, str, str]], seed: int) -> list[JudgeCall]:
        """The verdict on each (prompt, a, b): 0 if a is better, 1 if b is, None if the reply names neither."""
        swaps = np.random.default_rng([seed, 7]).random(len(comparisons)) < 0.5
        messages = []
        for (prompt, a, b), swap in zip(comparisons, swaps, strict=True):
            first, second = (b, a) if swap else (a, b)
            messages.append([{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": TEMPLATE.format(prompt=prompt, a=first, b=second)}])
        replies = self.backend.sample(messages, n=1, max_tokens=8, temperature=0.0, top_p=None, stop=None, seed=seed)
        out = []
        for (completion,), swap in zip(replies, swaps, strict=True):
            verdict = read_verdict(completion.text)
            if verdict is not None and swap:
                verdict = 1 - verdict
            out.append(JudgeCall(verdict, bool(swap), completion.text, completion.prompt_tokens,
                                 completion.completion_tokens))
        return out

    def dollars(self, calls: Sequence[JudgeCall]) -> float:
        """What the calls cost at the judge's token price."""
        return self.price.dollars(sum(c.prompt_tokens for c in calls), sum(c.completion_tokens for c in calls))

    def close(self) -> None:
        self.backend.client.close()
