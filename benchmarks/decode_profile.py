"""Where a decode step's time goes: datawall's cached forward vs transformers' on the same weights, per ATen op.

One decode step (one new token per row, `rows` rows, `cached` positions already in the cache) of a random-weight
model of a preset's shape (`smollm2`: SmolLM2-135M's, see sample_throughput.py), timed on the process CPU clock
(best of `repeats`) and profiled with torch.profiler (self CPU time per op, summed over `steps` steps). The
output head alone (the final norm's output times the 49152-row embedding for smollm2) is timed apart.
Run: .venv/bin/python benchmarks/decode_profile.py [--preset smollm2] [--rows 64] [--cached 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch
from common import machine
from sample_throughput import ALPHABET, SMOLLM2

from datawall.data.tokenizer import Tokenizer
from datawall.model import Transformer, model_config, save_checkpoint
from datawall.model.kv_cache import KVCache


def best(fn, repeats: int) -> float:
    """Fastest of `repeats` process-CPU timings of fn (after one warm-up call)."""
    fn()
    out = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out = min(out, time.process_time() - t)
    return out


def profile(fn, steps: int, top: int) -> list[tuple[str, float]]:
    """(op, share of self CPU time) of the `top` ops over `steps` calls of fn."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in ops)
    return [(k, t / total) for k, t in sorted(ops, key=lambda kv: -kv[1])[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smollm2")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cached", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import DynamicCache, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # past_key_values renamed after transformers 5.25
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    tok = Tokenizer.for_chars(ALPHABET)
    torch.manual_seed(0)
    if args.preset == "smollm2":
        cfg = model_config(SMOLLM2, vocab_size=SMOLLM2["vocab_size"], max_seq_len=256)
    else:
        cfg = model_config(args.preset, vocab_size=tok.vocab_size, max_seq_len=256)
    model = Transformer(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp + "/ckpt", model, tok, {"benchmark": "decode_profile"})
        hf = LlamaForCausalLM.from_pretrained(tmp + "/ckpt").eval()
    prompt = torch.randint(4, tok.vocab_size, (args.rows, args.cached))
    step = torch.randint(4, tok.vocab_size, (args.rows, 1))

    with torch.inference_mode():
        cache = KVCache.for_model(model, args.rows, args.cached + 1)
        model(prompt, cache, last_only=True)
        hf_cache = DynamicCache()
        hf(prompt, past_key_values=hf_cache, use_cache=True)

        def ours():
            cache.length = args.cached  # the same step again: overwrite slot `cached`
            model(step, cache, last_only=True)

        def theirs():
            extra = hf_cache.get_seq_length() - args.cached
            if extra:
                hf_cache.crop(-extra)  # the same step again
            hf(step, past_key_values=hf_cache, use_cache=True, logits_to_keep=1)

        hidden = torch.randn(args.rows, 1, cfg.dim)
        timings = {"datawall forward": best(ours, args.repeats), "transformers forward": best(theirs, args.repeats),
                   "datawall lm_head": best(lambda: model._logits(hidden), args.repeats),
                   "transformers lm_head": best(lambda: hf.lm_head(hidden), args.repeats)}
        print(f"{args.preset}: one decode step, {args.rows} rows, {args.cached} cached positions, "
              f"{args.threads} thread(s), process CPU clock, best of {args.repeats}")
        for name, t in timings.items():
            print(f"  {name:<22}{t * 1e3:8.1f} ms")
        for name, fn in (("datawall", ours), ("transformers", theirs)):
            print(f"{name} forward, self CPU time per op over {args.steps} steps:")
            for op, share in profile(fn, args.steps, args.top):
                print(f"  {op:<36}{share:6.1%}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
