"""The one optimizer builder: AdamW over named parameter groups, each with its own learning-rate multiplier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from datawall.train.config import OptimConfig


@dataclass
class ParamGroup:
    """Parameters that share a learning-rate multiplier (e.g. a fresh head at 3x its backbone's lr)."""

    name: str
    params: list[torch.nn.Parameter]
    lr_mult: float = 1.0


def make_optimizer(groups: Sequence[ParamGroup], cfg: OptimConfig) -> tuple[torch.optim.AdamW, list[float]]:
    """AdamW, and the lr multiplier of each of its torch param groups (in order).

    Weight decay applies to every matrix (p.dim() >= 2: the embedding and lm_head included) and to no vector
    (norm gains, biases). Each ParamGroup becomes a decayed and an undecayed torch group (empty ones dropped).
    Parameters with requires_grad=False (a frozen reference model, say) are left out.
    """
    torch_groups, mults = [], []
    for group in groups:
        params = [p for p in group.params if p.requires_grad]
        for decayed in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decayed]
            if chosen:
                torch_groups.append({"params": chosen, "weight_decay": cfg.weight_decay if decayed else 0.0,
                                     "name": f"{group.name}/{'decay' if decayed else 'no_decay'}"})
                mults.append(group.lr_mult)
    if not torch_groups:
        raise ValueError("no trainable parameters to optimize")
    return torch.optim.AdamW(torch_groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)), mults


def set_lr(optimizer: torch.optim.Optimizer, lr: float, mults: Sequence[float]) -> None:
    """Give each param group the schedule's lr times its multiplier."""
    for group, mult in zip(optimizer.param_groups, mults, strict=True):
        group["lr"] = lr * mult
