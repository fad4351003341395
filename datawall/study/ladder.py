"""The IsoFLOP ladder: a grid of pretraining runs (compute budgets x model sizes) through the one training loop.

Each budget C gets `sizes` models spread around a guess of the compute-optimal size, and each run trains
for tokens = C / train_flops_per_token, so every run of a budget really costs C FLOPs as the loop counts
them. A repetition series trains one size on 1, 2, 4, ... epochs of U unique tokens: U is the cap when one
is given (then every run draws from the same first U tokens) and `repeat_tokens` otherwise. Every run is an
ordinary `pretrain` job in the run store, run by the study's executors (local pool or Ray): a finished run
is reused (by any ladder or study that needs it), an interrupted one resumes from its checkpoint.
OUT/runs/NAME links each readable name to its run directory in the store.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datawall.errors import DatawallError

if TYPE_CHECKING:
    from datawall.study.executors import Event, Executor
    from datawall.study.jobs import Job
    from datawall.study.store import RunStore
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

    @cached_property
    def job(self) -> Job:
        """The run as a store job: kind pretrain, config the RunSpec (so a study needing it shares it)."""
        from datawall.study.jobs import Job

        return Job("pretrain", self.spec.model_dump(mode="json"))

    @property
    def flops(self) -> float:
        """Training FLOPs the run will spend, as the loop counts them."""
        return self.spec.train.tokens * self.shape.flops_per_token


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
    store: Path | None = None  # the run store holding the runs
    computed: list[str] = field(default_factory=list)  # runs trained (or resumed) by this call
    reused: list[str] = field(default_factory=list)  # runs read back from DONE
    wall_seconds: float = 0.0


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


def run_ladder(spec: LadderSpec, out: str | Path, store: RunStore | str | Path | None = None,
               runner: Executor | None = None, quiet: bool = False) -> LadderResult:
    """Run (or resume, or reuse) every run of the ladder as a pretrain job in the run store; rows in ladder.csv order.

    `runner` is one of the study's executors (default: a local pool of one worker per core; the caller closes
    one it passes); the store defaults to the study's ($DATAWALL_HOME or ~/.datawall). OUT/runs/NAME links to
    each run's directory. Ctrl-C or SIGTERM stops the runs after each writes a checkpoint (KeyboardInterrupt).
    The local pool spawns its workers, so a script calling this needs the `if __name__ == "__main__":` guard.
    """
    from datawall.study.executors import get_executor
    from datawall.study.progress import RunsView
    from datawall.study.store import RunStore

    out = Path(out)
    t0 = time.perf_counter()
    vocab, pool = _check_data(spec)
    runs = ladder_runs(spec, vocab, pool)
    store = store if isinstance(store, RunStore) else RunStore(store)
    own = runner is None
    runner = runner or get_executor("local")
    links = out / "runs"
    links.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[str]] = {}  # job key -> ladder names (two names may be one run)
    for r in runs:
        names.setdefault(r.job.key, []).append(r.name)
        _adopt(r, links / r.name, store)
    result = LadderResult(spec, out, [], store=store.root)
    view = RunsView("ladder", {r.job.key: r.name for r in runs}, {r.job.key: r.flops for r in runs}, disable=quiet)

    def on_event(e: Event) -> None:
        if e.status != "queued":  # started or finished: its directory exists (or soon will)
            for name in names[e.key]:
                _link(links / name, store.runs_dir / e.name)
        if e.status == "done":
            result.computed += names[e.key]
        elif e.status == "reused":
            result.reused += names[e.key]
        view(e)

    # longest first (most FLOPs, then smaller models: they are slower per FLOP), so the workers end together
    order = sorted(runs, key=lambda r: (-r.flops, r.shape.params))
    try:
        with view:
            results = runner.run([r.job for r in order], store, on_event=on_event, quiet=True,
                                 study=f"ladder:{out.resolve().name}")
    except KeyboardInterrupt:
        for r in runs:  # a run that finished as the interrupt arrived, before its event was seen: link it anyway
            if (store.dir_for(r.job) / "DONE").exists():
                _link(links / r.name, store.dir_for(r.job))
        raise
    finally:
        if own:
            runner.close()
    result.rows = [ladder_row(r, results[r.job.key], store.dir_for(r.job)) for r in runs]
    result.wall_seconds = time.perf_counter() - t0
    return result


def _link(link: Path, target: Path) -> None:
    """Point OUT/runs/NAME at the run's directory in the store (replacing a link elsewhere, atomically)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.exists() and not link.is_symlink():
        raise DatawallError(f"{link} exists and is not a link to a run directory; move it away")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def _adopt(run: LadderRun, path: Path, store: RunStore) -> None:
    """A run directory kept in OUT/runs/NAME itself (ladders before the run store) moves into the store."""
    import json
    import shutil

    from datawall.atomic import atomic_write_json
    from datawall.study.store import job_record

    if path.is_symlink() or not path.is_dir():
        return
    target = store.dir_for(run.job)
    with store.lock_for(run.job):
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            config = None
        if not isinstance(config, dict) or config.get("run") != run.job.config:
            raise DatawallError(f"{path} is not a run directory of this ladder run (its config.json differs or is "
                                "missing); move it away or choose another --out")
        if target.exists():
            raise DatawallError(f"{path} is a run directory from an older ladder, and the store already has this "
                                f"run at {target}; delete one of them")
        shutil.move(str(path), str(target))
        atomic_write_json(target / "job.json", job_record(run.job))
    _link(path, target)


CSV_COLUMNS = ("name", "series", "budget", "dim", "n_layers", "n_heads", "lr", "params", "params_non_embedding",
               "tokens", "unique_tokens", "epochs", "flops", "eval_loss", "train_loss", "wall_seconds", "run_dir")


def ladder_row(run: LadderRun, res: dict, run_dir: Path) -> dict:
    """One ladder.csv row from a planned run, its result.json and its directory in the store."""
    return {
        "name": run.name, "series": run.series, "budget": run.budget if run.budget is not None else "",
        "dim": run.shape.dim, "n_layers": run.shape.n_layers, "n_heads": run.shape.n_heads,
        "lr": run.spec.train.optim.lr, "params": res["params"], "params_non_embedding": res["params_non_embedding"],
        "tokens": res["tokens"], "unique_tokens": res["unique_tokens"], "epochs": res["epochs"],
        "flops": res["flops"], "eval_loss": res["eval_loss"], "train_loss": res["train_loss"],
        "wall_seconds": res["wall_seconds"], "run_dir": str(run_dir),
    }


def describe(spec: LadderSpec) -> str:
    """One line per run the spec makes: name, tokens, learning rate, FLOPs (builds the tokenizer if needed)."""
    lines = []
    for r in ladder_runs(spec, *_check_data(spec)):
        lines.append(f"{r.name:<32} tokens {_short(r.spec.train.tokens):>6}  "
                     f"lr {r.spec.train.optim.lr:.2g}  flops {r.flops:.3g}  {r.job.name}")
    return "\n".join(lines)
