"""Completions as training rows: prompt + completion token ids right-padded into one batch, per-token
log-probabilities of the completion under a model, and frozen reference copies.

Shared by the objectives that score whole completions (GRPO, DPO): they differ only in what they do with the
log-probabilities. Rows are right-padded, so under the causal mask no real token attends to padding and no
attention mask is needed; position t of `y` is the token that follows position t of `x`, and `mask` marks the
completion's tokens (the prompt is context, never a target).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class SequenceBatch:
    """Prompt + completion rows: x [B, T] inputs, y [B, T] next tokens, mask [B, T] bool (a completion token)."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """Completion tokens per row [B]."""
        return self.mask.sum(1)

    def to(self, device) -> SequenceBatch:
        """The batch on `device`."""
        return SequenceBatch(self.x.to(device), self.y.to(device), self.mask.to(device))

    def rows(self, index) -> SequenceBatch:
        """A sub-batch (a slice or index tensor over rows), trimmed to its longest row."""
        x, y, mask = self.x[index], self.y[index], self.mask[index]
        width = int(_used_width(x, mask))
        return SequenceBatch(x[:, :width], y[:, :width], mask[:, :width])


def _used_width(x: torch.Tensor, mask: torch.Tensor) -> int:
    cols = mask.any(0).nonzero()
    return int(cols[-1]) + 1 if len(cols) else x.shape[1]


def pack_sequences(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   pad_id: int) -> SequenceBatch:
    """Rows prompt + completion (the prompt's ids as the model saw them, bos included), right-padded with pad_id.

    Width = the longest row minus one (the last token is only a target). A completion may be empty (a model
    that stopped at once): its row has no target and adds nothing to any loss.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt has no tokens (a completion needs at least a bos to follow)")
    # one scatter of every token instead of a tensor per row: an RL step packs hundreds of rows
    plen = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
    total = plen + np.fromiter((len(c) for c in completions), dtype=np.int64, count=len(completions))
    width = int(total.max()) - 1
    flat = np.fromiter(chain.from_iterable(chain(p, c) for p, c in zip(prompts, completions, strict=True)),
                       dtype=np.int64, count=int(total.sum()))
    row = np.repeat(np.arange(len(prompts)), total)
    full = np.full((len(prompts), width + 1), pad_id, dtype=np.int64)
    full[row, np.arange(len(flat)) - np.repeat(np.cumsum(total) - total, total)] = flat
    col = np.arange(width)[None, :]
    n = total[:, None] - 1  # positions with a next token
    x = torch.from_numpy(np.where(col < n, full[:, :-1], pad_id))
    y = torch.from_numpy(np.ascontiguousarray(full[:, 1:]))
    mask = torch.from_numpy((col >= plen[:, None] - 1) & (col < n))
    return SequenceBatch(x, y, mask)


def token_logprobs(logits: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """log p(y_t | x_<=t) [B, T] in float32, 0 where mask is False."""
    logits = logits.float()
    picked = logits.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)
    out = picked - torch.logsumexp(logits, dim=-1)
    return out.masked_fill(~batch.mask, 0.0)


def token_entropy(logits: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """Entropy of the next-token distribution at each completion position [B, T] (0 elsewhere), no gradient."""
    with torch.no_grad():
        logp = F.log_softmax(logits.float(), dim=-1)
        ent = -(logp.exp() * logp).sum(-1)
    return ent.masked_fill(~batch.mask, 0.0)


def completion_logprobs(model: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """Per-token log-probabilities [B, T] of each row's completion under `model` (0 off the completion)."""
    return token_logprobs(model(batch.x), batch)


@torch.no_grad()
def reference_logprobs(reference: torch.nn.Module, batch: SequenceBatch, micro_batch: int = 64) -> torch.Tensor:
    """completion_logprobs under a frozen reference, without gradients, `micro_batch` rows at a time."""
    parts = [completion_logprobs(reference, batch.rows(slice(i, i + micro_batch)))
             for i in range(0, batch.x.shape[0], micro_batch)]
    width = batch.x.shape[1]
    return torch.cat([F.pad(p, (0, width - p.shape[1])) for p in parts])


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` in eval mode with requires_grad=False: a reference that is neither trained nor
    checkpointed by the loop (the loop only sees the objective's param_groups)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
