"""The one training loop: schedules, the optimizer builder, objectives, resuming after a crash reaches the same
losses, best-checkpoint selection, early stopping, lr multipliers, atomic checkpoints and a full disk."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tmpfs_mount import resize, tmpfs

from datawall.atomic import DiskFullError, atomic_directory, disk_size
from datawall.data import PackedStream, Tokenizer, heldout_rows, task_docs
from datawall.model import Transformer, load_model, model_config
from datawall.tasks import get_task
from datawall.train import LoopConfig, Objective, OptimConfig, ParamGroup, Step, TrainConfig, make_optimizer, train
from datawall.train.objectives.lm import train_lm
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


@pytest.mark.parametrize("tied", [True, False])
def test_the_optimizer_decays_every_matrix_and_no_vector(tied):
    model = Transformer(model_config("100k", vocab_size=64, max_seq_len=16, n_layers=1, tie_embeddings=tied))
    opt, mults = make_optimizer([ParamGroup("model", list(model.parameters()))], OptimConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0 and mults == [1.0, 1.0]
    assert {names[id(p)] for p in decay["params"]} == {
        "tok_emb.weight", "blocks.0.attn.wqkv.weight", "blocks.0.attn.wo.weight", "blocks.0.mlp.w13.weight",
        "blocks.0.mlp.w2.weight", *([] if tied else ["lm_head.weight"])}  # the embedding is decayed too
    assert {names[id(p)] for p in no_decay["params"]} == {"blocks.0.attn_norm.weight", "blocks.0.mlp_norm.weight",
                                                        "norm.weight"}
    head = torch.nn.Linear(64, 1)
    frozen = torch.nn.Parameter(torch.zeros(3, 3), requires_grad=False)  # a frozen reference model's, say
    opt, mults = make_optimizer([ParamGroup("model", list(model.parameters())),
                                 ParamGroup("head", [*head.parameters(), frozen], lr_mult=3.0)], OptimConfig())
    assert [g["name"] for g in opt.param_groups] == ["model/decay", "model/no_decay", "head/decay", "head/no_decay"]
    assert mults == [1.0, 1.0, 3.0, 3.0] and opt.param_groups[2]["params"] == [head.weight]


# --- a toy objective: the loop's mechanics on two scalars, no learning to go wrong ---------------------------


class Scalars(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(1))
        self.b = torch.nn.Parameter(torch.zeros(1))


class PullToOne(Objective):
    """loss = (a - 1)^2 + (b - 1)^2; evaluation: how far a is from 0.5 (best when a passes 0.5)."""

    name = "toy"
    criterion = "dist"

    def __init__(self, head_mult: float = 1.0, crash_at: int | None = None, micro: int = 1):
        self.head_mult, self.crash_at, self.micro = head_mult, crash_at, micro

    def param_groups(self, model):
        return [ParamGroup("body", [model.a]), ParamGroup("head", [model.b], self.head_mult)]

    def step(self, step, model):
        if step == self.crash_at:
            raise Crash()
        return Step([step] * self.micro, tokens=3, flops=10.0)

    def loss(self, model, batch, step):
        loss = ((model.a - 1) ** 2 + (model.b - 1) ** 2).sum() / len(step.batches)
        return loss, {"a": model.a.item() / len(step.batches)}

    def evaluate(self, model):
        return {"dist": abs(model.a.item() - 0.5), "a": model.a.item()}


class ScalarFormat:
    """A model directory that is not an HF checkpoint: the loop must not care."""

    def save(self, model, directory, meta, extra):
        with atomic_directory(directory) as tmp:
            torch.save(model.state_dict(), tmp / "scalars.pt")
            (tmp / "meta.json").write_text(json.dumps(meta))
            extra(tmp)

    def load_into(self, model, directory):
        model.load_state_dict(torch.load(directory / "scalars.pt", weights_only=True))


def _toy_cfg(**kw):
    base = dict(steps=40, optim=OptimConfig(lr=0.05, schedule="constant", warmup_frac=0.0, weight_decay=0.0,
                                            grad_clip=0.0), eval_every=2, checkpoint_every=5, log_every=1)
    return LoopConfig(**(base | kw))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_wall_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def test_lr_multipliers_scale_each_groups_step(tmp_path):
    model = Scalars()
    train(model, PullToOne(head_mult=3.0), _toy_cfg(steps=1), tmp_path, ScalarFormat(), quiet=True)
    # AdamW's first update is lr * g / (|g| + eps): the group's lr itself
    assert model.a.item() == pytest.approx(0.05, rel=1e-6)
    assert model.b.item() == pytest.approx(0.15, rel=1e-6)
    assert _rows(tmp_path)[0]["lr"] == 0.05  # the log shows the schedule's lr, the base of every multiplier


def test_best_evaluation_is_kept_and_patience_stops_the_run(tmp_path):
    model = Scalars()
    result = train(model, PullToOne(), _toy_cfg(keep_best=True, patience=2), tmp_path, ScalarFormat(), quiet=True)
    evals = [r for r in _rows(tmp_path) if "dist" in r]
    best = min(evals, key=lambda r: r["dist"])
    assert 2 < best["step"] < 30 and result.best_step == best["step"]
    # two evaluations without improvement are tolerated, the third stops the run
    assert result.stopped_early and result.steps == best["step"] + 3 * 2 == evals[-1]["step"]
    assert [r["step"] for r in evals if r["step"] > best["step"]] == [best["step"] + 2, best["step"] + 4,
                                                                      best["step"] + 6]
    assert model.a.item() == best["a"] and result.eval == {"dist": best["dist"], "a": best["a"]}
    selection = json.loads((tmp_path / "best" / "selection.json").read_text())
    assert selection["step"] == best["step"] and selection["score"] == best["dist"]
    assert float(torch.load(tmp_path / "best" / "scalars.pt")["a"]) == best["a"]
    # a finished run is read back, not retrained: the same best weights and result
    again = Scalars()
    assert train(again, PullToOne(), _toy_cfg(keep_best=True, patience=2), tmp_path, ScalarFormat(),
                 quiet=True).steps == result.steps
    assert again.a.item() == best["a"] and len(_rows(tmp_path)) == result.steps


class Crash(Exception):
    """Stands in for SIGKILL: no handler runs, so the last periodic checkpoint is all that survives."""


@pytest.mark.parametrize("crash_at", [7, 11, 15])
def test_a_resumed_run_keeps_its_best_and_its_patience(tmp_path, crash_at):
    cfg = _toy_cfg(keep_best=True, patience=2)
    straight = train(Scalars(), PullToOne(), cfg, tmp_path / "a", ScalarFormat(), quiet=True)
    with pytest.raises(Crash):
        train(Scalars(), PullToOne(crash_at=crash_at), cfg, tmp_path / "b", ScalarFormat(), quiet=True)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "train_lo')  # a line a kill cut short
    model = Scalars()
    resumed = train(model, PullToOne(), cfg, tmp_path / "b", ScalarFormat(), quiet=True)
    assert _without_wall_time(_rows(tmp_path / "a")) == _without_wall_time(_rows(tmp_path / "b"))
    assert (resumed.best_step, resumed.steps, resumed.eval) == (straight.best_step, straight.steps, straight.eval)
    assert model.a.item() == straight.eval["a"]


def test_a_crash_between_a_new_best_and_its_copy_is_repaired_on_resume(tmp_path, monkeypatch):
    import datawall.train.loop as loop

    cfg = _toy_cfg(keep_best=True, patience=2)
    straight = train(Scalars(), PullToOne(), cfg, tmp_path / "a", ScalarFormat(), quiet=True)
    real, calls = loop.save_best, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the checkpoint naming step 6 the best is written; its copy is not
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "save_best", dies_on_the_third)
    with pytest.raises(Crash):
        train(Scalars(), PullToOne(), cfg, tmp_path / "b", ScalarFormat(), quiet=True)
    assert json.loads((tmp_path / "b" / "best" / "selection.json").read_text())["step"] == 4
    monkeypatch.setattr(loop, "save_best", real)
    model = Scalars()
    resumed = train(model, PullToOne(), cfg, tmp_path / "b", ScalarFormat(), quiet=True)
    assert resumed.best_step == straight.best_step and model.a.item() == straight.eval["a"]


def test_micro_batches_are_normalised_over_the_step(tmp_path):
    one = train(Scalars(), PullToOne(), _toy_cfg(steps=6), tmp_path / "1", ScalarFormat(), quiet=True)
    three = train(Scalars(), PullToOne(micro=3), _toy_cfg(steps=6), tmp_path / "3", ScalarFormat(), quiet=True)
    assert [r["train_loss"] for r in _rows(tmp_path / "1")] == pytest.approx(
        [r["train_loss"] for r in _rows(tmp_path / "3")], rel=1e-6)
    assert [r["train_a"] for r in _rows(tmp_path / "3")] == pytest.approx(
        [r["train_a"] for r in _rows(tmp_path / "1")], rel=1e-6)  # parts are summed over micro-batches too
    assert one.tokens == three.tokens == 18 and one.flops == three.flops == 60.0


def test_selection_needs_a_criterion(tmp_path):
    class Blind(PullToOne):
        criterion = None

    with pytest.raises(ValueError, match="criterion"):
        train(Scalars(), Blind(), _toy_cfg(keep_best=True), tmp_path, ScalarFormat(), quiet=True)


# --- the language-model objective on a tiny real model ---------------------------------------------------------


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


def _fresh(tok, n_layers=2):
    torch.manual_seed(0)
    return Transformer(model_config("100k", vocab_size=tok.vocab_size, max_seq_len=64, n_layers=n_layers))


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("eval_loss")) for r in rows]


def test_resume_after_crash_reaches_the_same_losses(world, tmp_path):
    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 24, batch_size=8, seq_len=64, checkpoint_every=5, eval_every=4,
                      optim=OptimConfig(lr=3e-3))
    straight = train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "a", quiet=True)

    crashed = tmp_path / "b"
    with pytest.raises(Crash):
        train_lm(_fresh(tok), tok, CrashingStream(PackedStream(docs, 64, seed=1), 13), held, cfg, crashed,
                 quiet=True)
    assert (crashed / "checkpoint").is_dir()
    resumed = train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, crashed, quiet=True)

    assert _losses(tmp_path / "a") == _losses(crashed)  # bit for bit on CPU
    assert resumed.steps == straight.steps == 24
    assert resumed.flops == straight.flops and resumed.tokens == straight.tokens
    assert resumed.eval_loss == straight.eval_loss
    assert not (crashed / "best").exists()  # language-model runs keep no second checkpoint


@pytest.mark.learned
def test_interrupt_saves_a_checkpoint_and_training_learns(world, tmp_path):
    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 40, batch_size=8, seq_len=64, optim=OptimConfig(lr=3e-3))

    class Interrupting(CrashingStream):
        def batch(self, step, batch_size):
            if step == self.crash_at:
                raise KeyboardInterrupt
            return self.stream.batch(step, batch_size)

    with pytest.raises(KeyboardInterrupt):
        train_lm(_fresh(tok), tok, Interrupting(PackedStream(docs, 64, seed=1), 7), held, cfg, tmp_path,
                 quiet=True)
    state = torch.load(tmp_path / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["loop"]["step"] == 7
    result = train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path, quiet=True)
    losses = _losses(tmp_path)
    # from ln(vocab) ~ 3.2 nats to the scratchpad's mostly forced characters: a margin no kernel change moves
    assert losses[-1][1] < losses[0][1] - 0.5
    assert result.eval_loss is not None and result.eval_loss < 2.0
    model = load_model(tmp_path / "checkpoint")  # the final checkpoint is a loadable HF directory
    assert sum(p.numel() for p in model.parameters()) > 0


def test_gradient_accumulation_matches_one_big_batch(world, tmp_path):
    tok, docs, held = world
    base = dict(tokens=8 * 64 * 6, batch_size=8, seq_len=64, optim=OptimConfig(lr=3e-3, grad_clip=0.0))
    one = train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, TrainConfig(**base), tmp_path / "1",
                   quiet=True)
    four = train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, TrainConfig(**base, grad_accum=4),
                    tmp_path / "4", quiet=True)
    assert [r[1] for r in _losses(tmp_path / "1")] == pytest.approx([r[1] for r in _losses(tmp_path / "4")],
                                                                     rel=1e-4)
    assert one.eval_loss == pytest.approx(four.eval_loss, rel=1e-4)


def test_an_interrupt_during_the_eval_after_an_update_keeps_log_and_weights_in_step(world, tmp_path, monkeypatch):
    import datawall.train.objectives.lm as lm

    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 24, batch_size=8, seq_len=64, eval_every=10, checkpoint_every=5,
                      optim=OptimConfig(lr=3e-3))
    train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "a", quiet=True)
    real = lm.heldout_loss
    calls = []

    def interrupted_at_second_eval(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # step 20: its optimizer update is done, its record not yet written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lm, "heldout_loss", interrupted_at_second_eval)
    with pytest.raises(KeyboardInterrupt):
        train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "b", quiet=True)
    state = torch.load(tmp_path / "b" / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["loop"]["step"] == 15  # the last whole checkpoint, not a half-logged step 20
    monkeypatch.setattr(lm, "heldout_loss", real)
    train_lm(_fresh(tok), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "b", quiet=True)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")


# --- a full disk during a checkpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before writing", "while writing"])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_one(world, tmp_path, monkeypatch, where):
    """The first checkpoint fits, its replacement (old and new side by side) does not: one DiskFullError naming
    the directory and the space, nothing partial left, and after freeing space the run resumes to the same log."""
    import datawall.train.state as state

    tok, docs, held = world
    cfg = TrainConfig(tokens=8 * 64 * 6, batch_size=8, seq_len=64, checkpoint_every=3, eval_every=3,
                      optim=OptimConfig(lr=3e-3))
    train_lm(_fresh(tok, 1), tok, PackedStream(docs, 64, seed=1), held, cfg, tmp_path / "ref", quiet=True)
    size = disk_size(tmp_path / "ref" / "checkpoint")
    if where == "while writing":  # skip the check before writing: the writers themselves hit ENOSPC
        monkeypatch.setattr(state, "_check_space", lambda *a: None)
    with tmpfs(tmp_path / "small", int(size * 1.6)) as small:
        run = small / "run"
        with pytest.raises(DiskFullError) as err:
            train_lm(_fresh(tok, 1), tok, PackedStream(docs, 64, seed=1), held, cfg, run, quiet=True)
        message = str(err.value)
        assert "\n" not in message and message.startswith(str(run / "checkpoint"))
        assert re.search(r"\d kB needed, [\d.]+ kB free\); the step-3 checkpoint is kept", message), message
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "metrics.jsonl"]  # no .checkpoint.* left
        kept = torch.load(run / "checkpoint" / "trainer_state.pt", weights_only=True)
        assert kept["loop"]["step"] == 3
        resize(small, size * 4)
        train_lm(_fresh(tok, 1), tok, PackedStream(docs, 64, seed=1), held, cfg, run, quiet=True)
        assert _losses(run) == _losses(tmp_path / "ref")
