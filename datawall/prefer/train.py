"""`datawall prefer train`: tune a policy on preference pairs with the DPO family, in a resumable run directory.

OUT holds config.json (the run's identity: its settings and the digest of its pairs file), before.json (the starting
policy's held-out answers, scored once, and on a world with hazard cases graded for caveats), the loop's
metrics.jsonl and checkpoint/ (the tuned policy as an HF directory), then result.json and DONE. Killed and rerun
with the same settings it resumes; a finished run is read back. The reference's log-probabilities of every pair are
computed once at the start (the starting policy, or --reference), so only the policy runs in each step.
"""

from __future__ import annotations

import json
from pathlib import Path

import datawall
from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.device import require_device
from datawall.errors import DatawallError
from datawall.prefer.config import DPOConfig
from datawall.prefer.data import check_same_tokenizer, encode_pairs, file_digest, split_by_prompt
from datawall.prefer.evaluate import greedy_answers, greedy_scores, paired_change, summary
from datawall.prefer.pairs import read_metadata, read_pairs

KIND = "prefer-train"


def open_run(out: Path, identity: dict, kind: str = KIND) -> dict | None:
    """Make OUT this run's directory; return its result when it already finished, refuse a different run."""
    config = out / "config.json"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            existing = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if not isinstance(existing, dict) or existing.get("kind") != kind:
            raise DatawallError(f"--out {out}: exists and is not a `prefer` run directory of this kind; choose "
                                "another --out or remove it")
        if existing.get("run") != identity:
            raise DatawallError(f"--out {out}: holds a different run (its config.json differs: other settings or "
                                "another pairs file); choose another --out or remove it")
        if (out / "DONE").exists():
            return json.loads((out / "result.json").read_text(encoding="utf-8"))
        return None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config, {"kind": kind, "run": identity, "datawall_version": datawall.__version__})
    return None


def resolve_task(cfg_task: str | None, cfg_args: dict | None, meta: dict | None) -> tuple[str | None, dict]:
    """The held-out task: the flag's, else the one the pairs were sampled from."""
    if cfg_task is not None:
        return cfg_task, dict(cfg_args or {})
    if meta is not None and meta.get("task"):
        return meta["task"], dict(cfg_args if cfg_args is not None else meta.get("task_args") or {})
    return None, {}


def train_dpo(cfg: DPOConfig, out: str | Path, quiet: bool = False) -> dict:
    """Tune cfg.model on cfg.pairs (or read back the finished run in OUT); returns result.json's content."""
    import torch

    from datawall.economics.prices import load_prices
    from datawall.model import checkpoint_dir, load_checkpoint
    from datawall.model.flops import sample_flops
    from datawall.tasks import get_task
    from datawall.train.evaluate import greedy_safety, safety_change
    from datawall.train.loop import train
    from datawall.train.objectives.dpo import DPOObjective, DPOSchedule, DPOSettings, sequence_logprobs
    from datawall.train.state import HFFormat

    out = Path(out)
    policy_dir = checkpoint_dir(cfg.model).resolve()
    reference_dir = checkpoint_dir(cfg.reference).resolve() if cfg.reference else None
    identity = {**cfg.model_dump(mode="json"), "model": str(policy_dir),
                "reference": str(reference_dir) if reference_dir else None,
                "pairs": str(Path(cfg.pairs).resolve()), "pairs_sha256": None}
    pairs = read_pairs(cfg.pairs)  # bad rows are refused before anything is written
    identity["pairs_sha256"] = file_digest(cfg.pairs)
    meta = read_metadata(cfg.pairs)
    task_name, task_args = resolve_task(cfg.task, cfg.task_args, meta)
    task = get_task(task_name, **task_args) if task_name and cfg.eval_problems > 0 else None
    price = load_prices(cfg.prices).get(cfg.price)
    require_device(cfg.device)
    ckpt = load_checkpoint(policy_dir)
    tok = ckpt.tokenizer
    reference = None
    if reference_dir is not None:
        ref_ckpt = load_checkpoint(reference_dir)
        check_same_tokenizer(tok, ref_ckpt.tokenizer, cfg.reference)
        if ref_ckpt.config.vocab_size != ckpt.config.vocab_size:
            raise DatawallError(f"--reference {cfg.reference}: vocabulary of {ref_ckpt.config.vocab_size} rows, "
                                f"the policy's has {ckpt.config.vocab_size}")
        reference = ref_ckpt.model.to(cfg.device)
    encoded = encode_pairs(tok, pairs, min(ckpt.config.max_seq_len,
                                           reference.config.max_seq_len if reference else ckpt.config.max_seq_len))
    train_idx, val_idx = split_by_prompt(pairs, cfg.val_frac, cfg.seed)
    if not train_idx:
        raise DatawallError(f"{cfg.pairs}: no training pairs left after holding out --val-frac {cfg.val_frac}")
    if (done := open_run(out, identity)) is not None:
        return done | {"reused": True}

    torch.manual_seed(cfg.seed)
    policy = ckpt.model.to(cfg.device)
    eval_problems = [task.problem("test", i) for i in range(min(cfg.eval_problems, task.size("test") or
                                                                cfg.eval_problems))] if task else []
    before_path = out / "before.json"
    before = json.loads(before_path.read_text()) if eval_problems and before_path.exists() else None
    if eval_problems and (before is None or (task.has_hazards and "safety" not in before)):
        # (re)scored with the starting weights: a resume loads the tuned ones only inside the loop below
        rewards, lengths, texts = greedy_answers(policy, tok, task, eval_problems, cfg.device)
        before = {"rewards": rewards, "lengths": lengths}
        if (safety := greedy_safety(task, eval_problems, texts)) is not None:
            before["safety"] = safety
        atomic_write_json(before_path, before)

    # the frozen reference's log-probs of every pair, once (with the starting weights, before any resume)
    ref_model = reference if reference is not None else policy
    ref_c, ref_r = sequence_logprobs(ref_model, encoded, tok.pad_id)
    ref_flops = sum(sample_flops(ref_model.config, len(p.prompt) + len(c) - 1, 0, n=0)
                    for p in encoded for c in (p.chosen, p.rejected))
    del reference

    def heldout(model) -> dict:
        if not eval_problems:
            return {}
        rewards, lengths = greedy_scores(model, tok, task, eval_problems, cfg.device)
        s = summary(rewards, lengths)
        return {"heldout_accuracy": s["accuracy"], "heldout_tokens": s["completion_tokens"]}

    settings = DPOSettings(cfg.loss, cfg.beta, cfg.label_smoothing, cfg.nll, cfg.length_alpha)
    schedule = DPOSchedule(cfg.epochs, cfg.batch_size, cfg.grad_accum, cfg.lr, cfg.weight_decay, cfg.eval_every,
                           cfg.seed, cfg.device)
    pick = torch.tensor
    objective = DPOObjective([encoded[i] for i in train_idx], [encoded[i] for i in val_idx],
                             (ref_c[pick(train_idx)], ref_r[pick(train_idx)]),
                             (ref_c[pick(val_idx, dtype=torch.long)], ref_r[pick(val_idx, dtype=torch.long)]),
                             ckpt.config, tok.pad_id, settings, schedule, extra_eval=heldout)
    kept = {k: ckpt.meta[k] for k in ("task", "task_args", "corpus", "unique_tokens") if k in ckpt.meta}
    fmt = HFFormat(tok, kept | {"init": str(policy_dir), "objective": f"dpo-{cfg.loss}",
                                "pairs": str(Path(cfg.pairs).resolve())})
    result = train(policy, objective, objective.loop_config(), out, fmt, quiet=quiet)

    out_result = {
        "run_dir": str(out), "checkpoint": str(out / "checkpoint"), "loss": cfg.loss, "beta": cfg.beta,
        "pairs": len(pairs), "train_pairs": len(train_idx), "val_pairs": len(val_idx), "steps": result.steps,
        "train_flops": result.flops, "reference_flops": ref_flops, "flops": result.flops + ref_flops,
        "train_seconds": result.wall_seconds, "train_loss": result.train_loss,
        **{k: v for k, v in result.eval.items() if k.startswith("val_")},
    }
    out_result["train_dollars"] = price.dollars(0.0, 0.0, out_result["flops"], result.wall_seconds)
    pair_dollars = (meta or {}).get("dollars")
    out_result["pairs_dollars"] = pair_dollars
    out_result["dollars"] = out_result["train_dollars"] + (pair_dollars or 0.0)
    if eval_problems:
        rewards, lengths, texts = greedy_answers(policy, tok, task, eval_problems, cfg.device)
        b, a = summary(before["rewards"], before["lengths"]), summary(rewards, lengths)
        out_result |= {"task": task_name, "task_args": task_args, "eval_problems": len(eval_problems),
                       **{f"{k}_before": v for k, v in b.items() if k != "problems"},
                       **{f"{k}_after": v for k, v in a.items() if k != "problems"},
                       **paired_change(before["rewards"], rewards)}
        if (safety := greedy_safety(task, eval_problems, texts)) is not None:
            # the tuned policy's under task_accuracy's keys (what the study reads), the starting one's beside them
            out_result |= safety | {"safety_before": before["safety"]} | safety_change(before["safety"], safety)
        atomic_write_json(out / "after.json", {"rewards": rewards, "lengths": lengths})
    atomic_write_json(out / "result.json", out_result)
    atomic_write_text(out / "DONE", "")
    return out_result | {"reused": False}
