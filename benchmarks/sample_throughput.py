"""Sampling throughput: datawall's KV-cache sampler vs transformers' generate() on the same weights.

Two workloads on random-weight models with a character tokenizer, every sample exactly 64 new tokens at
temperature 1 (eos ignored): (a) 64 different prompts x 1 sample, (b) one prompt x 64 samples.
Presets: datawall's size presets, and `smollm2`, SmolLM2-135M's exact shape (its 49152-token vocabulary, so the
same FLOPs per token; prompts still come from the char tokenizer, whose ids are a subset: real weights and a
real tokenizer would not change the speed).
--compile adds datawall with its decode step compiled (`generate(..., compile_step=True)`; the compilation is
timed apart, in the warm-up call) and --int8 datawall on an int8 copy of the model (`datawall.model.quantize`;
not the fp32 model's outputs: see benchmarks/int8_agreement.py). The headline ratio stays fp32 eager vs fp32.
--clock cpu times process CPU seconds instead of wall seconds: on a machine shared with other jobs that
ignores time spent waiting for a core (use it with --threads 1; idle OpenMP threads would count at 2; the C++
compiler that --compile runs is another process, so its time shows only in the wall-clock compile seconds).
Run: .venv/bin/python benchmarks/sample_throughput.py [--presets 1m,5m,smollm2] [--threads 2] [--repeats 3]
     [--clock cpu] [--compile] [--int8]
     python3 benchmarks/sample_throughput.py --device cuda --dtype bf16 --presets smollm2   (a GPU; wall clock)
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import tempfile
import time

import torch
from common import machine

from datawall.data.tokenizer import Tokenizer
from datawall.model import Transformer, generate, model_config, save_checkpoint
from datawall.model.quantize import int8_copy

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 +-*/=()#\n"
NEW_TOKENS = 64
# HuggingFaceTB/SmolLM2-135M's config.json
SMOLLM2 = dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536, rope_theta=100000.0,
               norm_eps=1e-5, tie_embeddings=True)


def best_times(fns: list, repeats: int, clock=time.perf_counter) -> list[float]:
    """Fastest of `repeats` timings of each function, interleaved (after one warm-up call each)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = clock()
            fn()
            best[i] = min(best[i], clock() - t)
    return best


def hf_inputs(tok: Tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids (bos first) and attention mask, as datawall builds them."""
    seqs = [[tok.bos_id, *tok.encode(p)] for p in prompts]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask


def run_preset(preset: str, tok: Tokenizer, repeats: int, clock, compiled: bool, int8: bool, device: str = "cpu",
               dtype: torch.dtype = torch.float32) -> list[dict]:
    """Tokens per second of each engine for both workloads (and the compile seconds of the compiled step), both
    models in `dtype` on `device`."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    if preset == "smollm2":
        cfg = model_config(SMOLLM2, vocab_size=SMOLLM2["vocab_size"], max_seq_len=256)
    else:
        cfg = model_config(preset, vocab_size=tok.vocab_size, max_seq_len=256)
    model = Transformer(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp + "/ckpt", model, tok, {"benchmark": "sample_throughput"})
        hf = LlamaForCausalLM.from_pretrained(tmp + "/ckpt").eval().to(device, dtype)
    model = model.to(device, dtype)
    q8 = int8_copy(model) if int8 else None

    def sync() -> None:  # a GPU runs ahead of Python: a call is done when its kernels are
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rng = random.Random(0)
    prompts = ["".join(rng.choice(ALPHABET[:36]) for _ in range(rng.randint(8, 24))) + "=" for _ in range(64)]
    workloads = {"a: 64 prompts x 1": (prompts, 1), "b: 1 prompt x 64": (prompts[:1], 64)}
    hf_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                 min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    rows = []
    for name, (batch, n) in workloads.items():
        ids, mask = hf_inputs(tok, batch)
        tokens = len(batch) * n * NEW_TOKENS

        def ours(m=model, batch=batch, n=n, tokens=tokens, **kw):
            out = generate(m, tok, batch, n=n, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=0,
                           ignore_eos=True, device=device, **kw)
            sync()
            assert sum(s.completion_tokens for o in out for s in o) == tokens

        def theirs(ids=ids, mask=mask, n=n):
            with torch.inference_mode():
                out = hf.generate(ids.to(device), attention_mask=mask.to(device), num_return_sequences=n, **hf_kw)
            sync()
            assert out.shape == (ids.shape[0] * n, ids.shape[1] + NEW_TOKENS)

        engines = {"datawall": ours, "transformers": theirs}
        row = {"preset": preset, "workload": name}
        if compiled:
            engines["compiled"] = functools.partial(ours, compile_step=True)
            start = time.perf_counter()
            engines["compiled"]()  # the compilation (one graph per cache kind, kept for the timed calls)
            row["compile_s"] = time.perf_counter() - start
        if q8 is not None:
            engines["int8"] = functools.partial(ours, m=q8)
        times = best_times(list(engines.values()), repeats, clock)
        row.update({engine: tokens / t for engine, t in zip(engines, times, strict=True)})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="1m,5m,smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    parser.add_argument("--int8", action="store_true", help="also time an int8 copy of the model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both engines there)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="both models' weights")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu times this process's CPU, not a GPU: use --clock wall with --device cuda")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    import transformers

    print(f"machine: {machine()} ({os.cpu_count()} logical cpus)")
    print(f"transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"{args.device}, {args.dtype}: {NEW_TOKENS} new tokens per sample, temperature 1.0, eos ignored, best of "
          f"{args.repeats} interleaved, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.1f} at start\n")
    tok = Tokenizer.for_chars(ALPHABET)
    start = time.perf_counter()
    extra = (["compiled"] if args.compile else []) + (["int8"] if args.int8 else [])
    head = f"{'preset':<9}{'workload':<20}{'datawall tok/s':>16}{'transformers tok/s':>20}{'ratio':>8}"
    head += "".join(f"{e + ' tok/s':>16}{'ratio':>8}" for e in extra) + ("  compile s" if args.compile else "")
    print(head)
    for preset in args.presets.split(","):
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        for r in run_preset(preset.strip(), tok, args.repeats, clock, args.compile, args.int8, args.device, dtype):
            line = f"{r['preset']:<9}{r['workload']:<20}{r['datawall']:>16,.0f}{r['transformers']:>20,.0f}"
            line += f"{r['datawall'] / r['transformers']:>7.2f}x"
            line += "".join(f"{r[e]:>16,.0f}{r[e] / r['transformers']:>7.2f}x" for e in extra)
            if args.compile:
                line += f"{r['compile_s']:>11.0f}"
            print(line, flush=True)
    print(f"\n(total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
