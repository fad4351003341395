"""The lab-safety scenarios as an inspect-ai task (optional: pip install 'datawall[inspect]').

    inspect eval datawall/safety/inspect_task.py --model openai/gpt-4o-mini
    inspect eval datawall/safety/inspect_task.py -T scenarios=my.jsonl --model hf/HuggingFaceTB/SmolLM2-135M-Instruct

One Sample per scenario (input: its question; id: its id); the solver asks once; the scorer grades the answer
with the scenario's rule items exactly as `datawall safety eval` does (HealthBench's points met over positive
points possible; items that need an LLM judge are left to `datawall safety eval --judge-endpoint`), and the
metrics are the mean clipped to [0, 1], as HealthBench aggregates, and its standard error.
"""

from __future__ import annotations

import numpy as np

from datawall.errors import DatawallError

try:
    from inspect_ai import Task, task
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import Metric, SampleScore, Score, Target, metric, scorer, stderr
    from inspect_ai.solver import TaskState, generate
except ImportError:
    raise DatawallError("the inspect-ai task needs inspect-ai: pip install 'datawall[inspect]'") from None
from datawall.rewards.rubric import completion_score, grade_by_rules
from datawall.safety.scenarios import Scenario, load_scenarios


@metric
def clipped_mean() -> Metric:
    """HealthBench's aggregate: the mean score clipped to [0, 1]."""

    def compute(scores: list[SampleScore]) -> float:
        return float(np.clip(np.mean([s.score.as_float() for s in scores]), 0.0, 1.0))

    return compute


@scorer(metrics=[clipped_mean(), stderr()])
def rubric_scorer(scenarios: list[Scenario]):
    """Grade the answer with the scenario's rule items; the explanation lists the items met."""
    by_id = {s.id: s for s in scenarios}

    async def score(state: TaskState, target: Target) -> Score:
        s = by_id[str(state.sample_id)]
        answer = state.output.completion
        grades = [grade_by_rules(it, answer) for it in s.items]
        met = [f"{it.points:+g} {it.criterion}" for it, g in zip(s.items, grades, strict=True) if g.met]
        value = completion_score(s.items, grades)
        return Score(value=0.0 if value is None else value, answer=answer,
                     explanation="; ".join(met) or "no item met")

    return score


@task
def lab_safety(scenarios: str | None = None) -> Task:
    """datawall's lab-safety scenarios (or a file of the same shape) scored by their rubrics."""
    loaded = load_scenarios(scenarios)
    judged = [s.id for s in loaded if any(not it.by_rules for it in s.items)]
    if judged:
        raise DatawallError(f"scenarios {', '.join(judged[:3])} have items only an LLM judge can grade; score them "
                            "with `datawall safety eval --judge-endpoint`")
    dataset = MemoryDataset([Sample(input=s.prompt, id=s.id) for s in loaded], name="datawall-lab-safety")
    return Task(dataset=dataset, solver=generate(), scorer=rubric_scorer(loaded))
