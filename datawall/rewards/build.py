"""One reward-model build: sample train-split solutions from a policy, label them (verifier or rollouts), train, save.

The output directory is written once, atomically, when training has finished: an interrupted build leaves no
partial model. A directory that already holds a model built with the same settings is returned as it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from datawall.errors import DatawallError
from datawall.model.device import require_device
from datawall.model.reward_head import INFO, RewardModel
from datawall.progress import progress_bar
from datawall.rewards.orm import orm_examples, sample_solutions, train_problems
from datawall.rewards.prm import prm_examples, rollout_rewards
from datawall.rewards.train import RewardTrainConfig, train_reward_model
from datawall.tasks import get_task


class RewardBuildConfig(BaseModel):
    """Everything that decides a reward model: policy, task, data, labels and training."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="policy checkpoint directory the reward model judges (and starts from)")
    task: str
    task_args: dict[str, str] = {}
    kind: Literal["orm", "prm"] = "orm"
    problems: int = Field(200, ge=1, description="train-split problems to sample solutions for")
    first_problem: int = Field(0, ge=0, description="index of the first train-split problem; start past the "
                               "policy's own U training examples to label problems it has not seen")
    n: int = Field(8, ge=1, description="solutions sampled per problem")
    rollouts: int = Field(4, ge=1, description="PRM: Monte-Carlo rollouts per step prefix")
    label: Literal["soft", "hard"] = Field("soft", description="PRM: fraction of correct rollouts, or any correct")
    temperature: float = Field(1.0, ge=0)
    max_tokens: int | None = Field(None, ge=1, description="new tokens per sample (default 1.5 x longest solution)")
    seed: int = 0
    train: RewardTrainConfig = RewardTrainConfig()


def _existing(out: Path, build: dict) -> dict | None:
    """The stored info of a finished build with the same settings in `out`, else None."""
    path = out / INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("build") == build else None


def build_reward_model(cfg: RewardBuildConfig, out: str | Path, quiet: bool = False, force: bool = False) -> dict:
    """Build (or find already built) the reward model `cfg` describes in `out`; returns its reward_model.json."""
    from datawall.model import checkpoint_dir, load_checkpoint
    from datawall.train.evaluate import solution_budget

    out = Path(out)
    policy_dir = checkpoint_dir(cfg.model).resolve()
    build = {**cfg.model_dump(), "model": str(policy_dir)}
    if not force and (done := _existing(out, build)) is not None:
        return done | {"reused": True}
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INFO).is_file())):
        raise DatawallError(f"--out {out}: exists and is not a reward-model directory; refusing to replace it")
    require_device(cfg.train.device)
    start = time.perf_counter()
    task = get_task(cfg.task, **cfg.task_args)
    problems = train_problems(task, cfg.problems, cfg.first_problem)  # refuses anything but the train split
    ckpt = load_checkpoint(policy_dir)
    policy, tok, device = ckpt.model.to(cfg.train.device).eval(), ckpt.tokenizer, cfg.train.device
    max_tokens = cfg.max_tokens or solution_budget(task, tok, problems)
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("sample", total=cfg.problems * cfg.n, rate="", info="solutions")
        solutions, data = sample_solutions(policy, tok, task, problems, cfg.n, max_tokens, cfg.temperature,
                                           cfg.seed, device, progress=lambda k: bar.advance(job, k))
        if cfg.kind == "orm":
            examples = orm_examples(solutions)
        else:
            from datawall.rewards.prm import rollout_prefixes

            todo = len(rollout_prefixes(solutions)) * cfg.rollouts
            job = bar.add_task("rollouts", total=todo, rate="", info=f"{cfg.rollouts} per step prefix")
            rewards, stats = rollout_rewards(policy, tok, task, solutions, cfg.rollouts, max_tokens,
                                             cfg.temperature, cfg.seed, device,
                                             progress=lambda k: bar.advance(job, k))
            data |= stats
            examples = prm_examples(solutions, rewards, cfg.label)
    positions = [t for e in examples for t in e.targets]
    data |= {"split": "train", "problems": cfg.problems, "first_problem": cfg.first_problem, "examples": len(examples),
             "labelled_positions": len(positions), "mean_target": sum(positions) / len(positions),
             "max_tokens": max_tokens}
    del policy
    rm = RewardModel.from_policy(policy_dir, cfg.kind)
    metrics = train_reward_model(rm, examples, cfg.train, quiet=quiet)
    data_flops = data["sample_flops"] + data.get("rollout_flops", 0.0)
    rm.info |= {"base_model": str(policy_dir), "task": cfg.task, "task_args": cfg.task_args, "label": (
                    cfg.label if cfg.kind == "prm" else "verifier"), "build": build, "data": data,
                "metrics": metrics, "cost": {"data_flops": data_flops, "train_flops": metrics["train_flops"],
                                             "total_flops": data_flops + metrics["train_flops"],
                                             "seconds": time.perf_counter() - start}}
    rm.to("cpu").save(out)
    return rm.info | {"reused": False}
