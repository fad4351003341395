"""Pairs as training data: checked against a tokenizer and context, encoded, and split by prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datawall.errors import DatawallError
from datawall.prefer.pairs import Pair
from datawall.train.objectives.dpo import EncodedPair


def encode_pairs(tok, pairs: Sequence[Pair], max_seq_len: int) -> list[EncodedPair]:
    """[bos] prompt, then each answer + eos, as the sampler writes them; one line naming the pair that cannot be
    encoded or that does not fit the model's context."""
    out = []
    for k, p in enumerate(pairs):
        where = p.where or f"pair {k + 1}"
        try:
            prompt = tok.encode_prompt(p.prompt)
            chosen = tok.encode(p.chosen) + [tok.eos_id]
            rejected = tok.encode(p.rejected) + [tok.eos_id]
        except DatawallError as e:
            raise DatawallError(f"{where}: {e}") from None
        longest = len(prompt) + max(len(chosen), len(rejected))
        if longest > max_seq_len + 1:  # the last token is only a target
            raise DatawallError(f"{where}: prompt + answer is {longest - 1} tokens, past the model's context of "
                                f"{max_seq_len}")
        out.append(EncodedPair(prompt, chosen, rejected))
    return out


def split_by_prompt(pairs: Sequence[Pair], val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, held-out) pairs, whole prompts held out (a seeded share of them; at least one when there
    are two or more prompts and val_frac > 0), so no held-out prompt was trained on."""
    prompts = sorted({p.prompt for p in pairs})
    n_val = 0 if val_frac == 0 or len(prompts) < 2 else min(len(prompts) - 1, max(1, round(val_frac * len(prompts))))
    held = {prompts[i] for i in np.random.default_rng([seed, 3]).permutation(len(prompts))[:n_val]}
    train = [i for i, p in enumerate(pairs) if p.prompt not in held]
    val = [i for i, p in enumerate(pairs) if p.prompt in held]
    return train, val


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a run's identity includes its data, not only the data's name)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_same_tokenizer(policy_tok, reference_tok, reference: str) -> None:
    """One line unless the reference reads exactly the policy's tokens (its log-probs are of the same ids)."""
    if policy_tok != reference_tok:
        raise DatawallError(f"--reference {reference}: its tokenizer differs from the policy's (vocabulary "
                            f"{reference_tok.vocab_size} vs {policy_tok.vocab_size}, kind {reference_tok.kind} vs "
                            f"{policy_tok.kind}); a reference must read the same tokens as the policy")
