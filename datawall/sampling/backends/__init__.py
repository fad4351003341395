"""Sampling backends for `datawall think`: a local checkpoint, or any OpenAI-compatible endpoint.

Every backend answers `sample(prompts, n, ...)` with n completions per prompt and says how its samples are
priced (`cost_model`). A prompt is completion text (`str`) or chat messages (`[{"role", "content"}, ...]`,
datawall.tasks.prompting), which each backend renders its own way: the endpoint sends them to
/v1/chat/completions, the HF and local backends apply the model's chat template. `identity` names what
produces the samples (model weights or endpoint + model), so the sample cache never serves one model's samples
for another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from datawall.economics.cost import CostModel
from datawall.tasks.prompting import Prompt


@dataclass(frozen=True)
class Completion:
    """One sampled completion with its token counts and its share of the call's wall time."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    seconds: float


@runtime_checkable
class Backend(Protocol):
    """Anything that draws n completions per prompt."""

    name: str
    identity: str

    def sample(self, prompts: list[Prompt], n: int, max_tokens: int, temperature: float, top_p: float | None,
               stop: list[str] | None, seed: int) -> list[list[Completion]]:
        """n completions of each prompt (temperature 0: greedy), reproducible for a given seed."""
        ...

    def cost_model(self) -> CostModel:
        """How a query to this backend is turned into FLOPs and dollars."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` under the backend's tokenizer, or None when it is not known here."""
        ...


def mix_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from seed and parts (e.g. the first sample index of a request)."""
    x = seed & (2**64 - 1)
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & (2**64 - 1)
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        x ^= x >> 31
    return x & (2**63 - 1)


__all__ = ["Backend", "Completion", "Prompt", "mix_seed"]
