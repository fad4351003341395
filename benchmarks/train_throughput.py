"""Training throughput: datawall's Transformer vs transformers' LlamaForCausalLM vs a matmul ceiling.

Both models get the same shape, the same random batches, AdamW and cross-entropy; we time full optimizer
steps (forward, backward, step) after warm-up. Achieved FLOP/s uses datawall's FLOP accounting
(6·N per token plus attention), identical for both models. The ceiling is a large square matmul of the same
dtype on the same device, measured in the run; on a GPU its share is the model FLOPs utilisation (MFU) against
what the card really sustains (the datasheet's dense bf16 peak is printed beside it when known).

    .venv/bin/python benchmarks/train_throughput.py [--sizes 1m,5m] [--steps 20]
    python3 benchmarks/train_throughput.py --device cuda --dtype bf16 --sizes 25m --batch 64 --seq-len 512
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import machine, matmul_ceiling

from datawall.model import Transformer, model_config, train_flops_per_token


def hf_llama(cfg):
    """transformers' Llama with the same shape (eager attention would be unfair; use its default SDPA)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                         tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False)
    return LlamaForCausalLM(hf_cfg)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peaks from NVIDIA's datasheets (SXM)


def tokens_per_second(model, logits_of, vocab: int, batch: int, seq_len: int, steps: int, device: str = "cpu",
                      dtype: str = "fp32") -> float:
    """Time `steps` AdamW steps on random tokens after 3 warm-up steps (bf16: autocast, fp32 weights and
    optimizer, as mixed-precision training runs)."""
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    data = [torch.randint(0, vocab, (batch, seq_len + 1), generator=gen).to(device) for _ in range(4)]
    autocast = torch.autocast(torch.device(device).type, dtype=DTYPES[dtype], enabled=dtype != "fp32")

    def step(i: int) -> None:
        row = data[i % len(data)]
        with autocast:
            logits = logits_of(model, row[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), row[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for i in range(3):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    sync()
    return batch * seq_len * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,5m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="bf16: autocast mixed precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {machine()}")
    n = 8192 if args.device.startswith("cuda") else 2048
    ceiling = matmul_ceiling(n, device=args.device, dtype=DTYPES[args.dtype])
    print(f"matmul ceiling ({n}^3 {args.dtype} on {args.device}): {ceiling / 1e9:,.1f} GFLOP/s")
    if args.device.startswith("cuda") and args.dtype == "bf16":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        if peak:
            print(f"datasheet dense bf16 peak of {name}: {peak / 1e12:.0f} TFLOP/s (MFU against it: the %ceil "
                  f"columns x {ceiling / peak:.2f})")
    print(f"{'size':>5} {'params':>9} {'ours tok/s':>11} {'ours %ceil':>10} {'HF tok/s':>9} {'HF %ceil':>9} "
          f"{'ours/HF':>8}")
    for size in args.sizes.split(","):
        cfg = model_config(size, vocab_size=args.vocab, max_seq_len=args.seq_len)
        flops_tok = train_flops_per_token(cfg, args.seq_len)
        ours = Transformer(cfg)
        ours_tps = tokens_per_second(ours, lambda m, x: m(x), args.vocab, args.batch, args.seq_len, args.steps,
                                     args.device, args.dtype)
        hf = hf_llama(cfg)
        hf_tps = tokens_per_second(hf, lambda m, x: m(input_ids=x).logits, args.vocab, args.batch, args.seq_len,
                                   args.steps, args.device, args.dtype)
        print(f"{size:>5} {ours.num_params(non_embedding=False):>9,} {ours_tps:>11,.0f} "
              f"{ours_tps * flops_tok / ceiling:>10.1%} {hf_tps:>9,.0f} {hf_tps * flops_tok / ceiling:>9.1%} "
              f"{ours_tps / hf_tps:>7.2f}x")


if __name__ == "__main__":
    main()
