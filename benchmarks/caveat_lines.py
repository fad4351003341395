"""What a model writes on the hazardous held-out problems: a caveat line at all (it knows when one is due), the right
one (caveat recall), a miscopied one, or none; and on the safe problems a spurious one. Greedy decoding of the first
K test problems, as `task_accuracy` decodes them, graded with datawall.rewards.rubric_task.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/caveat_lines.py RUN_DIR [RUN_DIR ...] [--problems 500] [--json]

RUN_DIR is a pretrain run directory, or any checkpoint directory whose datawall.json names its task (an rl run's
checkpoint/ or best/, a `prefer train` run's checkpoint/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from datawall.model import checkpoint_dir, load_checkpoint
from datawall.model.sampler import generate
from datawall.rewards.rubric_task import completion_flags
from datawall.tasks import get_task
from datawall.tasks.base import CAVEAT_MARK
from datawall.tasks.prompting import build_prompt, stop_sequences
from datawall.train.evaluate import solution_budget


def caveat_lines(run: Path, problems: int) -> dict:
    """Counts of caveat lines written on the hazardous and safe problems of one run's checkpoint."""
    ckpt = load_checkpoint(checkpoint_dir(run))
    config = run / "config.json"
    run_config = json.loads(config.read_text()).get("run") if config.is_file() else None
    meta = run_config["data"] if isinstance(run_config, dict) and "data" in run_config else ckpt.meta
    task = get_task(meta["task"], **meta["task_args"])
    items = task.problems("test", problems)
    outs = generate(ckpt.model, ckpt.tokenizer, [build_prompt(task, p, 0, 0, False) for p in items], n=1,
                    max_new_tokens=solution_budget(task, ckpt.tokenizer, items), temperature=0.0,
                    stop=stop_sequences(task, None) or None, return_logprobs=False)
    out = {"run": str(run), "problems": len(items), "hazardous": 0, "right": 0, "miscopied": 0, "none": 0,
           "spurious": 0, "correct": 0}
    for p, o in zip(items, outs, strict=True):
        text = o[0].text
        flags = completion_flags(task, p, text)
        wrote = any(line.strip().startswith(CAVEAT_MARK) for line in text.splitlines())
        out["correct"] += flags.correct
        if flags.hazardous:
            out["hazardous"] += 1
            out["right" if flags.caveat else "miscopied" if wrote else "none"] += 1
        else:
            out["spurious"] += wrote
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [caveat_lines(run, args.problems) for run in args.runs]
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['run']}: accuracy {r['correct']}/{r['problems']}; hazardous {r['hazardous']}: right caveat "
              f"{r['right']}, miscopied {r['miscopied']}, none {r['none']}; spurious on safe {r['spurious']}")


if __name__ == "__main__":
    main()
