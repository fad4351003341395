"""PRM data, Math-Shepherd style (Wang et al. 2024): label each step of a sampled solution by rollouts from it.

For a train-split solution with steps s_1..s_K (its lines), the prefix s_1..s_i (i < K) is continued m times
by the policy to the end and each continuation is verified: the soft label of step i is the mean verifier
reward of those m rollouts (for a 0/1 verifier, the fraction correct: a Monte-Carlo estimate of the chance that
the policy finishes correctly from there), the hard label is 1 if any rollout is correct. The last step needs
no rollout: the prefix is the whole solution, so its label is the solution's own reward. Identical prefixes of
one problem (common: many samples share their first lines) are rolled out once, and rollouts are batched,
many prefixes x m per `generate` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from datawall.errors import DatawallError
from datawall.model.sampler import generate
from datawall.rewards.orm import SampledSolution, check_train_only, query_flops
from datawall.rewards.steps import split_steps
from datawall.sampling.backends import mix_seed
from datawall.train.objectives.reward import ScoredExample

LABELS = ("soft", "hard")


def step_label(rewards: Sequence[float], label: str = "soft") -> float:
    """A step's label from its rollouts' rewards: their mean (soft) or 1.0 if any is correct (hard)."""
    if label not in LABELS:
        raise DatawallError(f"unknown PRM label {label!r}; choose from {', '.join(LABELS)}")
    if not rewards:
        raise DatawallError("a step label needs at least one rollout")
    return float(sum(rewards) / len(rewards)) if label == "soft" else float(max(rewards) >= 1.0)


def rollout_prefixes(solutions: Sequence[SampledSolution]) -> list[tuple[int, str]]:
    """Distinct (solution's problem position, prefix text) pairs that need rollouts, in first-seen order."""
    keys: dict[tuple[int, str], None] = {}
    for s in solutions:
        steps = split_steps(s.text)
        for i in range(1, len(steps)):
            keys[(s.problem.index, "".join(steps[:i]))] = None
    return list(keys)


def rollout_rewards(model, tokenizer, task, solutions: Sequence[SampledSolution], m: int, max_new_tokens: int,
                    temperature: float = 1.0, seed: int = 0, device: str | None = None, batch_rows: int = 256,
                    progress: Callable[[int], None] | None = None) -> tuple[dict[tuple[int, str], list[float]], dict]:
    """Verifier rewards of m policy rollouts from every distinct step prefix, and their cost (tokens, FLOPs).

    A rollout from a prefix of t tokens gets max_new_tokens - t new tokens (at least 1), the budget the original
    sample had left there. Rollouts use their own seed stream, apart from the samples they continue.
    """
    check_train_only([s.problem for s in solutions])
    if m < 1:
        raise DatawallError(f"--rollouts must be >= 1, got {m}")
    problems = {s.problem.index: s.problem for s in solutions}
    by_budget: dict[int, list[tuple[int, str]]] = {}
    for key in rollout_prefixes(solutions):
        budget = max(1, max_new_tokens - len(tokenizer.encode(key[1])))
        by_budget.setdefault(budget, []).append(key)
    per_call = max(1, batch_rows // m)
    rollout_seed = mix_seed(seed, 0x50524D)  # "PRM"
    rewards: dict[tuple[int, str], list[float]] = {}
    flops, tokens = 0.0, 0
    for budget, keys in sorted(by_budget.items()):
        for i in range(0, len(keys), per_call):
            chunk = keys[i:i + per_call]
            prompts = [problems[idx].prompt + prefix for idx, prefix in chunk]
            outs = generate(model, tokenizer, prompts, n=m, max_new_tokens=budget, temperature=temperature,
                            seed=rollout_seed, device=device, return_logprobs=False)
            for (idx, prefix), row in zip(chunk, outs, strict=True):
                rewards[(idx, prefix)] = [float(task.verify(problems[idx], prefix + r.text)) for r in row]
                flops += query_flops(model.config, row[0].prompt_tokens, [r.completion_tokens for r in row])
                tokens += sum(r.completion_tokens for r in row)
            if progress is not None:
                progress(len(chunk) * m)
    return rewards, {"prefixes": len(rewards), "rollouts": len(rewards) * m, "rollout_tokens": tokens,
                     "rollout_flops": flops}


def prm_examples(solutions: Sequence[SampledSolution], rewards: dict[tuple[int, str], list[float]],
                 label: str = "soft") -> list[ScoredExample]:
    """One example per solution: its steps, each labelled from its prefix's rollouts (the last by its reward)."""
    check_train_only([s.problem for s in solutions])
    out = []
    for s in solutions:
        steps = split_steps(s.text) or [""]
        targets = [step_label(rewards[(s.problem.index, "".join(steps[:i]))], label) for i in range(1, len(steps))]
        out.append(ScoredExample(s.problem.index, s.problem.prompt, steps, [*targets, s.reward]))
    return out
