"""Learned reward models: a policy's Transformer backbone plus a linear head that outputs P(correct) per token.

An outcome reward model (ORM) is read at the completion's last token; a process reward model (PRM) at the last
token of each step (steps are the lines of a worked solution). Both are initialised from the policy checkpoint
they will judge (standard practice: the judge starts from the policy's representations), trained with BCE on
soft targets (datawall.train.objectives.reward, on the one training loop), and stored as a directory:

    reward_model.safetensors   backbone weights (datawall layout) + head.weight, head.bias
    reward_model.json          kind, model shape, base model, data stats, training metrics
    tokenizer.json ...         the policy's tokenizer
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import datawall
from datawall.atomic import atomic_directory
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model.config import ModelConfig
from datawall.model.flops import matmul_params
from datawall.model.transformer import Transformer

KINDS = ("orm", "prm")
WEIGHTS, INFO = "reward_model.safetensors", "reward_model.json"
FORMAT_VERSION = 1


def _hidden(backbone: Transformer, idx: torch.Tensor) -> torch.Tensor:
    """Final normed hidden states [B, T, dim] of the backbone (its forward without the lm_head, no cache)."""
    T = idx.shape[1]
    x = backbone.tok_emb(idx)
    rope = backbone.rope[:T]
    for block in backbone.blocks:
        x = block(x, rope, None, None)
    return backbone.norm(x)


class RewardModel(nn.Module):
    """Transformer backbone + linear head -> one logit of P(solution correct) per token position."""

    def __init__(self, backbone: Transformer, tokenizer: Tokenizer, kind: str, info: dict[str, Any] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise DatawallError(f"unknown reward-model kind {kind!r}; choose from {', '.join(KINDS)}")
        self.backbone, self.tokenizer, self.kind = backbone, tokenizer, kind
        self.info: dict[str, Any] = dict(info or {})
        self.head = nn.Linear(backbone.config.dim, 1)
        nn.init.zeros_(self.head.weight)  # start at P = 0.5 everywhere; the backbone is already trained
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, model_dir: str | Path, kind: str) -> RewardModel:
        """A fresh reward model whose backbone is a copy of the policy checkpoint at model_dir."""
        from datawall.model import load_checkpoint

        model_dir = Path(model_dir)
        if (model_dir / "checkpoint" / "config.json").exists() and not (model_dir / "config.json").exists():
            model_dir = model_dir / "checkpoint"  # a run directory
        ckpt = load_checkpoint(model_dir)
        return cls(ckpt.model, ckpt.tokenizer, kind, {"base_model": str(model_dir.resolve())})

    @property
    def config(self) -> ModelConfig:
        return self.backbone.config

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Reward logits [B, T] for token ids idx [B, T] (a position sees only the tokens up to it)."""
        return self.head(_hidden(self.backbone, idx)).squeeze(-1).float()

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """[bos] prompt steps... token ids, and the index of each step's last token (clipped to the context).

        Prompt and steps are encoded separately, as the sampler appends completion tokens to prompt tokens.
        An empty step list scores the prompt's last token.
        """
        ids = self.tokenizer.encode_prompt(prompt)
        ends = []
        for step in steps:
            ids += self.tokenizer.encode(step)
            ends.append(len(ids) - 1)
        if not steps:
            ends.append(len(ids) - 1)
        limit = self.config.max_seq_len
        # a sequence past the context is read at its last position that fits (the sampler never makes one)
        return ids[:limit], [min(e, limit - 1) for e in ends]

    def batch(self, seqs: Sequence[list[int]]) -> torch.Tensor:
        """Right-padded LongTensor [B, longest] (padding after every real token is never attended to)."""
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), self.tokenizer.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return out.to(self.device)

    @torch.no_grad()
    def probs(self, items: Sequence[tuple[list[int], list[int]]], batch_size: int) -> list[list[float]]:
        """P(correct) at the given positions of each encoded sequence, batched by length."""
        was_training = self.training
        self.eval()
        out: list[list[float] | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))  # similar lengths share a batch
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            probs = torch.sigmoid(self(self.batch([items[i][0] for i in chunk]))).cpu()
            for row, i in enumerate(chunk):
                out[i] = probs[row, items[i][1]].tolist()
        self.train(was_training)
        return out  # type: ignore[return-value]

    # -- scoring --------------------------------------------------------------------------------

    def step_scores(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """P(correct) after each step prefix (one forward pass: causal attention reads each prefix alone)."""
        if not steps:
            raise DatawallError("step_scores: give at least one step")
        return self.probs([self.encode(prompt, steps)], 1)[0]

    def flops(self, tokens: int) -> float:
        """Forward FLOPs of scoring one sequence of `tokens` tokens: 2 N_rm per token plus causal attention."""
        cfg = self.config
        n_rm = matmul_params(cfg) - cfg.vocab_size * cfg.dim + cfg.dim  # no lm_head; the scalar head instead
        return 2.0 * n_rm * tokens + 2.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * tokens * (tokens + 1)

    def num_params(self) -> int:
        """Parameters that take part in scoring (backbone without an untied lm_head, plus the head)."""
        unused = 0 if self.config.tie_embeddings else self.backbone.lm_head.weight.numel()
        return self.backbone.num_params(non_embedding=False) - unused + self.head.weight.numel() + 1

    # -- storage --------------------------------------------------------------------------------

    def save(self, directory: str | Path, extra: Callable[[Path], None] | None = None) -> Path:
        """Write the reward-model directory atomically (a previous reward model there is replaced).

        `extra(tmp)` may add files (a trainer's optimizer state) that are swapped in with the rest.
        """
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or (any(directory.iterdir())
                                                              and not (directory / INFO).is_file())):
            raise DatawallError(f"{directory}: exists and is not a reward-model directory; refusing to replace it")
        state = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
                 for k, v in self.state_dict().items() if not (k == "backbone.lm_head.weight"
                                                                and self.config.tie_embeddings)}
        info = {**self.info, "format_version": FORMAT_VERSION, "datawall_version": datawall.__version__,
                "kind": self.kind, "config": self.config.to_dict(), "params": self.num_params()}
        with atomic_directory(directory) as tmp:
            save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
            (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")
            self.tokenizer.save(tmp, model_max_length=self.config.max_seq_len)
            if extra is not None:
                extra(tmp)
        self.info = info
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> RewardModel:
        """Read a reward-model directory; one-line DatawallError naming the file if it is missing or foreign."""
        directory = Path(directory)
        if not directory.is_dir():
            raise DatawallError(f"{directory}: no such reward-model directory")
        info_path = directory / INFO
        if not info_path.is_file():
            hint = " (a policy checkpoint: train a reward model with `datawall reward train`)" if (
                directory / "config.json").is_file() else ""
            raise DatawallError(f"{info_path}: missing; not a reward-model directory{hint}")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("expected a JSON object")
            version = info.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ValueError(f"format_version {version!r} is not one this datawall reads ({FORMAT_VERSION})")
            config = ModelConfig(**info["config"])
            kind = info["kind"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, DatawallError) as e:
            raise DatawallError(f"{info_path}: not a valid reward-model description ({e})") from None
        tokenizer = Tokenizer.load(directory)
        rm = cls(Transformer(config), tokenizer, kind, info)
        path = directory / WEIGHTS
        try:
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise DatawallError(f"{path}: missing") from None
        except Exception as e:  # safetensors raises its own error types for truncated or malformed files
            raise DatawallError(f"{path}: cannot read safetensors ({str(e).splitlines()[0][:200]})") from None
        if config.tie_embeddings:
            tensors["backbone.lm_head.weight"] = tensors.get("backbone.tok_emb.weight", torch.empty(0))
        expected = rm.state_dict()
        for name, want in expected.items():
            got = tensors.get(name)
            if got is None or got.shape != want.shape:
                what = "missing" if got is None else f"shape {list(got.shape)}, expected {list(want.shape)}"
                raise DatawallError(f"{path}: tensor {name} {what}")
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise DatawallError(f"{path}: unexpected tensor(s) {', '.join(extra[:3])}")
        rm.load_state_dict({k: t.float() for k, t in tensors.items()})
        return rm.to(device).eval()
