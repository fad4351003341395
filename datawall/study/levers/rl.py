"""The RL lever: GRPO-family post-training with the task's verifier on the baseline checkpoint(s), one rl run per
seed, its prompts drawn from the train problems past the U worked examples (they need no solution).

A point's training compute is the baseline's pretraining plus everything RL spent: sampling its rollouts and
training on them (datawall.rl counts both); its inference per query is the baseline's (same model size). On a world
with hazard cases the point carries the final policy's caveat recall, paired with the baseline's on the same
hazardous problems (measure.safety_point).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field

from datawall.study.jobs import Job
from datawall.study.levers.base import Count, Lever, LeverSection, Point
from datawall.study.levers.measure import accuracy_se, combine, interval, safety_point

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "rl"


class RL(LeverSection):
    """RL with verifiable rewards on the baseline checkpoint(s): `datawall rl` with these settings."""

    # off unless a spec enables it (every preset does): a spec written before this lever keeps the plan it had
    enabled: bool = False
    steps: Count = Field(200, description="optimizer steps of each rl run")
    group: Annotated[Count, Field(ge=2)] = Field(8, description="completions sampled per prompt")
    prompts_per_step: Count = Field(64, description="prompts per step")
    loss: Literal["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"] = "dapo"


def rl_config(spec: StudySpec, model_key: str, seed: int) -> dict:
    """The rl job config training the baseline checkpoint `model_key` (datawall rl's defaults otherwise)."""
    s = spec.levers.rl
    return {"model": model_key, "task": spec.world.task, "task_args": dict(spec.world.task_args),
            "steps": s.steps, "group": s.group, "prompts_per_step": s.prompts_per_step, "loss": s.loss,
            "first_problem": spec.world.unique_examples, "eval_problems": spec.world.eval_problems,
            "seed": seed, "device": spec.train.device}


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """One rl run per seed on that seed's baseline checkpoint."""
    from datawall.rl.config import RLConfig

    s = spec.levers.rl
    q = plan.query_flops(base.setting.size)
    d = RLConfig(task=spec.world.task)
    # per step: P x G samples (one forward each) and their training (3 forwards); evaluations: greedy on the
    # held-out and validation problems at the start, at each evaluation and at the end, and two pass@k pools
    evals = s.steps // d.eval_every + 2
    est = q * (4 * s.steps * s.prompts_per_step * s.group + evals * d.val_problems
               + 2 * spec.world.eval_problems + 2 * d.pass_problems * d.pass_samples)
    runs = tuple(plan.add(Job("rl", rl_config(spec, key, seed), deps=(key,)), est, NAME)
                 for seed, key in zip(spec.world.seeds, base.pretrain, strict=True))
    return [Point(NAME, base.setting, base.pretrain, runs)]


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """The RL point of the baseline checkpoint(s): accuracy after RL, at the baseline's cost plus RL's."""
    (point,) = mine
    rs = [results[k] for k in point.jobs]
    ses = [accuracy_se({"ci_low": r["accuracy_after_ci"][0], "ci_high": r["accuracy_after_ci"][1]}) for r in rs]
    acc, se = combine([r["accuracy_after"] for r in rs], ses)
    rl_flops = float(np.mean([r["flops"] for r in rs]))
    rl_seconds = float(np.mean([r["train_seconds"] for r in rs]))
    rl_dollars = price.dollars(0.0, 0.0, rl_flops, rl_seconds)
    train_flops = base["train_flops"] + rl_flops
    train_dollars = base["train_dollars"] + rl_dollars
    secs_per_flop = base["train_seconds"] / base["train_flops"] if base["train_flops"] > 0 else math.nan
    q_flops = base["inference_flops_per_query"]
    q_dollars = price.dollars(0.0, 0.0, q_flops, q_flops * secs_per_flop)
    lo, hi = interval(acc, se)
    s = plan.spec.levers.rl
    return [{
        "lever": NAME, "size": base["size"], "epochs": base["epochs"], "strategy": "greedy", "n": 1,
        "oracle": False, "seeds": len(rs), "runs": list(point.jobs), "params": base["params"],
        "rl_steps": s.steps, "rl_loss": s.loss, "rl_group": s.group, "rl_prompts_per_step": s.prompts_per_step,
        "rl_flops": rl_flops, "rl_sample_flops": float(np.mean([r["sample_flops"] for r in rs])),
        "rl_seconds": rl_seconds, "rl_best_step": [r["best_step"] for r in rs],
        "pass_at_k_before": [r["pass_at_k_before"] for r in rs], "pass_at_k_after": [r["pass_at_k_after"] for r in rs],
        "train_flops": train_flops, "train_seconds": base["train_seconds"] + rl_seconds,
        "train_dollars": train_dollars, "inference_flops_per_query": q_flops, "dollars_per_query": q_dollars,
        "compute": train_flops + q_flops * plan.spec.queries.expected,
        "dollars": train_dollars + q_dollars * plan.spec.queries.expected,
        "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
        "accuracy_seeds": [r["accuracy_after"] for r in rs], "eval_loss": None, "eval_loss_seeds": [],
        # the final policy's reward per held-out problem (the baseline's problems, in order): paired gains
        "per_problem_seeds": [_after_rewards(r) for r in rs],
    } | safety_point(rs)]  # a world with hazard cases: the final policy's caveats, paired with the baseline's


def _after_rewards(result: dict) -> list[float] | None:
    """The rl run's greedy reward per held-out problem after training (after.json), or None if it has none."""
    path = Path(result.get("run_dir", "")) / "after.json"
    return json.loads(path.read_text())["greedy"] if path.is_file() else None


def label(p: dict, base: dict) -> str:
    """"RL (dapo, 240 steps of 16 x 16 samples) on the baseline"."""
    return f"RL ({p['rl_loss']}, {p['rl_steps']} steps of {p['rl_prompts_per_step']} x {p['rl_group']} samples) " \
           "on the baseline"


LEVER = Lever(name=NAME, section=RL, title="RL with verifiable rewards", noun="RL on the verifier", color="C6",
              jobs=jobs, points=points, label=label, tag=lambda p: f"RL {p['rl_steps']}")
