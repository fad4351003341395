"""Cost of a query: tokens, FLOPs, wall time and dollars, with one shared prompt prefill and k completions.

FLOPs come from datawall.model.flops when the model's shape is known (2 N per token plus attention, the
prompt prefilled once, each completion's first token read off the prefill's logits); for a remote model
of known size only 2 N per token is counted; otherwise FLOPs are NaN. Dollars come from a price table entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from datawall.economics.prices import ApiPrice, FlopsPrice, GpuHourPrice, load_prices
from datawall.errors import DatawallError

if TYPE_CHECKING:
    from datawall.model.config import ModelConfig

AXES = ("samples", "tokens", "flops", "seconds", "dollars")  # what a curve can be drawn against


@dataclass(frozen=True)
class QueryCost:
    """What one query cost: tokens read and written, forward FLOPs, wall seconds and dollars."""

    prompt_tokens: float
    completion_tokens: float
    flops: float
    seconds: float
    dollars: float

    @property
    def tokens(self) -> float:
        """Prompt (counted once) plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CostModel:
    """Turns token counts into FLOPs and dollars for one model on one backend."""

    price: ApiPrice | GpuHourPrice | FlopsPrice
    config: ModelConfig | None = None  # the model's shape: exact FLOPs with attention
    params: float | None = None  # matmul parameters of a model whose shape is unknown: 2 N per token

    @classmethod
    def for_backend(cls, backend: str | None = None, config: ModelConfig | None = None,
                    params: float | None = None, prices: str | None = None) -> CostModel:
        """Cost model priced by `backend` of the default table, or of the table at path `prices`."""
        return cls(load_prices(prices).get(backend), config, params)

    def prefill_flops(self, prompt_tokens: int) -> float:
        """FLOPs of the prompt's forward pass (bos included in prompt_tokens)."""
        if self.config is not None:
            from datawall.model.flops import sample_flops  # imports torch; only when the shape is known

            return sample_flops(self.config, int(prompt_tokens), 0, n=0)
        return math.nan if self.params is None else 2.0 * self.params * prompt_tokens

    def completion_flops(self, prompt_tokens: int, completion_tokens: int) -> float:
        """FLOPs of one completion after the shared prefill."""
        if self.config is not None:
            from datawall.model.flops import sample_flops

            p, t = int(prompt_tokens), int(completion_tokens)
            return sample_flops(self.config, p, t, n=1) - sample_flops(self.config, p, t, n=0)
        return math.nan if self.params is None else 2.0 * self.params * max(completion_tokens - 1, 0)

    def dollars(self, prompt_tokens: float, completion_tokens: float, flops: float, seconds: float) -> float:
        """Dollars for the given usage under this backend's price."""
        return self.price.dollars(prompt_tokens, completion_tokens, flops, seconds)

    def query(self, prompt_tokens: int, completion_tokens: Sequence[int], seconds: float = math.nan) -> QueryCost:
        """Cost of one query: a prompt prefilled once and len(completion_tokens) completions."""
        _check_tokens(prompt_tokens, completion_tokens)
        out = float(sum(completion_tokens))
        flops = self.prefill_flops(prompt_tokens) + sum(self.completion_flops(prompt_tokens, t)
                                                        for t in completion_tokens)
        return QueryCost(float(prompt_tokens), out, flops, seconds, self.dollars(prompt_tokens, out, flops, seconds))

    def expected(self, prompt_tokens: int, completion_tokens: Sequence[int], ks: Sequence[int],
                 seconds: float = math.nan) -> dict[str, np.ndarray]:
        """Expected cost per query of k samples drawn at random from the pool, for each k: arrays per axis.

        By linearity a random k-subset costs the prefill plus k mean completions. `seconds` is the measured
        wall time of the whole pool (prefill plus all n completions); a k-subset is charged its share of
        the pool's tokens (an assumption: batched decoding makes per-sample times meaningless).
        """
        _check_tokens(prompt_tokens, completion_tokens)
        t = np.asarray(completion_tokens, dtype=np.float64)
        k = np.asarray(ks, dtype=np.float64)
        tokens = prompt_tokens + k * t.mean()
        per = np.array([self.completion_flops(prompt_tokens, x) for x in completion_tokens])
        flops = self.prefill_flops(prompt_tokens) + k * per.mean()
        secs = seconds * tokens / (prompt_tokens + t.sum())
        dollars = np.array([self.dollars(prompt_tokens, ki * t.mean(), f, s) for ki, f, s in zip(k, flops, secs,
                                                                                                 strict=True)])
        return {"samples": k, "tokens": tokens, "flops": flops, "seconds": secs, "dollars": dollars}


def _check_tokens(prompt_tokens: int, completion_tokens: Sequence[int]) -> None:
    if prompt_tokens < 0 or len(completion_tokens) == 0 or min(completion_tokens) < 0:
        raise DatawallError("a query needs a non-negative prompt length and at least one completion length >= 0")
