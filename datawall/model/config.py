"""Model shape: the ModelConfig dataclass and the named size presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from datawall.errors import DatawallError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-style decoder (head_dim = dim // n_heads)."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # None, or HF's rope_scaling dict with rope_type "linear" (factor) or "llama3" (factor, low_freq_factor,
    # high_freq_factor, original_max_position_embeddings), as Llama 3.1/3.2 checkpoints carry it
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DatawallError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise DatawallError(f"model config: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise DatawallError(f"model config: head_dim {self.dim // self.n_heads} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise DatawallError(
                f"model config: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if self.rope_scaling is not None:
            check_rope_scaling(self.rope_scaling)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serializable)."""
        return asdict(self)


ROPE_SCALING_KEYS = {"linear": ("factor",),
                     "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def check_rope_scaling(scaling: dict[str, Any]) -> None:
    """DatawallError unless scaling is a rope_scaling dict this model computes (linear or llama3, numbers > 0)."""
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if kind not in ROPE_SCALING_KEYS:
        raise DatawallError(f"model config: rope scaling {kind!r} is not supported (only "
                            f"{', '.join(ROPE_SCALING_KEYS)}, or none)")
    for key in ROPE_SCALING_KEYS[kind]:
        value = scaling.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise DatawallError(f"model config: {kind} rope scaling needs {key} > 0, got {value!r}")
    if kind == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise DatawallError("model config: llama3 rope scaling needs high_freq_factor > low_freq_factor")


def swiglu_hidden(dim: int, multiple_of: int = 32) -> int:
    """Llama's SwiGLU width: 8/3 * dim rounded up to a multiple of multiple_of."""
    hidden = int(8 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _preset(dim: int, n_layers: int, head_dim: int, ffn_dim: int | None = None) -> dict[str, int]:
    n_heads = dim // head_dim
    return dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads, ffn_dim=ffn_dim or swiglu_hidden(dim))


# Named by non-embedding parameters (see Transformer.num_params): 107k, 304k, 1.01M, 4.82M, 25.3M.
# head_dim 32 for the two small ones (enough heads to matter), 64 above (bigger, faster matmuls).
PRESETS: dict[str, dict[str, int]] = {
    "100k": _preset(dim=64, n_layers=2, head_dim=32),
    # a step between 100k and 1m at under a third of 1m's cost (a 7/3 x dim MLP keeps it at 300k)
    "300k": _preset(dim=96, n_layers=3, head_dim=32, ffn_dim=224),
    "1m": _preset(dim=128, n_layers=5, head_dim=32),
    "5m": _preset(dim=256, n_layers=6, head_dim=64),
    "25m": _preset(dim=512, n_layers=8, head_dim=64),
}


def model_config(
    preset: str | dict[str, Any], vocab_size: int, max_seq_len: int, **overrides: Any
) -> ModelConfig:
    """ModelConfig from a preset name (or a dict of shape fields), a vocabulary size and a context length."""
    if isinstance(preset, str):
        key = preset.lower()
        if key not in PRESETS:
            raise DatawallError(f"unknown model preset {preset!r}; presets: {', '.join(PRESETS)}")
        shape: dict[str, Any] = dict(PRESETS[key])
    elif isinstance(preset, dict):
        shape = dict(preset)
    else:
        raise DatawallError(f"model preset must be a name or a dict, got {type(preset).__name__}")
    shape.update(vocab_size=vocab_size, max_seq_len=max_seq_len)
    shape.update(overrides)
    if "n_kv_heads" not in shape and "n_heads" in shape:
        shape["n_kv_heads"] = shape["n_heads"]
    if "ffn_dim" not in shape and "dim" in shape:
        shape["ffn_dim"] = swiglu_hidden(shape["dim"])
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(shape) - known)
    if unknown:
        raise DatawallError(f"model config: unknown field(s) {', '.join(unknown)}; fields: {', '.join(known)}")
    missing = [name for name in ("dim", "n_layers", "n_heads") if name not in shape]
    if missing:
        raise DatawallError(f"model config: missing field(s) {', '.join(missing)}")
    return ModelConfig(**shape)
