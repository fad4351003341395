"""One reward-model build: sample train-split solutions from a policy, label them (verifier or rollouts), train
on the one loop, save.

The build runs in a resumable run directory (OUT.run by default); the output directory is written once,
atomically, when training has finished: an interrupted build leaves no partial model, and rerun it continues.
A directory that already holds a model built with the same settings is returned as it is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import datawall
from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.device import require_device
from datawall.errors import DatawallError
from datawall.model.reward_head import INFO, RewardModel
from datawall.progress import progress_bar
from datawall.rewards.orm import orm_examples, sample_solutions, train_problems
from datawall.rewards.prm import prm_examples, rollout_prefixes, rollout_rewards
from datawall.rewards.train import train_reward_model
from datawall.tasks import Problem, Task, get_task
from datawall.train.objectives.reward import RewardTrainConfig, ScoredExample


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


def default_run_dir(out: str | Path) -> Path:
    """Where a build for `out` keeps its training run by default: OUT.run beside OUT."""
    out = Path(out)
    return out.with_name(out.name + ".run")


def _open_run(run_dir: Path, build: dict, force: bool) -> None:
    """Make run_dir this build's run directory: new, resumed, or (force) started over; refuse anything else."""
    config = run_dir / "config.json"
    if run_dir.exists():
        try:
            existing = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        ours = isinstance(existing, dict) and existing.get("kind") == "reward"
        if not ours and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise DatawallError(f"{run_dir}: exists and is not a reward-model training run; choose another "
                                "--run-dir or remove it")
        if ours and (force or existing.get("build") != build):
            if not force:
                raise DatawallError(f"{run_dir} holds the training run of a different reward model (its "
                                    "config.json differs); pass --force to start over, or choose another "
                                    "--out or --run-dir")
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.exists():
        atomic_write_json(config, {"kind": "reward", "build": build, "datawall_version": datawall.__version__})


def _labelled(cfg: RewardBuildConfig, task: Task, problems: list[Problem], policy_dir: Path, run_dir: Path, quiet: bool
              ) -> tuple[list[ScoredExample], dict]:
    """The build's labelled examples and data stats: read back from run_dir, or sampled, labelled and stored."""
    from datawall.model import load_checkpoint
    from datawall.train.evaluate import solution_budget

    examples_path, data_path = run_dir / "examples.jsonl", run_dir / "data.json"
    if data_path.is_file() and examples_path.is_file():  # data.json is written last
        examples = [ScoredExample(**json.loads(line)) for line in examples_path.read_text().splitlines() if line]
        return examples, json.loads(data_path.read_text())
    start = time.perf_counter()
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
             "max_tokens": max_tokens, "sample_seconds": time.perf_counter() - start}
    atomic_write_text(examples_path, "".join(json.dumps(e.to_dict()) + "\n" for e in examples))
    atomic_write_json(data_path, data)
    return examples, data


def build_reward_model(cfg: RewardBuildConfig, out: str | Path, quiet: bool = False, force: bool = False,
                       run_dir: str | Path | None = None) -> dict:
    """Build (or find already built) the reward model `cfg` describes in `out`; returns its reward_model.json.

    The build is a resumable run directory (default OUT.run): config.json, examples.jsonl and data.json (the
    labelled samples, drawn once), the training loop's metrics.jsonl, checkpoint/ and best/, then result.json
    and DONE. Killed and rerun, it continues where it stopped; `force` starts it over.
    """
    from datawall.model import checkpoint_dir

    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(out)
    policy_dir = checkpoint_dir(cfg.model).resolve()
    build = {**cfg.model_dump(), "model": str(policy_dir)}
    if not force and (done := _existing(out, build)) is not None:
        return done | {"reused": True}
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INFO).is_file())):
        raise DatawallError(f"--out {out}: exists and is not a reward-model directory; refusing to replace it")
    require_device(cfg.train.device)
    # the task and its problems are checked before the run directory exists: a refused build (an unknown task,
    # more problems than a small world's train split holds) leaves nothing that would block the corrected one
    task = get_task(cfg.task, **cfg.task_args)
    problems = train_problems(task, cfg.problems, cfg.first_problem)  # refuses anything but the train split
    _open_run(run_dir, build, force)
    examples, data = _labelled(cfg, task, problems, policy_dir, run_dir, quiet)
    rm = RewardModel.from_policy(policy_dir, cfg.kind)
    metrics = train_reward_model(rm, examples, cfg.train, run_dir=run_dir, quiet=quiet)
    data_flops = data["sample_flops"] + data.get("rollout_flops", 0.0)
    rm.info |= {"base_model": str(policy_dir), "task": cfg.task, "task_args": cfg.task_args, "label": (
                    cfg.label if cfg.kind == "prm" else "verifier"), "build": build, "data": data,
                "metrics": metrics, "run_dir": str(run_dir.resolve()),
                "cost": {"data_flops": data_flops, "train_flops": metrics["train_flops"],
                         "total_flops": data_flops + metrics["train_flops"],
                         "seconds": data["sample_seconds"] + metrics["train_seconds"]}}
    rm.to("cpu").save(out)
    atomic_write_json(run_dir / "result.json", {k: rm.info[k] for k in ("metrics", "cost")} | {"out": str(out)})
    atomic_write_text(run_dir / "DONE", "")
    return rm.info | {"reused": False}
