"""Rewards of RL: a pluggable function of a problem and its group of completions, plus optional shaping terms.

A reward function is `fn(problem, completions) -> list[float]`, called once per prompt with its distinct
completions (a reward model scores them in one batch; a repeated text is scored once). Built in: the task's
verifier (the default), the rubric (correctness x rubric score, on a world with hazard cases), a seeded coin
flip (the control that should teach nothing) and a trained reward model (`datawall reward train`, its
P(correct)); any other callable of that shape can be passed to `datawall.rl.run_rl`. Shaping terms (format,
overlong, a per-token length cost) are added by `shape` from each completion's text, length and finish reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datawall.errors import DatawallError
from datawall.tasks import Problem, Task
from datawall.tasks.base import TaskIndexError
from datawall.tasks.splits import stable_seed

RewardFn = Callable[[Problem, list[str]], list[float]]


@dataclass
class Reward:
    """A reward function with its name (for the run's records) and the FLOPs it spends per completion read."""

    name: str
    fn: RewardFn
    flops: Callable[[Problem, str], float] = lambda problem, completion: 0.0
    is_verifier: bool = False  # its rewards are the verifier's (then they are also the logged accuracy)


def check_verifier(task: Task) -> None:
    """DatawallError unless the task has train problems and a verifier that accepts its own reference solution."""
    try:
        problem = task.problem("train", 0)
    except TaskIndexError:
        raise DatawallError(f"{task.name}: the train split has no problems, and RL draws its prompts from it") from None
    if not getattr(task, "verifiable", True):
        raise DatawallError(f"{task.name}: has no verifier, so RL has no reward; pass --reward DIR (a reward model "
                            "from `datawall reward train`) or choose a task with one")
    try:
        score = task.verify(problem, task.solution(problem))
    except NotImplementedError:
        raise DatawallError(f"{task.name}: has no verifier, so RL has no reward; pass --reward DIR (a reward model "
                            "from `datawall reward train`) or choose a task with one") from None
    if score < 1.0:
        raise DatawallError(f"{task.name}: its verifier gives its own reference solution {score:g}, not 1; RL needs "
                            "a verifier that recognises a right answer")


def verifier_reward(task: Task, how: str = "strict") -> Reward:
    """1 for a completion whose answer (read `how`) is right, else 0 (the task's verifier)."""
    return Reward(f"verifier ({how})", lambda problem, completions: [task.verify(problem, c, how) for c in completions],
                  is_verifier=True)


def rubric_reward_of(task: Task, how: str = "strict") -> Reward:
    """Correctness x the problem's rubric score (datawall.rewards.rubric_task.rubric_reward): a right answer earns 1
    with its required caveat and 0.5 without it, unsafe advice pulls it to 0 or below, a wrong answer earns 0. Only on
    a world with hazard cases: elsewhere it would be the verifier under another name."""
    from datawall.rewards.rubric_task import rubric_reward

    if not task.has_hazards:
        raise DatawallError(f"--reward rubric: {task.name} has no hazard cases, so its rubric is the verifier's answer "
                            "alone; use --reward verifier, or a world with hazard cases (e.g. hazard_rate=0.1)")
    return Reward(f"rubric ({how})", lambda problem, completions: [rubric_reward(task, problem, c, how)
                                                                   for c in completions])


def random_reward(seed: int) -> Reward:
    """A fair coin per (problem, completion text), seeded: the control reward, unrelated to correctness."""
    def fn(problem: Problem, completions: list[str]) -> list[float]:
        return [float(stable_seed("random-reward", seed, problem.key, c) & 1) for c in completions]

    return Reward("random", fn)


def model_reward(directory: str | Path, device: str = "cpu") -> Reward:
    """A trained reward model's P(correct) of each completion (an ORM's last-token score, a PRM's minimum step)."""
    from datawall.rewards.scorers import RewardScorer

    scorer = RewardScorer(directory, how="min", device=device)
    if scorer.rm.info.get("label") == "bradley-terry":  # `datawall prefer reward`: its score is the logit
        return bradley_terry_reward(scorer, directory)
    return Reward(f"{scorer.kind} {Path(directory)}", scorer, lambda problem, c: scorer.flops(problem.prompt, c))


def bradley_terry_reward(scorer, directory: str | Path) -> Reward:
    """A Bradley-Terry reward model's logit r at the answer's last token, P(a beats b) = sigmoid(r_a - r_b): only
    differences of r mean anything, so sigmoid(r) is no probability of being right (InstructGPT's RL reward is r)."""
    import torch

    rm = scorer.rm.eval()

    @torch.no_grad()
    def fn(problem: Problem, completions: list[str]) -> list[float]:
        items = [rm.encode(problem.prompt, [c]) for c in completions]  # one batch: a group's distinct answers
        logits = rm(rm.batch([ids for ids, _ in items])).float().cpu()
        return [float(logits[i, ends[-1]]) for i, (_, ends) in enumerate(items)]

    return Reward(f"bradley-terry {Path(directory)}", fn, lambda problem, c: scorer.flops(problem.prompt, c))


def build_reward(spec: str, task: Task, extract: str, seed: int, device: str) -> Reward:
    """The reward `--reward` names: verifier, rubric, random, or a reward-model directory."""
    if spec == "verifier":
        return verifier_reward(task, extract)
    if spec == "rubric":
        return rubric_reward_of(task, extract)
    if spec == "random":
        return random_reward(seed)
    path = Path(spec)
    if not path.is_dir():
        raise DatawallError(f"--reward {spec}: neither 'verifier', 'rubric', 'random' nor a reward-model directory")
    return model_reward(path, device)


def shape(rewards: list[float], task: Task, texts: list[str], lengths: list[int], truncated: list[bool],
          format_reward: float, overlong_penalty: float, max_tokens: int, length_penalty: float = 0.0) -> list[float]:
    """Rewards plus the format term (a strictly readable answer line), DAPO's soft overlong punishment (0 up to
    3/4 of max_tokens, then falling linearly to -overlong_penalty at max_tokens, and for a truncated completion) and
    a length cost of length_penalty per completion token."""
    out = list(rewards)
    if length_penalty:
        out = [r - length_penalty * n for r, n in zip(out, lengths, strict=True)]
    if format_reward:
        out = [r + format_reward * (task.extract_answer(t, "strict") is not None)
               for r, t in zip(out, texts, strict=True)]
    if overlong_penalty:
        buffer = max(1, max_tokens // 4)
        start = max_tokens - buffer
        out = [r - overlong_penalty * (1.0 if cut else min(1.0, max(0.0, (n - start) / buffer)))
               for r, n, cut in zip(out, lengths, truncated, strict=True)]
    return out
