"""Checkpoints as Hugging Face Llama directories (config.json, model.safetensors, tokenizer) + datawall.json.

Layout: `transformers.LlamaForCausalLM.from_pretrained(dir)` loads the directory and gives the same logits.
A tied model stores no `lm_head.weight` (transformers ties it from `tie_word_embeddings`). datawall.json is
optional on load, so any plain Llama directory with a datawall tokenizer loads (meta is then {}); a
datawall.json that is present must be valid. Weights of any float dtype load as float32; a tensor holding
NaN or inf is refused at load, naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import datawall
from datawall.atomic import atomic_directory, read_json_object
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model.config import ModelConfig
from datawall.model.transformer import Transformer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
# written by older transformers versions; harmless buffers, not weights
IGNORED_KEYS = ("rotary_emb.inv_freq",)


@dataclass
class Checkpoint:
    """What load_checkpoint returns."""

    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    meta: dict[str, Any] = field(default_factory=dict)


# --- weight layout -------------------------------------------------------------------------------


def to_hf_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q/k weights from interleaved rotary pairs (datawall's layout, and llama.cpp's in a GGUF) to HF's
    rotate_half halves."""
    return w.view(heads, -1, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)


def _from_hf_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of to_hf_rope."""
    return w.view(heads, 2, -1, w.shape[1]).transpose(1, 2).reshape(w.shape)


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face Llama names (contiguous fp32 CPU copies)."""
    cfg = model.config
    h, kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = block.attn.wqkv.weight.split([h * hd, kv * hd, kv * hd])
        gate, up = block.mlp.w13.weight.chunk(2)
        out |= {
            p + "input_layernorm.weight": block.attn_norm.weight,
            p + "self_attn.q_proj.weight": to_hf_rope(q, h),
            p + "self_attn.k_proj.weight": to_hf_rope(k, kv),
            p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": block.attn.wo.weight,
            p + "post_attention_layernorm.weight": block.mlp_norm.weight,
            p + "mlp.gate_proj.weight": gate,
            p + "mlp.up_proj.weight": up,
            p + "mlp.down_proj.weight": block.mlp.w2.weight,
        }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    return {k: t.detach().to("cpu", torch.float32).contiguous().clone() for k, t in out.items()}


def _datawall_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of hf_state_dict: HF names and layout to Transformer.state_dict() names."""
    out = {"tok_emb.weight": hf["model.embed_tokens.weight"], "norm.weight": hf["model.norm.weight"]}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        q = _from_hf_rope(hf[p + "self_attn.q_proj.weight"], cfg.n_heads)
        k = _from_hf_rope(hf[p + "self_attn.k_proj.weight"], cfg.n_kv_heads)
        b = f"blocks.{i}."
        out |= {
            b + "attn_norm.weight": hf[p + "input_layernorm.weight"],
            b + "attn.wqkv.weight": torch.cat([q, k, hf[p + "self_attn.v_proj.weight"]]),
            b + "attn.wo.weight": hf[p + "self_attn.o_proj.weight"],
            b + "mlp_norm.weight": hf[p + "post_attention_layernorm.weight"],
            b + "mlp.w13.weight": torch.cat([hf[p + "mlp.gate_proj.weight"], hf[p + "mlp.up_proj.weight"]]),
            b + "mlp.w2.weight": hf[p + "mlp.down_proj.weight"],
        }
    out["lm_head.weight"] = out["tok_emb.weight"] if cfg.tie_embeddings else hf["lm_head.weight"]
    return out


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for a model of this config."""
    d, hd = cfg.dim, cfg.head_dim
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (cfg.n_heads * hd, d),
            p + "self_attn.k_proj.weight": (cfg.n_kv_heads * hd, d),
            p + "self_attn.v_proj.weight": (cfg.n_kv_heads * hd, d),
            p + "self_attn.o_proj.weight": (d, cfg.n_heads * hd),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (cfg.ffn_dim, d),
            p + "mlp.up_proj.weight": (cfg.ffn_dim, d),
            p + "mlp.down_proj.weight": (d, cfg.ffn_dim),
        }
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    return shapes


# --- config files --------------------------------------------------------------------------------


def special_ids(tokenizer: Tokenizer) -> dict[str, Any]:
    """bos/eos/pad_token_id as HF config files write them; eos is one id or the list of every token that ends a
    turn (Llama 3)."""
    eos = tokenizer.eos_id if len(tokenizer.stop_ids) == 1 else list(tokenizer.stop_ids)
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": eos, "pad_token_id": tokenizer.pad_id}


def hf_config(cfg: ModelConfig, special: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
    """config.json contents for LlamaForCausalLM (readable by transformers 4.x and 5.x); special: special_ids()."""
    scaling = dict(cfg.rope_scaling or {})
    if scaling:
        scaling["rope_type"] = scaling.pop("type", scaling.get("rope_type"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers 4.x
        "rope_scaling": scaling or None,
        "rope_parameters": {"rope_type": "default", **scaling, "rope_theta": cfg.rope_theta},  # transformers 5.x
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        **special,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def generation_config(special: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json matching datawall's sampler defaults (plain sampling at temperature 1)."""
    return {
        **special,
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,  # transformers would otherwise apply its global default top_k=50
        "top_p": 1.0,
    }


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig from an HF Llama config.json dict; DatawallError naming `where` if it is not one we run."""
    if hf.get("model_type") != "llama":
        raise DatawallError(f"{where}: model_type is {hf.get('model_type')!r}, expected 'llama'")
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in hf]
    if missing:
        raise DatawallError(f"{where}: missing {', '.join(missing)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise DatawallError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise DatawallError(f"{where}: attention_bias/mlp_bias are not supported")
    # transformers 5 writes rope_parameters (theta and scaling in one dict), 4.x rope_theta and rope_scaling
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise DatawallError(f"{where}: rope_parameters/rope_scaling must be an object, got {rope!r:.60}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type != "default":
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "type", "partial_rotary_factor")}
        scaling["rope_type"] = rope_type  # ModelConfig refuses a type it does not compute (dynamic, yarn, ...)
    theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    heads = hf["num_attention_heads"]
    if isinstance(heads, int) and heads > 0 and hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise DatawallError(f"{where}: head_dim {hf['head_dim']} != hidden_size / num_attention_heads")
    try:
        return ModelConfig(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads,
            ffn_dim=hf["intermediate_size"],
            max_seq_len=hf.get("max_position_embeddings", 2048),
            rope_theta=float(theta),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            rope_scaling=scaling,
        )
    except (DatawallError, TypeError, ValueError) as e:
        raise DatawallError(f"{where}: {e}") from None


# --- save ----------------------------------------------------------------------------------------


def _looks_like_checkpoint(directory: Path) -> bool:
    return (directory / "config.json").is_file() or (directory / "datawall.json").is_file()


def save_checkpoint(
    directory: str | Path, model: Transformer, tokenizer: Tokenizer, meta: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write model + tokenizer + meta as an HF Llama directory, atomically replacing any previous checkpoint.

    `extra(tmp)` may add files (the trainer's optimizer state) that are swapped in with the rest.
    """
    directory = Path(directory)
    if directory.exists() and (
        not directory.is_dir() or (any(directory.iterdir()) and not _looks_like_checkpoint(directory))
    ):
        raise DatawallError(f"{directory}: exists and is not a checkpoint directory; refusing to replace it")
    cfg = model.config
    info = dict(meta or {})
    info |= {
        "format_version": FORMAT_VERSION,
        "datawall_version": datawall.__version__,
        "params": model.num_params(non_embedding=False),
        "params_non_embedding": model.num_params(non_embedding=True),
    }
    try:
        info_text = json.dumps(info, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise DatawallError(f"checkpoint meta is not JSON-serializable ({e})") from None

    with atomic_directory(directory) as tmp:
        save_file(hf_state_dict(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, special_ids(tokenizer)), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(special_ids(tokenizer)), indent=2)
                                                    + "\n")
        tokenizer.save(tmp, model_max_length=cfg.max_seq_len)
        (tmp / "datawall.json").write_text(info_text)
        if extra is not None:
            extra(tmp)
    return directory


# --- load ----------------------------------------------------------------------------------------


def _load_weights(directory: Path) -> tuple[ModelConfig, Transformer]:
    if not directory.is_dir():
        raise DatawallError(f"{directory}: not a checkpoint directory (does not exist or is not a directory)")
    cfg = config_from_hf(read_json_object(directory / "config.json"), str(directory / "config.json"))
    tensors, path = _read_tensors(directory)
    expected = expected_shapes(cfg)
    for name, shape in expected.items():
        if name not in tensors:
            raise DatawallError(f"{path}: missing tensor {name}")
        if tuple(tensors[name].shape) != shape:
            raise DatawallError(
                f"{path}: tensor {name} has shape {list(tensors[name].shape)}, config.json implies {list(shape)}"
            )
        if not tensors[name].is_floating_point():
            raise DatawallError(f"{path}: tensor {name} has non-float dtype {tensors[name].dtype}")
        # NaN weights give NaN logits everywhere. A sum is non-finite whenever an element is (and ~50x cheaper
        # than isfinite() over the tensor: 8 s of SmolLM2's load); an overflowing sum alone is not an error
        if not torch.isfinite(tensors[name].sum()) and (bad := int((~torch.isfinite(tensors[name])).sum())):
            raise DatawallError(f"{path}: tensor {name} holds {bad:,} non-finite value(s) (NaN or inf) of "
                                f"{tensors[name].numel():,}; the run that wrote it diverged")
    extra = [k for k in tensors if k not in expected and not k.endswith(IGNORED_KEYS) and k != "lm_head.weight"]
    if extra:
        raise DatawallError(f"{path}: unexpected tensor(s) {', '.join(sorted(extra)[:3])}")
    state = {k: t.float() for k, t in _datawall_state_dict(tensors, cfg).items()}
    return cfg, Transformer.from_state_dict(cfg, state).eval()


def _read_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Every tensor of model.safetensors, or of the shards a model.safetensors.index.json lists."""
    path, index = directory / WEIGHTS, directory / (WEIGHTS + ".index.json")
    if path.is_file():
        files = [path]
    elif index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise DatawallError(f"{index}: no weight_map")
        files = [directory / name for name in sorted(set(map(str, weight_map.values())))]
        path = index
    else:
        raise DatawallError(f"{path}: missing (nor a {index.name}: safetensors weights are needed)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors |= load_file(str(file))
        except Exception as e:  # safetensors raises its own error types for truncated or malformed files
            raise DatawallError(f"{file}: cannot read safetensors ({str(e).splitlines()[0][:200]})") from None
    return tensors, path


def checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, given it or a run directory holding checkpoint/ (whose config.json is the run's)."""
    path = Path(path)
    if not path.is_dir():
        raise DatawallError(f"{path}: no such model directory")
    if (path / "checkpoint" / "config.json").exists():
        return path / "checkpoint"
    return path


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Load a checkpoint directory; one-line DatawallError naming the file if it is missing, corrupt or foreign."""
    directory = Path(directory)
    cfg, model = _load_weights(directory)
    tokenizer = Tokenizer.load(directory)
    meta: dict[str, Any] = {}
    if (directory / "datawall.json").exists():
        meta = read_json_object(directory / "datawall.json")
        version = meta.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DatawallError(
                f"{directory / 'datawall.json'}: format_version {version!r} is newer than this datawall "
                f"reads ({FORMAT_VERSION}); upgrade datawall"
            )
    if tokenizer.vocab_size > cfg.vocab_size:
        raise DatawallError(
            f"{directory / 'tokenizer.json'}: tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{cfg.vocab_size}"
        )
    return Checkpoint(model=model, tokenizer=tokenizer, config=cfg, meta=meta)


def load_model(directory: str | Path) -> Transformer:
    """The Transformer stored in a checkpoint directory (weights only; the tokenizer is not read)."""
    return _load_weights(Path(directory))[1]
