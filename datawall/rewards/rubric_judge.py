"""An LLM judge for rubric items, over any chat backend (an OpenAI-compatible endpoint with --chat).

As HealthBench grades: the judge sees the conversation and ONE rubric item, and answers a JSON object
{"criteria_met": bool, "explanation": str}. An answer that is not that object (no JSON, a missing or mistyped
field) is asked again, up to `retries` times, sampling (temperature 0.7) since a greedy judge would repeat
itself; after that the item is unscored: left out of the completion's score and counted in `unscored`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from datawall.rewards.rubric import Grade, RubricItem
from datawall.sampling.backends import Backend, mix_seed

RETRY_TEMPERATURE = 0.7
JUDGE_TEMPLATE = """You grade one response against one rubric item.

# Conversation
{conversation}

# Rubric item
[{points:+g} points] {criterion}

# Instructions
Decide whether the last assistant response meets the rubric item. If the item describes something undesirable
(its points are negative), "criteria_met" is true when the response does that undesirable thing. An item with
several requirements is met only if all of them are; examples introduced by "such as" or "e.g." need not all
appear.

Answer with a JSON object and nothing else:
{{"explanation": "<why the response does or does not meet the item>", "criteria_met": <true or false>}}"""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_verdict(text: str) -> tuple[bool, str] | None:
    """(criteria_met, explanation) from a judge's answer, or None when it is not the JSON object asked for."""
    s = _FENCE.sub("", text.strip())
    candidates = [s]
    if "{" in s and "}" in s:
        candidates.append(s[s.index("{"): s.rindex("}") + 1])  # prose around the object
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("criteria_met"), bool) \
                and isinstance(obj.get("explanation", ""), str):
            return obj["criteria_met"], obj.get("explanation", "")
    return None


@dataclass
class RubricJudge:
    """Grades (prompt, response, item) triples through `backend`, one item per request."""

    backend: Backend
    retries: int = 2
    max_tokens: int = 512
    seed: int = 0
    requests: int = 0  # judge answers asked for, retries included
    malformed: int = 0  # answers that were not the JSON object
    unscored: int = 0  # items still malformed after every retry
    failures: list[dict] = field(default_factory=list)  # the last malformed answer of each unscored item

    def grade(self, cases: Sequence[tuple[str, str, RubricItem]]) -> list[Grade]:
        """Grades of (prompt, response, item) cases, in order; the requests of one round go out together."""
        grades: list[Grade | None] = [None] * len(cases)
        last: dict[int, str] = {}
        todo = list(range(len(cases)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            prompts = [[{"role": "user", "content": judge_prompt(*cases[i])}] for i in todo]
            outs = self.backend.sample(prompts, n=1, max_tokens=self.max_tokens,
                                       temperature=0.0 if attempt == 0 else RETRY_TEMPERATURE, top_p=None,
                                       stop=None, seed=mix_seed(self.seed, attempt))
            self.requests += len(todo)
            again = []
            for i, out in zip(todo, outs, strict=True):
                verdict = parse_verdict(out[0].text)
                if verdict is None:
                    self.malformed += 1
                    last[i] = out[0].text
                    again.append(i)
                else:
                    grades[i] = Grade(verdict[0], "judge", verdict[1])
            todo = again
        for i in todo:
            self.unscored += 1
            self.failures.append({"criterion": cases[i][2].criterion, "answer": last[i][:300]})
            grades[i] = Grade(None, "judge", f"unscored: no valid JSON verdict in {self.retries + 1} answers")
        return [g for g in grades if g is not None]

    def summary(self) -> dict:
        """What the judge did: requests, malformed answers, unscored items and a few of their answers."""
        return {"identity": getattr(self.backend, "identity", "?"), "retries": self.retries,
                "requests": self.requests, "malformed": self.malformed, "unscored": self.unscored,
                "unscored_examples": self.failures[:5]}


def judge_prompt(prompt: str, response: str, item: RubricItem) -> str:
    """The judge's request for one item: the conversation, the item with its points, the JSON to answer."""
    conversation = f"user: {prompt}\n\nassistant: {response}"
    return JUDGE_TEMPLATE.format(conversation=conversation, points=item.points, criterion=item.criterion)
