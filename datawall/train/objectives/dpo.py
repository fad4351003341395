"""Direct preference optimisation on the one loop: the DPO family of losses and the objective that trains a
policy on (prompt, chosen, rejected) pairs against a frozen reference.

The losses (`DPOLoss`), all on the policy's log-ratio margin against the reference,
h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]:

    sigmoid   -log sigmoid(beta h)                       DPO, Rafailov et al. 2023, arXiv:2305.18290, eq. 7;
              with label smoothing eps: (1-eps) x that + eps x -log sigmoid(-beta h)  (cDPO, Mitchell 2023)
    robust    [(1-eps) (-log sigmoid(beta h)) - eps (-log sigmoid(-beta h))] / (1 - 2 eps)
              rDPO, Chowdhury et al. 2024, arXiv:2403.00409, eq. 8: unbiased under labels flipped with prob. eps
    ipo       (h - 1/(2 beta))^2, h from per-token *averaged* log-probabilities
              IPO, Azar et al. 2023, arXiv:2310.12036, eq. 17
    hinge     max(0, 1 - beta h)                          SLiC-HF, Zhao et al. 2023, arXiv:2305.10425

Two optional terms: R-DPO's length regulariser (Park et al. 2024, arXiv:2403.19159: the RLHF objective with a
length penalty alpha |y|, whose implicit reward is beta log(pi / pi_ref) + alpha |y|) adds alpha (|y_w| - |y_l|) to
beta h before any loss, so a preference that the chosen answer's extra length already explains pushes its
likelihood up less, and a longer rejected answer counts against; and RPO's NLL
on the chosen answer (Pang et al. 2024, arXiv:2404.19733; TRL's rpo_alpha) adds `nll` x the mean negative
log-likelihood per chosen token. Implicit rewards are beta x the log-ratio of each answer (summed, or averaged
for IPO, as its loss sees them); they are 0 when the policy is the reference.

The reference is frozen: its log-probabilities of every pair are computed once, before training (with the
starting weights, or another checkpoint of the same tokenizer), so a step runs the policy only: one forward of
the chosen and rejected rows side by side and its backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from datawall.model.flops import train_flops_per_token
from datawall.train.config import LoopConfig, OptimConfig
from datawall.train.objectives import Objective, Step, model_device
from datawall.train.objectives.reward import epoch_batches
from datawall.train.objectives.sequences import SequenceBatch, completion_logprobs, pack_sequences

LOSSES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass(frozen=True)
class DPOSettings:
    """Which member of the DPO family and its constants (validated with reasons by datawall.prefer.config)."""

    loss: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0  # eps: sigmoid -> conservative DPO; robust -> rDPO's assumed flip rate
    nll: float = 0.0  # RPO: weight of the chosen answer's mean NLL per token
    length_alpha: float = 0.0  # R-DPO: alpha x (|chosen| - |rejected|) tokens added to beta h

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown DPO loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if not self.beta > 0 or not 0 <= self.label_smoothing < 0.5 or self.nll < 0 or self.length_alpha < 0:
            raise ValueError(f"DPO settings out of range: {self}")
        if self.loss == "robust" and self.label_smoothing == 0:
            raise ValueError("loss 'robust' needs label_smoothing > 0")


@dataclass
class DPOOutput:
    """Per-pair losses (before any NLL term) and implicit rewards (detached)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards


class DPOLoss(nn.Module):
    """The DPO family on sequence log-probabilities (see the module docstring for the papers).

    forward takes the *summed* completion log-probabilities of policy and reference [B] and the completion
    lengths in tokens [B]; IPO divides by the lengths itself.
    """

    def __init__(self, cfg: DPOSettings):
        super().__init__()
        self.cfg = cfg

    def forward(self, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor, chosen_len: torch.Tensor, rejected_len: torch.Tensor) -> DPOOutput:
        cfg = self.cfg
        if cfg.loss == "ipo":  # IPO's margin is per token, or long answers would dominate its squared loss
            chosen_len_f, rejected_len_f = chosen_len.clamp(min=1).float(), rejected_len.clamp(min=1).float()
            chosen_ratio = (policy_chosen - ref_chosen) / chosen_len_f
            rejected_ratio = (policy_rejected - ref_rejected) / rejected_len_f
        else:
            chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
        z = cfg.beta * (chosen_ratio - rejected_ratio)  # beta h
        if cfg.length_alpha:
            z = z + cfg.length_alpha * (chosen_len - rejected_len).float()
        eps = cfg.label_smoothing
        if cfg.loss == "sigmoid":
            losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        elif cfg.loss == "robust":
            losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
        elif cfg.loss == "ipo":
            losses = (z / cfg.beta - 1 / (2 * cfg.beta)) ** 2
        else:
            losses = F.relu(1 - z)
        return DPOOutput(losses, (cfg.beta * chosen_ratio).detach(), (cfg.beta * rejected_ratio).detach())


# --- pairs as the model reads them ------------------------------------------------------------------------

@dataclass
class EncodedPair:
    """A pair's token ids: prompt (bos included), chosen and rejected completions (eos included)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int) -> SequenceBatch:
    """The chosen rows then the rejected rows of `pairs`, right-padded into one batch (one forward for both)."""
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return pack_sequences(prompts, completions, pad_id)


@torch.no_grad()
def sequence_logprobs(model: nn.Module, pairs: Sequence[EncodedPair], pad_id: int, batch_pairs: int = 64
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of every pair's chosen and rejected completion under `model` ([P] each, CPU)."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_pairs):
        chunk = pairs[i:i + batch_pairs]
        lp = completion_logprobs(model, pair_batch(chunk, pad_id).to(dev)).sum(1).cpu()
        chosen.append(lp[:len(chunk)])
        rejected.append(lp[len(chunk):])
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def pair_train_flops(cfg, pair: EncodedPair) -> float:
    """Training FLOPs of one pair: forward + backward (3x forward) of its two rows, 6 N per input position plus
    causal attention (datawall.model.flops)."""
    flops = 0.0
    for completion in (pair.chosen, pair.rejected):
        n = len(pair.prompt) + len(completion) - 1
        flops += n * train_flops_per_token(cfg, n)
    return flops


# --- the objective ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DPOSchedule:
    """How the pairs are fed: passes, pairs per step and micro-batches, the optimizer's lr, when to evaluate."""

    epochs: float = 2.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    eval_every: int = 0  # 0: about 10 evaluations a run
    seed: int = 0
    device: str = "cpu"


PAIR_METRICS = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward")


def pair_metrics(out: DPOOutput) -> dict[str, float]:
    """Mean loss, implicit-reward accuracy (chosen above rejected), margin and rewards of a set of pairs."""
    return {"loss": float(out.losses.mean()), "accuracy": float((out.margins > 0).float().mean()),
            "margin": float(out.margins.mean()), "chosen_reward": float(out.chosen_rewards.mean()),
            "rejected_reward": float(out.rejected_rewards.mean())}


class DPOObjective(Objective):
    """The DPO family on the loop: seeded epochs of pairs, the policy's log-probabilities of both answers from one
    forward pass, the reference's computed once (`ref_*`, summed per completion), the loss averaged over a
    step's pairs (+ RPO's NLL averaged over its chosen tokens).

    evaluate() scores the held-out pairs (val_loss, val_accuracy, val_margin, val_chosen_reward,
    val_rejected_reward) and adds whatever `extra_eval(model)` returns (held-out task accuracy, say).
    """

    name = "train dpo"
    criterion = None

    def __init__(self, train: Sequence[EncodedPair], val: Sequence[EncodedPair], ref_train: tuple[torch.Tensor, ...],
                 ref_val: tuple[torch.Tensor, ...], model_cfg, pad_id: int, settings: DPOSettings,
                 cfg: DPOSchedule, extra_eval: Callable[[nn.Module], dict] | None = None):
        if not train:
            raise ValueError("no training pairs")
        self.train_pairs, self.val_pairs, self.cfg, self.pad_id = list(train), list(val), cfg, pad_id
        self.ref_train = tuple(t.to(cfg.device) for t in ref_train)  # (chosen, rejected) summed log-probs
        self.ref_val = tuple(t.to(cfg.device) for t in ref_val)
        self.settings = settings
        self.loss_fn = DPOLoss(settings)
        self.extra_eval = extra_eval
        self.steps_per_epoch = -(-len(self.train_pairs) // cfg.batch_size)
        self.steps = max(1, round(cfg.epochs * self.steps_per_epoch))
        self.pair_flops = [pair_train_flops(model_cfg, p) for p in self.train_pairs]
        self.index = list(range(len(self.train_pairs)))  # the "problems" epoch_batches permutes
        self._epoch: tuple[int, list[list[int]]] | None = None

    def loop_config(self) -> LoopConfig:
        """cfg.epochs over the pairs, warmup 10% then cosine to 10% of the peak lr, clipping at 1."""
        cfg = self.cfg
        optim = OptimConfig(lr=cfg.lr, min_lr_ratio=0.1, warmup_frac=0.1, schedule="cosine",
                            weight_decay=cfg.weight_decay, beta1=0.9, beta2=0.95, grad_clip=1.0)
        return LoopConfig(steps=self.steps, optim=optim, eval_every=cfg.eval_every, log_every=1, device=cfg.device)

    def _step_pairs(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches(self.index, self.cfg.batch_size, False, self.cfg.seed, epoch))
        return self._epoch[1][i]

    def step(self, step: int, model: nn.Module) -> Step:
        idx = self._step_pairs(step)
        parts = [p.tolist() for p in torch.tensor(idx).tensor_split(min(self.cfg.grad_accum, len(idx)))]
        chosen_tokens = sum(len(self.train_pairs[i].chosen) for i in idx)
        tokens = 0
        for part in parts:  # padded positions of each micro-batch (both rows of a pair)
            width = max(len(self.train_pairs[i].prompt) + max(len(self.train_pairs[i].chosen),
                                                               len(self.train_pairs[i].rejected)) for i in part) - 1
            tokens += 2 * len(part) * width
        return Step(parts, tokens, sum(self.pair_flops[i] for i in idx),
                    {"pairs": len(idx), "chosen_tokens": chosen_tokens})

    def _forward(self, model: nn.Module, pairs: Sequence[EncodedPair], ref: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[DPOOutput, torch.Tensor, torch.Tensor]:
        """The loss module's output on `pairs`, and the policy's per-token log-probs and mask of the chosen rows."""
        batch = pair_batch(pairs, self.pad_id).to(model_device(model))
        lp = completion_logprobs(model, batch)
        k = len(pairs)
        lengths = batch.lengths
        out = self.loss_fn(lp[:k].sum(1), lp[k:].sum(1), ref[0], ref[1], lengths[:k], lengths[k:])
        return out, lp[:k], batch.mask[:k]

    def loss(self, model: nn.Module, batch: list[int], step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = [self.train_pairs[i] for i in batch]
        rows = torch.tensor(batch, device=self.ref_train[0].device)
        out, chosen_lp, _ = self._forward(model, pairs, (self.ref_train[0][rows], self.ref_train[1][rows]))
        share = len(batch) / step.norm["pairs"]  # this micro-batch's share of the step's mean
        loss = out.losses.sum() / step.norm["pairs"]
        parts = {"dpo": loss.item(), "accuracy": float((out.margins > 0).float().mean()) * share,
                 "margin": float(out.margins.mean()) * share, "chosen_reward": float(out.chosen_rewards.mean()) * share,
                 "rejected_reward": float(out.rejected_rewards.mean()) * share,
                 "chosen_len": sum(len(p.chosen) for p in pairs) / step.norm["pairs"],
                 "rejected_len": sum(len(p.rejected) for p in pairs) / step.norm["pairs"]}
        if self.settings.nll:
            nll = -chosen_lp.sum() / step.norm["chosen_tokens"]
            loss = loss + self.settings.nll * nll
            parts["nll"] = nll.item()
        return loss, parts

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        out = {}
        if self.val_pairs:
            was_training = model.training
            model.eval()
            results = []
            for i in range(0, len(self.val_pairs), 64):
                chunk = self.val_pairs[i:i + 64]
                results.append(self._forward(model, chunk, (self.ref_val[0][i:i + 64], self.ref_val[1][i:i + 64]))[0])
            model.train(was_training)
            joined = DPOOutput(*(torch.cat([getattr(r, f) for r in results])
                                 for f in ("losses", "chosen_rewards", "rejected_rewards")))
            out |= {f"val_{k}": v for k, v in pair_metrics(joined).items()}
        if self.extra_eval is not None:
            out |= self.extra_eval(model)
        return out
