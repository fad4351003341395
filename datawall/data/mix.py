"""Real and synthetic examples in one training stream, in a fixed proportion, as a pure function of (seed, step).

Global row r is synthetic when floor((r + 1) p) > floor(r p), p being the synthetic share: exactly floor(R p) of
the first R rows are synthetic, spread evenly (no block of one kind). Real row i and synthetic row j are the i-th
and j-th rows of two ExampleStreams with their own seeded permutations per epoch, so each pool is passed over in
whole epochs of its own, and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from datawall.data.budget import Doc
from datawall.data.examples import ExampleStream, _xy
from datawall.errors import DatawallError

_SYNTH_SEED = 7919  # the synthetic pool's permutations: another stream than the real pool's


class MixStream:
    """Batches of real and synthetic examples, `share` of the rows synthetic (ExampleStream's interface)."""

    def __init__(self, real: Sequence[Doc], synthetic: Sequence[Doc], pad_id: int, seed: int, share: float):
        if not 0 < share <= 1:
            raise DatawallError(f"MixStream: the synthetic share must be in (0, 1], got {share}")
        if not synthetic:
            raise DatawallError("MixStream: no synthetic examples")
        if share < 1 and not real:
            raise DatawallError("MixStream: no real examples for the real share")
        self.share, self.seed = float(share), seed
        self.seq_len = max(len(d) for d in [*real, *synthetic]) - 1
        self.real = ExampleStream(real, pad_id, seed, width=self.seq_len) if share < 1 else None
        self.synthetic = ExampleStream(synthetic, pad_id, seed + _SYNTH_SEED, width=self.seq_len)
        self.unique_tokens = (self.real.unique_tokens if self.real else 0) + self.synthetic.unique_tokens
        self.rows = None  # the SyntheticRows the synthetic docs came from, when the caller keeps them here

    @property
    def tokens_per_epoch(self) -> int:
        """Real input positions of one pass over both pools."""
        return (self.real.tokens_per_epoch if self.real else 0) + self.synthetic.tokens_per_epoch

    def synthetic_rows(self, rows: int | np.ndarray) -> int | np.ndarray:
        """How many of the first `rows` rows are synthetic."""
        return np.floor(np.asarray(rows, dtype=np.float64) * self.share).astype(np.int64)

    def passes(self, rows: int) -> tuple[float, float]:
        """(epochs over the real pool, epochs over the synthetic pool) after `rows` rows."""
        synth = int(self.synthetic_rows(rows))
        real = rows - synth
        return (real / self.real.rows_per_epoch if self.real else 0.0), synth / self.synthetic.rows_per_epoch

    def epoch_at(self, step: int, batch_size: int) -> float:
        """Passes over the real pool after `step` batches (over the synthetic pool when there is no real one)."""
        real, synth = self.passes(step * batch_size)
        return real if self.real else synth

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors [batch_size, <= seq_len]; y = -100 on prompts and padding."""
        rows = np.arange(step * batch_size, (step + 1) * batch_size)
        before, after = self.synthetic_rows(rows), self.synthetic_rows(rows + 1)
        is_synth = after > before
        ids = np.empty((batch_size, self.seq_len + 1), dtype=np.int64)
        mask = np.empty((batch_size, self.seq_len + 1), dtype=bool)
        widths = np.empty(batch_size, dtype=np.int64)
        if is_synth.any():
            docs = self.synthetic.pick(before[is_synth])
            ids[is_synth], mask[is_synth], widths[is_synth] = self.synthetic.rows_of(docs, self.seq_len)
        if (~is_synth).any():
            docs = self.real.pick(rows[~is_synth] - before[~is_synth])
            ids[~is_synth], mask[~is_synth], widths[~is_synth] = self.real.rows_of(docs, self.seq_len)
        width = int(widths.max())
        return _xy(ids[:, :width], mask[:, :width])
