"""Opt-in `torch.compile` of the sampler's decode step: one new token per row through a KV cache.

The eager step (`Transformer.forward` with a cache) runs ~20 ATen ops per layer, each paying dispatch and a pass over
memory; at 1m-5m sizes that overhead is a large part of a step. Here each block (norms, q/k/v, RoPE, the cache write,
attention, SwiGLU) is one Inductor graph: the elementwise work and attention over the cache become fused C++ loops
and only the projections stay library matmuls. The block's weights are arguments, so every layer runs the same
graph and compiling takes the same time at 5 layers or 30 (a whole-step graph took 20 minutes for SmolLM2's 30 on
this machine); rows and cache length are dynamic, so one compilation serves every later call of a model, while the
model's own dimensions are static (one graph per model shape). Rows with a shared prefix and rows without are two
graphs. Compiling takes tens of seconds (more on a loaded machine): opt-in, `generate(..., compile_step=True)`.

Logits equal the eager step's up to float rounding (fused kernels sum in another order; tests: 1e-5), so a seed
gives the same samples except where a uniform lands within rounding of a token's cumulative-probability edge.
"""

from __future__ import annotations

import torch
import torch._dynamo.config as dynamo_config
import torch.fx.experimental._config as fx_config
import torch.nn.functional as F
from torch import nn

from datawall.errors import DatawallError
from datawall.model.kv_cache import KVCache


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, 1, heads, head_dim] by angles cos, sin [B or 1, 1, 1, head_dim/2]."""
    re, im = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """decode_attention written as broadcast products and sums, which Inductor fuses into single passes over the
    cached keys and values: q [B, 1, H, hd] (scaled), k, v [B, KV, S, hd], bias [B * KV, 1, S] -> [B, 1, H * hd]."""
    B, _, H, hd = q.shape
    kv, S = k.shape[1], k.shape[2]
    q5 = q.view(B, kv, H // kv, 1, hd)
    scores = (q5 * k[:, :, None]).sum(-1) + bias.view(B, kv, 1, S)
    y = (scores.softmax(-1)[..., None] * v[:, :, None]).sum(-2)
    return y.reshape(B, 1, H * hd)


def _attend_prefix(
    q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """shared_prefix_attention as broadcast products and sums (see _attend): prefix pk, pv [P, KV, Lp, hd] shared
    by groups of n rows, bias [P * KV, 1, Lp] or None, then each row's own k, v [B, KV, S, hd]."""
    B, _, H, hd = q.shape
    P, kv, lp = pk.shape[:3]
    n, g = B // P, H // kv
    q6 = q.view(P, n, kv, g, 1, hd)
    sp = (q6 * pk[:, None, :, None]).sum(-1)  # [P, n, kv, g, Lp]
    if bias is not None:
        sp = sp + bias.view(P, 1, kv, 1, lp)
    ss = (q6 * k.view(P, n, kv, 1, -1, hd)).sum(-1)  # [P, n, kv, g, S]
    probs = torch.cat([sp, ss], dim=-1).softmax(-1)
    yp = (probs[..., :lp, None] * pv[:, None, :, None]).sum(-2)
    ys = (probs[..., lp:, None] * v.view(P, n, kv, 1, -1, hd)).sum(-2)
    return (yp + ys).reshape(B, 1, H * hd)


def block_step(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: torch.Tensor,
    bias: torch.Tensor,
    prefix_k: torch.Tensor | None,
    prefix_v: torch.Tensor | None,
    prefix_bias: torch.Tensor | None,
    weights: list[torch.Tensor],
    heads: tuple[int, int],
    eps: float,
) -> torch.Tensor:
    """One block of a decode step: x [B, 1, dim] -> x; writes the new token's key and value into the layer's cache
    [2, B, n_kv_heads, max_len, head_dim] at slot bias.shape[-1] - 1. cos, sin: RoPE angles [B or 1, 1, 1, hd/2].
    bias: additive [B * n_kv_heads, 1, slots] over the rows' own slots (zeros when none is padding). prefix_k/v:
    a shared prefix [P, n_kv_heads, Lp, head_dim] and its bias, or None. weights: attention norm, wqkv, wo, MLP
    norm, w13, w2. Weights are arguments, not a module, so that every layer of a model runs the same graph."""
    an, wqkv, wo, mn, w13, w2 = weights
    h, kv = heads
    B, hd = x.shape[0], cache.shape[-1]
    n = bias.shape[-1] - 1  # the slot this step writes (a shape, so that it stays symbolic when compiled)
    qkv = F.linear(F.rms_norm(x, an.shape, an, eps), wqkv).view(B, 1, h + 2 * kv, hd)
    scale = hd**-0.5
    q = _rope(qkv[:, :, :h], cos * scale, sin * scale)
    k = _rope(qkv[:, :, h : h + kv], cos, sin)
    # a slice, not an index: indexing by n would specialise the graph to one cache length
    cache[:, :, :, n : n + 1] = torch.stack((k, qkv[:, :, h + kv :])).transpose(2, 3)
    own_k, own_v = cache[0, :, :, : n + 1], cache[1, :, :, : n + 1]
    if prefix_k is None:
        y = _attend(q, own_k, own_v, bias)
    else:
        y = _attend_prefix(q, prefix_k, prefix_v, own_k, own_v, prefix_bias)
    x = x + F.linear(y, wo)
    gate, up = F.linear(F.rms_norm(x, mn.shape, mn, eps), w13).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w2)


def check_compilable(model: torch.nn.Module) -> None:
    """DatawallError unless model's linear layers are plain nn.Linear (an int8 copy is not compiled here)."""
    if type(model.lm_head) is not nn.Linear or any(type(b.attn.wqkv) is not nn.Linear for b in model.blocks):
        raise DatawallError("generate: compile_step takes fp32/bf16 models, not an int8 copy (sample it eagerly)")


def _dynamic(*dims: tuple[torch.Tensor | None, int]) -> None:
    """Mark these (tensor, dimension) pairs as varying between calls: the rows, the cache and prefix lengths. All
    else stays static (the weights' shapes), so that the generated loops know their sizes."""
    for t, d in dims:
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, d)


def blocks_step(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    caches: list[torch.Tensor],
    bias: torch.Tensor,
    prefixes: list[torch.Tensor] | None,
    prefix_bias: torch.Tensor | None,
    weights: list[list[torch.Tensor]],
    heads: tuple[int, int],
    eps: float,
) -> torch.Tensor:
    """block_step through consecutive layers: caches[i], prefixes[i] ([2, P, n_kv_heads, Lp, head_dim] or None)
    and weights[i] are layer i's."""
    for i, cache in enumerate(caches):
        pk, pv = (None, None) if prefixes is None else prefixes[i]
        x = block_step(x, cos, sin, cache, bias, pk, pv, prefix_bias, weights[i], heads, eps)
    return x


def layers_per_graph(n_layers: int) -> int:
    """How many consecutive layers one compiled graph runs: the largest divisor of n_layers up to 8, so that every
    call runs the same graph. A call costs ~0.1 ms of dynamo and wrapper overhead (one per layer cost 1m its gain)
    and compiling grows with the layers traced (SmolLM2's 30 in one graph took 20 minutes here)."""
    return max(d for d in range(1, min(n_layers, 8) + 1) if n_layers % d == 0)


_compiled: list = []  # torch.compile(blocks_step), made at the first use (importing dynamo takes a second)


def _weights(block: torch.nn.Module) -> list[torch.Tensor]:
    a, m = block.attn, block.mlp
    return [block.attn_norm.weight, a.wqkv.weight, a.wo.weight, block.mlp_norm.weight, m.w13.weight, m.w2.weight]


@torch.inference_mode()
def compiled_step(model: torch.nn.Module, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """model(tokens, cache, last_only=True) for one new token per row, the blocks through the compiled blocks_step
    (layers_per_graph at a time); the embedding, final norm and lm_head stay eager."""
    if cache.length == cache.prefix_len:
        # the first token after a shared prefix: one own slot, and dynamo specialises sizes of 1 (another graph)
        return model(tokens, cache, last_only=True)
    if not _compiled:
        _compiled.append(torch.compile(blocks_step))
    cfg = model.config
    model._check_cache_room(cache, 1)
    bias = cache.step_bias(cache.kv.dtype)
    angles = model.rope[cache.positions(1).clamp(max=cfg.max_seq_len - 1)]  # [B or 1, 1, head_dim/2, 2]
    cos, sin = angles[..., 0].unsqueeze(2), angles[..., 1].unsqueeze(2)
    x = model.tok_emb(tokens)
    caches = list(cache.kv.unbind(0))
    prefixes = None if cache.prefix is None else list(cache.prefix.unbind(0))
    _dynamic((x, 0), (cos, 0), (sin, 0), (bias, 0), (bias, 2), (cache.prefix_bias, 0), (cache.prefix_bias, 2))
    _dynamic(*[(c, d) for c in caches for d in (1, 3)], *[(p, d) for p in prefixes or () for d in (1, 3)])
    weights = [_weights(b) for b in model.blocks]
    k = layers_per_graph(len(caches))
    # Only the marked dimensions are dynamic. No automatic dynamic shapes: a second model's weights would fail the
    # first one's guards and be traced with symbolic sizes (generic loops, slower than eager); it gets its own
    # static graphs instead, two per model, within a raised recompile limit. No duck sizing: a cache length that
    # happens to equal another dimension (say head_dim) at the first call would be traced as that dimension.
    with dynamo_config.patch(automatic_dynamic_shapes=False, recompile_limit=64), \
            fx_config.patch(use_duck_shape=False):
        for i in range(0, len(caches), k):
            x = _compiled[0](x, cos, sin, caches[i : i + k], bias, None if prefixes is None else prefixes[i : i + k],
                             cache.prefix_bias, weights[i : i + k], (cfg.n_heads, cfg.n_kv_heads), cfg.norm_eps)
    cache.advance(1)
    return model._logits(model.norm(x)).float()
