"""One pretraining run from a typed spec to a finished run directory.

Run directory: config.json (fully resolved), metrics.jsonl, checkpoint/, result.json, DONE (written last).
A run with DONE is never recomputed; a run without it resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

import datawall
from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.data import (
    ExampleStream,
    PackedStream,
    Tokenizer,
    corpus_docs,
    corpus_tokenizer,
    corpus_tokens,
    example_rows,
    heldout_rows,
    load_corpus,
    task_docs,
)
from datawall.data.mix import MixStream
from datawall.data.synthetic import SyntheticRows, SyntheticSpec, read_synthetic, synthetic_docs
from datawall.data.task_docs import SplitExhaustedError
from datawall.errors import DatawallError
from datawall.model import Transformer, load_checkpoint, model_config
from datawall.tasks import get_task
from datawall.train.config import TrainConfig
from datawall.train.evaluate import SAFETY_KEYS, perplexity, task_accuracy
from datawall.train.objectives.lm import train_lm


class DataSpec(BaseModel):
    """Where training tokens come from and how many unique ones there are."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    task_args: dict[str, str] = {}
    corpus: str | None = None
    unique_tokens: int | None = Field(None, gt=0, description="cap U on unique training tokens")
    vocab_size: int = Field(4096, gt=256, description="BPE vocabulary for corpora")
    heldout_tokens: int | None = Field(None, gt=0, description="corpus tokens held out for eval loss "
                                       "(default: 10% of the corpus, at most 65,536)")
    heldout_problems: int = Field(256, gt=0, description="task problems whose solutions give eval loss "
                                  "(at most: all of a smaller test split)")
    synthetic: SyntheticSpec | None = Field(None, description="synthetic examples mixed with the real ones (task "
                                            "worlds only)")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.task is None) == (self.corpus is None):
            raise ValueError("give exactly one of task or corpus")
        if self.synthetic is not None and self.task is None:
            raise ValueError("synthetic examples go with a task world, not a corpus")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # without synthetic data the dump is what it was before the field existed: run keys and config.json stay
        out = handler(self)
        if out.get("synthetic") is None:
            out.pop("synthetic", None)
        return out


class RunSpec(BaseModel):
    """A fully resolved pretraining run; its JSON is the run's identity."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "pretrain"
    data: DataSpec
    init: str | None = Field(None, description="checkpoint to start from (fine-tuning): its weights and tokenizer")
    size: str = "1m"
    model_overrides: dict[str, int | float | bool] = {}
    train: TrainConfig
    eval_problems: int = Field(200, ge=0, description="held-out problems for greedy accuracy (tasks)")


def _build_data(spec: RunSpec, tok: Tokenizer | None):
    """Tokenizer, training stream, held-out rows and the task (or None); `tok` is the init checkpoint's."""
    d, seq_len, seed = spec.data, spec.train.seq_len, spec.train.seed
    if d.task is not None:
        task = get_task(d.task, **d.task_args)
        tok = tok or Tokenizer.for_chars(task.alphabet)
        # without a cap every training token is fresh: generate a little more than one epoch of problems
        unique = d.unique_tokens or int(spec.train.tokens * 1.02) + seq_len
        docs = _train_docs(task, tok, unique, d.unique_tokens is not None, spec.train.tokens)
        held = min(d.heldout_problems, task.size("test") or d.heldout_problems)  # a file's split may be small
        heldout = example_rows(task_docs(task, tok, "test", count=held), tok.pad_id)
        if d.synthetic is not None:
            stream = _mix_stream(spec, task, tok, docs)
        else:
            stream = ExampleStream(docs, tok.pad_id, seed)
        if stream.seq_len > seq_len:
            raise DatawallError(f"{d.task}: examples of up to {stream.seq_len + 1} tokens exceed --seq-len {seq_len}")
        return tok, stream, heldout, task
    corpus = load_corpus(d.corpus)
    tok = tok or corpus_tokenizer(corpus, d.vocab_size)
    tokens, bounds = corpus_tokens(corpus, tok)
    held = d.heldout_tokens or min(65536, len(tokens) // 10)
    train_docs, held_docs = corpus_docs(tokens, bounds, seq_len, d.unique_tokens, held, seed)
    return tok, PackedStream(train_docs, seq_len, seed), heldout_rows(held_docs, seq_len), None


def _row_len(stream, batch_size: int) -> int:
    """Typical padded width of a batch: task batches are trimmed to their longest example, so steps = D / (batch x
    this), estimated from the first batches (the spec's seq_len stays the model's context)."""
    return round(sum(stream.batch(s, batch_size)[0].shape[1] for s in range(8)) / 8)


def _mix_stream(spec: RunSpec, task, tok: Tokenizer, real: list) -> MixStream:
    """The U real docs and the S synthetic ones in the share the spec asks for (by ratio, by epochs over S, or one
    pool: S / (U + S))."""
    syn = spec.data.synthetic
    rows = read_synthetic(syn, task.name, spec.data.task_args)
    docs = synthetic_docs(rows, tok)
    seed, batch = spec.train.seed, spec.train.batch_size
    share = syn.ratio if syn.ratio is not None else len(docs) / (len(real) + len(docs))
    if syn.epochs is not None:
        for _ in range(4):  # the rows a run draws depend a little on the share (synthetic rows may be longer)
            stream = MixStream(real, docs, tok.pad_id, seed, share)
            total = spec.train.model_copy(update={"seq_len": _row_len(stream, batch)}).steps * batch
            want = syn.epochs * len(docs)
            if want > total:
                raise DatawallError(f"--synthetic-epochs {syn.epochs:g} over {len(docs):,} synthetic examples needs "
                                    f"{want:,.0f} rows, but --tokens {spec.train.tokens:,} gives about {total:,}; "
                                    "raise --tokens or lower the epochs")
            share = want / total
    stream = MixStream(real, docs, tok.pad_id, seed, share)
    stream.rows = rows  # what the result reports: sources, teacher cost, digest
    return stream


def _train_docs(task, tok: Tokenizer, unique: int, capped: bool, tokens: int) -> list:
    """The fewest train docs whose tokens reach `unique`; when the split has fewer, an error in real numbers
    that says what to pass instead."""
    if task.size("test") == 0:
        raise DatawallError(f"{task.name}: the test split has no problems, and the held-out loss needs some "
                            "(give rows \"split\": \"test\" or a larger test_fraction)")
    try:
        return task_docs(task, tok, "train", unique_tokens=unique)
    except SplitExhaustedError as e:
        have = f"{task.name}: the train split has {e.examples:,} distinct problems ({e.tokens:,} tokens)"
        if capped:
            raise DatawallError(f"{have}, fewer than --unique-tokens {unique:,}; pass --unique-tokens {e.tokens} "
                                "or less") from None
        raise DatawallError(f"{have}, but --tokens {tokens:,} with every token fresh needs {unique:,}; pass "
                            f"--unique-tokens {e.tokens} (or less) to repeat them, or fewer --tokens") from None


def _check_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Refuse to mix two different runs in one directory."""
    path = run_dir / "config.json"
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise DatawallError(f"{path}: not valid JSON; remove the directory or choose another --out") from None
        if existing.get("run") != spec.model_dump(mode="json"):
            raise DatawallError(f"{run_dir} holds a different run (its config.json differs); "
                                "choose another --out or delete it")


def execute(spec: RunSpec, run_dir: str | Path, quiet: bool = False) -> dict:
    """Run (or resume, or just read back) one pretraining run; return its result.json content."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, spec)
    if (run_dir / "DONE").exists():
        return json.loads((run_dir / "result.json").read_text())
    init = load_checkpoint(spec.init) if spec.init else None
    tok, stream, heldout, task = _build_data(spec, init.tokenizer if init else None)
    if init is not None:
        cfg = init.config
        if spec.train.seq_len > cfg.max_seq_len:
            raise DatawallError(f"--seq-len {spec.train.seq_len} exceeds {spec.init}'s context {cfg.max_seq_len}")
    else:
        cfg = model_config(spec.size, vocab_size=tok.vocab_size, max_seq_len=spec.train.seq_len,
                           **spec.model_overrides)
    config = {"run": spec.model_dump(mode="json"), "model": cfg.__dict__, "tokenizer": tok.kind,
              "vocab_size": tok.vocab_size, "datawall_version": datawall.__version__}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config)

    torch.manual_seed(spec.train.seed)
    model = init.model if init is not None else Transformer(cfg)
    mixed = isinstance(stream, MixStream)
    unique = (stream.real.unique_tokens if stream.real else 0) if mixed else stream.unique_tokens
    meta = {"init": spec.init, "task": spec.data.task, "task_args": spec.data.task_args, "corpus": spec.data.corpus,
            "unique_tokens": unique}
    if mixed:
        meta["synthetic"] = {"paths": spec.data.synthetic.paths, "examples": stream.synthetic.num_docs,
                             "share": stream.share}
    train_cfg = spec.train.model_copy(update={"seq_len": _row_len(stream, spec.train.batch_size)})
    result = train_lm(model, tok, stream, heldout, train_cfg, run_dir, meta=meta, quiet=quiet)

    out = {
        "run_dir": str(run_dir),
        "params": model.num_params(non_embedding=False),
        "params_non_embedding": model.num_params(non_embedding=True),
        "tokens": result.tokens,
        "unique_tokens": unique,
        "epochs": result.tokens / stream.tokens_per_epoch,
        "flops": result.flops,
        "wall_seconds": result.wall_seconds,
        "train_loss": result.train_loss,
        "eval_loss": result.eval_loss,
        "eval_perplexity": perplexity(result.eval_loss) if result.eval_loss is not None else None,
        "device": spec.train.device,
        "machine": platform.processor() or platform.machine(),
    }
    if mixed:
        out |= _synthetic_result(spec, stream, result)
    if task is not None and spec.eval_problems > 0:
        problems = min(spec.eval_problems, task.size("test") or spec.eval_problems)  # all of a small test split
        acc = task_accuracy(model, tok, task, problems=problems, device=spec.train.device, quiet=quiet)
        out |= {"accuracy": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"],
                "eval_problems": acc["problems"], "per_problem": acc["per_problem"]}
        out |= {k: acc[k] for k in SAFETY_KEYS if k in acc}  # a world with hazard cases: caveat recall, unsafe rate
    atomic_write_json(run_dir / "result.json", out)
    atomic_write_text(run_dir / "DONE", "")
    return out


def _synthetic_result(spec: RunSpec, stream: MixStream, result) -> dict:
    """What a run on real + synthetic examples adds to result.json: the mix as trained, and `flops` = its own training
    (`train_flops`) + the teacher's generation of the synthetic examples used (`synthetic_flops`)."""
    rows: SyntheticRows = stream.rows
    real_epochs, synth_epochs = stream.passes(result.steps * spec.train.batch_size)
    teacher = rows.flops if math.isfinite(rows.flops) else None
    return {
        "flops": result.flops + (teacher or 0.0), "train_flops": result.flops, "synthetic_flops": teacher,
        "synthetic_dollars": rows.dollars, "epochs": real_epochs, "synthetic_epochs": synth_epochs,
        "synthetic_examples": len(rows), "synthetic_unique_tokens": stream.synthetic.unique_tokens,
        "synthetic_share": stream.share, "synthetic_kept_available": rows.kept,
        "synthetic_overlap_real": sum(p < (stream.real.num_docs if stream.real else 0) for p in rows.problems),
        "synthetic_sources": rows.per_source, "synthetic_sha256": rows.digest,
    }
