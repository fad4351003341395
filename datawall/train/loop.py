"""The one training loop: pretraining and supervised fine-tuning (masked targets are -100).

Resumable: the batch at step s is a pure function of (data seed, s), and checkpoints hold the weights,
AdamW moments and loop counters, so a run killed at any point and restarted reaches the same losses.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from datawall.atomic import append_jsonl, atomic_write_text
from datawall.counts import format_count
from datawall.model import train_flops_per_token
from datawall.progress import progress_bar
from datawall.train.config import TrainConfig
from datawall.train.schedule import lr_at
from datawall.train.state import (
    LoopState,
    find_training_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)


@dataclass
class TrainResult:
    """What a finished loop reports."""

    steps: int
    tokens: int
    flops: float
    wall_seconds: float
    train_loss: float
    eval_loss: float | None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2))


def autocast(device: str):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from, so a resumed log reads as one run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(model: torch.nn.Module, tokenizer, stream, heldout, cfg: TrainConfig, run_dir: str | Path,
          meta: dict | None = None, quiet: bool = False) -> TrainResult:
    """Train `model` on `stream` for cfg.tokens tokens, checkpointing into run_dir/checkpoint; resumes."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device, meta = cfg.device, dict(meta or {})
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    state = LoopState()
    resume_from = find_training_checkpoint(run_dir)
    if resume_from is not None:
        state = load_training_checkpoint(resume_from, model, optimizer)
    metrics_path = run_dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, state.step)

    steps, accum = cfg.steps, cfg.grad_accum
    micro = cfg.batch_size // accum
    flops_per_token = train_flops_per_token(model.config, cfg.seq_len)
    eval_every = cfg.every(cfg.eval_every, 10)
    ckpt_every = cfg.every(cfg.checkpoint_every, 5)
    log_every = max(1, steps // 200)

    def checkpoint() -> None:
        save_training_checkpoint(run_dir, model, tokenizer, meta, optimizer, state)

    train_loss, eval_loss = float("nan"), None
    with progress_bar(disable=quiet) as bar:
        job = bar.add_task("train", total=steps, completed=state.step, rate="-", info="")
        t_last, tokens_last = time.perf_counter(), state.tokens
        # True from the optimizer update until that step is logged: an interrupt (which arrives as an exception
        # at any point) then keeps the last whole checkpoint instead of saving weights and a log out of step
        mid_update = False
        try:
            while state.step < steps:
                t0 = time.perf_counter()
                lr = lr_at(state.step, steps, cfg.optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batches = [stream.batch(state.step * accum + i, micro) for i in range(accum)]
                targets = sum(int((y != -100).sum()) for _, y in batches)
                positions = sum(x.numel() for x, _ in batches)  # example streams trim padding per batch
                loss_sum = 0.0
                for x, y in batches:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with autocast(device):
                        logits = model(x)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                                           reduction="sum") / max(1, targets)
                    loss.backward()
                    loss_sum += loss.item()
                grad_norm = None
                if cfg.optim.grad_clip > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
                mid_update = True
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                state.step += 1
                state.tokens += positions
                state.flops += flops_per_token * positions
                state.wall_seconds += time.perf_counter() - t0
                train_loss = loss_sum
                record = {"step": state.step, "tokens": state.tokens, "flops": state.flops, "lr": lr,
                          "train_loss": train_loss, "wall_seconds": round(state.wall_seconds, 3)}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                if heldout is not None and (state.step % eval_every == 0 or state.step == steps):
                    eval_loss = heldout_loss(model, heldout, device)
                    record["eval_loss"] = eval_loss
                if state.step % log_every == 0 or "eval_loss" in record or state.step == steps:
                    append_jsonl(metrics_path, record)
                if state.step % ckpt_every == 0 or state.step == steps:
                    checkpoint()
                mid_update = False
                now = time.perf_counter()
                if now - t_last > 0.5 or state.step == steps:
                    rate = (state.tokens - tokens_last) / (now - t_last)
                    t_last, tokens_last = now, state.tokens
                    info = f"loss {train_loss:.3f}" + (f" eval {eval_loss:.3f}" if eval_loss is not None else "")
                    bar.update(job, completed=state.step, rate=format_count(rate), info=info)
        except KeyboardInterrupt:
            if not mid_update:
                checkpoint()  # keep the work done so far; a re-run resumes here
            raise
    if eval_loss is None and heldout is not None:
        eval_loss = heldout_loss(model, heldout, device)
    if train_loss != train_loss and resume_from is not None:  # resumed an already finished loop
        train_loss = _last_metric(metrics_path, "train_loss")
    return TrainResult(state.step, state.tokens, state.flops, state.wall_seconds, train_loss, eval_loss)


def _last_metric(path: Path, key: str) -> float:
    """The last logged value of `key` in metrics.jsonl (nan when absent)."""
    value = float("nan")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                value = json.loads(line).get(key, value)
    return value
