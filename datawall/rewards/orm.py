"""ORM data: n sampled solutions per *train-split* problem, each labelled 0/1 (or in [0, 1]) by the task's verifier.

Held-out (test-split) problems are what `datawall think` measures on, so a reward model never sees one:
`check_train_only` refuses them, and every data function here calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from datawall.errors import DatawallError
from datawall.model.flops import sample_flops
from datawall.model.sampler import generate
from datawall.tasks import Problem, TaskIndexError
from datawall.train.objectives.reward import ScoredExample


@dataclass
class SampledSolution:
    """One policy sample for a train-split problem, with its verifier reward and token counts."""

    problem: Problem
    text: str
    reward: float
    prompt_tokens: int
    tokens: int


def check_train_only(problems: Sequence[Problem]) -> None:
    """Raise if any problem is not from the train split (reward models are never fitted on held-out problems)."""
    for p in problems:
        if p.split != "train":
            raise DatawallError(f"reward-model data must come from train-split problems; problem {p.index} "
                                f"({p.prompt!r}) is from split {p.split!r}")


def train_problems(task, count: int, start: int = 0) -> list[Problem]:
    """Train-split problems start .. start + count - 1 (distinct: a split never repeats a problem)."""
    if count < 1:
        raise DatawallError(f"--problems must be >= 1, got {count}")
    if start < 0:
        raise DatawallError(f"--first-problem must be >= 0, got {start}")
    try:
        problems = [task.problem("train", i) for i in range(start, start + count)]
    except TaskIndexError as e:  # a small world: name the flags that asked too much, and what there is
        size = task.size("train")
        room = f"; at most {size - start:,} from --first-problem {start:,}" if size is not None and size > start else ""
        raise DatawallError(f"--problems {count:,} from --first-problem {start:,}: {e}{room}") from None
    check_train_only(problems)
    return problems


def query_flops(config, prompt_tokens: int, completion_tokens: Sequence[int]) -> float:
    """Forward FLOPs of one prompt prefilled once and its completions (datawall.model.flops convention)."""
    prefill = sample_flops(config, prompt_tokens, 0, n=0)
    return prefill + sum(sample_flops(config, prompt_tokens, t, n=1) - prefill for t in completion_tokens)


def sample_solutions(model, tokenizer, task, problems: Sequence[Problem], n: int, max_new_tokens: int,
                     temperature: float = 1.0, seed: int = 0, device: str | None = None, batch_rows: int = 256,
                     progress=None) -> tuple[list[SampledSolution], dict]:
    """n verified policy samples per train-split problem (batched), and the sampling cost (tokens, FLOPs)."""
    check_train_only(problems)
    if n < 1:
        raise DatawallError(f"--n must be >= 1, got {n}")
    per_call = max(1, batch_rows // n)
    out: list[SampledSolution] = []
    flops, tokens = 0.0, 0
    for i in range(0, len(problems), per_call):
        chunk = list(problems[i:i + per_call])
        samples = generate(model, tokenizer, [p.prompt for p in chunk], n=n, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, device=device, return_logprobs=False)
        for p, row in zip(chunk, samples, strict=True):
            out += [SampledSolution(p, s.text, float(task.verify(p, s.text)), s.prompt_tokens, s.completion_tokens)
                    for s in row]
            flops += query_flops(model.config, row[0].prompt_tokens, [s.completion_tokens for s in row])
            tokens += sum(s.completion_tokens for s in row)
        if progress is not None:
            progress(len(chunk) * n)
    rewards = [s.reward for s in out]
    return out, {"solutions": len(out), "correct_rate": sum(rewards) / len(rewards), "sample_tokens": tokens,
                 "sample_flops": flops}


def orm_examples(solutions: Sequence[SampledSolution]) -> list[ScoredExample]:
    """One example per solution: the whole completion as one step, its verifier reward as the target."""
    check_train_only([s.problem for s in solutions])
    return [ScoredExample(s.problem.index, s.problem.prompt, [s.text], [s.reward]) for s in solutions]
