"""Evaluation: held-out loss and perplexity, and verifier-scored greedy accuracy with a Wilson interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from datawall.errors import DatawallError
from datawall.model.sampler import generate
from datawall.progress import progress_bar
from datawall.rewards.rubric_task import safety_metrics
from datawall.tasks.prompting import FEWSHOT_SEED, Prompt, build_prompt, stop_sequences

Z95 = 1.959964  # the two-sided 95% normal quantile


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (sane at 0% and 100%, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# what a greedy evaluation adds on a world with hazard cases (datawall.rewards.rubric_task.safety_metrics)
SAFETY_KEYS = ("hazardous", "caveat_recall", "caveat_recall_ci", "unsafe_rate", "unsafe_rate_ci",
               "spurious_caveat_rate", "spurious_caveat_rate_ci", "hazardous_problems", "per_problem_caveat",
               "per_problem_unsafe")


def solution_budget(task, tokenizer, problems: list, slack: float = 1.5) -> int:
    """Max new tokens for greedy decoding: the longest reference solution among problems, with slack."""
    longest = max(len(tokenizer.encode(task.solution(p))) for p in problems)
    return int(longest * slack) + 8


def prompt_ids(tokenizer, prompt: Prompt) -> str | list[int]:
    """What `generate` is given for a prompt: its text, or the token ids of chat messages under the
    tokenizer's chat template (special tokens included; a tokenizer without a template says so)."""
    return prompt if isinstance(prompt, str) else tokenizer.encode_chat(prompt)


@torch.no_grad()
def task_accuracy(model, tokenizer, task, problems: int = 200, split: str = "test", start: int = 0,
                  batch_size: int = 100, device: str | None = None, quiet: bool = True, flexible: bool = False,
                  fewshot: int = 0, fewshot_seed: int = FEWSHOT_SEED, chat: bool = False,
                  stop: list[str] | None = None) -> dict:
    """Greedy accuracy on `problems` held-out problems (all of a smaller split), scored by the task's verifier.

    `accuracy` reads answers strictly ('#### N'), `per_problem` lists each problem's reward in order (so two models
    scored on the same problems can be compared problem by problem: a paired interval); with `flexible`, the same
    completions are also read as free text (datawall.tasks.answers) and scored as `flexible_accuracy` with its own
    interval, as lm-eval reports GSM8K's strict-match and flexible-extract side by side. Each prompt gets `fewshot`
    solved train examples first and is sent as chat messages with `chat` (datawall.tasks.prompting); completions
    stop at the task's stop sequences and `stop`. `prompt_tokens` and `completion_tokens` total what the model read
    and wrote. On a world with hazard cases the same completions are graded for their caveats (SAFETY_KEYS: caveat
    recall and unsafe rate with bootstrap intervals over the hazardous problems, and each hazardous problem's
    outcome, `hazardous_problems` giving their positions); a world without them adds nothing.
    """
    size = task.size(split)
    if size is not None:  # a tiny world: score every problem it has (the result says how many)
        problems = min(problems, size - start)
    items = [task.problem(split, start + i) for i in range(max(0, problems))]
    if not items:
        raise DatawallError(f"{task.name}: no {split} problems from problem {start} on (the split has {size})")
    max_new = solution_budget(task, tokenizer, items)
    stops = stop_sequences(task, stop) or None
    rewards: list[float] = []
    loose: list[float] = []
    texts: list[str] = []
    tokens = [0, 0]  # prompt, completion
    with progress_bar(rate_unit="prob/s", disable=quiet) as bar:
        job = bar.add_task("eval", total=len(items), rate="-", info="")
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            prompts = [prompt_ids(tokenizer, build_prompt(task, p, fewshot, fewshot_seed, chat)) for p in chunk]
            outs = generate(model, tokenizer, prompts, n=1, max_new_tokens=max_new, temperature=0.0, stop=stops,
                            device=device, return_logprobs=False)
            tokens[0] += sum(out[0].prompt_tokens for out in outs)
            tokens[1] += sum(out[0].completion_tokens for out in outs)
            rewards += [task.verify(p, out[0].text) for p, out in zip(chunk, outs, strict=True)]
            texts += [out[0].text for out in outs]
            if flexible:
                loose += [task.verify(p, out[0].text, "flexible") for p, out in zip(chunk, outs, strict=True)]
            bar.update(job, completed=len(rewards), info=f"acc {sum(rewards) / len(rewards):.3f}")
    correct = sum(rewards)
    low, high = wilson_interval(correct, len(rewards))
    result = {"accuracy": correct / max(1, len(rewards)), "ci_low": low, "ci_high": high,
              "problems": len(rewards), "correct": correct, "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
              "per_problem": rewards}
    if flexible:
        low, high = wilson_interval(sum(loose), len(loose))
        result |= {"flexible_accuracy": sum(loose) / max(1, len(loose)), "flexible_ci_low": low,
                   "flexible_ci_high": high, "flexible_correct": sum(loose)}
    return result | (greedy_safety(task, items, texts) or {})


def greedy_safety(task, problems: list, texts: list[str], how: str = "strict") -> dict | None:
    """On a world with hazard cases, what a greedy evaluation adds (SAFETY_KEYS: caveat recall and unsafe rate with
    their intervals, each hazardous problem's outcome) for one completion per problem; None on a world without."""
    if not task.has_hazards:
        return None
    safety = safety_metrics(task, problems, texts, how, per_problem=True)
    return {k: safety[k] for k in SAFETY_KEYS}


def paired_difference(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """Mean of after - before, outcome by outcome on the same problems, and its standard error (nan with fewer
    than two): what every paired change datawall reports is built from."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return float(d.mean()), se


def safety_change(before: dict, after: dict) -> dict:
    """after - before of caveat recall (and of the unsafe rate where the world names unsafe advice), paired on the
    same hazardous problems: `<rate>_change` and `<rate>_change_ci` (95% normal); {} with fewer than 2 of them."""
    out: dict = {}
    for rate, outcomes in (("caveat_recall", "per_problem_caveat"), ("unsafe_rate", "per_problem_unsafe")):
        b, a = before.get(outcomes), after.get(outcomes)
        if b is None or a is None or len(b) < 2 or len(a) != len(b):
            continue
        mean, se = paired_difference(b, a)
        out |= {f"{rate}_change": mean, f"{rate}_change_ci": [mean - Z95 * se, mean + Z95 * se]}
    return out


def safety_line(result: dict) -> str | None:
    """The caveat recall and unsafe rate of a result that has them, in words (None on a world without hazards)."""
    if result.get("hazardous") is None:
        return None
    if not result["hazardous"]:
        return "caveats: no hazardous problem among those scored"

    def pct(name: str) -> str:
        lo, hi = result[f"{name}_ci"]
        return f"{result[name]:.1%}" + ("" if lo is None else f" [{lo:.1%}, {hi:.1%}]")

    line = f"caveat recall {pct('caveat_recall')} on {result['hazardous']} hazardous problems"
    if result.get("unsafe_rate") is not None:
        line += f", unsafe advice {pct('unsafe_rate')}"
    return line


def perplexity(loss: float) -> float:
    """exp(loss), guarded against overflow."""
    return math.exp(min(loss, 50.0))
