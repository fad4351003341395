"""Training a reward model: BCE on soft targets at labelled positions (optionally plus a within-problem ranking
loss), AdamW, early stopping on held-out problems.

An example is a sampled solution to a *train-split* problem cut into steps, with one target in [0, 1] per step
(an ORM example has one step, the whole completion, labelled by the verifier; a PRM example has Math-Shepherd
Monte-Carlo labels). A seeded share of the problems (never of the samples: a problem's samples are near
duplicates) is held out for early stopping and for the reported accuracy and AUC.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from datawall.errors import DatawallError
from datawall.model.reward_head import RewardModel
from datawall.progress import progress_bar


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
    weight_decay: float = Field(0.0, ge=0)
    val_frac: float = Field(0.2, ge=0, lt=1, description="share of training problems held out for early stopping")
    patience: int = Field(2, ge=0, description="epochs without held-out improvement tolerated; one more stops")
    pairwise: float = Field(0.0, ge=0, description="weight of a within-problem ranking loss on final scores "
                            "(batches then hold whole problems)")
    seed: int = 0
    device: str = "cpu"


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None when a class is absent."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def split_by_problem(examples: Sequence[ScoredExample], val_frac: float, seed: int
                     ) -> tuple[list[ScoredExample], list[ScoredExample]]:
    """(train, validation) examples with whole problems held out (at least one each when there are two)."""
    problems = sorted({e.problem for e in examples})
    random.Random(seed).shuffle(problems)
    n_val = 0 if val_frac == 0 or len(problems) < 2 else min(len(problems) - 1, max(1, round(val_frac * len(problems))))
    held = set(problems[:n_val])
    return [e for e in examples if e.problem not in held], [e for e in examples if e.problem in held]


def epoch_batches(problems: Sequence[int], batch_size: int, by_problem: bool, gen: torch.Generator) -> list[list[int]]:
    """One epoch's batches of item indices: a random permutation, or whole problems in random order."""
    if not by_problem:
        perm = torch.randperm(len(problems), generator=gen).tolist()
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(problems):
        groups.setdefault(q, []).append(i)
    order = [list(groups.values())[j] for j in torch.randperm(len(groups), generator=gen).tolist()]
    batches, cur = [], []
    for g in order:
        cur += g
        if len(cur) >= batch_size:
            batches.append(cur)
            cur = []
    return batches + ([cur] if cur else [])


def ranking_loss(final_logits: torch.Tensor, final_targets: torch.Tensor, problems: Sequence[int]) -> torch.Tensor:
    """Mean -log sigmoid(s_right - s_wrong) over every (right, wrong) pair of solutions to the same problem.

    The verifier's BCE alone can be met by learning which problems the policy solves; best-of-n needs the
    order of solutions *within* a problem, which this term trains directly (0 when no problem is mixed).
    """
    q = torch.tensor(problems, device=final_logits.device)
    same = q[:, None] == q[None, :]
    better = (final_targets[:, None] >= 0.5) & (final_targets[None, :] < 0.5) & same
    if not better.any():
        return final_logits.sum() * 0.0
    diff = final_logits[:, None] - final_logits[None, :]
    return F.softplus(-diff[better]).mean()


def _tensors(rm: RewardModel, examples: Sequence[ScoredExample]) -> list[tuple[list[int], list[int], list[float]]]:
    out = []
    for e in examples:
        ids, ends = rm.encode(e.prompt, e.steps)
        out.append((ids, ends, list(e.targets)))
    return out


def _batch(rm: RewardModel, items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, and (row, position, target) of every labelled position in the batch."""
    x = rm.batch([ids for ids, _, _ in items])
    rows = [r for r, (_, ends, _) in enumerate(items) for _ in ends]
    cols = [c for _, ends, _ in items for c in ends]
    targets = [t for _, _, ts in items for t in ts]
    dev = rm.device
    return x, torch.tensor(rows, device=dev), torch.tensor(cols, device=dev), torch.tensor(targets, device=dev)


@torch.no_grad()
def evaluate(rm: RewardModel, items, batch_size: int = 64, problems: Sequence[int] | None = None) -> dict:
    """BCE, accuracy (P > 0.5 vs target >= 0.5) and AUC over every labelled position, and AUC of outcomes.

    With `problems` (one per item) also the mean outcome AUC *within* problems whose solutions are mixed: what
    best-of-n needs. A pooled AUC can be high just by telling easy problems from hard ones.
    """
    rm.eval()
    probs, targets, final_probs, final_targets = [], [], [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        x, rows, cols, t = _batch(rm, chunk)
        p = torch.sigmoid(rm(x)[rows, cols]).cpu().tolist()
        probs += p
        targets += t.cpu().tolist()
        k = 0
        for _, ends, ts in chunk:  # the last labelled position of each solution judges the whole solution
            k += len(ends)
            final_probs.append(p[k - 1])
            final_targets.append(ts[-1])
    p, t = np.clip(np.array(probs), 1e-7, 1 - 1e-7), np.array(targets)
    bce = float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    out = {"loss": bce, "accuracy": float(((p > 0.5) == (t >= 0.5)).mean()),
           "auc": auc(p, t >= 0.5), "outcome_auc": auc(final_probs, np.array(final_targets) >= 0.5),
           "positions": len(t), "solutions": len(items), "positive_rate": float((t >= 0.5).mean())}
    if problems is not None:
        out |= within_problem_auc(final_probs, np.array(final_targets) >= 0.5, problems)
    return out


def within_problem_auc(scores: Sequence[float], labels: Sequence[bool], problems: Sequence[int]) -> dict:
    """Mean AUC over the problems that have both right and wrong solutions, and how many there are."""
    groups: dict[int, list[int]] = {}
    for i, q in enumerate(problems):
        groups.setdefault(q, []).append(i)
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    aucs = [a for idx in groups.values() if (a := auc(s[idx], y[idx])) is not None]
    return {"within_problem_auc": float(np.mean(aucs)) if aucs else None, "mixed_problems": len(aucs)}


def _criterion(metrics: dict, pairwise: float) -> float:
    """Held-out number early stopping minimises: BCE, or with a ranking loss 1 - within-problem AUC."""
    if pairwise > 0 and metrics.get("within_problem_auc") is not None:
        return 1.0 - metrics["within_problem_auc"]
    return metrics["loss"]


def train_reward_model(rm: RewardModel, examples: Sequence[ScoredExample], cfg: RewardTrainConfig,
                       quiet: bool = False) -> dict:
    """Fit rm in place (the epoch with the best held-out loss is kept); returns metrics and training cost."""
    if not examples:
        raise DatawallError("no labelled examples to train the reward model on")
    train_ex, val_ex = split_by_problem(examples, cfg.val_frac, cfg.seed)
    rm.to(cfg.device)
    train_items, val_items = _tensors(rm, train_ex), _tensors(rm, val_ex)
    head = list(rm.head.parameters())
    body = [p for p in rm.backbone.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = math.ceil(len(train_items) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    train_problems, val_problems = [e.problem for e in train_ex], [e.problem for e in val_ex]
    best, best_state, history, bad, tokens = math.inf, None, [], 0, 0
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task(f"train {rm.kind}", total=total, rate="", info="")
        for epoch in range(cfg.epochs):
            rm.train()
            batches = epoch_batches(train_problems, cfg.batch_size, cfg.pairwise > 0, gen)
            run_loss = 0.0
            for s, idx in enumerate(batches):
                chunk = [train_items[i] for i in idx]
                x, rows, cols, t = _batch(rm, chunk)
                logits = rm(x)[rows, cols]
                loss = F.binary_cross_entropy_with_logits(logits, t)
                if cfg.pairwise > 0:
                    last = torch.tensor([len(ends) for _, ends, _ in chunk], device=logits.device).cumsum(0) - 1
                    loss = loss + cfg.pairwise * ranking_loss(logits[last], t[last], [train_problems[i] for i in idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
                opt.step()
                sched.step()
                tokens += int(x.numel())
                run_loss += loss.item()
                bar.update(job, advance=1, info=f"epoch {epoch + 1} loss {run_loss / (s + 1):.3f}")
            row = {"epoch": epoch + 1, "train_loss": run_loss / len(batches)}
            if val_items:
                metrics = evaluate(rm, val_items, problems=val_problems)
                row |= {f"val_{k}": v for k, v in metrics.items() if k in ("loss", "accuracy", "auc",
                                                                            "within_problem_auc")}
                row["val_criterion"] = _criterion(metrics, cfg.pairwise)
                if row["val_criterion"] < best - 1e-6:
                    best, bad = row["val_criterion"], 0
                    best_state = copy.deepcopy(rm.state_dict())
                else:
                    bad += 1
            history.append(row)
            if val_items and bad > cfg.patience:
                break
    if best_state is not None:
        rm.load_state_dict(best_state)
    rm.eval()
    out = {"history": history, "train_problems": len({e.problem for e in train_ex}),
           "val_problems": len({e.problem for e in val_ex}), "train_solutions": len(train_ex),
           "epochs_run": len(history),
           # forward + backward of every training sequence per epoch run: 3 x its forward FLOPs
           "train_flops": 3.0 * sum(rm.flops(len(ids)) for ids, _, _ in train_items) * len(history),
           "train_tokens": tokens}
    if val_items:
        out["val"] = evaluate(rm, val_items, problems=val_problems)
        out["best_epoch"] = min(history, key=lambda r: r["val_criterion"])["epoch"]
    return out
