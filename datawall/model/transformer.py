"""Llama-compatible decoder: RMSNorm, RoPE attention (GQA), SwiGLU MLP, no biases, optional tied embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from datawall.model.config import ModelConfig
from datawall.model.kv_cache import KVCache
from datawall.model.ops import rms_norm, swiglu

HEAD_BLOCK = 1024  # vocabulary rows per block of the inference lm_head (see Transformer._logits)


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x) for a bias-free nn.Linear without the nn.Module call (its overhead shows in a decode step), or
    through the module when it is another kind (an int8 copy's quantized linear, see datawall.model.quantize)."""
    return F.linear(x, layer.weight) if type(layer) is nn.Linear else layer(x)


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Llama's rotary frequencies [head_dim // 2] (float32), rescaled as HF's linear or llama3 rope_scaling says."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        return inv_freq / factor
    # llama3: long wavelengths slowed by factor, short ones kept, a smooth blend between (Llama 3.1's recipe)
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def rope_table(head_dim: int, max_len: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """cos and sin of Llama's rotary angles as a float32 tensor [max_len, head_dim // 2, 2]."""
    inv_freq = rope_frequencies(head_dim, theta, scaling)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, heads, head_dim] whose head dims are interleaved pairs; rope [T or B,T, head_dim/2, 2]."""
    # One complex multiply is ~4x cheaper on CPU (forward and backward) than Llama's rotate_half
    # arithmetic; q and k weights are stored with interleaved pairs and permuted to HF's layout on export.
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    rc = torch.view_as_complex(rope.float()).unsqueeze(-2)
    return torch.view_as_real(xc * rc).flatten(-2).type_as(x)


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Multiply x [B, T, heads, head_dim] (interleaved pairs) by complex rotations [B or 1, T, heads, head_dim/2]."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Attention of one new token per row: q [B, 1, H, hd] (already scaled by hd**-0.5) over k, v [B, KV, S, hd]
    -> [B, 1, H * hd]. bias: additive [B * KV, 1, S] (KVCache.decode_bias) or None.
    """
    # two batched matmuls beat SDPA's flash kernel here (it tiles for long queries); GQA without copies:
    # each (row, kv head) is one batch entry whose H // KV query heads are the rows of a small matmul
    B, _, H, hd = q.shape
    kv, S = k.shape[1], k.shape[2]
    q3 = q.reshape(B * kv, H // kv, hd)
    kt = k.flatten(0, 1).transpose(1, 2)
    scores = torch.bmm(q3, kt) if bias is None else torch.baddbmm(bias, q3, kt)
    y = torch.bmm(scores.softmax(-1), v.reshape(B * kv, S, hd))
    return y.view(B, 1, H * hd)


def shared_prefix_attention(
    q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """decode_attention for rows in P groups of n that share a prefix: q [B = P * n, 1, H, hd] (scaled) over the
    group's prefix pk, pv [P, KV, Lp, hd] (additive bias [P * KV, 1, Lp] or None) then the row's own k, v."""
    # The prefix's keys are read once per group, in one [n * H/KV, hd] x [hd, Lp] matmul per (prefix, kv head)
    # instead of n row-sized ones; one softmax over both parts keeps the result exact.
    B, _, H, hd = q.shape
    P, kv, lp = pk.shape[:3]
    n, g = B // P, H // kv
    q5 = q.view(P, n, kv, g, hd)
    qp = q5.transpose(1, 2).reshape(P * kv, n * g, hd)
    pkt = pk.flatten(0, 1).transpose(1, 2)
    sp = torch.bmm(qp, pkt) if bias is None else torch.baddbmm(bias, qp, pkt)
    sp = sp.view(P, kv, n, g, lp).transpose(1, 2).reshape(B * kv, g, lp)
    ss = torch.bmm(q5.reshape(B * kv, g, hd), k.flatten(0, 1).transpose(1, 2))
    probs = torch.cat([sp, ss], dim=-1).softmax(-1)
    pp = probs[..., :lp].reshape(P, n, kv, g, lp).transpose(1, 2).reshape(P * kv, n * g, lp)
    yp = torch.bmm(pp, pv.flatten(0, 1)).view(P, kv, n, g, hd).transpose(1, 2)
    y = torch.bmm(probs[..., lp:], v.flatten(0, 1)).view(P, n, kv, g, hd) + yp
    return y.view(B, 1, H * hd)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (no bias)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused kernel, no autograd
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """Causal self-attention with one fused q/k/v projection; keys/values go through an optional cache."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        h, kv = self.n_heads, self.n_kv_heads
        if cache is not None:
            return self._cached(x, rope, cache, mask)
        # split (not slicing) so the backward pass is one cat instead of zero-filled buffers per slice
        qk, v = self.wqkv(x).view(B, T, h + 2 * kv, self.head_dim).split([h + kv, kv], dim=2)
        q, k = apply_rope(qk, rope).split([h, kv], dim=2)
        # SDPA takes strided [B, heads, T, head_dim] views; no .contiguous() copies needed
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kv)
        # SDPA's output is laid out [B, T, heads, head_dim] in memory, so this reshape is free
        return self.wo(y.transpose(1, 2).reshape(B, T, h * self.head_dim))

    def _cached(
        self, x: torch.Tensor, rot: torch.Tensor, cache: KVCache, mask: torch.Tensor | None,
        pack: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Inference through a cache; rot rotates q and k and leaves v as it is (Transformer.forward builds it),
        so that one complex multiply covers the whole projection and keys and values go to the cache in one copy;
        it also applies attention's 1/sqrt(head_dim) to q. mask: a decode bias (one token per row) or SDPA's
        boolean mask. pack: (indices of the real tokens in the flattened [B * T] batch, T) when x [1, N, dim]
        holds only the real tokens of a left-padded prefill; padding slots get zero keys and values (masked)."""
        B, T, _ = x.shape
        h, kv = self.n_heads, self.n_kv_heads
        qkv = rotate(linear(self.wqkv, x).view(B, T, h + 2 * kv, self.head_dim), rot)
        if pack is not None:
            idx, T = pack
            B = cache.batch_size
            qkv = qkv.new_zeros((B * T, h + 2 * kv, self.head_dim)).index_copy_(0, idx, qkv[0])
            qkv = qkv.view(B, T, h + 2 * kv, self.head_dim)
        k, v = cache.write(self.layer, qkv[:, :, h:])
        if T == 1:
            if cache.prefix is None:
                return linear(self.wo, decode_attention(qkv[:, :, :h], k, v, mask))
            pk, pv = cache.prefix[self.layer]
            y = shared_prefix_attention(qkv[:, :, :h], pk, pv, k, v, cache.prefix_bias)
            return linear(self.wo, y)
        q = qkv[:, :, :h].transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=1.0, enable_gqa=h != kv
        )
        y = y.transpose(1, 2).reshape(B, T, h * self.head_dim)
        if pack is not None:
            y = y.view(B * T, -1).index_select(0, pack[0])[None]
        return linear(self.wo, y)


class MLP(nn.Module):
    """SwiGLU feed-forward with the gate and up projections fused into one matmul."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)  # rows: gate (w1) then up (w3)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(swiglu(self.w13(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cache, mask)
        return x + self.mlp(self.mlp_norm(x))

    def cached(
        self, x: torch.Tensor, rot: torch.Tensor, cache: KVCache, mask: torch.Tensor | None,
        pack: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """forward through a cache, calling its sublayers' functions directly: a decode step is short enough that
        nn.Module call overhead shows (hooks registered on the sublayers do not run here). pack: see
        Attention._cached."""
        an, mn = self.attn_norm, self.mlp_norm
        x = x + self.attn._cached(F.rms_norm(x, an.weight.shape, an.weight, an.eps), rot, cache, mask, pack)
        h = F.rms_norm(x, mn.weight.shape, mn.weight, mn.eps)
        return x + linear(self.mlp.w2, swiglu(linear(self.mlp.w13, h)))


class Transformer(nn.Module):
    """Llama-style decoder-only language model; forward(idx) returns float32 logits [B, T, vocab]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.register_buffer(
            "rope", rope_table(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling),
            persistent=False)
        self.reset_parameters()

    @classmethod
    def from_state_dict(cls, config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
        """A model holding exactly these weights, built without initialising random ones first (a 1B model's
        init would take longer than reading its file)."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, assign=True, strict=True)
        if config.tie_embeddings:
            model.lm_head.weight = model.tok_emb.weight
        model.rope = rope_table(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling)
        return model

    def reset_parameters(self) -> None:
        """nanoGPT init: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2 n_layers)."""
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("attn.wo.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, vocab] (float32) for token ids idx [B, T]; with a cache, positions continue from it.

        last_only=True computes the logits of the last position only ([B, 1, vocab]), as sampling needs.
        """
        T = idx.shape[1]
        if cache is None:
            if T > self.config.max_seq_len:
                raise ValueError(f"sequence length {T} exceeds max_seq_len {self.config.max_seq_len}")
            rope, mask = self.rope[:T], None
        else:
            rope = self._cache_rotation(cache, T)
            mask = cache.decode_bias(self.tok_emb.weight.dtype) if T == 1 else cache.attn_mask(T)
        x = self.tok_emb(idx)
        pack = None
        if cache is not None and T > 1 and cache.pad is not None:
            # a left-padded prefill: the linear layers (most of its time) see the real tokens only, packed into
            # one row, and attention the padded layout; prompts of mixed lengths are often a third padding
            real = cache.real_slots(T)
            pack = (real, T)
            x = x.flatten(0, 1).index_select(0, real)[None]
            rope = rope.flatten(0, 1).index_select(0, real)[None]
        for block in self.blocks:
            x = block(x, rope, cache, mask) if cache is None else block.cached(x, rope, cache, mask, pack)
        if pack is not None:
            x = x.new_zeros((idx.shape[0] * T, x.shape[-1])).index_copy_(0, pack[0], x[0]).view(idx.shape[0], T, -1)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:]
        return self._logits(self.norm(x)).float()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """lm_head(x); at inference with a large vocabulary, in blocks of HEAD_BLOCK output rows written in place."""
        if type(self.lm_head) is not nn.Linear:  # an int8 copy (datawall.model.quantize)
            return self.lm_head(x)
        w = self.lm_head.weight
        rows = x.numel() // x.shape[-1]
        if torch.is_grad_enabled() or x.device.type != "cpu" or w.shape[0] < 2 * HEAD_BLOCK or rows < 8:
            return self.lm_head(x)
        # one [rows, dim] x [dim, 49152] GEMM runs at ~2/3 of the machine's fp32 matmul rate on CPU (its output
        # and weight stream through the cache together); blocks of 1024 vocabulary rows keep each block's output
        # in cache and run at the full rate (SmolLM2's head: 63 vs 83 ms at 64 rows), with bit-identical logits
        out = x.new_empty((*x.shape[:-1], w.shape[0]))
        flat, flat_out = x.reshape(rows, x.shape[-1]), out.view(rows, w.shape[0])
        for s in range(0, w.shape[0], HEAD_BLOCK):
            torch.mm(flat, w[s : s + HEAD_BLOCK].t(), out=flat_out[:, s : s + HEAD_BLOCK])
        return out

    def _cache_rotation(self, cache: KVCache, T: int) -> torch.Tensor:
        """Complex RoPE rotations [B or 1, T, n_heads + 2 n_kv_heads, head_dim/2] of the next T positions: q and k
        heads rotate (q's also scaled by 1/sqrt(head_dim)), v heads get 1 (an exact no-op), so attention rotates
        and scales its whole projection in one multiply."""
        cfg = self.config
        self._check_cache_room(cache, T)
        if cache.pad is None:
            angles = self.rope[None, cache.length : cache.length + T]
        else:
            # a padded row that ran past its context (a finished sample not yet dropped) reuses the last
            # position; its outputs are never read
            angles = self.rope[cache.positions(T).clamp_(max=cfg.max_seq_len - 1)]
        qk = cfg.n_heads + cfg.n_kv_heads
        rot = torch.ones((*angles.shape[:2], qk + cfg.n_kv_heads, cfg.head_dim // 2), dtype=torch.complex64,
                         device=angles.device)
        rot[:, :, :qk] = torch.view_as_complex(angles.float()).unsqueeze(2)
        rot[:, :, : cfg.n_heads] *= cfg.head_dim**-0.5
        return rot

    def _check_cache_room(self, cache: KVCache, T: int) -> None:
        """ValueError unless the cache can take T more tokens per row (and unpadded rows stay within the context)."""
        if cache.prefix is not None and T != 1:
            raise ValueError("a KV cache with a shared prefix takes one token per row at a time")
        if cache.length + T > cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions cannot take {T} more after {cache.length}")
        if cache.pad is None and cache.length + T > self.config.max_seq_len:
            raise ValueError(f"position {cache.length + T} exceeds max_seq_len {self.config.max_seq_len}")

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding excludes the token embedding and an untied lm_head (Kaplan et al.)."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for batch_size rows and up to max_len (default max_seq_len) positions."""
        return KVCache.for_model(self, batch_size, max_len or self.config.max_seq_len)
