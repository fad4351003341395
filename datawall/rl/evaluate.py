"""What an RL run measures: greedy accuracy per problem (and on a world with hazard cases the caveats of the same
completions), pass@k from one pool of samples per problem, and the paired interval of a change on the same
problems."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from datawall.model.sampler import generate
from datawall.tasks import Problem, Task
from datawall.testtime.estimators import pass_at_k
from datawall.train.evaluate import Z95, paired_difference, wilson_interval

ROWS_PER_CALL = 1024  # completions per generate() call: bounds the KV cache of a big pool


@torch.no_grad()
def sample_texts(model, tokenizer, problems: Sequence[Problem], encode: Callable, n: int, max_tokens: int,
                 temperature: float, stop: list[str] | None, seed: int, device: str) -> list[list[str]]:
    """n completions per problem (greedy when temperature is 0)."""
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    per_call = max(1, ROWS_PER_CALL // n)
    for i in range(0, len(problems), per_call):
        chunk = problems[i:i + per_call]
        groups = generate(model, tokenizer, [encode(p) for p in chunk], n=n, max_new_tokens=max_tokens,
                          temperature=temperature, stop=stop, seed=seed, device=device, return_logprobs=False)
        out += [[s.text for s in g] for g in groups]
    model.train(was_training)
    return out


def sample_rewards(model, tokenizer, task: Task, problems: Sequence[Problem], encode: Callable, n: int,
                   max_tokens: int, temperature: float, stop: list[str] | None, how: str, seed: int, device: str
                   ) -> list[list[float]]:
    """The verifier's reward of n completions per problem (greedy when temperature is 0)."""
    texts = sample_texts(model, tokenizer, problems, encode, n, max_tokens, temperature, stop, seed, device)
    return [[task.verify(p, t, how) for t in ts] for p, ts in zip(problems, texts, strict=True)]


def accuracy(rewards: Sequence[float]) -> dict:
    """Mean reward with its 95% Wilson interval."""
    acc = float(np.mean(rewards)) if len(rewards) else math.nan
    lo, hi = wilson_interval(float(np.sum(rewards)), len(rewards))
    return {"accuracy": acc, "ci": [lo, hi], "problems": len(rewards)}


def pass_at_ks(pool: Sequence[Sequence[float]], ks: Sequence[int]) -> dict[str, float]:
    """Unbiased pass@k (Chen et al. 2021) averaged over problems, for each k, from one pool per problem."""
    out = {}
    for k in ks:
        out[str(k)] = float(np.mean([pass_at_k(len(r), int(sum(x >= 1.0 for x in r)), k) for r in pool]))
    return out


def paired_change(before: Sequence[float], after: Sequence[float]) -> dict:
    """after - before on the same problems: mean difference and its 95% interval (normal, paired by problem)."""
    mean, se = paired_difference(before, after)
    se = math.inf if math.isnan(se) else se  # one problem: an interval that says nothing
    return {"gain": mean, "ci": [mean - Z95 * se, mean + Z95 * se]}
