"""Opt-in int8 sampling: a copy of a model whose linear layers are dynamically quantized (torch.ao, fbgemm).

Weights are int8 per output channel, activations are quantized per tensor at each call, and the int8 matmul
accumulates in int32 (torch's x86 engine, fbgemm's AVX2 kernels): 1.3-2x the fp32 matmul at SmolLM2's shapes on an
AVX2 CPU, nothing at 1m. Outputs are *not* the fp32 model's: each matmul moves by ~2% of its range, so samples and
greedy decodes differ (agreement measured on SmolLM2 in docs/benchmarks.md), and since an activation's scale is
taken over the whole batch a row's logits depend slightly on the other rows in it. The fp32 model is left as it
is; the copy is for sampling only (no training, no saving). torch.ao's eager quantization is deprecated upstream in
favour of torchao, which has no fast CPU int8 matmul on this machine; its warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from datawall.errors import DatawallError


def int8_copy(model: nn.Module) -> nn.Module:
    """A copy of model (a datawall Transformer on the CPU) with every nn.Linear dynamically quantized to int8."""
    if next(model.parameters()).device.type != "cpu":
        raise DatawallError("int8 sampling runs on the CPU only (fbgemm kernels); move the model to the CPU first")
    twin = copy.deepcopy(model).eval()
    if twin.config.tie_embeddings:  # the head gets its own (quantized) module; the embedding stays fp32
        twin.lm_head = nn.Linear(twin.config.dim, twin.config.vocab_size, bias=False)
        twin.lm_head.weight = nn.Parameter(twin.tok_emb.weight.detach().clone(), requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per layer
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig  # a scale per output row, not per matrix
        torch.ao.quantization.quantize_dynamic(twin, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    twin.requires_grad_(False)
    return twin


def is_quantized(model: nn.Module) -> bool:
    """Whether model is an int8 copy (its lm_head is not a plain nn.Linear)."""
    return type(model.lm_head) is not nn.Linear
