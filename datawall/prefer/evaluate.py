"""Held-out greedy scoring for preference tuning: per-problem rewards and answer lengths (what reward hacking
shows up in), the answers themselves (graded for caveats on a world with hazard cases), and the paired interval of
a change measured on the same problems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from datawall.train.evaluate import Z95, paired_difference, wilson_interval


def greedy_scores(model, tok, task, problems: Sequence, device: str | None = None, batch_size: int = 100,
                  max_new_tokens: int | None = None) -> tuple[list[float], list[int]]:
    """The verifier's reward and the completion length in tokens of each problem's greedy answer."""
    rewards, lengths, _ = greedy_answers(model, tok, task, problems, device, batch_size, max_new_tokens)
    return rewards, lengths


@torch.no_grad()
def greedy_answers(model, tok, task, problems: Sequence, device: str | None = None, batch_size: int = 100,
                   max_new_tokens: int | None = None) -> tuple[list[float], list[int], list[str]]:
    """The verifier's reward, the completion length in tokens and the text of each problem's greedy answer."""
    from datawall.model.sampler import generate
    from datawall.tasks.prompting import stop_sequences
    from datawall.train.evaluate import solution_budget

    was_training = model.training
    model.eval()
    budget = max_new_tokens or solution_budget(task, tok, list(problems))
    rewards, lengths, texts = [], [], []
    stops = stop_sequences(task) or None
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        outs = generate(model, tok, [p.prompt for p in chunk], n=1, max_new_tokens=budget, temperature=0.0,
                        stop=stops, device=device, return_logprobs=False)
        rewards += [float(task.verify(p, o[0].text)) for p, o in zip(chunk, outs, strict=True)]
        lengths += [o[0].completion_tokens for o in outs]
        texts += [o[0].text for o in outs]
    model.train(was_training)
    return rewards, lengths, texts


def summary(rewards: Sequence[float], lengths: Sequence[int]) -> dict:
    """Accuracy with its Wilson interval and the mean answer length."""
    lo, hi = wilson_interval(sum(rewards), len(rewards))
    return {"accuracy": float(np.mean(rewards)), "ci_low": lo, "ci_high": hi,
            "completion_tokens": float(np.mean(lengths)), "problems": len(rewards)}


def paired_change(before: Sequence[float], after: Sequence[float]) -> dict:
    """Mean change of per-problem rewards on the same problems, with its 95% normal interval (paired)."""
    mean, se = paired_difference(before, after)
    return {"delta": mean, "delta_ci_low": mean - Z95 * se, "delta_ci_high": mean + Z95 * se, "delta_se": se}
