"""The language-model objective: next-token cross-entropy on every target that is not -100 (pretraining on
packed corpora, supervised fine-tuning on examples whose prompt tokens are masked)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from datawall.model import train_flops_per_token
from datawall.train.config import TrainConfig
from datawall.train.loop import TrainResult, autocast, train
from datawall.train.objectives import Objective, Step, model_device
from datawall.train.state import HFFormat


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, rows: tuple[torch.Tensor, torch.Tensor], device: str,
                 batch_size: int = 32) -> float:
    """Mean cross-entropy (nats per target token) over fixed held-out rows."""
    was_training = model.training
    model.eval()
    x_all, y_all = rows
    total, count = 0.0, 0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i:i + batch_size].to(device), y_all[i:i + batch_size].to(device)
        with autocast(device):
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                                 reduction="sum").item()
        count += int((y != -100).sum())
    model.train(was_training)
    return total / max(1, count)


class LMObjective(Objective):
    """Cross-entropy over a step's targets, summed and divided by the step's target count (so accumulated
    micro-batches of any sizes give the loss of one big batch).

    stream.batch(i, micro_batch) gives micro-batch i (a pure function of the stream's seed and i); step s reads
    micro-batches s * grad_accum .. s * grad_accum + grad_accum - 1. heldout: fixed (inputs, targets) rows for
    eval_loss, or None.
    """

    name = "train"

    def __init__(self, stream, heldout: tuple[torch.Tensor, torch.Tensor] | None, micro_batch: int,
                 grad_accum: int, flops_per_token: float):
        self.stream, self.heldout = stream, heldout
        self.micro_batch, self.grad_accum, self.flops_per_token = micro_batch, grad_accum, flops_per_token
        self.criterion = "eval_loss" if heldout is not None else None

    def step(self, step: int, model: torch.nn.Module) -> Step:
        batches = [self.stream.batch(step * self.grad_accum + i, self.micro_batch) for i in range(self.grad_accum)]
        targets = sum(int((y != -100).sum()) for _, y in batches)
        positions = sum(x.numel() for x, _ in batches)  # example streams trim padding per batch
        return Step(batches, positions, self.flops_per_token * positions, {"targets": targets})

    def loss(self, model: torch.nn.Module, batch, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        device = model_device(model)
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                               reduction="sum") / max(1, step.norm["targets"])
        return loss, {}

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        if self.heldout is None:
            return {}
        return {"eval_loss": heldout_loss(model, self.heldout, str(model_device(model)))}


def train_lm(model: torch.nn.Module, tokenizer, stream, heldout, cfg: TrainConfig, run_dir: str | Path,
             meta: dict | None = None, quiet: bool = False) -> TrainResult:
    """Pretrain or fine-tune `model` on `stream` for cfg.tokens tokens on the one loop; checkpoints are HF
    directories (with `meta` in datawall.json) in run_dir/checkpoint; resumes."""
    objective = LMObjective(stream, heldout, cfg.batch_size // cfg.grad_accum, cfg.grad_accum,
                            train_flops_per_token(model.config, cfg.seq_len))
    return train(model, objective, cfg.loop(), run_dir, HFFormat(tokenizer, dict(meta or {})), quiet=quiet)
