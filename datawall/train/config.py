"""Typed configuration of the training loop (LoopConfig) and of a pretraining or fine-tuning run (TrainConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OptimConfig(BaseModel):
    """AdamW and its learning-rate schedule."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of the peak")
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="fraction of steps spent warming up linearly")
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_frac: float = Field(0.2, gt=0, le=1, description="WSD only: fraction of steps in the final decay")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")


class LoopConfig(BaseModel):
    """What the one loop needs besides the model and its objective: steps, optimizer, and when to evaluate,
    checkpoint, log, keep the best weights and stop early."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(gt=0, description="optimizer steps (the schedule spans them; early stopping may end sooner)")
    optim: OptimConfig = OptimConfig()
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0 = about 10 per run")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0 = about 5 per run")
    log_every: int = Field(0, ge=0, description="steps between metrics lines (evaluations are always logged); "
                           "0 = about 200 per run")
    keep_best: bool = Field(False, description="keep the weights of the best evaluation (by the objective's "
                            "criterion) in run_dir/best and end the run on them")
    patience: int | None = Field(None, ge=0, description="evaluations without improvement tolerated; one more "
                                 "stops the run (None: never stop early)")
    min_delta: float = Field(1e-6, ge=0, description="how much lower a criterion must be to count as improved")
    device: str = "cpu"

    def every(self, value: int, per_run: int) -> int:
        """An interval in steps: `value`, or `per_run` evenly spaced events when value is 0."""
        return value if value > 0 else max(1, self.steps // per_run)

    @property
    def selects(self) -> bool:
        """Whether evaluations are compared (to keep the best weights or to stop early)."""
        return self.keep_best or self.patience is not None


class TrainConfig(BaseModel):
    """A pretraining or fine-tuning run's training: a token budget, batches, the optimizer; the loop's steps
    follow from them (see `loop()`)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(gt=0, description="training tokens D (input positions, masked ones included)")
    batch_size: int = Field(32, gt=0, description="sequences per optimizer step")
    grad_accum: int = Field(1, gt=0, description="micro-batches per step; batch_size must divide by it")
    seq_len: int = Field(256, gt=1)
    optim: OptimConfig = OptimConfig()
    eval_every: int = Field(0, ge=0, description="steps between held-out evaluations; 0 = about 10 per run")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0 = about 5 per run")
    seed: int = 0
    device: str = "cpu"

    @property
    def tokens_per_step(self) -> int:
        """Input positions consumed by one optimizer step."""
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        """Optimizer steps to see at least `tokens` tokens."""
        return max(1, -(-self.tokens // self.tokens_per_step))

    def loop(self) -> LoopConfig:
        """The loop's configuration for this run (no best-checkpoint selection: a run's identity is its
        TrainConfig, which has no such fields, so study job keys stay as they were)."""
        return LoopConfig(steps=self.steps, optim=self.optim, eval_every=self.eval_every,
                          checkpoint_every=self.checkpoint_every, device=self.device)
