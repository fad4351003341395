"""Where an RL step's CPU time goes, datawall vs TRL: sampling (+ rewards) against the rest (forward, backward,
update), one run each with benchmarks/rl_step.py's setup and flags, process clocks around datawall's
TaskRollouts.rollout and TRL's GRPOTrainer._generate_and_score_completions.

It also prints the ceiling of any faster update: datawall's own count of the update's FLOPs (forward and backward
of the trained rows, `train_update_flops` in metrics.jsonl) at the fp32 matmul rate of one thread measured in the
same run (benchmarks/common.matmul_ceiling). No fp32 update of the same rows can take less, so TRL's step over
(datawall's sampling + that floor) is the most any update work could give this step.

Run: .venv/bin/python benchmarks/rl_step_split.py --model /work/shared-runs/baseline/checkpoint --steps 8
     .venv/bin/python benchmarks/rl_step_split.py --model random:1m --reward random --steps 5 --skip 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import rl_step  # noqa: E402
import torch  # noqa: E402
import trl.trainer.grpo_trainer as grpo_trainer  # noqa: E402
from common import matmul_ceiling  # noqa: E402

from datawall.rl import rollout  # noqa: E402
from datawall.tasks import get_task  # noqa: E402
from datawall.tasks.registry import parse_task_args  # noqa: E402

SAMPLING: dict[str, list[float]] = {"datawall": [], "trl": []}


def clocked(cls, name: str, side: str) -> None:
    """Wrap cls.name so that each call's process-CPU seconds are appended to SAMPLING[side]."""
    inner = getattr(cls, name)

    def wrapper(*a, **kw):
        start = time.process_time()
        out = inner(*a, **kw)
        SAMPLING[side].append(time.process_time() - start)
        return out

    setattr(cls, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="arith")
    ap.add_argument("--task-args", default="digits=2,min_digits=1,ops=mul")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=54)
    ap.add_argument("--loss", default="dapo")
    ap.add_argument("--reward", choices=["verifier", "random"], default="verifier")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=256)
    ap.add_argument("--first-problem", type=int, default=600)
    ap.add_argument("--chat", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clocked(rollout.TaskRollouts, "rollout", "datawall")
    clocked(grpo_trainer.GRPOTrainer, "_generate_and_score_completions", "trl")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model)
        if args.model.startswith("random:"):
            task = get_task(args.task, **parse_task_args(args.task_args))
            model = rl_step.random_checkpoint(args.model.split(":", 1)[1], task, tmp / "model")
        _, dw_cpu = rl_step.datawall_steps(model, args, tmp / "dw")
        _, trl_cpu = rl_step.trl_steps(model, args, tmp / "trl")
        rows = [json.loads(line) for line in (tmp / "dw" / "metrics.jsonl").read_text().splitlines()]
    update_flops = statistics.median(r["train_update_flops"] for r in rows[args.skip:] if "train_update_flops" in r)
    ceiling = matmul_ceiling()
    dw, tr = statistics.median(dw_cpu), statistics.median(trl_cpu)
    dw_s, tr_s = (statistics.median(SAMPLING[k][args.skip:]) for k in ("datawall", "trl"))
    print(f"{args.model} ({args.reward}), CPU s per step: datawall {dw:.3f} = sampling {dw_s:.3f} + rest "
          f"{dw - dw_s:.3f}; TRL {tr:.3f} = sampling {tr_s:.3f} + rest {tr - tr_s:.3f}; TRL / datawall {tr / dw:.2f}; "
          f"load {' '.join(open('/proc/loadavg').read().split()[:3])}")
    floor = update_flops / ceiling
    print(f"update: {update_flops:.3g} FLOPs a step; at the fp32 matmul ceiling of one thread ({ceiling / 1e9:.0f} "
          f"GFLOP/s) at least {floor:.3f} s (datawall's update {dw - dw_s:.3f} s, TRL's {tr - tr_s:.3f} s); "
          f"TRL / (datawall sampling + that floor) = {tr / (dw_s + floor):.2f}x, with free sampling "
          f"{tr / floor:.2f}x")


if __name__ == "__main__":
    main()
