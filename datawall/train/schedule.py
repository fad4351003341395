"""Learning-rate schedules: linear warmup, then cosine decay, warmup-stable-decay (WSD), or constant."""

from __future__ import annotations

import math

from datawall.train.config import OptimConfig


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    warmup = int(cfg.warmup_frac * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    # WSD: hold the peak, then decay linearly to the floor over the last decay_frac of the run
    decay_start = total_steps - int(cfg.decay_frac * total_steps)
    if step < decay_start:
        return cfg.lr
    progress = (step - decay_start) / max(1, total_steps - decay_start)
    return cfg.lr + (floor - cfg.lr) * min(1.0, progress)
