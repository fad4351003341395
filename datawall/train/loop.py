"""The one training loop: AdamW, warmup + cosine/WSD/constant, clipping, accumulation, bf16 autocast on CUDA,
periodic evaluation, best-checkpoint selection and early stopping, for any objective (datawall.train.objectives).

Resumable: the batches of step s are a pure function of (the objective's seed, s), and checkpoints hold the
weights, AdamW moments and loop counters (best evaluation and patience included), so a run killed at any point
and restarted reaches the same losses, bit for bit on CPU. Resuming cuts metrics.jsonl back to the checkpoint's
step, so a resumed log reads like an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datawall.atomic import append_jsonl, atomic_write_text
from datawall.counts import format_count
from datawall.errors import DatawallError
from datawall.progress import progress_bar
from datawall.train.config import LoopConfig
from datawall.train.objectives import Objective
from datawall.train.optim import make_optimizer, set_lr
from datawall.train.schedule import lr_at
from datawall.train.state import (
    LoopState,
    ModelFormat,
    find_best,
    find_training_checkpoint,
    load_training_checkpoint,
    save_best,
    save_training_checkpoint,
)


@dataclass
class TrainResult:
    """What a finished loop reports (eval: the last evaluation, or the best one when the run kept it)."""

    steps: int
    tokens: int
    flops: float
    wall_seconds: float
    train_loss: float
    eval: dict = field(default_factory=dict)
    best_step: int | None = None
    stopped_early: bool = False

    @property
    def eval_loss(self) -> float | None:
        """Held-out loss of a language-model objective (None without held-out rows)."""
        return self.eval.get("eval_loss")


def autocast(device: str):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    if str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_of(line: str) -> int | None:
    """The step of a metrics line, or None for a line a kill cut short."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return None


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from, so a resumed log reads as one run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and (step := _step_of(line)) is not None and step <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _improved(score, best: float | None, min_delta: float) -> bool:
    """Whether a criterion value beats the best so far (NaN or a missing value never does)."""
    if score is None or not math.isfinite(score):
        return False
    return best is None or score < best - min_delta


def train(model: torch.nn.Module, objective: Objective, cfg: LoopConfig, run_dir: str | Path, fmt: ModelFormat,
          quiet: bool = False) -> TrainResult:
    """Train `model` on `objective` for cfg.steps steps, checkpointing into run_dir/checkpoint; resumes.

    With cfg.keep_best the weights of the best evaluation by objective.criterion are kept in run_dir/best and
    loaded into `model` at the end; with cfg.patience the run stops after that many evaluations without
    improvement plus one. Both need the objective to name a criterion.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    selects = cfg.selects
    if selects and objective.criterion is None:
        raise ValueError(f"keep_best/patience need an objective with a criterion ({objective.name} has none)")
    model.to(cfg.device).train()
    optimizer, lr_mults = make_optimizer(objective.param_groups(model), cfg.optim)
    state = LoopState()
    resume_from = find_training_checkpoint(run_dir)
    if resume_from is not None:
        state = load_training_checkpoint(resume_from, model, fmt, optimizer)
    metrics_path = run_dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, state.step)

    steps = cfg.steps
    eval_every = cfg.every(cfg.eval_every, 10)
    ckpt_every = cfg.every(cfg.checkpoint_every, 5)
    log_every = cfg.every(cfg.log_every, 200)

    def checkpoint() -> None:
        save_training_checkpoint(run_dir, model, fmt, optimizer, state)

    def keep_best() -> None:
        save_best(run_dir, model, fmt, state, objective.criterion)

    if cfg.keep_best and state.best_step is not None and state.best_step == state.step:
        found = find_best(run_dir)  # a crash between the checkpoint of a new best and its copy: copy it now
        if found is None or found[1].get("step") != state.best_step:
            keep_best()

    train_loss, last_eval = float("nan"), {}
    with progress_bar(disable=quiet) as bar:
        job = bar.add_task(objective.name, total=steps, completed=state.step, rate="-", info="")
        t_last, tokens_last = time.perf_counter(), state.tokens
        # True from the optimizer update until that step is logged and checkpointed: an interrupt (which arrives
        # as an exception at any point) then keeps the last whole checkpoint instead of saving weights and a log
        # out of step
        mid_update = False
        try:
            while state.step < steps and not state.stopped:
                t0 = time.perf_counter()
                lr = lr_at(state.step, steps, cfg.optim)
                set_lr(optimizer, lr, lr_mults)
                batch = objective.step(state.step, model)
                loss_sum, parts = 0.0, {}
                for micro in batch.batches:
                    with autocast(cfg.device):
                        loss, micro_parts = objective.loss(model, micro, batch)
                    loss.backward()
                    loss_sum += loss.item()
                    for k, v in micro_parts.items():
                        parts[k] = parts.get(k, 0.0) + v
                grad_norm = None
                if cfg.optim.grad_clip > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
                mid_update = True
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                state.step += 1
                state.tokens += batch.tokens
                state.flops += batch.flops
                state.wall_seconds += time.perf_counter() - t0
                train_loss = loss_sum
                record = {"step": state.step, "tokens": state.tokens, "flops": state.flops, "lr": lr,
                          "train_loss": train_loss, **{f"train_{k}": v for k, v in parts.items()},
                          "wall_seconds": round(state.wall_seconds, 3)}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                evaluated = False
                if state.step % eval_every == 0 or state.step == steps:
                    last_eval = objective.evaluate(model)
                    record |= last_eval
                    evaluated = bool(last_eval)
                new_best = False
                if selects and evaluated:
                    score = last_eval.get(objective.criterion)
                    if _improved(score, state.best_score, cfg.min_delta):
                        state.best_step, state.best_score, state.best_metrics = state.step, score, dict(last_eval)
                        state.evals_since_best, new_best = 0, True
                    else:
                        state.evals_since_best += 1
                        state.stopped = cfg.patience is not None and state.evals_since_best > cfg.patience
                if state.step % log_every == 0 or evaluated or state.step == steps:
                    append_jsonl(metrics_path, record)
                # a checkpoint at every compared evaluation keeps run_dir/best and the loop state in step
                if state.step % ckpt_every == 0 or state.step == steps or state.stopped or (selects and evaluated):
                    checkpoint()
                if new_best and cfg.keep_best:
                    keep_best()
                mid_update = False
                now = time.perf_counter()
                if now - t_last > 0.5 or state.step == steps or state.stopped:
                    rate = (state.tokens - tokens_last) / (now - t_last)
                    t_last, tokens_last = now, state.tokens
                    shown = last_eval.get(objective.criterion or "eval_loss")
                    info = f"loss {train_loss:.3f}" + (f" eval {shown:.3f}" if isinstance(shown, float) else "")
                    bar.update(job, completed=state.step, rate=format_count(rate), info=info)
        except KeyboardInterrupt:
            if not mid_update:
                checkpoint()  # keep the work done so far; a re-run resumes here
            raise
    if cfg.keep_best and state.best_step is not None:
        found = find_best(run_dir)
        if found is None:
            raise DatawallError(f"{run_dir / 'best'}: missing, though the checkpoint records a best evaluation "
                                f"(step {state.best_step}); remove {run_dir} to train again")
        fmt.load_into(model, found[0])
        last_eval = dict(state.best_metrics)
    elif not last_eval:  # resumed an already finished loop
        last_eval = objective.evaluate(model)
    if train_loss != train_loss and resume_from is not None:
        train_loss = _last_metric(metrics_path, "train_loss")
    return TrainResult(state.step, state.tokens, state.flops, state.wall_seconds, train_loss, last_eval,
                       state.best_step, state.stopped)


def _last_metric(path: Path, key: str) -> float:
    """The last logged value of `key` in metrics.jsonl (nan when absent)."""
    value = float("nan")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                value = json.loads(line).get(key, value)
    return value
