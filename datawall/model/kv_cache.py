"""Preallocated key/value cache for incremental decoding, with optional left padding per row."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer in one tensor [n_layers, 2, B, n_kv_heads, max_len, head_dim].

    All rows share one write position (`length`); a row whose prompt was left-padded records how many
    leading slots are padding in `pad`, and those slots are masked out of attention and shift the row's
    RoPE positions so its first real token sits at position 0. Keys and values live side by side so that
    one copy writes both (see `write`).
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
        self.kv = torch.zeros((n_layers, 2, batch_size, n_kv_heads, max_len, head_dim), device=device, dtype=dtype)
        self.length = 0
        self.pad: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None  # decode_bias for every position, built once per padding
        self._zeros: torch.Tensor | None = None  # step_bias where nothing is masked
        # a shared prefix (see share_prefix): [n_layers, 2, P, n_kv_heads, prefix_len, head_dim], its additive
        # padding bias [P * n_kv_heads, 1, prefix_len] (or None) and the number of rows per prefix
        self.prefix: torch.Tensor | None = None
        self.prefix_bias: torch.Tensor | None = None
        self.group = 1

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> KVCache:
        """An empty cache shaped for model (a datawall Transformer) on the model's device and dtype."""
        cfg = model.config
        p = next(model.parameters())
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, max_len, cfg.head_dim, p.device, p.dtype)

    @property
    def batch_size(self) -> int:
        return self.kv.shape[2]

    @property
    def max_len(self) -> int:
        return self.kv.shape[4] + self.prefix_len

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[4]

    def set_padding(self, pad: torch.Tensor | list[int]) -> None:
        """Declare how many leading slots of each row are padding (call before the first forward)."""
        pad = torch.as_tensor(pad, dtype=torch.long, device=self.kv.device)
        self.pad = pad if bool(pad.any()) else None
        self._bias = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, n_kv_heads, T, head_dim] at the current position; return all keys and values so far
        (with a shared prefix: those after it)."""
        start = self.length - self.prefix_len
        self.kv[layer, 0, :, :, start : start + k.shape[2]] = k
        self.kv[layer, 1, :, :, start : start + k.shape[2]] = v
        return self.kv[layer, 0, :, :, : start + k.shape[2]], self.kv[layer, 1, :, :, : start + k.shape[2]]

    def write(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `update`, for keys and values side by side as a projection yields them: kv [B, T, 2 * n_kv_heads,
        head_dim] (keys first); one copy instead of two. Returns keys and values so far [B, n_kv_heads, S, head_dim]."""
        B, T = kv.shape[:2]
        start = self.length - self.prefix_len
        self.kv[layer, :, :, :, start : start + T] = kv.view(B, T, 2, -1, kv.shape[-1]).permute(2, 0, 3, 1, 4)
        both = self.kv[layer, :, :, :, : start + T]
        return both[0], both[1]

    def positions(self, t: int) -> torch.Tensor:
        """RoPE positions [B, t] of the next t tokens of padded rows (a padding slot gets position 0)."""
        pos = torch.arange(self.length, self.length + t, device=self.kv.device)
        if self.pad is None:
            return pos.expand(self.batch_size, t)
        return (pos[None, :] - self.pad[:, None]).clamp_(min=0)

    def real_slots(self, t: int) -> torch.Tensor:
        """Indices into the flattened [B * t] batch of the next t slots that are not padding."""
        pos = torch.arange(self.length, self.length + t, device=self.kv.device)
        real = pos[None, :] >= (self.pad[:, None] if self.pad is not None else 0)
        return real.expand(self.batch_size, t).flatten().nonzero().squeeze(1)

    def attn_mask(self, t: int) -> torch.Tensor | None:
        """Boolean mask [B or 1, 1, t, length + t] (True = attend) for the next t tokens.

        None when plain causal attention is right: one token attending to everything, or a first unpadded chunk.
        """
        if self.pad is None and (t == 1 or self.length == 0):
            return None
        dev = self.kv.device
        q = torch.arange(self.length, self.length + t, device=dev)[:, None]
        s = torch.arange(self.length + t, device=dev)[None, :]
        mask = s <= q
        if self.pad is not None:
            # a padding query attends to itself only, so its (unused) softmax row is never empty
            mask = (mask & (s >= self.pad[:, None, None])) | (s == q)
            return mask[:, None]
        return mask[None, None]

    def decode_bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive attention bias [B * n_kv_heads, 1, length + 1] (0 or -inf) for one new token per row, with
        rows and kv heads flattened as decode attention batches them; None when no row is padded."""
        if self.pad is None or self.prefix is not None:  # rows differ only in the prefix, masked by prefix_bias
            return None
        if self._bias is None or self._bias.dtype != dtype:
            s = torch.arange(self.max_len, device=self.kv.device)
            bias = torch.zeros((len(self.pad), self.max_len), dtype=dtype, device=s.device)
            bias.masked_fill_(s < self.pad[:, None], float("-inf"))
            self._bias = bias.repeat_interleave(self.kv.shape[3], dim=0)[:, None]
        return self._bias[:, :, : self.length + 1]

    def step_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """decode_bias over the rows' own slots (after a shared prefix) as a tensor even where nothing is masked
        (zeros): [B * n_kv_heads, 1, own slots + 1]; its length says where the next token goes."""
        own = self.length - self.prefix_len + 1
        if self.pad is not None and self.prefix is None:
            return self.decode_bias(dtype)
        rows = self.batch_size * self.kv.shape[3]
        if self._zeros is None or self._zeros.shape[0] != rows or self._zeros.dtype != dtype:
            self._zeros = torch.zeros((rows, 1, self.kv.shape[4]), dtype=dtype, device=self.kv.device)
        return self._zeros[:, :, :own]

    def advance(self, t: int) -> None:
        """Move the write position past the t tokens just written by every layer."""
        self.length += t

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the given rows (LongTensor of row indices, repeats allowed) in that order, e.g. to drop
        finished rows or to give every sample its own copy of a prompt's cache. A shared prefix is copied
        into the rows kept (they no longer come in equal groups)."""
        lp, used = self.prefix_len, self.length - self.prefix_len
        kv = self.kv.new_empty((self.kv.shape[0], 2, len(rows), self.kv.shape[3], self.max_len, self.kv.shape[5]))
        if self.prefix is not None:
            kv[..., :lp, :] = self.prefix[:, :, torch.div(rows, self.group, rounding_mode="floor")]
            self.prefix, self.prefix_bias, self.group = None, None, 1
        kv[..., lp : lp + used, :] = self.kv[:, :, rows, :, :used]
        self.kv = kv
        self._bias = None
        if self.pad is not None:
            self.pad = self.pad.index_select(0, rows)

    def share_prefix(self, n: int) -> None:
        """Turn the P rows written so far into prefixes shared by n rows each (row i * n + j continues prefix i):
        their keys and values are kept once, not copied n times, and decode attends to them with one matmul
        per prefix (see transformer.shared_prefix_attention). Later forwards take one token per row."""
        if self.prefix is not None:
            raise ValueError("this cache already shares a prefix")
        P, lp = self.batch_size, self.length
        self.prefix = self.kv[..., :lp, :]
        self.kv = self.kv.new_empty((self.kv.shape[0], 2, P * n, self.kv.shape[3], self.kv.shape[4] - lp,
                                     self.kv.shape[5]))
        self.group = n
        self._bias = None
        if self.pad is not None:
            bias = torch.zeros((P, lp), dtype=self.kv.dtype, device=self.kv.device)
            bias.masked_fill_(torch.arange(lp, device=self.kv.device) < self.pad[:, None], float("-inf"))
            self.prefix_bias = bias.repeat_interleave(self.kv.shape[3], dim=0)[:, None]
            self.pad = self.pad.repeat_interleave(n)
