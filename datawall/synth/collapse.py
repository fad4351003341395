"""Model collapse: each generation of models learns from samples of the one before (Shumailov et al. 2024), and
what keeping the real data does about it (Gerstgrasser et al. 2024).

Generation 0 trains from scratch on the U real worked examples. Generation g >= 1 trains from scratch, on the same
token budget, on solutions that generation g - 1 sampled (temperature `temperature`, no filter: nothing checks them)
for P fresh train problems past the real ones (generation g's prompts are the same for every mode):

- replace: only generation g - 1's samples;
- accumulate: the U real examples and every generation's samples so far, in one pool;
- mix: generation g - 1's samples with a share `real_frac` of the rows real.

Every model is measured on the same held-out problems (datawall.synth.rounds.Measure): held-out loss on the real
reference solutions (the training run's eval_loss), greedy accuracy, accuracy on the tail classes and the share of
its samples that land there, and the diversity of one temperature-1 sample per problem.

OUT: config.json, seed-S/gen-0/ (shared by the modes), MODE/seed-S/gen-G/{data,train,measure.json}, collapse.json
(rewritten after every generation: a killed run resumes from its finished pieces) and collapse.png.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from datawall.atomic import atomic_write_json
from datawall.errors import DatawallError
from datawall.synth.collapse_config import CollapseConfig


def _real_tokens(cfg: CollapseConfig) -> int:
    """DataSpec.unique_tokens of the first U real examples (the char tokenizer's count)."""
    from datawall.data import Tokenizer, task_docs
    from datawall.tasks import get_task

    task = get_task(cfg.task, **cfg.task_args)
    return sum(len(d) for d in task_docs(task, Tokenizer.for_chars(task.alphabet), "train", count=cfg.real_examples))


def _spec(cfg: CollapseConfig, seed: int, unique: int, synthetic: dict | None):
    from datawall.data.synthetic import SyntheticSpec
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.run import DataSpec, RunSpec

    return RunSpec(data=DataSpec(task=cfg.task, task_args={k: str(v) for k, v in cfg.task_args.items()},
                                 unique_tokens=unique,
                                 synthetic=SyntheticSpec(**synthetic) if synthetic else None),
                   size=cfg.size, eval_problems=0,
                   train=TrainConfig(tokens=cfg.tokens, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=seed,
                                     optim=OptimConfig(lr=cfg.lr)))


def _data_config(cfg: CollapseConfig, start: int, seed: int):
    from datawall.synth.generate_config import GenerateConfig

    return GenerateConfig(task=cfg.task, task_args=cfg.task_args, problems=cfg.per_generation, start=start,
                          strategy="sample", filter="none", dedup=False, temperature=cfg.temperature, seed=seed)


def _measure(cfg: CollapseConfig, seed: int, model: Path, out: Path, quiet: bool) -> dict:
    """measure.json of a model (computed once)."""
    from datawall.synth.rounds import Measure
    from datawall.tasks import get_task

    path = out / "measure.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    m = Measure.of(get_task(cfg.task, **cfg.task_args), cfg.eval_problems, cfg.tail_share, seed)(model, quiet)
    atomic_write_json(path, m)
    return m


def _generation_zero(cfg: CollapseConfig, out: Path, seed: int, unique: int, quiet: bool) -> dict:
    from datawall.synth.rounds import train

    torch_threads()
    where = out / f"seed-{seed}" / "gen-0"
    result = train(_spec(cfg, seed, unique, None), where / "train", quiet)
    return _row("real", seed, 0, result, _measure(cfg, seed, where / "train", where, quiet), None)


def _row(mode: str, seed: int, generation: int, result: dict, m: dict, data: dict | None) -> dict:
    return {"mode": mode, "seed": seed, "generation": generation, "heldout_loss": result["eval_loss"],
            "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"], "tail_accuracy": m["tail_accuracy"],
            "tail_accuracy_ci": m["tail_accuracy_ci"], "tail_share": m["tail_share"],
            "tail_share_real": m["tail_share_real"], "sample_accuracy": m["sample_accuracy"],
            "diversity": m["diversity"], "data_correct": None if data is None else data["kept_precision"],
            "synthetic_examples": result.get("synthetic_examples", 0),
            "real_share": 1 - result.get("synthetic_share", 0),
            "train_flops": result.get("train_flops", result["flops"]), "synthetic_flops": result.get("synthetic_flops")}


def _chain(cfg: CollapseConfig, out: Path, mode: str, seed: int, unique: int, first: int, quiet: bool) -> list[dict]:
    """Generations 1..G of one mode and seed (generation 0 is done); their rows."""
    from datawall.synth.rounds import train, write_data

    torch_threads()
    rows, datas = [], []
    previous = out / f"seed-{seed}" / "gen-0" / "train"
    for g in range(1, cfg.generations + 1):
        where = out / mode / f"seed-{seed}" / f"gen-{g}"
        start = first + (g - 1) * cfg.per_generation
        data = write_data(previous, _data_config(cfg, start, seed * 1000 + g), where / "data", quiet=True)
        datas.append(str((where / "data").resolve()))
        synthetic = {"replace": {"paths": datas[-1:], "ratio": 1.0}, "accumulate": {"paths": list(datas)},
                     "mix": {"paths": datas[-1:], "ratio": 1 - cfg.real_frac}}[mode]
        result = train(_spec(cfg, seed, unique, synthetic), where / "train", quiet)
        rows.append(_row(mode, seed, g, result, _measure(cfg, seed, where / "train", where, quiet), data))
        previous = where / "train"
    return rows


def torch_threads() -> None:
    """One torch thread per worker: these models are too small to gain from more, and the cores are shared."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def run_collapse(cfg: CollapseConfig, out: str | Path, workers: int = 1, quiet: bool = True) -> dict:
    """Every seed's generation 0, then each (mode, seed) chain of G generations; collapse.json and collapse.png."""
    from datawall.synth.generate import claim_run_dir, real_problem_count
    from datawall.tasks import get_task

    out = Path(out)
    began = time.monotonic()
    unique = _real_tokens(cfg)
    first = real_problem_count(get_task(cfg.task, **cfg.task_args), unique)
    last = first + cfg.generations * cfg.per_generation
    size = get_task(cfg.task, **cfg.task_args).size("train")
    if size is not None and last > size:
        raise DatawallError(f"--generations {cfg.generations} x --samples {cfg.per_generation:,} train problems after "
                            f"the {first:,} real ones need {last:,}, but the train split has {size:,}")
    claim_run_dir(out, cfg.model_dump(mode="json"), "a collapse run")
    rows: list[dict] = []
    log = _Log(quiet)
    with _pool(workers) as pool:
        for r in pool.map(_generation_zero, *zip(*[(cfg, out, s, unique, True) for s in cfg.seeds], strict=True)):
            rows.append(r)
            log(f"generation 0, seed {r['seed']}: accuracy {r['accuracy']:.1%}, held-out loss {r['heldout_loss']:.3f}")
        _write(out, cfg, rows, began)
        chains = [(m, s) for m in cfg.modes for s in cfg.seeds]
        args = [(cfg, out, m, s, unique, first, True) for m, s in chains]
        for (mode, seed), got in zip(chains, pool.map(_chain, *zip(*args, strict=True)), strict=True):
            rows += got
            log(f"{mode}, seed {seed}: accuracy by generation "
                + " ".join(f"{r['accuracy']:.1%}" for r in got))
            _write(out, cfg, rows, began)
    return _write(out, cfg, rows, began, plot=True)


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            from datawall.progress import stderr

            stderr.print(line, markup=False, highlight=False)


class _Serial:
    """The pool's interface in this process (workers = 1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def _pool(workers: int):
    if workers <= 1:
        return _Serial()
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def summary(cfg: CollapseConfig, rows: list[dict]) -> dict:
    """Per mode and generation, the mean over seeds of every number (generation 0 is every mode's first point)."""
    out: dict[str, list[dict]] = {}
    zero = [r for r in rows if r["generation"] == 0]
    for mode in cfg.modes:
        mine = zero + [r for r in rows if r["mode"] == mode]
        by_gen: dict[int, list[dict]] = {}
        for r in mine:
            by_gen.setdefault(r["generation"], []).append(r)
        out[mode] = [{"generation": g, "seeds": len(rs),
                      **{k: _mean([r[k] for r in rs]) for k in ("heldout_loss", "accuracy", "tail_accuracy",
                                                                "tail_share", "sample_accuracy", "data_correct")},
                      "answer_entropy": _mean([r["diversity"]["answer_entropy"] for r in rs]),
                      "distinct_4": _mean([r["diversity"]["distinct_4"] for r in rs])}
                     for g, rs in sorted(by_gen.items())]
    return out


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _write(out: Path, cfg: CollapseConfig, rows: list[dict], began: float, plot: bool = False) -> dict:
    zero = [r for r in rows if r["generation"] == 0]
    runs = [r | {"mode": m} for m in cfg.modes for r in zero] + [r for r in rows if r["generation"] > 0]
    runs.sort(key=lambda r: (cfg.modes.index(r["mode"]), r["seed"], r["generation"]))
    result = {"runs": runs, "summary": summary(cfg, rows), "config": cfg.model_dump(mode="json"),
              "tail_classes": _tail(out, cfg), "complete": plot, "seconds": time.monotonic() - began}
    if plot:
        from datawall.synth.collapse_plot import plot_collapse

        result["plot"] = str(out / "collapse.png")
        plot_collapse(result, out / "collapse.png")
    atomic_write_json(out / "collapse.json", result)
    return result


def _tail(out: Path, cfg: CollapseConfig) -> list[int] | None:
    path = out / f"seed-{cfg.seeds[0]}" / "gen-0" / "measure.json"
    return json.loads(path.read_text(encoding="utf-8"))["tail_classes"] if path.exists() else None
