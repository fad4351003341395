"""Token budgets: packed stream determinism and epochs, loss masks, held-out splits, task examples."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from datawall.data import Doc, PackedStream, Tokenizer, corpus_docs, heldout_rows, task_docs
from datawall.errors import DatawallError


def make_docs(n: int = 37, seed: int = 0, masked: bool = False) -> list[Doc]:
    """Docs of varied lengths; token ids are globally unique so every token can be traced."""
    rng = np.random.default_rng(seed)
    docs, next_id = [], 0
    for _ in range(n):
        length = int(rng.integers(3, 40))
        ids = np.arange(next_id, next_id + length)
        next_id += length
        # masked docs: the first few tokens (a "prompt") take no loss
        docs.append(Doc(ids, (np.arange(length) >= 2).astype(int) if masked else None))
    return docs


def rows_of(stream: PackedStream, first_row: int, n_rows: int, batch_size: int = 1) -> np.ndarray:
    """Rebuild raw rows [n, T+1] from served batches of an unmasked stream."""
    assert first_row % batch_size == 0 and n_rows % batch_size == 0
    out = []
    for s in range(first_row // batch_size, (first_row + n_rows) // batch_size):
        x, y = stream.batch(s, batch_size)
        out.append(torch.cat([x[:, :1], y], dim=1).numpy())
    return np.concatenate(out)


def test_doc_validation():
    assert len(Doc([1, 2, 3], None)) == 3
    assert Doc([], None).ids.dtype == np.int64
    with pytest.raises(DatawallError, match="loss_mask"):
        Doc([1, 2, 3], [1, 0])
    with pytest.raises(DatawallError, match="integers"):
        Doc([0.5, 1.5], None)


def test_stream_is_a_pure_function_of_the_step():
    docs = make_docs(masked=True)
    a, b = PackedStream(docs, 16, seed=3), PackedStream(docs, 16, seed=3)
    steps = [0, 1, 2, 50, 7, 3, 200, 0]
    for s in steps:  # b is asked out of order, after a, with its own caches
        xa, ya = a.batch(s, 4)
        assert xa.dtype == ya.dtype == torch.long and xa.shape == ya.shape == (4, 16)
    for s in reversed(steps):
        xa, ya = a.batch(s, 4)
        xb, yb = b.batch(s, 4)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(PackedStream(docs, 16, seed=4).batch(0, 4)[0], a.batch(0, 4)[0])


def test_restarted_process_gets_identical_batches():
    script = (
        "import hashlib, numpy as np\n"
        "from tests.test_budget import make_docs\n"
        "from datawall.data import PackedStream\n"
        "s = PackedStream(make_docs(masked=True), 16, seed=9)\n"
        "h = hashlib.sha256()\n"
        "for step in (0, 5, 31, 130):\n"
        "    x, y = s.batch(step, 3); h.update(x.numpy().tobytes()); h.update(y.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    here = PackedStream(make_docs(masked=True), 16, seed=9)
    h = hashlib.sha256()
    for step in (0, 5, 31, 130):
        x, y = here.batch(step, 3)
        h.update(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(_repo_root()))
    assert out.stdout.strip() == h.hexdigest()


def _repo_root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1]


def test_each_epoch_is_a_fresh_permutation_covering_every_doc_once():
    docs = make_docs(n=40)
    total = sum(len(d) for d in docs)
    seq_len = 10
    # trim the last doc so nothing is dropped: each epoch must then hold every token exactly once
    keep = total - total % (seq_len + 1)
    docs[-1] = Doc(docs[-1].ids[: len(docs[-1]) - (total - keep)])
    stream = PackedStream(docs, seq_len, seed=0)
    R = stream.rows_per_epoch
    assert R * (seq_len + 1) == stream.unique_tokens == keep
    all_ids = np.concatenate([d.ids for d in docs])
    epochs = []
    for e in range(3):
        flat = rows_of(stream, e * R, R).ravel()
        assert Counter(flat.tolist()) == Counter(all_ids.tolist())
        # docs appear whole and contiguous, in some order
        starts = [int(np.flatnonzero(flat == d.ids[0])[0]) for d in docs if len(d)]
        for d, s in zip([d for d in docs if len(d)], starts, strict=True):
            assert np.array_equal(flat[s:s + len(d)], d.ids)
        epochs.append(flat)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_batches_cross_epoch_boundaries_and_tail_is_dropped():
    docs = make_docs(n=23)
    stream = PackedStream(docs, 12, seed=1)
    R = stream.rows_per_epoch
    assert R == stream.unique_tokens // 13 and stream.tokens_per_epoch == R * 12
    assert R % 5 != 0  # so some batch straddles two epochs
    served = rows_of(stream, 0, 5 * math.ceil(2 * R / 5), batch_size=5)
    e0, e1 = stream.epoch_rows(0)[0], stream.epoch_rows(1)[0]
    assert np.array_equal(served[:R], e0) and np.array_equal(served[R:2 * R], e1)
    # a batch larger than an epoch wraps through several epochs
    x, _ = stream.batch(1, 3 * R)
    assert torch.equal(x, torch.from_numpy(np.concatenate([stream.epoch_rows(e)[0] for e in (3, 4, 5)])[:, :-1]
                                           .astype(np.int64)))


def test_targets_are_ignored_exactly_where_the_mask_is_zero():
    docs = make_docs(n=30, masked=True)
    masked_ids = {int(i) for d in docs for i, m in zip(d.ids, d.loss_mask, strict=True) if not m}
    stream = PackedStream(docs, 9, seed=2)
    R = stream.rows_per_epoch
    for step in range(0, 2 * R // 4 + 1):
        x, y = stream.batch(step, 4)
        raw = np.concatenate([stream.epoch_rows(r // R)[0][r % R][None] for r in range(step * 4, step * 4 + 4)])
        assert torch.equal(x, torch.from_numpy(raw[:, :-1].astype(np.int64)))
        expect = np.where(np.isin(raw[:, 1:], list(masked_ids)), -100, raw[:, 1:])
        assert torch.equal(y, torch.from_numpy(expect.astype(np.int64)))
    assert (y == -100).any() and (y != -100).any()


def test_epoch_arithmetic_and_too_little_data():
    stream = PackedStream(make_docs(n=10), 7, seed=0)
    R = stream.rows_per_epoch
    assert stream.unique_tokens == sum(len(d) for d in make_docs(n=10))
    assert stream.epoch_at(0, 4) == 0.0
    assert stream.epoch_at(R, 1) == 1.0
    assert stream.epoch_at(3, 5) == pytest.approx(15 / R)
    assert stream.epoch_at(2 * R, 3) == 6.0
    with pytest.raises(DatawallError, match="fewer than one row"):
        PackedStream([Doc([1, 2, 3]), Doc([4])], seq_len=4, seed=0)
    with pytest.raises(DatawallError, match="seed"):
        PackedStream(make_docs(), 4, seed=-1)


def test_heldout_rows_are_fixed_and_in_order():
    docs = make_docs(n=12, masked=True)
    x, y = heldout_rows(docs, 8)
    ids = np.concatenate([d.ids for d in docs])
    mask = np.concatenate([d.loss_mask for d in docs])
    n = len(ids) // 9
    assert x.shape == (n, 8)
    rows, mrows = ids[: n * 9].reshape(n, 9), mask[: n * 9].reshape(n, 9)
    assert torch.equal(x, torch.from_numpy(rows[:, :-1]))
    assert torch.equal(y, torch.from_numpy(np.where(mrows[:, 1:], rows[:, 1:], -100)))
    assert heldout_rows(docs, 8, max_rows=2)[0].shape == (2, 8)
    with pytest.raises(DatawallError):
        heldout_rows([Doc([1, 2])], 8)


def test_corpus_docs_split_and_unique_cap():
    n_tokens, seq_len = 10_000, 15
    tokens = np.arange(n_tokens, dtype=np.uint32)  # every chunk is identified by its first token
    bounds = np.array([0, 3000, 7000, n_tokens])
    train, held = corpus_docs(tokens, bounds, seq_len, None, heldout_tokens=500, seed=0)
    assert len(held) == math.ceil(500 / 16) and all(len(d) == 16 for d in held)
    train_ids = set(np.concatenate([d.ids for d in train]).tolist())
    held_ids = set(np.concatenate([d.ids for d in held]).tolist())
    assert not train_ids & held_ids
    assert len(train_ids) + len(held_ids) == (n_tokens // 16) * 16  # the ragged tail is dropped
    for d in train + held:  # chunks are whole, aligned slices of the stream
        assert d.ids[0] % 16 == 0 and np.array_equal(d.ids, np.arange(d.ids[0], d.ids[0] + len(d)))

    for u in (16 * 40, 1000, 7):
        capped, held_u = corpus_docs(tokens, bounds, seq_len, u, heldout_tokens=500, seed=0)
        assert sum(len(d) for d in capped) == u
        assert [d.ids[0] for d in held_u] == [d.ids[0] for d in held]  # held-out does not depend on U
        assert [d.ids[0] for d in capped] == [d.ids[0] for d in train[: len(capped)]]  # smaller U: prefix
    _, held_other_seed = corpus_docs(tokens, bounds, seq_len, None, heldout_tokens=500, seed=1)
    assert {d.ids[0] for d in held_other_seed} != {d.ids[0] for d in held}
    with pytest.raises(DatawallError, match="corpus holds 10,000 tokens"):
        corpus_docs(tokens, bounds, seq_len, 9_800, heldout_tokens=500, seed=0)
    with pytest.raises(DatawallError, match="doc_bounds"):
        corpus_docs(tokens, np.array([0, 5]), seq_len, None, 500, 0)


@dataclass
class FakeProblem:
    prompt: str
    answer: str
    meta: dict


class FakeTask:
    """The documented task interface, in miniature: sums of two numbers."""

    name = "fake-add"
    alphabet = "0123456789+=#\n "

    def problem(self, split: str, index: int) -> FakeProblem:
        a, b = (index * 7919 + (split == "test")) % 1000, (index * 104729) % 97
        return FakeProblem(f"{a}+{b}=", str(a + b), {"a": a, "b": b})

    def solution(self, p: FakeProblem) -> str:
        return f"{p.meta['a']}+{p.meta['b']}\n#### {p.answer}"


def test_task_docs_layout_and_budgets():
    task, tok = FakeTask(), Tokenizer.for_chars(FakeTask.alphabet)
    docs = task_docs(task, tok, "train", count=5, start=10)
    assert len(docs) == 5
    for i, d in enumerate(docs):
        p = task.problem("train", 10 + i)
        prompt, sol = tok.encode(p.prompt), tok.encode(task.solution(p))
        assert d.ids.tolist() == [tok.bos_id, *prompt, *sol, tok.eos_id]
        assert d.loss_mask.tolist() == [False] * (1 + len(prompt)) + [True] * (len(sol) + 1)
    assert len(task_docs(task, tok, "test", count=700)) == 700  # several encode blocks

    u = 20_000  # needs well over one block of problems
    budget = task_docs(task, tok, "train", unique_tokens=u)
    lengths = [len(d) for d in budget]
    assert sum(lengths) >= u > sum(lengths) - lengths[-1]
    assert [d.ids.tolist() for d in budget[:5]] == [d.ids.tolist() for d in task_docs(task, tok, "train", count=5)]
    with pytest.raises(DatawallError, match="exactly one"):
        task_docs(task, tok, "train")
