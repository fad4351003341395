"""Batched sampling with a KV cache: one prefill per distinct prompt, n samples each, stop strings, logprobs.

Randomness is counter-based: the uniform that picks a token is a hash of (seed, prompt ids, which copy of
that prompt in the call, sample index, step), so a sample depends on its own prompt and the seed, not on
which other prompts share the batch (up to float rounding of the logits). The token is drawn by inverting
the CDF of the (temperature, top-k, top-p)-filtered distribution at that uniform.

Reported logprobs are log-probabilities of the chosen tokens under the model's *unmodified* distribution
(temperature 1, no filtering), as the OpenAI API reports them and as RL needs them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from datawall.errors import DatawallError
from datawall.model.kv_cache import KVCache


@dataclass
class Sample:
    """One completion: token_ids include a final eos (if one was drawn) and the token that completed a stop
    string; text is their decoding, cut before the stop string; logprobs align with token_ids."""

    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str  # "stop" (eos or a stop string) | "length" (max_new_tokens or the context limit)
    #                     | "cancelled" (the caller's `cancelled` callback dropped the row)
    prompt_tokens: int
    completion_tokens: int


# Temperatures below this are greedy (vLLM's _SAMPLING_EPS): dividing float32 logits by 1e-300 overflows to
# inf and the softmax to NaN, and well before that the tempered distribution is one-hot anyway.
GREEDY_TEMPERATURE = 1e-5

_U64 = np.uint64


def is_greedy(temperature: float) -> bool:
    """Whether a temperature means greedy decoding (0, or below GREEDY_TEMPERATURE)."""
    return temperature < GREEDY_TEMPERATURE


def check_sampling(temperature: float, top_p: float | None, where: str = "generate") -> None:
    """DatawallError unless temperature is finite and >= 0 and top_p (if given) is in (0, 1]."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise DatawallError(f"{where}: temperature must be a finite number >= 0, got {temperature}")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise DatawallError(f"{where}: top_p must be in (0, 1], got {top_p}")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _row_keys(seed: int, prompts: list[tuple[int, ...]], n: int) -> np.ndarray:
    """A 64-bit key per (prompt, sample) row that depends only on seed, prompt ids, prompt copy and sample."""
    seen: dict[tuple[int, ...], int] = {}
    keys = []
    for ids in prompts:
        copy = seen[ids] = seen.get(ids, -1) + 1
        digest = hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=8).digest()
        base = int.from_bytes(digest, "little") ^ (copy * 0x632BE59BD9B4E019)
        keys += [(base + j * 0xD1B54A32D192ED03) % 2**64 for j in range(n)]
    seed_key = _mix(np.array([seed % 2**64], dtype=np.uint64))
    return _mix(np.array(keys, dtype=np.uint64) ^ seed_key)


def _uniforms(keys: np.ndarray, first_step: int, steps: int) -> np.ndarray:
    """Floats in [0, 1) [len(keys), steps]: one per row key for each decoding step from first_step on."""
    with np.errstate(over="ignore"):
        step_keys = _mix(np.arange(first_step, first_step + steps, dtype=np.uint64))
        bits = _mix(keys[:, None] ^ step_keys[None, :])
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53


def _pick(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Token per row from logits [B, V]: argmax when greedy, else inverse-CDF sampling at uniforms u [B]."""
    if is_greedy(temperature):
        return logits.argmax(-1)
    scaled = logits if temperature == 1 else logits / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    order = None
    if top_p is not None and top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        # keep the smallest prefix whose mass reaches top_p; the most likely token always survives, also when
        # top_p rounds to 0 in float32 (1e-300), so any top_p below its probability is top-1
        drop = probs.cumsum(-1) - probs >= top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    # float64 accumulation straight from float32 (the same sums as .double().cumsum() without the float64 copy)
    cdf = probs.cumsum(-1, dtype=torch.float64)
    # right=True never lands on a zero-probability token: its cdf equals its predecessor's
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).clamp_(max=cdf.shape[-1] - 1)
    return idx.squeeze(-1) if order is None else order.gather(-1, idx).squeeze(-1)


def _encode(tokenizer, prompts: list[str] | list[list[int]]) -> list[tuple[int, ...]]:
    """Token ids of each prompt, bos in front when the tokenizer adds one (lists already starting with it are kept)."""
    return [tuple(tokenizer.with_bos(tokenizer.encode(p) if isinstance(p, str) else p)) for p in prompts]


def _check_args(n: int, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if n < 1:
        raise DatawallError(f"generate: n must be >= 1, got {n}")
    if max_new_tokens < 0:
        raise DatawallError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling(temperature, top_p)
    if top_k is not None and top_k < 1:
        raise DatawallError(f"generate: top_k must be >= 1, got {top_k}")


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str] | list[list[int]],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    return_logprobs: bool = True,
    ignore_eos: bool = False,
    cancelled: Callable[[], Iterable[int]] | None = None,
    compile_step: bool = False,
) -> list[list[Sample]]:
    """n samples per prompt (bos prepended), each distinct prompt prefilled once; one list of Samples per prompt.

    temperature 0 (or below GREEDY_TEMPERATURE) is greedy; top_k/top_p filter before sampling; generation stops
    at eos (unless ignore_eos), at any stop string (text cut before it) or after max_new_tokens or at the model's
    context limit. cancelled: polled once per step, returns rows (prompt i, sample j -> i * n + j) to stop now;
    they leave the batch at once and end with finish_reason "cancelled" (a server drops abandoned requests so).
    device: run there (the model is moved if it lives on another device type); default the model's device.
    compile_step: decode through a torch.compile'd step (datawall.model.compiled_decode): faster per token at small
    model sizes, after a compilation of tens of seconds per process; samples equal up to float rounding.
    """
    _check_args(n, max_new_tokens, temperature, top_k, top_p)
    if isinstance(prompts, str):
        raise DatawallError("generate: prompts must be a list of strings or of token-id lists, not one string")
    if isinstance(stop, str):
        stop = [stop]
    if not prompts:
        return []
    cfg = model.config
    decode = None
    if compile_step:
        from datawall.model.compiled_decode import check_compilable, compiled_step

        check_compilable(model)
        decode = compiled_step
    param = next(model.parameters())
    if device is not None and torch.device(device).type != param.device.type:
        model.to(device)
        param = next(model.parameters())
    dev = param.device
    seqs = _encode(tokenizer, prompts)
    for ids in seqs:
        if len(ids) > cfg.max_seq_len:
            raise DatawallError(f"generate: prompt of {len(ids)} tokens exceeds the context of {cfg.max_seq_len}")
        if max(ids) >= cfg.vocab_size or min(ids) < 0:
            raise DatawallError(f"generate: prompt token id outside the vocabulary of {cfg.vocab_size}")
    # rows: prompt i, sample j -> row i * n + j; a row may not run past the model's context
    limits = [min(max_new_tokens, cfg.max_seq_len - len(ids)) for ids in seqs for _ in range(n)]
    rows = len(limits)
    ids_out: list[list[int]] = [[] for _ in range(rows)]
    lps_out: list[list[float]] = [[] for _ in range(rows)]
    reason = ["length"] * rows
    texts: list[str | None] = [None] * rows
    stop = [s for s in (stop or []) if s]
    seed = int.from_bytes(os.urandom(8), "little") if seed is None else seed
    keys = _row_keys(seed, seqs, n)

    if max(limits) == 0:
        return _collect(tokenizer, seqs, n, ids_out, lps_out, reason, texts, return_logprobs)

    # prefill each distinct prompt once, left-padded, then give every row a copy of its prompt's cache
    distinct = list(dict.fromkeys(seqs))
    width = max(len(s) for s in distinct)
    prefill = torch.full((len(distinct), width), tokenizer.pad_id, dtype=torch.long)
    for r, s in enumerate(distinct):
        prefill[r, width - len(s) :] = torch.tensor(s)
    # (one spare slot when compiled: a full cache is another graph, its keys no longer a strided slice)
    cache = KVCache.for_model(model, len(distinct), width + max(limits) - 1 + compile_step)
    cache.set_padding([width - len(s) for s in distinct])
    logits = model(prefill.to(dev), cache, last_only=True)[:, -1]
    where = {s: r for r, s in enumerate(distinct)}
    if n == 1:
        if len(seqs) != len(distinct):  # all distinct: the cache rows are already the batch rows, in order
            cache.keep(torch.tensor([where[s] for s in seqs], device=dev))
    else:
        # every prompt's n rows attend to one copy of its cached keys (a repeated prompt gets one per copy)
        if len(seqs) != len(distinct):
            cache.keep(torch.tensor([where[s] for s in seqs], device=dev))
        cache.share_prefix(n)
    source = torch.tensor([where[s] for s in seqs for _ in range(n)], device=dev)
    logits = logits.index_select(0, source)

    alive = list(range(rows))  # the original row of each batch row
    alive_t = torch.arange(rows, device=dev)
    kept = {row: 0 for row, limit in enumerate(limits) if limit == 0}  # finished row -> tokens it keeps
    by_limit: dict[int, list[int]] = {}  # step -> rows whose token budget ends there
    for row, limit in enumerate(limits):
        by_limit.setdefault(limit - 1, []).append(row)
    # tokens and logprobs stay on the device, one column per step; rows are cut to their length at the end
    token_buf = torch.zeros((rows, max(limits)), dtype=torch.long, device=dev)
    lp_buf = torch.zeros((rows, max(limits)), dtype=torch.float32, device=dev) if return_logprobs else None
    chunk = 32  # steps of uniforms drawn at once
    for step in range(max(limits)):
        if step % chunk == 0:
            u_all = torch.from_numpy(_uniforms(keys, step, chunk)).to(dev)
            u_alive = u_all.index_select(0, alive_t) if len(alive) < rows else u_all
        tokens = _pick(logits, u_alive[:, step % chunk], temperature, top_k, top_p)
        token_buf[:, step].index_copy_(0, alive_t, tokens)
        if lp_buf is not None:
            lp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
            lp_buf[:, step].index_copy_(0, alive_t, lp)
        n_done = _finish(tokenizer, step, tokens, alive, kept, by_limit, reason, texts, ids_out, stop, ignore_eos)
        dropped = 0
        if cancelled is not None:
            for row in cancelled():
                if 0 <= row < rows and row not in kept:
                    kept[row], reason[row] = step + 1, "cancelled"
                    dropped += 1
            n_done += dropped
        if n_done == len(alive):
            break
        if n_done * 4 >= len(alive) or dropped:
            # drop finished rows once they are a quarter of the batch (the cache copy costs about one step), and
            # cancelled ones at once: the caller no longer wants them
            keep = [b for b, row in enumerate(alive) if row not in kept]
            alive = [alive[b] for b in keep]
            keep_t = torch.tensor(keep, device=dev)
            alive_t = alive_t.index_select(0, keep_t)
            u_alive = u_all.index_select(0, alive_t)
            cache.keep(keep_t)
            tokens = tokens.index_select(0, keep_t)
        step_logits = decode(model, tokens[:, None], cache) if decode else model(tokens[:, None], cache, last_only=True)
        logits = step_logits[:, -1]
    token_rows = token_buf.tolist()
    lp_rows = lp_buf.tolist() if lp_buf is not None else None
    for row in range(rows):
        ids_out[row] = token_rows[row][: kept[row]]
        if lp_rows is not None:
            lps_out[row] = lp_rows[row][: kept[row]]
    return _collect(tokenizer, seqs, n, ids_out, lps_out, reason, texts, return_logprobs)


def _finish(
    tokenizer,
    step: int,
    tokens: torch.Tensor,
    alive: list[int],
    kept: dict[int, int],
    by_limit: dict[int, list[int]],
    reason: list[str],
    texts: list[str | None],
    ids_out: list[list[int]],
    stop: list[str],
    ignore_eos: bool,
) -> int:
    """Record the rows that finish at this step (eos, then a stop string, then the token budget) in kept and
    reason; return how many batch rows are finished. Without eos or stop strings nothing is read back here."""
    if not ignore_eos:
        ends = tokens == tokenizer.eos_id if len(tokenizer.stop_ids) == 1 else \
            torch.isin(tokens, torch.tensor(tokenizer.stop_ids, device=tokens.device))
        for b in ends.nonzero().squeeze(1).tolist():
            if alive[b] not in kept:
                kept[alive[b]], reason[alive[b]] = step + 1, "stop"
    if stop:
        for b, token in enumerate(tokens.tolist()):
            row = alive[b]
            if row in kept and kept[row] <= step:
                continue
            ids_out[row].append(token)
            if row not in kept and _hit_stop(tokenizer, ids_out[row], stop, texts, row):
                kept[row], reason[row] = step + 1, "stop"
    for row in by_limit.get(step, ()):
        kept.setdefault(row, step + 1)
    return sum(row in kept for row in alive)


def _hit_stop(tokenizer, ids: list[int], stop: list[str], texts: list[str | None], row: int) -> bool:
    """If the decoded completion contains a stop string, store the text before its first one and say so."""
    text = tokenizer.decode(ids)
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not hits:
        return False
    texts[row] = text[: min(hits)]
    return True


def _collect(
    tokenizer,
    seqs: list[tuple[int, ...]],
    n: int,
    ids_out: list[list[int]],
    lps_out: list[list[float]],
    reason: list[str],
    texts: list[str | None],
    return_logprobs: bool,
) -> list[list[Sample]]:
    """Group rows into per-prompt lists of Samples."""
    out = []
    for i, prompt in enumerate(seqs):
        samples = []
        for row in range(i * n, (i + 1) * n):
            text = texts[row] if texts[row] is not None else tokenizer.decode(ids_out[row])
            samples.append(
                Sample(
                    text=text,
                    token_ids=ids_out[row],
                    logprobs=lps_out[row] if return_logprobs else None,
                    finish_reason=reason[row],
                    prompt_tokens=len(prompt),
                    completion_tokens=len(ids_out[row]),
                )
            )
        out.append(samples)
    return out
