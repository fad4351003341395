"""reasoning-gym's procedural tasks as datawall worlds: `rg:NAME` (e.g. rg:gsm_symbolic, rg:countdown).

reasoning-gym (Apache-2.0, `pip install 'datawall[rg]'`) generates unlimited seeded problems of 100+ kinds,
each with its own scorer. Candidate j of a split is entry 0 of `create_dataset(NAME, size=1, seed=s)` with s
drawn from the candidate's datawall seed, so the split machinery of every generated world applies: train and
test never share a question, and a split never repeats one.

Prompt: ``Question: <question>\\nAnswer:\\n`` and stop ``\\n\\nQuestion:`` (the jsonl format). The answer a
completion gives is read as for every task (strict: its '#### ' line; flexible: \\boxed{}, '#### ', "the answer
is"; the last number too when the dataset's answers are numbers) and handed to the dataset's own
`score_answer`. Its scores are partial (0.01 for a wrong answer of gsm_symbolic, 0.05 for a wrong expression of
countdown); the reward is 1.0 when the score reaches `threshold` (1.0 by default: exactly right) and 0.0
otherwise.
"""

from __future__ import annotations

import random
import string
from functools import cached_property, lru_cache
from typing import Any

from pydantic import Field

from datawall.errors import DatawallError
from datawall.tasks.base import ANSWER_PREFIX, GeneratedTask, Problem, TaskSettings, parse_number
from datawall.tasks.jsonl import PROMPT, STOP  # the jsonl format, prompt and stop alike

PREFIX = "rg:"
INSTALL = "pip install 'datawall[rg]' (reasoning-gym)"


class RgSettings(TaskSettings):
    """Settings of an `rg:NAME` task."""

    dataset: str = Field(min_length=1, description="the reasoning-gym dataset (rg:NAME gives it)")
    threshold: float = Field(1.0, gt=0.0, le=1.0, description="a dataset score at or above it is a reward of 1")

    # the threshold changes only the rewards, not which problems are drawn
    solution_only = frozenset({"threshold"})


def _gym():
    try:
        import reasoning_gym
    except ImportError:
        raise DatawallError(f"rg: tasks need reasoning-gym: {INSTALL}") from None
    return reasoning_gym


@lru_cache(maxsize=4096)
def _dataset(name: str, seed: int):
    """The one-entry dataset of `seed` (it scores its own entries)."""
    gym = _gym()
    try:
        return gym.create_dataset(name, size=1, seed=seed)
    except ValueError as e:
        if name not in gym.factory.DATASETS:
            near = sorted(n for n in gym.factory.DATASETS if name.lower()[:3] in n)[:8]
            hint = f"; close: {', '.join(near)}" if near else ""
            raise DatawallError(f"rg:{name}: not a reasoning-gym dataset ({len(gym.factory.DATASETS)} "
                                f"exist{hint})") from None
        raise DatawallError(f"rg:{name}: {e}") from None


def dataset_names() -> list[str]:
    """Every dataset the installed reasoning-gym registers."""
    return sorted(_gym().factory.DATASETS)


class ReasoningGymTask(GeneratedTask):
    """A reasoning-gym dataset: seeded problems scored by the dataset's own scorer, thresholded to 0/1."""

    name = "rg"
    summary = "reasoning-gym's procedural tasks (rg:gsm_symbolic, rg:countdown, ...), scored by their own scorers"
    Settings = RgSettings
    stop = STOP

    def __init__(self, settings: RgSettings):
        super().__init__(settings)
        self.name = PREFIX + settings.dataset
        _dataset(settings.dataset, 0)  # an unknown dataset (or a missing package) is one line now, not mid-run

    def _entry(self, problem: Problem) -> dict[str, Any]:
        return _dataset(self.settings.dataset, problem.meta["seed"])[0]

    def _generate(self, rng: random.Random) -> Problem:
        seed = rng.getrandbits(31)
        entry = _dataset(self.settings.dataset, seed)[0]
        question = str(entry["question"]).strip()
        return Problem(prompt=PROMPT.format(question=question), answer=str(entry["answer"]).strip(),
                       meta={"seed": seed, "question": question}, key=question)

    def solution(self, problem: Problem) -> str:
        """The dataset's worked solution where it has one (gsm_symbolic's `answer_cot`), then '#### answer'."""
        cot = str(self._entry(problem).get("metadata", {}).get("answer_cot") or "").strip()
        if cot and self.verify(problem, cot) == 1.0:  # it ends with its own '#### ' line already
            return cot
        return f"{cot}\n{ANSWER_PREFIX}{problem.answer}" if cot else ANSWER_PREFIX + problem.answer

    @cached_property
    def numeric_answers(self) -> bool:
        """Whether this dataset's answers are numbers (gsm_symbolic) or not (countdown's expressions): decides
        whether a flexible reading may fall back to a completion's last number."""
        return all(parse_number(p.answer) is not None for p in self.problems("train", 16))

    def verify(self, problem: Problem, completion: str, how: str = "strict") -> float:
        """1.0 when the dataset scores the extracted answer at or above `threshold`, else 0.0."""
        got = self.extract_answer(completion, how)
        if got is None:
            return 0.0
        dataset = _dataset(self.settings.dataset, problem.meta["seed"])
        return 1.0 if dataset.score_answer(answer=got, entry=dataset[0]) >= self.settings.threshold else 0.0

    @property
    def alphabet(self) -> str:
        """Printable ASCII and every character of the first 64 problems of each split (a character vocabulary
        built on it refuses other text in one line; a BPE tokenizer has no such limit)."""
        chars = set(string.printable)
        for split in ("train", "test"):
            for p in self.problems(split, 64):
                chars |= set(p.prompt + self.solution(p))
        return "".join(sorted(chars))

    def describe(self) -> str:
        return (f"{self.name} [{self.settings.as_text()}]: reasoning-gym's {self.settings.dataset}, "
                f"reward 1 at a score >= {self.settings.threshold:g}")
