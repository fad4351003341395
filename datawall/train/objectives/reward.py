"""The reward-model objective: BCE on soft targets at labelled positions, plus an optional within-problem
ranking loss, for a RewardModel (datawall.model.reward_head) on the one loop.

An example is a sampled solution to a *train-split* problem cut into steps, with one target in [0, 1] per step
(an ORM example has one step, the whole completion, labelled by the verifier; a PRM example has Math-Shepherd
Monte-Carlo labels). A seeded share of the problems (never of the samples: a problem's samples are near
duplicates) is held out: its evaluation (BCE, accuracy, AUC, within-problem AUC) picks the best epoch and
stops training early.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from datawall.errors import DatawallError
from datawall.model.reward_head import RewardModel
from datawall.train.config import LoopConfig, OptimConfig
from datawall.train.objectives import Objective, ParamGroup, Step
from datawall.train.objectives.reward_metrics import auc, within_problem_auc


@dataclass
class ScoredExample:
    """A sampled solution: its problem (train-split index), prompt, steps and one target per step."""

    problem: int
    prompt: str
    steps: list[str]
    targets: list[float]

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.targets) or not self.steps:
            raise DatawallError(f"problem {self.problem}: an example needs one target per step "
                                f"(got {len(self.steps)} steps, {len(self.targets)} targets)")
        if not all(0.0 <= t <= 1.0 for t in self.targets):
            raise DatawallError(f"problem {self.problem}: targets must lie in [0, 1], got {self.targets}")

    def to_dict(self) -> dict:
        return {"problem": self.problem, "prompt": self.prompt, "steps": self.steps, "targets": self.targets}


class RewardTrainConfig(BaseModel):
    """How a reward model is fitted to its labelled examples."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(6, ge=1, description="passes over the training examples (at most)")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate of the backbone (cosine decay to 10%)")
    head_lr: float = Field(3e-3, gt=0, description="learning rate of the fresh linear head")
    batch_size: int = Field(64, ge=1, description="solutions per optimizer step")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step (whole problems each when pairwise)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of matrices")
    val_frac: float = Field(0.2, ge=0, lt=1, description="share of training problems held out for early stopping")
    patience: int = Field(2, ge=0, description="epochs without held-out improvement tolerated; one more stops")
    pairwise: float = Field(0.0, ge=0, description="weight of a within-problem ranking loss on final scores "
                            "(batches then hold whole problems)")
    seed: int = 0
    device: str = "cpu"


def split_by_problem(examples: Sequence[ScoredExample], val_frac: float, seed: int
                     ) -> tuple[list[ScoredExample], list[ScoredExample]]:
    """(train, validation) examples with whole problems held out (at least one each when there are two)."""
    problems = sorted({e.problem for e in examples})
    random.Random(seed).shuffle(problems)
    n_val = 0 if val_frac == 0 or len(problems) < 2 else min(len(problems) - 1, max(1, round(val_frac * len(problems))))
    held = set(problems[:n_val])
    return [e for e in examples if e.problem not in held], [e for e in examples if e.problem in held]


def _groups(problems: Sequence[int]) -> list[list[int]]:
    """Item indices grouped by problem, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(problems):
        groups.setdefault(q, []).append(i)
    return list(groups.values())


def problems_per_batch(problems: Sequence[int], batch_size: int) -> int:
    """Whole problems per batch that hold about batch_size items (by-problem batching)."""
    return max(1, round(batch_size * len(_groups(problems)) / max(1, len(problems))))


def epoch_batches(problems: Sequence[int], batch_size: int, by_problem: bool, seed: int, epoch: int
                  ) -> list[list[int]]:
    """Epoch `epoch`'s batches of item indices, a pure function of (seed, epoch): a random permutation cut into
    batch_size items, or whole problems in random order, problems_per_batch() of them a batch.

    Both give every epoch the same number of batches, so the loop's steps are known in advance.
    """
    rng = np.random.default_rng([seed, epoch])
    if not by_problem:
        perm = rng.permutation(len(problems)).tolist()
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    groups = _groups(problems)
    order = rng.permutation(len(groups)).tolist()
    k = problems_per_batch(problems, batch_size)
    return [[i for g in order[j:j + k] for i in groups[g]] for j in range(0, len(order), k)]


def pair_losses(final_logits: torch.Tensor, final_targets: torch.Tensor, problems: Sequence[int]) -> torch.Tensor:
    """-log sigmoid(s_right - s_wrong) for every (right, wrong) pair of solutions to the same problem.

    The verifier's BCE alone can be met by learning which problems the policy solves; best-of-n needs the
    order of solutions *within* a problem, which this term trains directly.
    """
    q = torch.tensor(list(problems), device=final_logits.device)
    better = (final_targets[:, None] >= 0.5) & (final_targets[None, :] < 0.5) & (q[:, None] == q[None, :])
    diff = final_logits[:, None] - final_logits[None, :]
    return F.softplus(-diff[better])


def count_pairs(final_targets: Sequence[float], problems: Sequence[int]) -> int:
    """How many (right, wrong) pairs of the same problem pair_losses forms."""
    right: dict[int, int] = {}
    wrong: dict[int, int] = {}
    for t, q in zip(final_targets, problems, strict=True):
        side = right if t >= 0.5 else wrong
        side[q] = side.get(q, 0) + 1
    return sum(n * wrong.get(q, 0) for q, n in right.items())


@dataclass
class Item:
    """An encoded example: token ids, the position of each step's last token, and their targets."""

    ids: list[int]
    ends: list[int]
    targets: list[float]
    problem: int


def encode(rm: RewardModel, examples: Sequence[ScoredExample]) -> list[Item]:
    """The examples as the reward model reads them."""
    return [Item(*rm.encode(e.prompt, e.steps), list(e.targets), e.problem) for e in examples]


def _tensors(rm: RewardModel, items: Sequence[Item]):
    """Padded ids, and (row, position, target) of every labelled position, and each item's last position."""
    x = rm.batch([it.ids for it in items])
    rows = [r for r, it in enumerate(items) for _ in it.ends]
    cols = [c for it in items for c in it.ends]
    targets = [t for it in items for t in it.targets]
    last = np.cumsum([len(it.ends) for it in items]) - 1
    dev = rm.device
    return (x, torch.tensor(rows, device=dev), torch.tensor(cols, device=dev), torch.tensor(targets, device=dev),
            torch.tensor(last, device=dev))


@torch.no_grad()
def evaluate(rm: RewardModel, items: Sequence[Item], batch_size: int = 64) -> dict:
    """BCE, accuracy (P > 0.5 vs target >= 0.5) and AUC over every labelled position, the AUC of outcomes (each
    solution's last position), and the mean outcome AUC within problems whose solutions are mixed."""
    was_training = rm.training
    rm.eval()
    probs, targets, final_probs, final_targets = [], [], [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        x, rows, cols, t, last = _tensors(rm, chunk)
        p = torch.sigmoid(rm(x)[rows, cols])
        probs += p.cpu().tolist()
        targets += t.cpu().tolist()
        final_probs += p[last].cpu().tolist()
        final_targets += t[last].cpu().tolist()
    rm.train(was_training)
    p, t = np.clip(np.array(probs), 1e-7, 1 - 1e-7), np.array(targets)
    bce = float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    right = np.array(final_targets) >= 0.5
    return {"loss": bce, "accuracy": float(((p > 0.5) == (t >= 0.5)).mean()), "auc": auc(p, t >= 0.5),
            "outcome_auc": auc(final_probs, right), "positions": len(t), "solutions": len(items),
            "positive_rate": float((t >= 0.5).mean()),
            **within_problem_auc(final_probs, right, [it.problem for it in items])}


def criterion(metrics: dict, pairwise: float) -> float:
    """The held-out number selection minimises: BCE, or with a ranking loss 1 - within-problem AUC."""
    if pairwise > 0 and metrics.get("within_problem_auc") is not None:
        return 1.0 - metrics["within_problem_auc"]
    return metrics["loss"]


LOGGED = ("loss", "accuracy", "auc", "outcome_auc", "within_problem_auc")


class RewardObjective(Objective):
    """BCE at labelled positions (sum over the step's positions / their count) + pairwise x the ranking loss
    (sum over the step's within-problem pairs / their count), on epochs of seeded batches of train items.

    evaluate() reports val_loss, val_accuracy, val_auc, val_outcome_auc, val_within_problem_auc and
    val_criterion (the criterion; see `criterion`).
    """

    def __init__(self, rm: RewardModel, train: Sequence[Item], val: Sequence[Item], cfg: RewardTrainConfig):
        if not train:
            raise DatawallError("no training examples left after holding out validation problems")
        self.train_items, self.val_items, self.cfg = list(train), list(val), cfg
        self.name = f"train {rm.kind}"
        self.criterion = "val_criterion" if self.val_items else None
        self.by_problem = cfg.pairwise > 0
        self.problems = [it.problem for it in self.train_items]
        self.steps_per_epoch = len(epoch_batches(self.problems, cfg.batch_size, self.by_problem, cfg.seed, 0))
        # training FLOPs of one sequence: forward + backward = 3 x its forward
        self.seq_flops = [3.0 * rm.flops(len(it.ids)) for it in self.train_items]
        self._epoch: tuple[int, list[list[int]]] | None = None

    def loop_config(self) -> LoopConfig:
        """cfg.epochs epochs, the backbone's lr decaying by cosine to 10% without warmup; one evaluation and
        checkpoint an epoch; the best epoch kept and early stopping after `patience` epochs without gain."""
        cfg, spe = self.cfg, self.steps_per_epoch
        optim = OptimConfig(lr=cfg.lr, min_lr_ratio=0.1, warmup_frac=0.0, schedule="cosine",
                            weight_decay=cfg.weight_decay, beta1=0.9, beta2=0.95, grad_clip=1.0)
        val = bool(self.val_items)
        return LoopConfig(steps=spe * cfg.epochs, optim=optim, eval_every=spe, checkpoint_every=spe, log_every=1,
                          keep_best=val, patience=cfg.patience if val else None, device=cfg.device)

    def param_groups(self, model: RewardModel) -> list[ParamGroup]:
        return [ParamGroup("backbone", list(model.backbone.parameters())),
                ParamGroup("head", list(model.head.parameters()), self.cfg.head_lr / self.cfg.lr)]

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_batches(self.problems, self.cfg.batch_size, self.by_problem,
                                                self.cfg.seed, epoch))
        return self._epoch[1]

    def _split(self, idx: list[int]) -> list[list[int]]:
        """A step's items as grad_accum micro-batches (whole problems each when the ranking loss pairs them)."""
        units = _groups([self.problems[i] for i in idx]) if self.by_problem else [[k] for k in range(len(idx))]
        parts = np.array_split(np.arange(len(units)), min(self.cfg.grad_accum, len(units)))
        return [[idx[k] for u in part for k in units[u]] for part in parts if len(part)]

    def step(self, step: int, model: RewardModel) -> Step:
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._batches(epoch)[i]
        micro = self._split(idx)
        items = self.train_items
        positions = sum(len(items[j].ends) for j in idx)
        pairs = sum(count_pairs([items[j].targets[-1] for j in m], [items[j].problem for j in m]) for m in micro)
        tokens = sum(len(m) * max(len(items[j].ids) for j in m) for m in micro)  # padded to each batch's longest
        flops = sum(self.seq_flops[j] for j in idx)
        return Step(micro, tokens, flops, {"positions": positions, "pairs": pairs})

    def loss(self, model: RewardModel, batch: list[int], step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        chunk = [self.train_items[j] for j in batch]
        x, rows, cols, t, last = _tensors(model, chunk)
        logits = model(x)[rows, cols]
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="sum") / step.norm["positions"]
        if self.cfg.pairwise == 0:
            return bce, {}
        rank = pair_losses(logits[last], t[last], [it.problem for it in chunk]).sum() / max(1, step.norm["pairs"])
        return bce + self.cfg.pairwise * rank, {"bce": bce.item(), "rank": rank.item()}

    def evaluate(self, model: RewardModel) -> dict:
        if not self.val_items:
            return {}
        metrics = evaluate(model, self.val_items)
        return {**{f"val_{k}": metrics[k] for k in LOGGED}, "val_criterion": criterion(metrics, self.cfg.pairwise)}

    def history(self, metrics_path: Path) -> list[dict]:
        """One row per epoch run from the loop's metrics.jsonl: mean train loss and the epoch's evaluation."""
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        out = []
        for end in range(self.steps_per_epoch, max((r["step"] for r in rows), default=0) + 1, self.steps_per_epoch):
            epoch = [r for r in rows if end - self.steps_per_epoch < r["step"] <= end]
            row = {"epoch": end // self.steps_per_epoch,
                   "train_loss": sum(r["train_loss"] for r in epoch) / len(epoch)}
            row |= {k: v for k, v in epoch[-1].items() if k.startswith("val_")}
            out.append(row)
        return out


class RewardModelFormat:
    """The loop's checkpoints of a RewardModel: reward-model directories (RewardModel.save/load)."""

    def save(self, model: RewardModel, directory: Path, meta: dict, extra: Callable[[Path], None]) -> None:
        def write(tmp: Path) -> None:
            (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
            extra(tmp)

        model.save(directory, extra=write)

    def load_into(self, model: RewardModel, directory: Path) -> None:
        model.load_state_dict(RewardModel.load(directory).state_dict())
