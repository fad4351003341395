"""What the one training loop trains on: an objective supplies batches, a loss and an evaluation.

The protocol (subclass `Objective`; only `step` and `loss` are required):

    name                      label of the progress bar
    criterion                 key of evaluate()'s metrics to minimise for best-checkpoint selection and early
                              stopping, or None
    param_groups(model)       [ParamGroup(name, params, lr_mult)]: what the optimizer trains, at which share of
                              the scheduled lr (default: every parameter of the model at 1x)
    step(s, model) -> Step    optimizer step s's micro-batches, a pure function of (the objective's seed, s), so
                              a resumed run sees the same batches; `model` is the model being trained, for
                              objectives that sample their batches from it (RL)
    loss(model, batch, step)  (loss, parts) of one micro-batch, already normalised over the whole step: the
                              step's loss is the sum over its micro-batches (the loop calls backward on each);
                              parts are floats logged as train_<name>, summed the same way
    evaluate(model) -> dict   held-out metrics (logged into the step's metrics line); {} when there are none

The loop runs loss() under bf16 autocast on CUDA and owns everything else: optimizer, schedule, clipping,
accumulation, checkpoints, resume, best-checkpoint selection. An objective may hold modules of its own (a frozen
reference model for DPO, say: put it on the device itself and give it requires_grad=False, so it is neither
trained nor checkpointed) and may build each step's batches only when asked (sampled from the current model
for GRPO). Objectives: `lm` (pretraining, SFT), `reward` (reward models), `dpo` (preference pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from datawall.train.optim import ParamGroup


@dataclass
class Step:
    """One optimizer step's micro-batches and what the step costs."""

    batches: Sequence[Any]  # whatever the objective's loss() takes, one entry per micro-batch
    tokens: int  # input positions the step feeds the model (padding included)
    flops: float  # training FLOPs of the step
    norm: dict[str, float] = field(default_factory=dict)  # step-wide counts the loss is normalised by


class Objective:
    """Base class of training objectives (see the module docstring for the protocol)."""

    name: str = "train"
    criterion: str | None = None

    def param_groups(self, model: torch.nn.Module) -> list[ParamGroup]:
        """Every parameter of the model at the scheduled lr."""
        return [ParamGroup("model", list(model.parameters()))]

    def step(self, step: int, model: torch.nn.Module) -> Step:
        """The micro-batches of optimizer step `step` (0-based)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's loss, normalised over the whole step, and the parts to log."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """Held-out metrics; {} when the objective has no held-out data."""
        return {}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


__all__ = ["Objective", "ParamGroup", "Step", "model_device"]
