"""A tiny 2-digit-addition policy shared by the think search tests (trained once per test session)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from datawall.data import ExampleStream, Tokenizer, task_docs
from datawall.model import Transformer, model_config, save_checkpoint
from datawall.tasks import get_task

TASK_ARGS = {"digits": 2}
TASK = get_task("arith", **TASK_ARGS)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: these models' matmuls are too small to gain from two, and a busy shared
    machine stalls a two-thread pool badly (seen: 6x slower training)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_checkpoint(path: Path, alphabet: str, max_seq_len: int, seed: int = 0) -> Path:
    """A saved one-layer 100k model with random weights over `alphabet`: real samples and costs, accuracy ~0."""
    torch.manual_seed(seed)
    tok = Tokenizer.for_chars(alphabet)
    model = Transformer(model_config("100k", vocab_size=tok.vocab_size, max_seq_len=max_seq_len, n_layers=1))
    return save_checkpoint(path, model, tok)


def train_policy(task, count: int, lr: float, max_seq_len: int, steps: int = 200) -> tuple[Transformer, Tokenizer]:
    """A 100k model after `steps` AdamW steps of 32 examples drawn from the first `count` train problems."""
    torch.manual_seed(0)
    tok = Tokenizer.for_chars(task.alphabet)
    model = Transformer(model_config("100k", vocab_size=tok.vocab_size, max_seq_len=max_seq_len))
    stream = ExampleStream(task_docs(task, tok, "train", count=count), tok.pad_id, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        x, y = stream.batch(step, 32)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def trained_policy(base: Path, steps: int = 200) -> Path:
    """A 100k model after `steps` steps on 2-digit addition. At 200 it has the scratchpad's format and is rarely
    right; at 800 each line is right often but far from always (greedy ~40-60%, pass@1 ~20-40%, pass@8 ~60-90%
    on every CPU kernel set tried), the regime where a selector has something to select.

    Saved under the session's base temp directory, so every test module that asks reuses the same one.
    """
    path = base / f"tiny-arith-2digit-{steps}"
    if (path / "model.safetensors").exists():
        return path
    with one_thread():
        model, tok = train_policy(TASK, count=2000, lr=4e-3, max_seq_len=48, steps=steps)
        return save_checkpoint(path, model, tok)


def line_scorer(problems):
    """A cheap, informative step scorer: 1 where a step equals the reference solution's line, else 0."""
    refs = {p.prompt: TASK.solution(p).splitlines() for p in problems}

    def score(prompt: str, steps: list[str]) -> list[float]:
        ref = refs[prompt]
        return [1.0 if i < len(ref) and s.rstrip("\n") == ref[i] else 0.0 for i, s in enumerate(steps)]

    return score
