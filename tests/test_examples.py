"""ExampleStream: one task example per row, padded, deterministic per step, each doc once per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from datawall.data import Doc, ExampleStream, example_rows
from datawall.errors import DatawallError


def _docs():
    rng = np.random.default_rng(0)
    out = []
    for i in range(10):
        n = 5 + i % 4
        ids = rng.integers(3, 20, n)
        ids[0] = 100 + i  # a tag to recognise the doc
        out.append(Doc(ids, np.r_[np.zeros(2, bool), np.ones(n - 2, bool)]))
    return out


def test_rows_hold_one_example_with_prompt_and_padding_masked():
    docs = _docs()
    stream = ExampleStream(docs, pad_id=0, seed=3)
    assert stream.seq_len == max(len(d) for d in docs) - 1
    x, y = stream.batch(0, 10)
    for row_x, row_y in zip(x.numpy(), y.numpy(), strict=True):
        doc = docs[row_x[0] - 100]
        n = len(doc)
        assert list(row_x[:n - 1]) == list(doc.ids[:-1]) and (row_x[n:] == 0).all()
        assert (row_y[:1] == -100).all() and list(row_y[1:n - 1]) == list(doc.ids[2:])
        assert (row_y[n - 1:] == -100).all()


def test_each_epoch_is_a_fresh_permutation_and_batches_are_pure():
    docs = _docs()
    a, b = ExampleStream(docs, 0, seed=1), ExampleStream(docs, 0, seed=1)
    epoch0 = np.concatenate([a.batch(s, 5)[0][:, 0].numpy() for s in range(2)])
    epoch1 = np.concatenate([a.batch(s, 5)[0][:, 0].numpy() for s in range(2, 4)])
    assert sorted(epoch0) == sorted(epoch1) == list(range(100, 110))
    assert list(epoch0) != list(epoch1)
    assert (a.batch(7, 3)[0] == b.batch(7, 3)[0]).all()  # crosses an epoch boundary, same in a new instance
    assert a.epoch_at(4, 5) == 2.0


def test_heldout_rows_and_bad_widths():
    x, y = example_rows(_docs(), pad_id=0)
    assert x.shape == y.shape == (10, 7)
    with pytest.raises(DatawallError, match="exceeds"):
        ExampleStream(_docs(), 0, width=4)
