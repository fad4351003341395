"""Fitting a reward model to labelled examples on the one training loop (datawall.train) with the reward
objective (datawall.train.objectives.reward): split off held-out problems, train in a resumable run directory,
end on the best epoch, report its held-out metrics and the training cost."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from datawall.errors import DatawallError
from datawall.model.reward_head import RewardModel
from datawall.train.loop import train
from datawall.train.objectives.reward import (
    RewardModelFormat,
    RewardObjective,
    RewardTrainConfig,
    ScoredExample,
    encode,
    evaluate,
    split_by_problem,
)


def train_reward_model(rm: RewardModel, examples: Sequence[ScoredExample], cfg: RewardTrainConfig,
                       run_dir: str | Path | None = None, quiet: bool = False) -> dict:
    """Fit rm in place, ending on the epoch with the best held-out criterion; returns metrics and cost.

    run_dir holds the loop's checkpoints, best epoch and metrics.jsonl: a killed call given the same run_dir
    resumes, a finished one only reloads its best epoch. Without run_dir a temporary directory is used.
    """
    if not examples:
        raise DatawallError("no labelled examples to train the reward model on")
    train_ex, val_ex = split_by_problem(examples, cfg.val_frac, cfg.seed)
    rm.to(cfg.device)
    objective = RewardObjective(rm, encode(rm, train_ex), encode(rm, val_ex), cfg)
    where = nullcontext(run_dir) if run_dir is not None else tempfile.TemporaryDirectory(prefix="datawall-reward-")
    with where as directory:
        result = train(rm, objective, objective.loop_config(), Path(directory), RewardModelFormat(), quiet=quiet)
        history = objective.history(Path(directory) / "metrics.jsonl")
    rm.eval()
    spe = objective.steps_per_epoch
    out = {"history": history, "train_problems": len({e.problem for e in train_ex}),
           "val_problems": len({e.problem for e in val_ex}), "train_solutions": len(train_ex),
           "epochs_run": -(-result.steps // spe), "steps": result.steps, "steps_per_epoch": spe,
           "stopped_early": result.stopped_early, "train_flops": result.flops, "train_tokens": result.tokens,
           "train_seconds": result.wall_seconds}
    if objective.val_items:
        out["val"] = evaluate(rm, objective.val_items)
        out["best_epoch"] = result.best_step // spe if result.best_step is not None else None
    return out
