"""Token budgets: documents, the packed training stream (a pure function of the step), held-out rows,
and the split of a corpus into a held-out set and a training pool capped at U unique tokens."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from datawall.errors import DatawallError

IGNORE = -100  # target value that takes no loss (torch cross_entropy's default ignore_index)
_SPLIT_STREAM = 2**63 - 1  # seed-sequence tag for the held-out/train split, apart from the epoch tags 0, 1, ...


@dataclass
class Doc:
    """A token sequence; loss is taken on targets whose loss_mask is 1 (None = every token)."""

    ids: np.ndarray
    loss_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.size == 0:
            ids = ids.astype(np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise DatawallError(f"Doc: ids must be a 1-D sequence of integers, got {ids.dtype} of shape {ids.shape}")
        self.ids = ids
        if self.loss_mask is not None:
            mask = np.asarray(self.loss_mask).astype(bool, copy=False)
            if mask.shape != ids.shape:
                raise DatawallError(f"Doc: loss_mask has {mask.size} entries for {ids.size} ids")
            self.loss_mask = mask

    def __len__(self) -> int:
        return len(self.ids)


def _concat(docs: Sequence[Doc]) -> tuple[np.ndarray, np.ndarray | None]:
    """All ids (int32: every vocabulary fits) and the mask (None when no doc has one), in list order."""
    if not docs:
        return np.zeros(0, np.int32), None
    ids = np.concatenate([d.ids for d in docs]).astype(np.int32, copy=False)
    if all(d.loss_mask is None for d in docs):
        return ids, None
    mask = np.concatenate([np.ones(len(d), bool) if d.loss_mask is None else d.loss_mask for d in docs])
    return ids, mask


def _xy(rows: np.ndarray, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of seq_len+1 tokens -> (inputs, targets) LongTensors, targets -100 where the mask is 0."""
    x = rows[:, :-1].astype(np.int64)
    y = rows[:, 1:].astype(np.int64)
    if mask is not None:
        y[~mask[:, 1:]] = IGNORE
    return torch.from_numpy(x), torch.from_numpy(y)


class PackedStream:
    """Training batches as a pure function of (docs, seq_len, seed, step, batch_size).

    Epoch e is the docs in a permutation seeded by (seed, e), concatenated and cut into rows of seq_len+1
    tokens; the tail that does not fill a row is dropped (a different tail each epoch, so every epoch has
    the same `rows_per_epoch`). The global stream is epoch 0's rows, then epoch 1's, ...; batch s is
    global rows [s*B, (s+1)*B), crossing epoch boundaries seamlessly.
    """

    def __init__(self, docs: Sequence[Doc], seq_len: int, seed: int = 0):
        if seq_len < 1:
            raise DatawallError(f"PackedStream: seq_len must be at least 1, got {seq_len}")
        if int(seed) != seed or seed < 0:
            raise DatawallError(f"PackedStream: seed must be a non-negative integer, got {seed}")
        docs = list(docs)
        self.seq_len, self.seed = int(seq_len), int(seed)
        self._ids, self._mask = _concat(docs)
        self._lengths = np.array([len(d) for d in docs], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._lengths)[:-1]]).astype(np.int64)
        self.num_docs = len(docs)
        self.unique_tokens = int(self._lengths.sum())
        self.rows_per_epoch = self.unique_tokens // (self.seq_len + 1)
        if self.rows_per_epoch == 0:
            raise DatawallError(f"PackedStream: {self.num_docs} docs hold {self.unique_tokens} tokens, fewer than "
                                f"one row of seq_len+1 = {self.seq_len + 1}; add data or shorten seq_len")
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._max_cached = 2

    @property
    def tokens_per_epoch(self) -> int:
        """Input positions served per epoch (rows_per_epoch * seq_len), the unit training counts tokens in."""
        return self.rows_per_epoch * self.seq_len

    def epoch_at(self, step: int, batch_size: int) -> float:
        """Epochs consumed after `step` batches of `batch_size` rows."""
        return step * batch_size / self.rows_per_epoch

    def epoch_rows(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Epoch `epoch` as int32 rows [rows_per_epoch, seq_len+1] and its bool mask (None: all ones)."""
        if epoch in self._epochs:
            self._epochs.move_to_end(epoch)
            return self._epochs[epoch]
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_docs)
        lengths = self._lengths[perm]
        out_starts = np.cumsum(lengths) - lengths
        # token j of the epoch comes from position src_start + (j - out_start) of its doc
        idx = np.arange(self.unique_tokens, dtype=np.int64) + np.repeat(self._starts[perm] - out_starts, lengths)
        used = idx[: self.rows_per_epoch * (self.seq_len + 1)]
        shape = (self.rows_per_epoch, self.seq_len + 1)
        rows = self._ids[used].reshape(shape)
        mask = None if self._mask is None else self._mask[used].reshape(shape)
        self._epochs[epoch] = (rows, mask)
        while len(self._epochs) > self._max_cached:
            self._epochs.popitem(last=False)
        return rows, mask

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors [batch_size, seq_len] for global rows [step*B, (step+1)*B); y = -100 off-mask."""
        if step < 0 or batch_size < 1:
            raise DatawallError(f"PackedStream.batch: need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
        self._max_cached = max(self._max_cached, 2 + batch_size // self.rows_per_epoch)
        row, end = step * batch_size, (step + 1) * batch_size
        rows, masks = [], []
        while row < end:
            epoch, i = divmod(row, self.rows_per_epoch)
            n = min(end - row, self.rows_per_epoch - i)
            r, m = self.epoch_rows(epoch)
            rows.append(r[i:i + n])
            masks.append(None if m is None else m[i:i + n])
            row += n
        if len(rows) == 1:
            return _xy(rows[0], masks[0])
        return _xy(np.concatenate(rows), None if self._mask is None else np.concatenate(masks))

    def __repr__(self) -> str:
        return (f"PackedStream(docs={self.num_docs}, unique_tokens={self.unique_tokens}, seq_len={self.seq_len}, "
                f"rows_per_epoch={self.rows_per_epoch}, seed={self.seed})")


def heldout_rows(docs: Sequence[Doc], seq_len: int, max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed evaluation rows: docs concatenated in order (no shuffle), cut into seq_len+1, tail dropped."""
    ids, mask = _concat(docs)
    n = len(ids) // (seq_len + 1)
    if max_rows is not None:
        n = min(n, max_rows)
    if n == 0:
        raise DatawallError(f"heldout_rows: {len(docs)} docs hold {len(ids)} tokens, fewer than one row of "
                            f"seq_len+1 = {seq_len + 1}")
    used = n * (seq_len + 1)
    rows = ids[:used].reshape(n, seq_len + 1)
    return _xy(rows, None if mask is None else mask[:used].reshape(n, seq_len + 1))


def corpus_docs(tokens: np.ndarray, doc_bounds: np.ndarray | Sequence[int], seq_len: int,
                unique_tokens: int | None, heldout_tokens: int, seed: int) -> tuple[list[Doc], list[Doc]]:
    """Split a corpus token stream into (train_docs, heldout_docs) of seq_len+1-token chunks.

    The stream (documents already separated by <eos>, as `corpus_tokens` returns it) is cut into chunks of
    seq_len+1 tokens, across document boundaries; the ragged tail is dropped. A permutation seeded by `seed`
    orders the chunks: the first ceil(heldout_tokens / (seq_len+1)) are held out, the rest form the training
    pool, capped at exactly `unique_tokens` tokens (whole chunks in seeded order, the last one truncated;
    None = the whole pool). Held-out never shares a chunk with train, does not depend on U, and the pool
    for a smaller U is a prefix of the pool for a larger one.
    """
    tokens = np.asarray(tokens)
    bounds = np.asarray(doc_bounds)
    if tokens.ndim != 1 or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != len(tokens):
        raise DatawallError(f"corpus_docs: doc_bounds must run from 0 to len(tokens) = {len(tokens)}")
    if int(seed) != seed or seed < 0:
        raise DatawallError(f"corpus_docs: seed must be a non-negative integer, got {seed}")
    if heldout_tokens < 0 or (unique_tokens is not None and unique_tokens <= 0):
        raise DatawallError(f"corpus_docs: need heldout_tokens >= 0 and unique_tokens > 0, "
                            f"got {heldout_tokens} and {unique_tokens}")
    chunk = seq_len + 1
    n_chunks = len(tokens) // chunk
    n_held = math.ceil(heldout_tokens / chunk)
    available = (n_chunks - n_held) * chunk
    if available <= 0:
        raise DatawallError(f"corpus holds {len(tokens):,} tokens ({n_chunks} rows of {chunk}); holding out "
                            f"{heldout_tokens:,} leaves nothing to train on")
    if unique_tokens is not None and unique_tokens > available:
        raise DatawallError(f"corpus holds {len(tokens):,} tokens, {available:,} of them available for training "
                            f"after holding out {n_held * chunk:,}; cannot take {unique_tokens:,} unique tokens")
    order = np.random.default_rng([int(seed), _SPLIT_STREAM]).permutation(n_chunks)
    held = [Doc(tokens[i * chunk:(i + 1) * chunk]) for i in order[:n_held]]
    budget = available if unique_tokens is None else unique_tokens
    full, part = divmod(budget, chunk)
    pool = order[n_held:]
    train = [Doc(tokens[i * chunk:(i + 1) * chunk]) for i in pool[:full]]
    if part:
        i = pool[full]
        train.append(Doc(tokens[i * chunk:i * chunk + part]))
    return train, held
