"""Llama-compatible decoder, KV-cache sampler and Hugging Face-format checkpoint I/O."""

from datawall.model.checkpoint import Checkpoint, checkpoint_dir, load_checkpoint, load_model, save_checkpoint
from datawall.model.config import PRESETS, ModelConfig, model_config
from datawall.model.flops import infer_flops_per_token, sample_flops, train_flops_per_token
from datawall.model.kv_cache import KVCache
from datawall.model.sampler import Sample, generate
from datawall.model.transformer import Transformer

__all__ = [
    "PRESETS",
    "Checkpoint",
    "KVCache",
    "ModelConfig",
    "Sample",
    "Transformer",
    "generate",
    "infer_flops_per_token",
    "checkpoint_dir",
    "load_checkpoint",
    "load_model",
    "model_config",
    "sample_flops",
    "save_checkpoint",
    "train_flops_per_token",
]
