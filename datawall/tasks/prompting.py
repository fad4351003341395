"""What a model is given for a problem: its prompt, K solved train examples before it, as text or chat messages.

Few-shot (lm-eval's --num_fewshot): K problems of the task's train split with their worked solutions, drawn
without replacement from its first FEWSHOT_POOL problems by a seed and the asked problem's key, so every
problem gets its own examples, the same ones in every run and process, whichever other problems are asked.
The asked problem is never among them (train and test share no problem; a train problem skips itself).

Plain completion: ``prompt + solution`` blocks, each followed by the task's separator ("\\n\\n"), then the
asked prompt; a model that continues past its answer writes the next block's start, where the task's stop
sequence ("\\n\\nQuestion:" for jsonl and rg tasks) cuts it. Chat (--apply_chat_template
--fewshot_as_multiturn): each example is a user turn (its prompt) and an assistant turn (its solution), then
the asked prompt as the last user turn; the backend renders the messages with the model's chat template.
"""

from __future__ import annotations

import random

from datawall.errors import DatawallError
from datawall.tasks.base import Problem, Task, TaskIndexError
from datawall.tasks.splits import stable_seed

Message = dict[str, str]
Prompt = str | list[Message]  # a completion prompt, or chat messages [{"role": ..., "content": ...}]

FEWSHOT_POOL = 256  # examples come from the first problems of the train split (a generated split is walked)
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


def fewshot_examples(task: Task, problem: Problem, k: int, seed: int = FEWSHOT_SEED) -> list[Problem]:
    """K train problems to show before `problem`: chosen by (seed, its key), never `problem` itself."""
    if not 0 <= k < FEWSHOT_POOL:
        raise DatawallError(f"--fewshot must be between 0 and {FEWSHOT_POOL - 1}, got {k}")
    if k == 0:
        return []
    size = task.size("train")
    pool = FEWSHOT_POOL if size is None else min(size, FEWSHOT_POOL)
    order = random.Random(stable_seed("fewshot", seed, problem.key)).sample(range(pool), pool)
    out: list[Problem] = []
    for i in order:
        try:
            ex = task.problem("train", i)
        except TaskIndexError:  # a generated split smaller than the pool: its last problems are missing
            continue
        if ex.key != problem.key:
            out.append(ex)
            if len(out) == k:
                return out
    have = len(out) if size is None else size - (problem.split == "train")
    raise DatawallError(f"--fewshot {k}: {task.name} has only {have} train problem{'s' if have != 1 else ''} to "
                        f"show{' (a split=all file holds no train problems)' if have == 0 else ''}")


def build_prompt(task: Task, problem: Problem, fewshot: int = 0, seed: int = FEWSHOT_SEED,
                 chat: bool = False) -> Prompt:
    """The prompt of `problem` with `fewshot` solved train examples first: a string, or chat messages."""
    examples = fewshot_examples(task, problem, fewshot, seed)
    if chat:
        turns = [m for ex in examples for m in ({"role": "user", "content": ex.prompt},
                                                 {"role": "assistant", "content": task.solution(ex)})]
        return [*turns, {"role": "user", "content": problem.prompt}]
    sep = task.fewshot_separator
    return "".join(ex.prompt + task.solution(ex) + sep for ex in examples) + problem.prompt


def stop_sequences(task: Task, extra: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The task's stop sequences, then the caller's (--stop), each once, in order."""
    return list(dict.fromkeys([*task.stop, *(s for s in extra or () if s)]))


def as_messages(prompt: Prompt) -> list[Message]:
    """Chat messages of a prompt: a string becomes one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def is_chat(prompt: Prompt) -> bool:
    """Whether a prompt is chat messages (not completion text)."""
    return not isinstance(prompt, str)
