"""Preallocated key/value cache for incremental decoding, with optional left padding per row."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer in two tensors [n_layers, B, n_kv_heads, max_len, head_dim].

    All rows share one write position (`length`); a row whose prompt was left-padded records how many
    leading slots are padding in `pad`, and those slots are masked out of attention and shift the row's
    RoPE positions so its first real token sits at position 0.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.pad: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> KVCache:
        """An empty cache shaped for model (a datawall Transformer) on the model's device and dtype."""
        cfg = model.config
        p = next(model.parameters())
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, max_len, cfg.head_dim, p.device, p.dtype)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def set_padding(self, pad: torch.Tensor | list[int]) -> None:
        """Declare how many leading slots of each row are padding (call before the first forward)."""
        pad = torch.as_tensor(pad, dtype=torch.long, device=self.k.device)
        self.pad = pad if bool(pad.any()) else None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, n_kv_heads, T, head_dim] at the current position; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def positions(self, t: int) -> torch.Tensor:
        """RoPE positions [B, t] of the next t tokens of padded rows (a padding slot gets position 0)."""
        pos = torch.arange(self.length, self.length + t, device=self.k.device)
        if self.pad is None:
            return pos.expand(self.batch_size, t)
        return (pos[None, :] - self.pad[:, None]).clamp_(min=0)

    def attn_mask(self, t: int) -> torch.Tensor | None:
        """Boolean mask [B or 1, 1, t, length + t] (True = attend) for the next t tokens.

        None when plain causal attention is right: one token attending to everything, or a first unpadded chunk.
        """
        if self.pad is None and (t == 1 or self.length == 0):
            return None
        dev = self.k.device
        q = torch.arange(self.length, self.length + t, device=dev)[:, None]
        s = torch.arange(self.length + t, device=dev)[None, :]
        mask = s <= q
        if self.pad is not None:
            # a padding query attends to itself only, so its (unused) softmax row is never empty
            mask = (mask & (s >= self.pad[:, None, None])) | (s == q)
            return mask[:, None]
        return mask[None, None]

    def advance(self, t: int) -> None:
        """Move the write position past the t tokens just written by every layer."""
        self.length += t

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the given rows (LongTensor of row indices, repeats allowed) in that order, e.g. to drop
        finished rows or to give every sample its own copy of a prompt's cache."""
        used = slice(0, self.length)
        k = self.k.new_empty((self.k.shape[0], len(rows), *self.k.shape[2:]))
        v = torch.empty_like(k)
        k[:, :, :, used] = self.k[:, rows, :, used]
        v[:, :, :, used] = self.v[:, rows, :, used]
        self.k, self.v = k, v
        if self.pad is not None:
            self.pad = self.pad.index_select(0, rows)
