"""The RLHF route's proxy reward: a Bradley-Terry reward model fitted to preference pairs.

The model is datawall's reward head on the policy's backbone (datawall.model.reward_head), read at the answer's
last token like an outcome reward model, so `datawall think --orm OUT` uses it for best-of-n as it is. Training
is the reward objective's within-problem ranking loss alone, with each pair as its own group: -log sigmoid(r_chosen
- r_rejected) (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1), on the one loop, whole prompts held out for the
pairwise accuracy that picks the best epoch. The run directory is OUT.run (config.json, the loop's metrics.jsonl,
checkpoint/, best/, result.json, DONE); the model is written to OUT atomically at the end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.device import require_device
from datawall.errors import DatawallError
from datawall.prefer.config import RewardPairsConfig
from datawall.prefer.data import file_digest, split_by_prompt
from datawall.prefer.pairs import Pair, read_metadata, read_pairs
from datawall.prefer.train import open_run
from datawall.train.objectives.reward import (
    RewardModelFormat,
    RewardObjective,
    RewardTrainConfig,
    ScoredExample,
    _tensors,
    encode,
    evaluate,
    pair_losses,
)

KIND = "prefer-reward"


class BradleyTerryObjective(RewardObjective):
    """The reward objective's ranking loss alone (no BCE: a pair says which answer is better, not whether either
    is right); its held-out criterion is 1 - within-pair AUC = 1 - pairwise accuracy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = "train bt"

    def loss(self, model, batch, step):
        chunk = [self.train_items[j] for j in batch]
        x, rows, cols, t, last = _tensors(model, chunk)
        logits = model(x)[rows, cols]
        bt = pair_losses(logits[last], t[last], [it.problem for it in chunk]).sum() / max(1, step.norm["pairs"])
        return bt, {"bt": bt.item()}


def pair_examples(pairs: list[Pair], indices: list[int]):
    """Two ScoredExamples per pair (chosen 1, rejected 0), grouped by the pair's index so the ranking loss compares
    exactly the pair's two answers (a grader's judgement is about that pair, not every answer of the prompt)."""
    return [ScoredExample(k, pairs[k].prompt, [text], [target]) for k in indices
            for text, target in ((pairs[k].chosen, 1.0), (pairs[k].rejected, 0.0))]


def train_pair_reward_model(cfg: RewardPairsConfig, out: str | Path, quiet: bool = False,
                            run_dir: str | Path | None = None) -> dict:
    """Fit (or read back) the Bradley-Terry reward model of cfg.pairs; returns the run's result."""
    from datawall.model import checkpoint_dir
    from datawall.model.reward_head import RewardModel
    from datawall.rewards.build import default_run_dir
    from datawall.train.loop import train

    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(out)
    policy_dir = checkpoint_dir(cfg.model).resolve()
    pairs = read_pairs(cfg.pairs)
    identity = {**cfg.model_dump(mode="json"), "model": str(policy_dir), "pairs": str(Path(cfg.pairs).resolve()),
                "pairs_sha256": file_digest(cfg.pairs)}
    require_device(cfg.device)
    train_idx, val_idx = split_by_prompt(pairs, cfg.val_frac, cfg.seed)
    if not train_idx:
        raise DatawallError(f"{cfg.pairs}: no training pairs left after holding out --val-frac {cfg.val_frac}")
    if (done := open_run(run_dir, identity, KIND)) is not None:
        if (out / "reward_model.json").is_file():
            return done | {"reused": True}
    rm = RewardModel.from_policy(policy_dir, "orm")
    rm.to(cfg.device)
    for k, p in enumerate(pairs):  # a character outside the vocabulary is named by its line, before training
        try:
            rm.encode(p.prompt, [p.chosen, p.rejected])
        except DatawallError as e:
            raise DatawallError(f"{p.where or f'pair {k + 1}'}: {e}") from None
    train_cfg = RewardTrainConfig(epochs=cfg.epochs, lr=cfg.lr, head_lr=cfg.head_lr, batch_size=2 * cfg.batch_size,
                                  val_frac=0.0, patience=cfg.patience, pairwise=1.0, seed=cfg.seed, device=cfg.device)

    objective = BradleyTerryObjective(rm, encode(rm, pair_examples(pairs, train_idx)),
                                      encode(rm, pair_examples(pairs, val_idx)), train_cfg)
    torch.manual_seed(cfg.seed)
    result = train(rm, objective, objective.loop_config(), run_dir, RewardModelFormat(), quiet=quiet)
    rm.eval()
    val = evaluate(rm, objective.val_items) if objective.val_items else {}
    spe = objective.steps_per_epoch
    meta = read_metadata(cfg.pairs) or {}
    metrics = {"train_pairs": len(train_idx), "val_pairs": len(val_idx),
               "val_pair_accuracy": val.get("within_problem_auc"), "epochs_run": -(-result.steps // spe),
               "best_epoch": result.best_step // spe if result.best_step is not None else None,
               "steps": result.steps, "train_flops": result.flops, "train_seconds": result.wall_seconds,
               "history": objective.history(run_dir / "metrics.jsonl")}
    rm.info |= {"base_model": str(policy_dir), "task": meta.get("task"), "task_args": meta.get("task_args"),
                "label": "bradley-terry", "pairs": identity["pairs"], "grader": meta.get("grader"),
                "metrics": metrics | {"val": val}, "run_dir": str(run_dir.resolve()),
                "cost": {"train_flops": result.flops, "pairs_dollars": meta.get("dollars")}}
    rm.to("cpu").save(out)
    summary = {"out": str(out), "run_dir": str(run_dir), **{k: v for k, v in metrics.items() if k != "history"}}
    atomic_write_json(run_dir / "result.json", summary)
    atomic_write_text(run_dir / "DONE", "")
    return summary | {"reused": False}
