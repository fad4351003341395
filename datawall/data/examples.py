"""Task examples one per row: no packing, so an example never attends to another.

Packing short worked examples into long rows made small models learn the task worlds several times slower
(each row mixes unrelated problems the model must learn to ignore). Rows here hold one example each,
right-padded to the longest example in the pool; padding takes no loss and, being after every real token,
is never attended to under the causal mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from datawall.data.budget import IGNORE, Doc
from datawall.errors import DatawallError


def _rows(docs: Sequence[Doc], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Docs as int64 rows [n, width+1] right-padded with pad_id, and their bool loss mask."""
    ids = np.full((len(docs), width + 1), pad_id, dtype=np.int64)
    mask = np.zeros((len(docs), width + 1), dtype=bool)
    for i, d in enumerate(docs):
        ids[i, :len(d)] = d.ids
        mask[i, :len(d)] = True if d.loss_mask is None else d.loss_mask
    return ids, mask


def _xy(ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    y = ids[:, 1:].copy()
    y[~mask[:, 1:]] = IGNORE
    return torch.from_numpy(ids[:, :-1].copy()), torch.from_numpy(y)


class ExampleStream:
    """Training batches of whole examples as a pure function of (docs, seed, step, batch_size).

    Epoch e is the docs in a permutation seeded by (seed, e); batch s is global rows [s*B, (s+1)*B) of the
    stream epoch 0, epoch 1, ... Same interface as PackedStream; `seq_len` is the padded row width.
    """

    def __init__(self, docs: Sequence[Doc], pad_id: int, seed: int = 0, width: int | None = None):
        if not docs:
            raise DatawallError("ExampleStream: no examples to train on")
        longest = max(len(d) for d in docs) - 1
        self.seq_len = width or longest
        if longest > self.seq_len:
            raise DatawallError(f"ExampleStream: an example of {longest + 1} tokens exceeds the row width "
                                f"{self.seq_len}; raise --seq-len")
        self.seed = seed
        self._ids, self._mask = _rows(docs, self.seq_len, pad_id)
        self.num_docs = self.rows_per_epoch = len(docs)
        self._lengths = np.array([len(d) for d in docs])
        self.unique_tokens = int(sum(len(d) for d in docs))

    @property
    def tokens_per_epoch(self) -> int:
        """Real input positions per epoch (each example's length minus its last token)."""
        return int(self._lengths.sum()) - self.rows_per_epoch

    def epoch_at(self, step: int, batch_size: int) -> float:
        """Epochs consumed after `step` batches of `batch_size` rows."""
        return step * batch_size / self.rows_per_epoch

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors [batch_size, <= seq_len]; y = -100 on prompts and padding."""
        return self.take(self.pick(np.arange(step * batch_size, (step + 1) * batch_size)))

    def pick(self, rows: np.ndarray) -> np.ndarray:
        """The docs at global rows `rows` of the stream (epoch e: the docs in the permutation seeded by (seed, e))."""
        epochs, within = np.divmod(rows, self.rows_per_epoch)
        picked = np.empty_like(rows)
        for e in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(e)]).permutation(self.rows_per_epoch)
            sel = epochs == e
            picked[sel] = perm[within[sel]]
        return picked

    def take(self, docs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of these docs in this order, trimmed to the longest: padding columns would cost compute and teach
        nothing."""
        width = int(self._lengths[docs].max())
        return _xy(self._ids[docs, :width], self._mask[docs, :width])

    def rows_of(self, docs: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """These docs' padded ids and loss mask [len(docs), width + 1] (width at least the longest doc minus one),
        and their lengths."""
        return self._ids[docs, :width + 1], self._mask[docs, :width + 1], self._lengths[docs]


def example_rows(docs: Sequence[Doc], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed evaluation rows, one example each, in order."""
    if not docs:
        raise DatawallError("example_rows: no examples")
    ids, mask = _rows(docs, max(len(d) for d in docs) - 1, pad_id)
    return _xy(ids, mask)
