"""Sampling throughput: datawall's KV-cache sampler vs transformers' generate() on the same weights.

Two workloads on random-weight models with a character tokenizer, every sample exactly 64 new tokens at
temperature 1 (eos ignored): (a) 64 different prompts x 1 sample, (b) one prompt x 64 samples.
Presets: datawall's size presets, and `smollm2`, SmolLM2-135M's exact shape (its 49152-token vocabulary, so the
same FLOPs per token; prompts still come from the char tokenizer, whose ids are a subset: real weights and a
real tokenizer would not change the speed).
--clock cpu times process CPU seconds instead of wall seconds: on a machine shared with other jobs that
ignores time spent waiting for a core (use it with --threads 1; idle OpenMP threads would count at 2).
Run: .venv/bin/python benchmarks/sample_throughput.py [--presets 1m,5m,smollm2] [--threads 2] [--repeats 3]
     [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time

import torch
from common import machine

from datawall.data.tokenizer import Tokenizer
from datawall.model import Transformer, generate, model_config, save_checkpoint

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


def run_preset(preset: str, tok: Tokenizer, repeats: int, clock) -> list[tuple[str, str, float, float]]:
    """(preset, workload, datawall tok/s, transformers tok/s) for both workloads."""
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
        hf = LlamaForCausalLM.from_pretrained(tmp + "/ckpt").eval()

    rng = random.Random(0)
    prompts = ["".join(rng.choice(ALPHABET[:36]) for _ in range(rng.randint(8, 24))) + "=" for _ in range(64)]
    workloads = {"a: 64 prompts x 1": (prompts, 1), "b: 1 prompt x 64": (prompts[:1], 64)}
    hf_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                 min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    rows = []
    for name, (batch, n) in workloads.items():
        ids, mask = hf_inputs(tok, batch)
        tokens = len(batch) * n * NEW_TOKENS

        def ours(batch=batch, n=n, tokens=tokens):
            out = generate(model, tok, batch, n=n, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=0,
                           ignore_eos=True)
            assert sum(s.completion_tokens for o in out for s in o) == tokens

        def theirs(ids=ids, mask=mask, n=n):
            with torch.inference_mode():
                out = hf.generate(ids, attention_mask=mask, num_return_sequences=n, **hf_kw)
            assert out.shape == (ids.shape[0] * n, ids.shape[1] + NEW_TOKENS)

        t_ours, t_hf = best_times([ours, theirs], repeats, clock)
        rows.append((preset, name, tokens / t_ours, tokens / t_hf))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="1m,5m,smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    import transformers

    print(f"machine: {machine()} ({os.cpu_count()} logical cpus)")
    print(f"transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"{NEW_TOKENS} new tokens per sample, temperature 1.0, eos ignored, best of {args.repeats} interleaved, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.1f} at start\n")
    tok = Tokenizer.for_chars(ALPHABET)
    start = time.perf_counter()
    print(f"{'preset':<9}{'workload':<20}{'datawall tok/s':>16}{'transformers tok/s':>20}{'ratio':>8}")
    for preset in args.presets.split(","):
        for p, name, ours, theirs in run_preset(preset.strip(), tok, args.repeats, clock):
            print(f"{p:<9}{name:<20}{ours:>16,.0f}{theirs:>20,.0f}{ours / theirs:>7.2f}x")
    print(f"\n(total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
