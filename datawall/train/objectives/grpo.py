"""The GRPO family of policy-gradient losses on the one loop: GRPO, Dr. GRPO, DAPO, BNPO and REINFORCE with a
group baseline; clip-higher, several policy updates per batch of samples, and a k3 KL to a frozen reference.

Each optimizer step trains on a *rollout*: G completions to each of P prompts, sampled from the policy, with a
reward each (datawall.rl builds them). For completion i with advantage A_i and token t, r = pi(o_it) / pi_old(o_it)
(pi_old: the policy that sampled; r = 1 in value on the first update of a rollout):

    l_it = -min(r A_i, clip(r, 1 - epsilon, 1 + epsilon_high) A_i) + beta * k3_it        (grpo, dr_grpo, dapo, bnpo)
    l_it = -r A_i + beta * k3_it                                                          (reinforce: no clipping)
    k3_it = exp(ref_it - logp_it) - (ref_it - logp_it) - 1   (Schulman's k3: unbiased for KL(pi || ref), >= 0,
                                                              0 where pi = ref; TRL's estimator)

The per-token losses are aggregated as TRL's GRPOConfig documents `loss_type` (TRL 1.16, `_compute_loss`):

    grpo       mean over the step's completions of sum_t l_it / |o_i|         (per-sequence mean: length bias)
    dr_grpo    sum_it l_it / (completions x max_tokens)                        (a constant: no length bias)
    dapo       sum_it l_it / active tokens of the whole step                   (token mean of the accumulated batch)
    bnpo       each micro-batch's sum / its own active tokens, averaged over micro-batches   (the local batch)
    reinforce  as dapo                                                         (plain policy gradient, A = baseline-
                                                                                subtracted reward)

With one micro-batch per step (the default for small models) bnpo equals dapo. Advantages (`group_advantages`)
are TRL's: reward minus its group's mean, divided by the group's (scale "group") or the batch's ("batch")
unbiased standard deviation + 1e-4, or not divided ("none", Dr. GRPO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datawall.model.flops import train_flops_per_token
from datawall.train.objectives import Objective, Step, model_device
from datawall.train.objectives.sequences import SequenceBatch, reference_logprobs, token_entropy, token_logprobs

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"]
ScaleRewards = Literal["group", "batch", "none"]
LOSS_TYPES: tuple[str, ...] = LossType.__args__
STD_EPS = 1e-4  # TRL's: an all-equal group gets advantage 0, not 0/0


class GRPOConfig(BaseModel):
    """How a rollout becomes a loss: the loss type, clipping, KL, updates per rollout and micro-batching."""

    model_config = ConfigDict(extra="forbid")

    loss: LossType = Field("dapo", description="aggregation of per-token losses (see the module docstring)")
    beta: float = Field(0.0, ge=0, description="weight of the k3 KL to the frozen starting policy; 0 = no reference")
    epsilon: float = Field(0.2, gt=0, lt=1, description="lower clip: ratios below 1 - epsilon stop pulling")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip (DAPO's clip-higher); default epsilon")
    iterations: int = Field(1, ge=1, description="policy updates per rollout (mu); each is one optimizer step")
    temperature: float = Field(1.0, gt=0, description="sampling temperature; log-probs are of logits / temperature")
    micro_batch: int = Field(64, ge=1, description="completions per forward/backward pass (memory, not maths)")

    @model_validator(mode="after")
    def _clip(self) -> GRPOConfig:
        if self.loss == "reinforce" and self.epsilon_high is not None:
            raise ValueError("epsilon_high clips a ratio, and reinforce does not clip; drop it or choose another loss")
        return self

    @property
    def eps_high(self) -> float:
        """The upper clip width (epsilon when epsilon_high is not set)."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def group_advantages(rewards: torch.Tensor, scale: str) -> torch.Tensor:
    """Advantages [P, G] of rewards [P, G] (P groups of G): reward - group mean, scaled as TRL's scale_rewards."""
    rewards = rewards.float()
    adv = rewards - rewards.mean(1, keepdim=True)
    if scale == "none":
        return adv
    if scale == "group":
        std = rewards.std(1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(rewards[:, :1])
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.zeros(())
    else:
        raise ValueError(f"unknown reward scaling {scale!r}")
    return adv / (std + STD_EPS)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref) from log-probs of the sampled tokens: e^d - d - 1, d = ref - logp."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def token_losses(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, loss: str, epsilon: float,
                 epsilon_high: float, ref_logp: torch.Tensor | None = None, beta: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses l_it [B, T] and ratios r [B, T] (see the module docstring); advantages [B]."""
    adv = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    if loss == "reinforce":
        per = -ratio * adv
    else:
        per = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon_high) * adv)
    if beta != 0.0:
        per = per + beta * kl_k3(logp, ref_logp)
    return per, ratio


@dataclass(frozen=True)
class StepCounts:
    """Step-wide counts a micro-batch's loss is normalised by."""

    rows: int  # completions in the step
    tokens: int  # active (completion) tokens in the step
    micro_batches: int
    max_tokens: int  # the completion budget (dr_grpo's constant)


def aggregate(per: torch.Tensor, mask: torch.Tensor, loss: str, counts: StepCounts) -> torch.Tensor:
    """One micro-batch's share of the step's loss: summed over micro-batches it is the loss `loss` defines."""
    m = mask.to(per.dtype)
    masked = per * m
    if loss == "grpo":
        return (masked.sum(1) / m.sum(1).clamp(min=1.0)).sum() / counts.rows
    if loss == "dr_grpo":
        return masked.sum() / (counts.rows * counts.max_tokens)
    if loss == "bnpo":
        return masked.sum() / m.sum().clamp(min=1.0) / counts.micro_batches
    if loss in ("dapo", "reinforce"):
        return masked.sum() / max(1, counts.tokens)
    raise ValueError(f"unknown loss type {loss!r}")


@dataclass(frozen=True)
class MicroBatch:
    """Rows of a rollout to run through the model together, and the tokens of every row of its cut (bnpo's
    normaliser; rows left out have advantage 0)."""

    rows: torch.Tensor
    tokens: int


@dataclass
class Rollout:
    """One batch of sampled completions ready to train on: rows prompt + completion, one advantage each."""

    generation: int  # which rollout of the run (optimizer steps generation * mu .. generation * mu + mu - 1)
    batch: SequenceBatch
    advantages: torch.Tensor  # [B]
    stats: dict[str, float] = field(default_factory=dict)  # logged with every step that trains on it
    sample_flops: float = 0.0  # forward FLOPs of drawing it (and of scoring it with a reward model)
    ref_logps: torch.Tensor | None = None  # [B, T] under the frozen reference (beta > 0)
    old_logps: torch.Tensor | None = None  # [B, T] under the sampling policy, filled on the first update

    def state(self) -> dict[str, Any]:
        """Tensors and numbers to save beside a checkpoint (a resumed run continues this rollout's updates)."""
        b = self.batch
        return {"generation": self.generation, "x": b.x, "y": b.y, "mask": b.mask, "advantages": self.advantages,
                "stats": self.stats, "sample_flops": self.sample_flops, "ref_logps": self.ref_logps,
                "old_logps": self.old_logps}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Rollout:
        return cls(s["generation"], SequenceBatch(s["x"], s["y"], s["mask"]), s["advantages"], s["stats"],
                   s["sample_flops"], s["ref_logps"], s["old_logps"])


class RolloutSource(Protocol):
    """What samples rollouts: rollout g must be a pure function of (the source's seed, g, the model's weights)."""

    def rollout(self, generation: int, model: torch.nn.Module) -> Rollout:
        """Rollout number `generation`, sampled from `model`."""


class GRPOObjective(Objective):
    """GRPO-family updates on rollouts from `source`: rollout g serves optimizer steps g*mu .. g*mu + mu - 1.

    `evaluate` (optional) returns held-out metrics; its `criterion` key (e.g. "val_error", lower is better)
    selects the best checkpoint. `reference`: the frozen starting policy when cfg.beta > 0.
    Logged per step (as train_<name>): entropy, kl (beta > 0), clip_low / clip_high (share of tokens whose ratio
    the clip stops, by side; these three over the tokens of the rows run through the model), and the rollout's
    stats (reward mean and std, share of groups with zero reward std, completion lengths, sampling FLOPs, ...).
    """

    name = "rl"
    skip_silent_rows = True  # leave rows with advantage 0 out of the forward pass (tests compare both ways)

    def __init__(self, source: RolloutSource, cfg: GRPOConfig, max_tokens: int,
                 evaluate: Callable[[torch.nn.Module], dict] | None = None, criterion: str | None = None,
                 reference: torch.nn.Module | None = None):
        if cfg.beta > 0 and reference is None:
            raise ValueError("beta > 0 needs a reference model")
        self.source, self.cfg, self.max_tokens = source, cfg, max_tokens
        self._evaluate, self.criterion = evaluate, criterion
        self.reference = reference
        self.rollout: Rollout | None = None
        self._iteration = 0
        self._fresh = False

    def step(self, step: int, model: torch.nn.Module) -> Step:
        generation, self._iteration = divmod(step, self.cfg.iterations)
        self._fresh = self.rollout is None or self.rollout.generation != generation
        if self._fresh:
            self.rollout = self.source.rollout(generation, model)
            if self.cfg.beta > 0:
                dev = model_device(self.reference)
                self.rollout.ref_logps = reference_logprobs(self.reference, self.rollout.batch.to(dev),
                                                            self.cfg.micro_batch).cpu()
        r = self.rollout
        b = r.batch
        rows = b.x.shape[0]
        length = (b.mask * torch.arange(1, b.x.shape[1] + 1)).amax(1)  # each row's used width
        # a row whose advantage is 0 adds nothing to the loss or its gradient when there is no KL term (most rows
        # of a rollout: groups whose rewards are all equal), so it is not run through the model; the normalisers
        # still count its tokens, so the loss is the one of the whole step
        live = r.advantages != 0 if self.cfg.beta == 0 and self.skip_silent_rows else torch.ones(rows, dtype=torch.bool)
        pool = torch.arange(rows) if self.cfg.loss == "bnpo" else live.nonzero().squeeze(1)
        # micro-batches of similar lengths waste less padding (bnpo's are cut from every row: its normaliser is
        # each micro-batch's own token count)
        if len(pool) > self.cfg.micro_batch:
            pool = pool[torch.argsort(length[pool], descending=True, stable=True)]
        cuts = [pool[i:i + self.cfg.micro_batch] for i in range(0, len(pool), self.cfg.micro_batch)] or [pool]
        micro = [MicroBatch(idx[live[idx]], int(b.mask[idx].sum())) for idx in cuts]
        widths = [int(length[m.rows].max()) if len(m.rows) else 0 for m in micro]
        positions = sum(len(m.rows) * w for m, w in zip(micro, widths, strict=True))
        shape = model.config
        update = sum(len(m.rows) * w * train_flops_per_token(shape, w) for m, w in zip(micro, widths, strict=True))
        flops = update
        if self._fresh:
            flops += r.sample_flops
            if self.cfg.beta > 0:  # the reference's forward pass over the rollout: a third of training's
                flops += update / 3
        norm = {"rows": rows, "tokens": int(b.mask.sum()), "micro_batches": len(micro),
                "max_tokens": self.max_tokens, "live_tokens": int(b.mask[live].sum()),
                "update_flops": flops - (r.sample_flops if self._fresh else 0.0)}
        return Step(micro, positions, flops, norm)

    def loss(self, model: torch.nn.Module, batch: MicroBatch, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        r, cfg = self.rollout, self.cfg
        counts = StepCounts(*(int(step.norm[k]) for k in ("rows", "tokens", "micro_batches", "max_tokens")))
        dev = model_device(model)
        parts: dict[str, float] = {}
        if batch is step.batches[0]:  # step-wide numbers, once per step
            parts |= dict(r.stats)
            parts["sample_flops"] = r.sample_flops if self._fresh else 0.0
            parts["update_flops"] = step.norm["update_flops"]
        if not len(batch.rows):  # nothing to learn from here (every advantage 0): a loss of 0 without a graph
            return torch.zeros((), device=dev, requires_grad=True), parts
        rows = batch.rows
        sub = r.batch.rows(rows).to(dev)
        width = sub.x.shape[1]
        logits = model(sub.x)
        if cfg.temperature != 1.0:
            logits = logits / cfg.temperature
        logp = token_logprobs(logits, sub)
        if self._iteration == 0 or r.old_logps is None:
            old = logp.detach()
            if cfg.iterations > 1:  # the later updates of this rollout need the sampling policy's log-probs
                if r.old_logps is None:
                    r.old_logps = torch.zeros(r.batch.x.shape, dtype=torch.float32)
                r.old_logps[rows, :width] = old.cpu()
        else:
            old = r.old_logps[rows, :width].to(dev)
        ref = r.ref_logps[rows, :width].to(dev) if cfg.beta > 0 else None
        adv = r.advantages[rows].to(dev)
        per, ratio = token_losses(logp, old, adv, cfg.loss, cfg.epsilon, cfg.eps_high, ref, cfg.beta)
        if cfg.loss == "bnpo":  # the token mean of this micro-batch, all of its rows counted
            value = (per * sub.mask).sum() / max(1, batch.tokens) / counts.micro_batches
        else:
            value = aggregate(per, sub.mask, cfg.loss, counts)

        with torch.no_grad():  # means over the tokens the model was run on
            m = sub.mask
            n = max(1, int(step.norm["live_tokens"]))
            parts["entropy"] = float(token_entropy(logits, sub).sum()) / n
            if cfg.loss != "reinforce":
                a = adv[:, None].expand_as(ratio)
                parts["clip_low"] = float(((ratio < 1 - cfg.epsilon) & (a < 0) & m).sum()) / n
                parts["clip_high"] = float(((ratio > 1 + cfg.eps_high) & (a > 0) & m).sum()) / n
            if cfg.beta > 0:
                parts["kl"] = float((kl_k3(logp, ref) * m).sum()) / n
        return value, parts

    def evaluate(self, model: torch.nn.Module) -> dict:
        return self._evaluate(model) if self._evaluate is not None else {}

