"""The IsoFLOP ladder: a grid of pretraining runs (compute budgets x model sizes) through the one training loop.

Each budget C gets `sizes` models spread around a guess of the compute-optimal size, and each run trains
for tokens = C / train_flops_per_token, so every run of a budget really costs C FLOPs as the loop counts
them. A repetition series trains one size on 1, 2, 4, ... epochs of U unique tokens: U is the cap when one
is given (then every run draws from the same first U tokens) and `repeat_tokens` otherwise. Runs are
ordinary run directories (OUT/runs/NAME): a finished one (DONE) is read back, an interrupted one resumes
from its checkpoint. Runs go to a pool of spawned processes, one torch thread each.
"""

from __future__ import annotations

import math
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import active_children, get_context
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datawall.errors import DatawallError

if TYPE_CHECKING:
    from datawall.train.run import RunSpec

# Model family: widths in steps of 8 up to 128 (tiny models are where small budgets have their optimum),
# then 16; depth = width / 32 rounded half up (aspect ratio 32); heads of 32 dims where the width allows.
# With a 512-token vocabulary it runs from 12k parameters (16 x 1) through 280k (80 x 3) to 6.5M (256 x 8),
# successive members 1.1-1.9x apart.
FAMILY_DIMS = tuple(range(16, 128, 8)) + tuple(range(128, 513, 16))


def family_shape(dim: int) -> dict[str, int]:
    """The family's shape at width `dim`: dim, n_layers, n_heads (as many heads of >= 32 dims as divide it)."""
    heads = max(1, dim // 32)
    while dim % heads or (dim // heads) % 2:
        heads -= 1
    return {"dim": dim, "n_layers": max(1, int(dim / 32 + 0.5)), "n_heads": heads}


class LadderSpec(BaseModel):
    """An IsoFLOP ladder: budgets, how sizes are chosen per budget, and the training recipe shared by all runs."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    corpus: str = "stdlib"
    unique_tokens: int | None = Field(None, gt=0, description="cap U: every run draws from the first U tokens")
    budgets: list[float] = Field(min_length=1, description="training compute per run, FLOPs")
    sizes: int = Field(5, ge=2, description="model sizes per budget")
    span: float = Field(5.0, gt=1, description="sizes run from N_guess / span to N_guess * span")
    tokens_per_param: float = Field(25.0, gt=0, description="centre guess: C = 6 N (tokens_per_param N)")
    min_dim: int = Field(16, ge=8)
    max_dim: int = Field(512, ge=16)
    vocab_size: int = Field(512, gt=256)
    seq_len: int = Field(128, gt=1)
    batch_size: int = Field(4, gt=0, description="sequences per step: short runs need steps")
    lr: float = Field(3e-3, gt=0, description="peak learning rate at width lr_dim; lr scales as lr_dim / dim")
    lr_dim: int = Field(128, gt=0)
    heldout_tokens: int = Field(32768, gt=0)
    repeat_tokens: int | None = Field(None, gt=0, description="U of the repetition series when no cap is set")
    epochs: list[float] = Field([1, 2, 4, 8], description="repetition series: D = epochs x U at one model size")
    seed: int = Field(0, ge=0)
    device: str = "cpu"

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not (math.isfinite(c) and c > 0) for c in v):
            raise ValueError("budgets must be positive and finite")
        return sorted(v)

    @field_validator("epochs")
    @classmethod
    def _at_least_one(cls, v: list[float]) -> list[float]:
        if any(not (math.isfinite(e) and e > 0) for e in v):
            raise ValueError("epochs must be positive and finite")
        return sorted(set(v))

    def lr_for(self, dim: int) -> float:
        """Peak learning rate at width dim: narrower models take proportionally larger steps (Adam, muP-like)."""
        return self.lr * self.lr_dim / dim


# quick: 25 runs, 2.7 min on 2 lightly loaded cores; standard: 43 runs, 4x the FLOPs, 17 min on 2 busy
# cores (docs/laws.md, "IsoFLOP ladder").
# Budgets stop at ~1e12 FLOPs because the smallest models of a budget would need more tokens than the stdlib
# corpus holds (5.0M at 512 ids); below ~2e11 runs are so short that escaping the initial plateau dominates.
PRESETS: dict[str, dict] = {
    "quick": {"budgets": [2.5e11, 5e11, 1e12], "sizes": 6, "span": 4.0,
              "repeat_tokens": 50_000, "epochs": [1, 2, 4, 8, 16, 32, 64]},
    "standard": {"budgets": [2e11, 4e11, 8e11, 1.6e12, 3.2e12], "sizes": 7, "span": 5.0,
                 "repeat_tokens": 100_000, "epochs": [1, 2, 4, 8, 16, 32, 64, 128]},
}


def ladder_spec(preset: str = "quick", **overrides) -> LadderSpec:
    """A LadderSpec from a preset name plus field overrides."""
    if preset not in PRESETS:
        raise DatawallError(f"unknown ladder preset {preset!r}; presets: {', '.join(PRESETS)}")
    fields = {**PRESETS[preset], **overrides}
    return LadderSpec(preset=preset, **fields)


@dataclass(frozen=True)
class Shape:
    """One model of the family with its counts at a given vocabulary and context."""

    dim: int
    n_layers: int
    n_heads: int
    params: int
    params_non_embedding: int
    flops_per_token: float

    @property
    def label(self) -> str:
        return f"{self.dim}x{self.n_layers}"


def family(spec: LadderSpec, vocab_size: int | None = None) -> list[Shape]:
    """The family members between min_dim and max_dim, with parameter and FLOP counts, smallest first."""
    import torch

    from datawall.model import Transformer, model_config, train_flops_per_token

    shapes = []
    for dim in FAMILY_DIMS:
        if not spec.min_dim <= dim <= spec.max_dim:
            continue
        cfg = model_config(family_shape(dim), vocab_size=vocab_size or spec.vocab_size, max_seq_len=spec.seq_len)
        with torch.device("meta"):  # counts only: no memory, no init cost
            model = Transformer(cfg)
        shapes.append(Shape(cfg.dim, cfg.n_layers, cfg.n_heads, model.num_params(non_embedding=False),
                            model.num_params(non_embedding=True), train_flops_per_token(cfg, spec.seq_len)))
    if len(shapes) < 2:
        raise DatawallError(f"ladder: min_dim {spec.min_dim} .. max_dim {spec.max_dim} leaves fewer than 2 models")
    return shapes


def pick_sizes(shapes: list[Shape], centre: float, count: int, span: float) -> list[Shape]:
    """`count` distinct family members nearest (in log N) to centre * geomspace(1/span, span, count)."""
    if count > len(shapes):
        raise DatawallError(f"ladder: {count} sizes per budget but the family has only {len(shapes)} models")
    logs = [math.log(s.params) for s in shapes]
    targets = [math.log(centre) + math.log(span) * (2 * i / (count - 1) - 1) for i in range(count)]
    picked: list[int] = []
    for t in targets:
        free = [i for i in range(len(shapes)) if i not in picked]
        picked.append(min(free, key=lambda i: abs(logs[i] - t)))
    return [shapes[i] for i in sorted(picked)]


def _short(n: float) -> str:
    """Compact count for run names: 42360 -> '42.4k', 999936 -> '1M' (never '1e+03k')."""
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale * 0.9995:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _sci(x: float) -> str:
    """1e11 -> '1e11', 3.2e12 -> '3.2e12' (for run names)."""
    mant, exp = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.2g}", "0")
    return f"{mant}e{int(exp)}"


@dataclass
class LadderRun:
    """One planned run: its readable name, its series (isoflop | epochs), budget or epochs, shape and RunSpec."""

    name: str
    series: str
    shape: Shape
    spec: RunSpec
    budget: float | None = None
    epochs: float | None = None


def _run_spec(spec: LadderSpec, shape: Shape, tokens: int, unique_tokens: int | None) -> RunSpec:
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.run import DataSpec, RunSpec

    steps = max(1, -(-tokens // (spec.batch_size * spec.seq_len)))
    return RunSpec(
        data=DataSpec(corpus=spec.corpus, unique_tokens=unique_tokens, vocab_size=spec.vocab_size,
                      heldout_tokens=spec.heldout_tokens),
        size="1m",  # replaced entirely by the overrides below
        model_overrides={"dim": shape.dim, "n_layers": shape.n_layers, "n_heads": shape.n_heads,
                         "n_kv_heads": shape.n_heads, "ffn_dim": _ffn(shape.dim)},
        train=TrainConfig(tokens=tokens, batch_size=spec.batch_size, seq_len=spec.seq_len, seed=spec.seed,
                          device=spec.device, eval_every=steps,  # eval once, at the end: it is the result
                          optim=OptimConfig(lr=spec.lr_for(shape.dim))),
        eval_problems=0,
    )


def _ffn(dim: int) -> int:
    from datawall.model.config import swiglu_hidden

    return swiglu_hidden(dim)


def ladder_runs(spec: LadderSpec, vocab_size: int | None = None, pool_tokens: int | None = None) -> list[LadderRun]:
    """Every run of the ladder: the IsoFLOP grid, then (with a cap U) the repetition series.

    Without a cap, sizes whose run would need more than `pool_tokens` (the corpus's training pool) are left
    out, so that no IsoFLOP run repeats data unless U asks for it.
    """
    shapes = family(spec, vocab_size)
    step_tokens = spec.batch_size * spec.seq_len

    def tokens_for(s: Shape, C: float) -> int:
        return max(1, round(C / s.flops_per_token / step_tokens)) * step_tokens

    runs: list[LadderRun] = []
    for C in spec.budgets:
        fits = [s for s in shapes if spec.unique_tokens is not None or pool_tokens is None
                or tokens_for(s, C) <= pool_tokens]
        if len(fits) < spec.sizes:
            raise DatawallError(f"ladder: budget {C:.3g} FLOPs leaves {len(fits)} model sizes that fit the corpus's "
                                f"{pool_tokens:,} training tokens without repeating; lower the budget or pass "
                                "--unique-tokens to repeat data on purpose")
        centre = math.sqrt(C / (6.0 * spec.tokens_per_param))
        for s in pick_sizes(fits, centre, spec.sizes, spec.span):
            name = f"c{_sci(C)}_n{_short(s.params)}_{s.label}"
            runs.append(LadderRun(name, "isoflop", s, _run_spec(spec, s, tokens_for(s, C), spec.unique_tokens),
                                  budget=C))
    U = series_tokens(spec)
    if U is not None:
        # the centre size of the smallest budget: the grid also trains it on fresh tokens, for comparison
        centre = math.sqrt(spec.budgets[0] / (6.0 * spec.tokens_per_param))
        s = min(shapes, key=lambda x: abs(math.log(x.params) - math.log(centre)))
        for e in spec.epochs:
            tokens = max(1, int(e * U / step_tokens)) * step_tokens  # floor: 1 epoch never exceeds U
            name = f"u{_short(U)}_e{e:g}_n{_short(s.params)}_{s.label}"
            runs.append(LadderRun(name, "epochs", s, _run_spec(spec, s, tokens, U), epochs=e))
    return runs


def series_tokens(spec: LadderSpec) -> int | None:
    """U of the repetition series: the cap when there is one, else repeat_tokens (None: no series)."""
    return spec.unique_tokens if spec.unique_tokens is not None else spec.repeat_tokens


@dataclass
class LadderResult:
    """What run_ladder returns: one row per run (ladder.csv), and what happened this time."""

    spec: LadderSpec
    out: Path
    rows: list[dict]
    computed: list[str] = field(default_factory=list)  # runs trained (or resumed) by this call
    reused: list[str] = field(default_factory=list)  # runs read back from DONE
    wall_seconds: float = 0.0


# --- workers -------------------------------------------------------------------------------------------
# A worker's first SIGINT (Ctrl-C reaches the whole process group) interrupts the run in progress, which
# checkpoints and stops; queued runs are then skipped. Further signals only set the flag, so they cannot
# interrupt the checkpoint being written.
_WORKER = {"running": False, "stopping": False}


def _on_sigint(signum, frame) -> None:
    first = not _WORKER["stopping"]
    _WORKER["stopping"] = True
    if first and _WORKER["running"]:
        raise KeyboardInterrupt


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, _on_sigint)


def _run_one(name: str, spec, run_dir: str) -> tuple[str, dict | None]:
    """Execute one run in a worker; (name, None) when it was interrupted or skipped."""
    from datawall.train.run import execute

    if _WORKER["stopping"]:
        return name, None
    _WORKER["running"] = True
    try:
        return name, execute(spec, run_dir, quiet=True)
    except KeyboardInterrupt:
        return name, None
    finally:
        _WORKER["running"] = False


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _check_data(spec: LadderSpec) -> tuple[int, int]:
    """Build (or read from cache) the tokenizer and token stream once; validate U; (vocabulary, pool tokens)."""
    from datawall.data import corpus_docs, corpus_tokenizer, corpus_tokens, load_corpus

    corpus = load_corpus(spec.corpus)
    tok = corpus_tokenizer(corpus, spec.vocab_size)
    tokens, bounds = corpus_tokens(corpus, tok)
    train, _ = corpus_docs(tokens, bounds, spec.seq_len, spec.unique_tokens, spec.heldout_tokens, spec.seed)
    pool = sum(len(d) for d in train)
    if spec.repeat_tokens is not None and spec.unique_tokens is None and spec.repeat_tokens > pool:
        raise DatawallError(f"corpus {spec.corpus} has {pool:,} training tokens; the repetition series cannot take "
                            f"repeat_tokens = {spec.repeat_tokens:,} (lower it, or set it to null to skip the series)")
    return tok.vocab_size, pool // (spec.seq_len + 1) * spec.seq_len  # input positions per epoch, as the loop counts


def run_ladder(spec: LadderSpec, out: str | Path, workers: int | None = None, threads: int = 1,
               quiet: bool = False) -> LadderResult:
    """Run (or resume, or read back) every run of the ladder into OUT/runs/NAME; rows in ladder.csv order.

    `workers` processes (default: one per core) of `threads` torch threads each; 1 x 1 runs in this process.
    """
    from datawall.train.run import execute

    out = Path(out)
    t0 = time.perf_counter()
    vocab, pool = _check_data(spec)
    runs = ladder_runs(spec, vocab, pool)
    results: dict[str, dict] = {}
    result = LadderResult(spec, out, [])
    pending = []
    for r in runs:
        run_dir = out / "runs" / r.name
        if (run_dir / "DONE").exists():
            results[r.name] = execute(r.spec, run_dir, quiet=True)  # validates that it is the same run
            result.reused.append(r.name)
        else:
            pending.append(r)
    # longest first (most FLOPs, then smaller models: they are slower per FLOP), so the workers end together
    pending.sort(key=lambda r: (-r.spec.train.tokens * r.shape.flops_per_token, r.shape.params))
    cores = available_cores()
    # one thread per run: on shared cores a 2-thread run can stall badly (docs/laws.md, "IsoFLOP ladder")
    workers = max(1, min(workers or cores, len(pending) or 1))
    cost = {r.name: r.spec.train.tokens * r.shape.flops_per_token for r in runs}
    with _LadderBar(quiet, sum(cost.values()), sum(cost[n] for n in results), len(runs), len(results)) as bar:
        def done(name: str, res: dict | None) -> None:
            if res is not None:
                results[name] = res
                result.computed.append(name)
                bar(cost[name])

        if workers == 1:
            _run_here(pending, out, threads, done)
        else:
            _run_pool(pending, out, workers, threads, done)
    result.rows = [ladder_row(r, results[r.name]) for r in runs]
    result.wall_seconds = time.perf_counter() - t0
    return result


def _run_here(pending: list[LadderRun], out: Path, threads: int, done) -> None:
    import torch

    from datawall.train.run import execute

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for r in pending:
            done(r.name, execute(r.spec, out / "runs" / r.name, quiet=True))
    finally:
        torch.set_num_threads(previous)


def _run_pool(pending: list[LadderRun], out: Path, workers: int, threads: int, done) -> None:
    """Run in `workers` spawned processes of `threads` torch threads; on Ctrl-C let each run checkpoint."""
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(threads,))
    futures: set[Future] = set()
    try:
        futures = {pool.submit(_run_one, r.name, r.spec, str(out / "runs" / r.name)) for r in pending}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                try:
                    done(*f.result())
                except BrokenProcessPool:
                    raise DatawallError("a ladder worker process died (out of memory?); finished runs are kept "
                                        "and a re-run continues the others") from None
    except BaseException:
        for f in futures:
            f.cancel()
        for child in active_children():  # a kill of this process alone: make the workers checkpoint too
            try:
                os.kill(child.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _LadderBar:
    """Progress over runs on stderr, weighted by FLOPs so the ETA is honest; yields advance(flops)."""

    def __init__(self, quiet: bool, total: float, completed: float, runs: int, done_runs: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from datawall.progress import stderr

        self.runs, self.done = runs, done_runs
        self.progress = Progress(TextColumn("[bold]ladder"), BarColumn(), TextColumn("{task.fields[runs]} runs"),
                                 TextColumn("{task.percentage:>3.0f}% of FLOPs"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=stderr, disable=quiet)
        self.task = self.progress.add_task("ladder", total=total, completed=completed,
                                           runs=f"{done_runs}/{runs}")

    def __enter__(self):
        self.progress.__enter__()

        def advance(flops: float) -> None:
            self.done += 1
            self.progress.update(self.task, advance=flops, runs=f"{self.done}/{self.runs}")

        return advance

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


CSV_COLUMNS = ("name", "series", "budget", "dim", "n_layers", "n_heads", "lr", "params", "params_non_embedding",
               "tokens", "unique_tokens", "epochs", "flops", "eval_loss", "train_loss", "wall_seconds", "run_dir")


def ladder_row(run: LadderRun, res: dict) -> dict:
    """One ladder.csv row from a planned run and its result.json."""
    return {
        "name": run.name, "series": run.series, "budget": run.budget if run.budget is not None else "",
        "dim": run.shape.dim, "n_layers": run.shape.n_layers, "n_heads": run.shape.n_heads,
        "lr": run.spec.train.optim.lr, "params": res["params"], "params_non_embedding": res["params_non_embedding"],
        "tokens": res["tokens"], "unique_tokens": res["unique_tokens"], "epochs": res["epochs"],
        "flops": res["flops"], "eval_loss": res["eval_loss"], "train_loss": res["train_loss"],
        "wall_seconds": res["wall_seconds"], "run_dir": str(Path("runs") / run.name),
    }


def describe(spec: LadderSpec) -> str:
    """One line per run the spec makes: name, tokens, learning rate, FLOPs (builds the tokenizer if needed)."""
    lines = []
    for r in ladder_runs(spec, *_check_data(spec)):
        lines.append(f"{r.name:<32} tokens {_short(r.spec.train.tokens):>6}  "
                     f"lr {r.spec.train.optim.lr:.2g}  flops {r.spec.train.tokens * r.shape.flops_per_token:.3g}")
    return "\n".join(lines)
