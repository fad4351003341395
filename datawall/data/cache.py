"""On-disk cache of corpus tokenizers and token streams, keyed by content; safe under concurrent writers.

Layout: $DATAWALL_CACHE (default ~/.cache/datawall)/tokenizers/<key>/ and /tokens/<key>/. Each entry is
built in a temporary directory and renamed into place, so a reader sees a whole entry or none; when two
processes race, the first rename wins and the other discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datawall.atomic import atomic_directory
from datawall.data.corpus import Corpus
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError

# BPE is trained on at most this many characters (whole documents, in corpus order); the full stdlib is ~12M
TOKENIZER_TRAIN_CHARS = 100_000_000
_ENCODE_BATCH_DOCS = 128


class CorpusTokens(NamedTuple):
    """A corpus as one token stream: document i is tokens[doc_bounds[i]:doc_bounds[i+1]], ending in <eos>."""

    tokens: np.ndarray
    doc_bounds: np.ndarray


def cache_dir() -> Path:
    """$DATAWALL_CACHE, else ~/.cache/datawall."""
    env = os.environ.get("DATAWALL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "datawall"


def _build_entry(final: Path, build) -> None:
    """Build a cache entry in a temporary directory and rename it into place; a racing process's entry wins."""
    with atomic_directory(final, replace=False) as tmp:
        build(tmp)


def _train_texts(corpus: Corpus, max_chars: int) -> Iterator[str]:
    total = 0
    for text in corpus.documents():
        if total >= max_chars:
            return
        total += len(text)
        yield text


def corpus_tokenizer(corpus: Corpus, vocab_size: int = 4096, max_chars: int = TOKENIZER_TRAIN_CHARS) -> Tokenizer:
    """Byte-level BPE trained on the corpus (its first `max_chars` characters), cached per content and size."""
    key = hashlib.sha256(f"{corpus.fingerprint}:{vocab_size}:{max_chars}".encode()).hexdigest()[:24]
    final = cache_dir() / "tokenizers" / f"{_safe(corpus.name)}-v{vocab_size}-{key}"
    if (final / "tokenizer.json").is_file():
        try:
            return Tokenizer.load(final)
        except DatawallError:
            shutil.rmtree(final, ignore_errors=True)  # damaged by hand: rebuild
    tok = Tokenizer.train_bpe(_train_texts(corpus, max_chars), vocab_size=vocab_size)
    _build_entry(final, tok.save)
    return Tokenizer.load(final)


def corpus_tokens(corpus: Corpus, tokenizer: Tokenizer) -> CorpusTokens:
    """The corpus tokenized once (each document followed by <eos>) and cached as .npy; returns (tokens, bounds)."""
    key = hashlib.sha256(f"{corpus.fingerprint}\0{tokenizer.to_str()}".encode()).hexdigest()[:24]
    final = cache_dir() / "tokens" / f"{_safe(corpus.name)}-{key}"
    if final.is_dir():
        try:
            return CorpusTokens(np.load(final / "tokens.npy"), np.load(final / "bounds.npy"))
        except (OSError, ValueError, EOFError):
            shutil.rmtree(final, ignore_errors=True)  # damaged by hand: rebuild
    tokens, bounds = _tokenize(corpus, tokenizer)

    def write(tmp: Path) -> None:
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "bounds.npy", bounds)
        (tmp / "meta.json").write_text(json.dumps({"corpus": corpus.name, "fingerprint": corpus.fingerprint,
                                                   "tokens": len(tokens), "documents": len(bounds) - 1,
                                                   "vocab_size": tokenizer.vocab_size}) + "\n")

    _build_entry(final, write)
    return CorpusTokens(tokens, bounds)


def _tokenize(corpus: Corpus, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer.encode_batch(batch):
            parts.extend((np.asarray(ids, dtype=dtype), eos))
            lengths.append(len(ids) + 1)
        batch.clear()

    for text in corpus.documents():
        batch.append(text)
        if len(batch) >= _ENCODE_BATCH_DOCS:
            flush()
    flush()
    if not lengths:
        raise DatawallError(f"corpus {corpus.name}: holds no documents")
    bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return np.concatenate(parts), bounds


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "corpus"
