"""Seconds per RL optimizer step: `datawall rl` (datawall.rl.run_rl) vs TRL's GRPOTrainer, side by side.

Both train the same checkpoint (TRL loads it through transformers' AutoModelForCausalLM) on the same task's
train prompts with the same P prompts x G completions per step, the same max completion length, temperature 1,
the same loss type (dapo unless --loss), clip-higher 0.2/0.28, beta 0, one update per rollout, AdamW, fp32, CPU,
one torch thread each; TRL without gradient checkpointing (its default turns it on, trading ~20% more compute
for memory), datawall without dynamic sampling (so both sample exactly P x G completions a step). The runs
alternate (datawall, TRL, datawall, TRL, ...) so that a change in the machine's load hits both; each run's
first --skip steps are warm-up and not counted. A step is timed from the end of the previous optimizer step to
the end of this one (sampling, rewards, forward, backward, update): for datawall the loop's own step clock (and
the process clock when it logs the step), for TRL a TrainerCallback's on_step_end. Medians over the counted
steps. Wall and process-CPU seconds are both reported; CPU seconds are the fairer number on a shared machine
(single thread each).

Models: a checkpoint directory (e.g. the quick study's 100k baseline), or `random:SIZE` for a random-weight
datawall preset (1m, 5m) with the task's character tokenizer: its completions run to --max-tokens in both
frameworks (a random model rarely draws eos), so each step does the same work in each.

Rewards: the task's verifier, or `--reward random` (datawall's control: a seeded coin per completion, the same
function in both). A random model is never right, so under the verifier every advantage is 0 and datawall,
which leaves rows with advantage 0 out of the forward pass (beta 0), would skip the update altogether while
TRL still runs it; random:SIZE therefore defaults to the coin, which gives every group an update. On a trained
checkpoint the verifier's all-equal groups are real, and skipping them is part of datawall's speed.

Run: .venv/bin/python benchmarks/rl_step.py --model /work/shared-runs/baseline/checkpoint --steps 12
     .venv/bin/python benchmarks/rl_step.py --model random:1m --steps 8
     .venv/bin/python benchmarks/rl_step.py --model /work/shared-runs/smollm2 --task rg:gsm_symbolic --chat \
        --reward random --prompts 2 --group 4 --max-tokens 64 --steps 4 --skip 1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from common import machine  # noqa: E402

from datawall.data.tokenizer import Tokenizer  # noqa: E402
from datawall.model import Transformer, model_config, save_checkpoint  # noqa: E402
from datawall.rl import RLConfig, run_rl  # noqa: E402
from datawall.rl.rewards import random_reward  # noqa: E402
from datawall.tasks import get_task  # noqa: E402
from datawall.tasks.registry import parse_task_args  # noqa: E402


def random_checkpoint(size: str, task, directory: Path) -> Path:
    """A random-weight datawall preset over the task's characters, saved as an HF Llama directory."""
    torch.manual_seed(0)
    tok = Tokenizer.for_chars(task.alphabet)
    save_checkpoint(directory, Transformer(model_config(size, vocab_size=tok.vocab_size, max_seq_len=256)), tok)
    return directory


def datawall_steps(model: Path, args, out: Path) -> tuple[list[float], list[float]]:
    """Per-step wall seconds of one `datawall rl` run (the loop's own clock) and per-step CPU seconds (the process
    clock read each time the loop logs a step's metrics line, which it does right after the optimizer step)."""
    import datawall.train.loop as loop

    cfg = RLConfig(task=args.task, task_args=parse_task_args(args.task_args), steps=args.steps,
                   prompts_per_step=args.prompts, group=args.group, loss=args.loss, max_tokens=args.max_tokens,
                   lr=1e-5, warmup_steps=0, eval_every=args.steps, val_problems=0, eval_problems=1,
                   dynamic_sampling=False, prompt_pool=0,  # TRL's prompts: the same train problems, in order
                   pass_problems=0, micro_batch=args.micro_batch, first_problem=args.first_problem, chat=args.chat,
                   reward=args.reward)
    marks = [time.process_time()]
    logged = loop.append_jsonl

    def mark(path, obj):
        marks.append(time.process_time())
        logged(path, obj)

    loop.append_jsonl = mark
    try:
        run_rl(model, cfg, out, quiet=True)
    finally:
        loop.append_jsonl = logged
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = [0.0] + [r["wall_seconds"] for r in rows]
    wall = [b - a for a, b in zip(clock, clock[1:], strict=False)]
    cpu = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return wall[args.skip:], cpu[max(1, args.skip):]  # the first step's CPU includes the run's set-up


def trl_steps(model: Path, args, out: Path) -> tuple[list[float], list[float]]:
    """Per-step wall and CPU seconds of TRL's GRPOTrainer on the same checkpoint and prompts."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task = get_task(args.task, **parse_task_args(args.task_args))
    n = args.prompts * args.steps
    problems = [task.problem("train", args.first_problem + i) for i in range(n)]
    if args.chat:
        prompts = [[{"role": "user", "content": p.prompt}] for p in problems]
    else:
        prompts = [p.prompt for p in problems]
    data = Dataset.from_dict({"prompt": prompts, "index": list(range(n))})

    coin = random_reward(0).fn  # datawall's control reward (RLConfig's seed 0): the same coin per completion

    def reward(prompts, completions, index, **kw):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        if args.reward == "random":
            return [coin(problems[i], [t])[0] for i, t in zip(index, texts, strict=True)]
        return [task.verify(problems[i], t) for i, t in zip(index, texts, strict=True)]

    wall, cpu = [], []

    class Clock(TrainerCallback):
        def __init__(self):
            self.last = None

        def on_step_end(self, *a, **kw):
            now = (time.perf_counter(), time.process_time())
            if self.last is not None:
                wall.append(now[0] - self.last[0])
                cpu.append(now[1] - self.last[1])
            self.last = now

        def on_train_begin(self, *a, **kw):
            self.last = (time.perf_counter(), time.process_time())

    config = GRPOConfig(output_dir=str(out), per_device_train_batch_size=args.prompts * args.group,
                        num_generations=args.group, max_completion_length=args.max_tokens, max_steps=args.steps,
                        learning_rate=1e-5, loss_type=args.loss, beta=0.0, epsilon=0.2, epsilon_high=0.28,
                        temperature=1.0, top_k=0, top_p=1.0, use_cpu=True, bf16=False, logging_steps=10**6,
                        save_strategy="no", report_to=[], seed=0, disable_tqdm=True, shuffle_dataset=False,
                        lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0,
                        gradient_checkpointing=False)  # TRL turns it on by default: ~20% slower, to save memory
    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    trainer = GRPOTrainer(model=hf, reward_funcs=reward, args=config, train_dataset=data, processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    return wall[args.skip:], cpu[args.skip:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory, or random:SIZE (1m, 5m, ...)")
    ap.add_argument("--task", default="arith")
    ap.add_argument("--task-args", default="digits=2,min_digits=1,ops=mul")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=54)
    ap.add_argument("--loss", default="dapo")
    ap.add_argument("--reward", choices=["verifier", "random"], default=None,
                    help="verifier (default for a checkpoint) or random (a seeded coin per completion, in both; "
                         "default for random:SIZE, whose verifier rewards are all 0)")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps per run not counted")
    ap.add_argument("--rounds", type=int, default=2, help="datawall/TRL run pairs, alternating")
    ap.add_argument("--micro-batch", type=int, default=256, help="datawall's completions per forward pass")
    ap.add_argument("--first-problem", type=int, default=600)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    if args.reward is None:
        args.reward = "random" if args.model.startswith("random:") else "verifier"
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model)
        if args.model.startswith("random:"):
            task = get_task(args.task, **parse_task_args(args.task_args))
            model = random_checkpoint(args.model.split(":", 1)[1], task, tmp / "model")
        dw_wall, dw_cpu, trl_wall, trl_cpu = [], [], [], []
        for r in range(args.rounds):
            steps, cpu = datawall_steps(model, args, tmp / f"dw{r}")
            dw_wall += steps
            dw_cpu += cpu
            w, c = trl_steps(model, args, tmp / f"trl{r}")
            trl_wall += w
            trl_cpu += c
            print(f"round {r}: datawall {statistics.median(steps):.3f} s/step, TRL {statistics.median(w):.3f} "
                  f"s/step (wall, median)", flush=True)
    result = {
        "model": args.model, "task": args.task, "task_args": args.task_args, "prompts": args.prompts,
        "group": args.group, "max_tokens": args.max_tokens, "loss": args.loss, "reward": args.reward,
        "steps_counted": len(dw_wall),
        "datawall_wall_s_per_step": statistics.median(dw_wall), "trl_wall_s_per_step": statistics.median(trl_wall),
        "datawall_cpu_s_per_step": statistics.median(dw_cpu), "trl_cpu_s_per_step": statistics.median(trl_cpu),
        "machine": machine(), "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    result["speedup_wall"] = result["trl_wall_s_per_step"] / result["datawall_wall_s_per_step"]
    result["speedup_cpu"] = result["trl_cpu_s_per_step"] / result["datawall_cpu_s_per_step"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
