"""FLOP counts per token for training and inference (the one currency of every experiment).

Convention (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1 and Sec. 2.1):
a forward pass costs 2 FLOPs per matmul weight per token, plus attention, and training costs 3x the
forward (backward = 2x forward). Weights counted are every matmul weight *including the lm_head*
(vocab_size x dim, real compute whether tied or not); the embedding lookup and norm gains are not
matmuls and cost nothing. Attention: QK^T and attention-times-V each take 2 * d_attn FLOPs per
attended key per layer (d_attn = n_heads * head_dim). A causal sequence of length T attends to
(T + 1) / 2 keys on average, so training costs 6 * n_layers * T * d_attn per token up to rounding,
which is Kaplan's 6 * n_layer * n_ctx * d_attn (the PaLM 12 * L * H * Q * T form counts the masked
half of the attention matrix too; we do not, because SDPA's causal kernels skip it).
"""

from __future__ import annotations

from datawall.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: attention, MLP and the lm_head (not the embedding)."""
    attn = cfg.dim * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim + cfg.n_heads * cfg.head_dim * cfg.dim
    mlp = 3 * cfg.dim * cfg.ffn_dim
    return cfg.n_layers * (attn + mlp) + cfg.vocab_size * cfg.dim


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token at sequence length seq_len: 6 * N_matmul + 6 * n_layers * seq_len * d_attn."""
    return 6.0 * matmul_params(cfg) + 6.0 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim


def infer_flops_per_token(cfg: ModelConfig, context_len: int) -> float:
    """Forward FLOPs of one token attending to context_len positions (itself included).

    2 * N_matmul + 4 * n_layers * context_len * d_attn: QK^T and AV for each attended position. (This is
    Kaplan's 2N + 2 * n_layer * n_ctx * d_attn with n_ctx the *mean* causal context, i.e. half the keys.)
    """
    return 2.0 * matmul_params(cfg) + 4.0 * cfg.n_layers * context_len * cfg.n_heads * cfg.head_dim


def _span_flops(cfg: ModelConfig, first: int, last: int) -> float:
    """Sum of infer_flops_per_token over context lengths first..last (0 when last < first)."""
    count = max(0, last - first + 1)
    attended = (first + last) * count / 2
    return 2.0 * matmul_params(cfg) * count + 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * attended


def sample_flops(cfg: ModelConfig, prompt_len: int, new_tokens: int, n: int = 1) -> float:
    """Forward FLOPs to draw n completions of new_tokens tokens each from one shared prompt prefill.

    The prompt (prompt_len tokens, bos included) runs once; each completion then runs new_tokens - 1
    single-token steps (its first token comes from the prefill's logits).
    """
    return _span_flops(cfg, 1, prompt_len) + n * _span_flops(cfg, prompt_len + 1, prompt_len + new_tokens - 1)
