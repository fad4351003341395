"""The training loop: schedules, resuming after a crash reaches the same losses, atomic checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from datawall.data import PackedStream, Tokenizer, heldout_rows, task_docs
from datawall.model import Transformer, load_model, model_config
from datawall.tasks import get_task
from datawall.train import OptimConfig, TrainConfig, train
from datawall.train.schedule import lr_at


def test_schedules_warm_up_then_decay_to_floor():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_frac=0.1, schedule="cosine")
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    wsd = OptimConfig(lr=1.0, min_lr_ratio=0.0, warmup_frac=0.0, schedule="wsd", decay_frac=0.2)
    assert lr_at(50, 100, wsd) == 1.0 and lr_at(79, 100, wsd) == 1.0
    assert lr_at(90, 100, wsd) == pytest.approx(0.5) and lr_at(99, 100, wsd) < 0.1


class Crash(Exception):
    """Stands in for SIGKILL: no handler runs, so the last periodic checkpoint is all that survives."""


class CrashingStream:
    """A stream that dies when asked for a given batch."""

    def __init__(self, stream, crash_at: int):
        self.stream, self.crash_at = stream, crash_at

    def batch(self, step, batch_size):
        if step == self.crash_at:
            raise Crash()
        return self.stream.batch(step, batch_size)


@pytest.fixture(scope="module")
def world():
    task = get_task("arith", digits=2)
    tok = Tokenizer.for_chars(task.alphabet)
    docs = task_docs(task, tok, "train", count=400)
    held = heldout_rows(task_docs(task, tok, "test", count=40), 64)
    return tok, docs, held


def _fresh(tok):
    torch.manual_seed(0)
    return Transformer(model_config("100k", vocab_size=tok.vocab_size, max_seq_len=64, n_layers=2))


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("eval_loss")) for r in rows]


def test_resume_after_crash_reaches_the_same_losses(world, tmp_path):
    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 24, batch_size=8, seq_len=64, checkpoint_every=5, eval_every=4,
                      optim=OptimConfig(lr=3e-3))
    straight = train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "a", quiet=True)

    crashed = tmp_path / "b"
    with pytest.raises(Crash):
        train(_fresh(tok), tok, CrashingStream(PackedStream(docs, 64, seed=1), 13), held, cfg, crashed, quiet=True)
    assert (crashed / "checkpoint").is_dir()
    resumed = train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, crashed, quiet=True)

    assert _losses(tmp_path / "a") == _losses(crashed)  # bit for bit on CPU
    assert resumed.steps == straight.steps == 24
    assert resumed.flops == straight.flops and resumed.tokens == straight.tokens
    assert resumed.eval_loss == straight.eval_loss


def test_interrupt_saves_a_checkpoint_and_training_learns(world, tmp_path):
    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 40, batch_size=8, seq_len=64, optim=OptimConfig(lr=3e-3))

    class Interrupting(CrashingStream):
        def batch(self, step, batch_size):
            if step == self.crash_at:
                raise KeyboardInterrupt
            return self.stream.batch(step, batch_size)

    with pytest.raises(KeyboardInterrupt):
        train(_fresh(tok), tok, Interrupting(PackedStream(docs, 64, seed=1), 7), held, cfg, tmp_path, quiet=True)
    state = torch.load(tmp_path / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["loop"]["step"] == 7
    result = train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path, quiet=True)
    losses = _losses(tmp_path)
    assert losses[-1][1] < losses[0][1] - 0.5  # it learns
    assert result.eval_loss is not None and result.eval_loss < 2.0
    model = load_model(tmp_path / "checkpoint")  # the final checkpoint is a loadable HF directory
    assert sum(p.numel() for p in model.parameters()) > 0


def test_gradient_accumulation_matches_one_big_batch(world, tmp_path):
    tok, docs, held = world
    base = dict(tokens=8 * 64 * 6, batch_size=8, seq_len=64, optim=OptimConfig(lr=3e-3, grad_clip=0.0))
    one = train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, TrainConfig(**base), tmp_path / "1",
                quiet=True)
    four = train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, TrainConfig(**base, grad_accum=4),
                 tmp_path / "4", quiet=True)
    assert [r[1] for r in _losses(tmp_path / "1")] == pytest.approx([r[1] for r in _losses(tmp_path / "4")],
                                                                     rel=1e-4)
    assert one.eval_loss == pytest.approx(four.eval_loss, rel=1e-4)


def test_an_interrupt_during_the_eval_after_an_update_keeps_log_and_weights_in_step(world, tmp_path, monkeypatch):
    import datawall.train.loop as loop

    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 24, batch_size=8, seq_len=64, eval_every=10, checkpoint_every=5,
                      optim=OptimConfig(lr=3e-3))
    train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "a", quiet=True)
    real = loop.heldout_loss
    calls = []

    def interrupted_at_second_eval(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # step 20: its optimizer update is done, its record not yet written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "heldout_loss", interrupted_at_second_eval)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "b", quiet=True)
    state = torch.load(tmp_path / "b" / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["loop"]["step"] == 15  # the last whole checkpoint, not a half-logged step 20
    monkeypatch.setattr(loop, "heldout_loss", real)
    train(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "b", quiet=True)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
