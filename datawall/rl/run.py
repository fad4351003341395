"""One RL run from a checkpoint to a finished run directory: evaluate, train with a GRPO-family loss on the one
loop, keep the best checkpoint by a validation split, evaluate again.

Run directory (resumable; a run with DONE is only read back):
    config.json     the starting checkpoint and the fully resolved RLConfig (a different run is refused)
    before.json     the starting policy: greedy accuracy per held-out problem (+ `safety`, the caveats of the same
                    completions, on a world with hazard cases), pass@k pool counts, validation
    metrics.jsonl   one line per optimizer step (reward, advantages' signal, entropy, KL, clipping, lengths,
                    FLOPs of sampling and of training, lr) and the validation accuracy at every evaluation
    checkpoint/     the latest weights + optimizer + loop state (+ the rollout being reused when iterations > 1)
    best/           the best validation evaluation's weights (+ selection.json)
    result.json     accuracy_before/after with intervals, the paired gain, pass@k before/after, steps, seconds
                    per step, FLOPs, best_step; on a world with hazard cases the final policy's SAFETY_KEYS (as
                    `task_accuracy` gives them: caveat recall, unsafe rate, per-problem outcomes), the starting
                    policy's as `safety_before`, and their paired `caveat_recall_change` (`unsafe_rate_change`)
    DONE            written last

Problems: the first `first_problem` train problems (the examples the model was trained on) are skipped, the next
`val_problems` are the validation split, and every prompt comes after them; accuracy is measured on the test
split, which no prompt or validation problem ever comes from.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

import datawall
from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.device import require_device
from datawall.errors import DatawallError
from datawall.rl.config import RLConfig
from datawall.rl.evaluate import accuracy, paired_change, pass_at_ks, sample_rewards, sample_texts
from datawall.rl.rewards import Reward, build_reward, check_verifier
from datawall.rl.rollout import PromptPool, TaskRollouts
from datawall.tasks import Task, get_task
from datawall.tasks.prompting import build_prompt, stop_sequences
from datawall.train.config import LoopConfig, OptimConfig
from datawall.train.evaluate import greedy_safety, prompt_ids, safety_change, solution_budget
from datawall.train.loop import train
from datawall.train.objectives.grpo import GRPOConfig, GRPOObjective, Rollout
from datawall.train.objectives.sequences import frozen_copy
from datawall.train.state import HFFormat

ROLLOUT_FILE = "rollout.pt"
STORE_FILES = ("job.json", "error.txt")


class RolloutFormat(HFFormat):
    """HF checkpoints that also carry the rollout being reused (iterations > 1), so a run killed between two
    updates of one rollout resumes on the very same samples."""

    def __init__(self, tokenizer, meta: dict, objective: GRPOObjective):
        super().__init__(tokenizer, meta)
        self.objective = objective

    def save(self, model, directory: Path, meta: dict, extra) -> None:
        rollout = self.objective.rollout if self.objective.cfg.iterations > 1 else None

        def write(tmp: Path) -> None:
            extra(tmp)
            if rollout is not None:
                with open(tmp / ROLLOUT_FILE, "wb") as f:
                    torch.save(rollout.state(), f)

        super().save(model, directory, meta, write)

    def load_into(self, model, directory: Path) -> None:
        super().load_into(model, directory)
        if (directory / ROLLOUT_FILE).is_file():
            self.objective.rollout = Rollout.from_state(torch.load(directory / ROLLOUT_FILE, weights_only=True))


def trained_examples(meta: dict, task: Task, tokenizer) -> int:
    """How many train problems the checkpoint was trained on (its U), when its datawall.json names this task."""
    from datawall.data import task_docs

    if meta.get("first_problem") is not None and meta.get("task") == task.name:
        return int(meta["first_problem"])  # an RL checkpoint: past its own prompts' start
    if meta.get("task") != task.name or not meta.get("unique_tokens"):
        return 0
    try:
        same = get_task(meta["task"], **meta.get("task_args", {})).settings == task.settings
    except DatawallError:
        return 0
    return len(task_docs(task, tokenizer, "train", unique_tokens=int(meta["unique_tokens"]))) if same else 0


def _open_run(out: Path, record: dict) -> None:
    """Refuse a directory that holds something else or a different run; write config.json for a new one."""
    path = out / "config.json"
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            raise DatawallError(f"{path}: not valid JSON; remove {out} or choose another --out") from None
        if existing.get("kind") != "rl" or {k: existing.get(k) for k in ("model", "rl")} != \
                {k: record[k] for k in ("model", "rl")}:
            raise DatawallError(f"{out} holds a different run (its config.json differs); choose another --out or "
                                "remove it")
        return
    # a run store's directory holds its job.json (and error.txt of a failed try) before the run starts
    if out.exists() and (not out.is_dir() or any(p.name not in STORE_FILES for p in out.iterdir())):
        raise DatawallError(f"--out {out}: exists and is not an RL run directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def _problems(task: Task, split: str, count: int, start: int = 0) -> list:
    """Up to `count` problems of `split` from `start` (all of a smaller split)."""
    size = task.size(split)
    if size is not None:
        count = min(count, max(0, size - start))
    return [task.problem(split, start + i) for i in range(count)]


def run_rl(model_dir: str | Path, cfg: RLConfig, out: str | Path, quiet: bool = False,
           reward: Reward | None = None) -> dict:
    """Run (or resume, or read back) RL from the checkpoint in model_dir into run directory `out`; return the
    result.json content. `reward` replaces the reward cfg.reward names (any function of a problem and its
    completions; see datawall.rl.rewards)."""
    from datawall.model import checkpoint_dir, load_checkpoint

    out = Path(out)
    model_dir = checkpoint_dir(model_dir).resolve()
    record = {"kind": "rl", "model": str(model_dir), "rl": cfg.identity(),
              "reward": reward.name if reward is not None else cfg.reward, "datawall_version": datawall.__version__}
    if (out / "DONE").exists() and (out / "result.json").exists():
        _open_run(out, record)
        return json.loads((out / "result.json").read_text())
    require_device(cfg.device)
    task = get_task(cfg.task, **cfg.task_args)
    check_verifier(task)  # evaluation always needs it, whatever the training reward
    reward = reward or build_reward(cfg.reward, task, cfg.extract, cfg.seed, cfg.device)
    try:
        ckpt = load_checkpoint(model_dir)
    except DatawallError as e:
        raise DatawallError(f"--model {model_dir}: cannot be loaded: {e}") from None
    model, tok = ckpt.model.to(cfg.device), ckpt.tokenizer
    first = cfg.first_problem if cfg.first_problem is not None else trained_examples(ckpt.meta, task, tok)
    size = task.size("train")
    # a small world keeps at least half of what is left past the first problems for prompts
    val = _problems(task, "train", cfg.val_problems if size is None else min(cfg.val_problems, (size - first) // 2),
                    first)
    pool = PromptPool(task, first + len(val), cfg.prompt_pool or None, cfg.seed)
    test = _problems(task, "test", cfg.eval_problems)
    if not test:
        raise DatawallError(f"{task.name}: the test split has no problems to measure accuracy on")
    passes = test[:cfg.pass_problems]
    curve = _problems(task, "test", cfg.curve_problems)

    def encode(problem) -> tuple[int, ...]:
        ids = prompt_ids(tok, build_prompt(task, problem, cfg.fewshot, chat=cfg.chat))
        return tuple(tok.with_bos(tok.encode(ids) if isinstance(ids, str) else ids))

    max_tokens = cfg.max_tokens or solution_budget(task, tok, val or test)
    stop = stop_sequences(task) or None
    _open_run(out, record)

    def greedy(problems) -> list[float]:
        return [r[0] for r in sample_rewards(model, tok, task, problems, encode, 1, max_tokens, 0.0, stop,
                                             cfg.extract, cfg.seed, cfg.device)]

    def greedy_test() -> tuple[list[float], dict | None]:
        """The held-out problems' greedy rewards, and the same completions graded for caveats (hazard worlds)."""
        texts = [t[0] for t in sample_texts(model, tok, test, encode, 1, max_tokens, 0.0, stop, cfg.seed,
                                            cfg.device)]
        return [task.verify(p, t, cfg.extract) for p, t in zip(test, texts, strict=True)], \
            greedy_safety(task, test, texts, cfg.extract)

    def pass_pool() -> list[list[float]]:
        # one seed for both pools: the sampler's randomness is a function of (seed, prompt, sample, step), so
        # unchanged weights draw the very same pool and a change in pass@k is the weights', not the dice's
        if not passes:
            return []
        return sample_rewards(model, tok, task, passes, encode, cfg.pass_samples, max_tokens, cfg.temperature,
                              stop, cfg.extract, hash_seed(cfg.seed, "pass@k pool"), cfg.device)

    before_path = out / "before.json"
    if before_path.is_file():
        before = json.loads(before_path.read_text())
        if task.has_hazards and "safety" not in before:  # written before runs graded caveats: the weights are still
            before["safety"] = greedy_test()[1]          # the starting ones here (a resume loads them in train)
            atomic_write_json(before_path, before)
    else:
        start = time.perf_counter()
        rewards, safety = greedy_test()
        before = {"greedy": rewards, "val": greedy(val) if val else [], "pool": pass_pool(),
                  "curve": greedy(curve) if curve else []}
        if safety is not None:
            before["safety"] = safety
        before["seconds"] = time.perf_counter() - start
        atomic_write_json(before_path, before)

    def evaluate(m) -> dict:
        metrics = {}
        if val:
            acc = float(sum(greedy(val)) / len(val))
            metrics |= {"val_accuracy": acc, "val_error": 1.0 - acc}
        if curve:
            metrics["test_accuracy"] = float(sum(greedy(curve)) / len(curve))
        if tracker is not None:
            metrics |= tracker(m)
        return metrics

    grpo = GRPOConfig(loss=cfg.loss, beta=cfg.beta, epsilon=cfg.epsilon,
                      epsilon_high=cfg.clip_high,
                      iterations=cfg.iterations, temperature=cfg.temperature, micro_batch=cfg.micro_batch)
    # the starting policy, before any resume loads (kept at beta 0 too when --track-kl measures the KL to it)
    reference = frozen_copy(model) if cfg.beta > 0 or cfg.track_kl else None
    tracker = None
    if cfg.track_kl:
        from datawall.rl.track import OveroptTracker

        tracker = OveroptTracker(task, tok, _problems(task, "test", cfg.track_kl), encode, reward, reference,
                                 cfg.group, max_tokens, cfg.temperature, stop, cfg.extract,
                                 hash_seed(cfg.seed, "track"), cfg.device, cfg.micro_batch)
        if "track" not in before:  # the start: KL 0 (the weights are still the starting ones here)
            before["track"] = tracker(model)
            atomic_write_json(before_path, before)
    source = TaskRollouts(task, tok, pool, reward, encode, cfg, max_tokens, stop, cfg.device)
    objective = GRPOObjective(source, grpo, max_tokens, evaluate if (val or curve or tracker) else None,
                              "val_error" if val else None, reference if cfg.beta > 0 else None)
    warmup = min(cfg.warmup_steps, cfg.steps - 1)  # a default longer than a short run: warm up all but its last
    optim = OptimConfig(lr=cfg.lr, min_lr_ratio=1.0, warmup_frac=(warmup + 0.5) / cfg.steps if warmup else 0.0,
                        schedule="constant", weight_decay=cfg.weight_decay,
                        beta1=0.9, beta2=0.99, grad_clip=cfg.grad_clip)
    loop = LoopConfig(steps=cfg.steps, optim=optim, eval_every=cfg.eval_every, checkpoint_every=cfg.eval_every,
                      log_every=1, keep_best=bool(val), device=cfg.device)
    meta = dict(ckpt.meta) | {"task": task.name, "task_args": task.settings.model_dump(mode="json"),
                              "first_problem": first, "rl": {"from": str(model_dir), "config": record["rl"]}}
    cpu0 = time.process_time()
    result = train(model, objective, loop, out, RolloutFormat(tok, meta, objective), quiet=quiet)
    cpu_seconds = time.process_time() - cpu0

    best_step = result.best_step
    if val and result.best_step is not None and result.eval.get("val_accuracy", 0.0) < _mean(before["val"]):
        # no evaluation beat the starting policy on the validation split: end on the starting weights
        model.load_state_dict(load_checkpoint(model_dir).model.state_dict())
        best_step = 0
    rewards, safety = greedy_test()
    after = {"greedy": rewards, "pool": pass_pool()}
    acc_before, acc_after = accuracy(before["greedy"]), accuracy(after["greedy"])
    change = paired_change(before["greedy"], after["greedy"])
    steps = result.steps
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    sample = sum(m.get("train_sample_flops", 0.0) for m in metrics)
    res = {
        "run_dir": str(out), "model": str(model_dir), "task": task.name, "task_args": task.settings.as_text(),
        "reward": record["reward"], "loss": cfg.loss,
        "accuracy_before": acc_before["accuracy"], "accuracy_before_ci": acc_before["ci"],
        "accuracy_after": acc_after["accuracy"], "accuracy_after_ci": acc_after["ci"],
        "accuracy_gain": change["gain"], "accuracy_gain_ci": change["ci"], "eval_problems": len(test),
        "pass_at_k_before": pass_at_ks(before["pool"], cfg.pass_ks) if passes else {},
        "pass_at_k_after": pass_at_ks(after["pool"], cfg.pass_ks) if passes else {},
        "pass_problems": len(passes), "pass_samples": cfg.pass_samples,
        "val_accuracy_before": _mean(before["val"]) if val else None,
        "val_accuracy_best": (result.eval.get("val_accuracy") if best_step else _mean(before["val"])) if val else None,
        "steps": steps, "best_step": best_step, "seconds_per_step": result.wall_seconds / max(1, steps),
        "train_seconds": result.wall_seconds, "cpu_seconds_this_process": cpu_seconds,
        "flops": result.flops, "sample_flops": sample, "train_flops": result.flops - sample,
        "first_problem": first, "val_problems": len(val), "max_tokens": max_tokens,
        "checkpoint": str(model_dir if best_step == 0 else out / ("best" if val else "checkpoint")),
        "device": cfg.device, "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if safety is not None:  # the final policy's, under task_accuracy's keys (what the study's safety_point reads)
        res |= safety | {"safety_before": before["safety"]} | safety_change(before["safety"], safety)
    atomic_write_json(out / "after.json", after)
    atomic_write_json(out / "result.json", res)
    atomic_write_text(out / "DONE", "")
    return res


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else float("nan")


def hash_seed(seed: int, name: str) -> int:
    """A sampling seed for one named pool of a run."""
    from datawall.tasks.splits import stable_seed

    return stable_seed("rl-pool", seed, name)
