"""n samples of one prompt with one shared prefill vs n independent generations (one call each).

The test-time-compute lever draws many samples per problem; the sampler prefills the prompt once and
decodes the n samples as one batch. This prints completion tokens/s for both ways on the same weights.

    .venv/bin/python benchmarks/shared_prefill.py [--preset 1m] [--n 64] [--prompt-len 192] [--new 32]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from common import machine

from datawall.data.tokenizer import Tokenizer
from datawall.model import Transformer, generate, model_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=192)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = Tokenizer.for_chars("0123456789+-*=#\n abc")
    model = Transformer(model_config(args.preset, vocab_size=tok.vocab_size, max_seq_len=256)).eval()
    prompt = "".join(random.Random(0).choice("0123456789+=") for _ in range(args.prompt_len))
    kw = dict(max_new_tokens=args.new, temperature=1.0, ignore_eos=True)

    generate(model, tok, [prompt], n=4, seed=0, **kw)  # warm-up
    t0 = time.perf_counter()
    shared = generate(model, tok, [prompt], n=args.n, seed=1, **kw)[0]
    t_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    independent = [generate(model, tok, [prompt], n=1, seed=100 + i, **kw)[0][0] for i in range(args.n)]
    t_indep = time.perf_counter() - t0

    tokens = sum(s.completion_tokens for s in shared)
    tokens_indep = sum(s.completion_tokens for s in independent)
    print(f"machine: {machine()}")
    print(f"preset {args.preset}, prompt {args.prompt_len + 1} tokens, {args.n} samples x {args.new} new tokens")
    print(f"shared prefill, one batch : {tokens / t_shared:>9,.0f} tok/s ({t_shared:.2f} s)")
    print(f"{args.n} independent calls    : {tokens_indep / t_indep:>9,.0f} tok/s ({t_indep:.2f} s)")
    print(f"ratio: {tokens / t_shared / (tokens_indep / t_indep):.1f}x")


if __name__ == "__main__":
    main()
