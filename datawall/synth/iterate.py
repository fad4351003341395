"""Self-improvement: the model is its own teacher for K rounds (STaR, Zelikman et al. 2022; ReST-EM, Singh et al.
2023). Round r: the current model answers P train problems past the real ones (the same problems every round,
new samples: seed + r), the filter keeps solutions (the verifier by default: rejection sampling), and a model is
fine-tuned on them, mixed with the U real examples unless told otherwise:

- start_from = "base" (ReST-EM): every round fine-tunes the base model, on the data the last round's model wrote;
- start_from = "last" (continue): every round fine-tunes the last round's model.

Per round: held-out greedy accuracy (round 0 is the base model), what the teacher kept and how right it was, and
FLOPs (the round's generation + its fine-tuning, and the running total).

OUT: config.json, round-0.json (the base model's score), round-R/{data,train} (a synth generate run and a training
run, each with DONE), iterate.json rewritten after every round: a killed run resumes at its first unfinished piece.
"""

from __future__ import annotations

import json
from pathlib import Path

from datawall.atomic import atomic_write_json
from datawall.errors import DatawallError
from datawall.model import checkpoint_dir, load_checkpoint
from datawall.synth.iterate_config import IterateConfig


def _base_score(base: Path, cfg: IterateConfig, out: Path, device: str, quiet: bool) -> dict:
    """round-0.json: the base model's held-out greedy accuracy (computed once)."""
    from datawall.tasks import get_task
    from datawall.train.evaluate import task_accuracy

    path = out / "round-0.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    ckpt = load_checkpoint(base)
    acc = task_accuracy(ckpt.model.to(device), ckpt.tokenizer, get_task(cfg.task, **cfg.task_args),
                        problems=cfg.eval_problems, device=device, quiet=quiet)
    row = {"round": 0, "accuracy": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"],
           "eval_problems": acc["problems"], "flops": 0.0, "cumulative_flops": 0.0}
    atomic_write_json(path, row)
    return row


def _spec(cfg: IterateConfig, init: Path, data: Path, real_tokens: int, device: str):
    from datawall.data.synthetic import SyntheticSpec
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.run import DataSpec, RunSpec

    return RunSpec(data=DataSpec(task=cfg.task, task_args={k: str(v) for k, v in cfg.task_args.items()},
                                 unique_tokens=real_tokens,
                                 synthetic=SyntheticSpec(paths=[str(data.resolve())], ratio=None if cfg.real else 1.0)),
                   init=str(init), eval_problems=cfg.eval_problems,
                   train=TrainConfig(tokens=cfg.tokens, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed,
                                     device=device, optim=OptimConfig(lr=cfg.lr)))


def run_iterate(base: str | Path, cfg: IterateConfig, out: str | Path, device: str = "cpu",
                quiet: bool = True) -> dict:
    """K rounds of generate -> filter -> fine-tune from `base`; iterate.json's object."""
    from datawall.progress import stderr
    from datawall.synth.generate import claim_run_dir
    from datawall.synth.generate_config import GenerateConfig
    from datawall.synth.rounds import train, write_data

    out = Path(out)
    base = checkpoint_dir(base).resolve()
    meta = load_checkpoint(base).meta
    real_tokens = cfg.real_tokens or meta.get("unique_tokens")
    if not isinstance(real_tokens, int) or real_tokens <= 0:
        raise DatawallError(f"{base}: its datawall.json does not say how many real tokens it trained on; give "
                            "--real-tokens U")
    claim_run_dir(out, {"settings": cfg.model_dump(mode="json"), "base": str(base), "real_tokens": real_tokens},
                  "an iterate run")
    rows = [_base_score(base, cfg, out, device, quiet)]
    teacher, total = base, 0.0
    for r in range(1, cfg.rounds + 1):
        where = out / f"round-{r}"
        gen = GenerateConfig(task=cfg.task, task_args=cfg.task_args, problems=cfg.problems,
                             skip_unique_tokens=real_tokens, strategy=cfg.strategy, filter=cfg.filter,
                             temperature=cfg.temperature, seed=cfg.seed + r)
        try:
            data = write_data(teacher, gen, where / "data", device, quiet)
        except DatawallError as e:
            raise DatawallError(f"round {r}: {e}") from None
        init = base if cfg.start_from == "base" else teacher
        result = train(_spec(cfg, init, where / "data", real_tokens, device), where / "train", quiet)
        gen_flops = data["flops"] or 0.0
        total += gen_flops + result["train_flops"]
        rows.append({"round": r, "accuracy": result["accuracy"], "ci_low": result["ci_low"],
                     "ci_high": result["ci_high"], "eval_problems": result["eval_problems"],
                     "eval_loss": result["eval_loss"], "generated": data["generated"], "kept": data["kept"],
                     "kept_precision": data["kept_precision"], "teacher_accuracy": data["teacher_accuracy"],
                     "sample_accuracy": data["sample_accuracy"], "generation_flops": gen_flops,
                     "train_flops": result["train_flops"], "flops": gen_flops + result["train_flops"],
                     "cumulative_flops": total, "synthetic_epochs": result["synthetic_epochs"],
                     "real_epochs": result["epochs"], "model": str((where / "train" / "checkpoint").resolve())})
        _write(out, cfg, rows, base, real_tokens)
        if not quiet:
            stderr.print(f"round {r}: kept {data['kept']}/{data['generated']} (teacher "
                         f"{data['teacher_accuracy']:.1%}), "
                         f"held-out accuracy {result['accuracy']:.1%}", markup=False, highlight=False)
        teacher = where / "train" / "checkpoint"
    return _write(out, cfg, rows, base, real_tokens)


def _write(out: Path, cfg: IterateConfig, rows: list[dict], base: Path, real_tokens: int) -> dict:
    result = {"rounds": rows, "base": str(base), "real_tokens": real_tokens, "start_from": cfg.start_from,
              "method": "ReST-EM (fine-tune the base every round)" if cfg.start_from == "base"
              else "continue (fine-tune the last round's model)",
              "complete": len(rows) == cfg.rounds + 1, "settings": cfg.model_dump(mode="json")}
    atomic_write_json(out / "iterate.json", result)
    return result
