"""Tokenizers: a fixed character vocabulary for task worlds, byte-level BPE for corpora.

Both are Hugging Face `tokenizers.Tokenizer` objects underneath and save as a standard directory
(tokenizer.json, tokenizer_config.json, special_tokens_map.json) that
`transformers.PreTrainedTokenizerFast.from_pretrained` loads and encodes identically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.errors import DatawallError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD, BOS, EOS]  # ids 0, 1, 2 in both kinds
HF_MAX_LENGTH = int(1e30)  # what transformers writes when a tokenizer has no length limit


class Tokenizer:
    """A `tokenizers.Tokenizer` with datawall's special tokens, strict char checks and HF-format I/O."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        # text that happens to contain "<eos>" is encoded as characters, never as the control token
        self.hf.encode_special_tokens = True
        self._alphabet: frozenset[str] | None = None
        if isinstance(hf.model, models.WordLevel):
            self._alphabet = frozenset(t for t in hf.get_vocab(with_added_tokens=False) if len(t) == 1)
        for i, token in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(token) != i:
                raise DatawallError(f"tokenizer: expected special token {token} at id {i}, "
                                    f"found id {hf.token_to_id(token)}")
        self.model_max_length: int | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def for_chars(cls, alphabet: str) -> Tokenizer:
        """One token per character of `alphabet` (sorted), after <pad>=0, <bos>=1, <eos>=2."""
        chars = sorted(set(alphabet))
        if not chars:
            raise DatawallError("tokenizer: the character alphabet is empty")
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for c in chars:
            vocab[c] = len(vocab)
        # "<unk>" is deliberately absent from the vocabulary, so an unknown character is an error, never a silent unk
        hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(SPECIAL_TOKENS)
        return cls(hf)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
        """Train byte-level BPE on `texts`; exact round trip of any text; specials take ids 0-2."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise DatawallError(f"tokenizer: BPE vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                                f"(the byte alphabet plus special tokens), got {vocab_size}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @classmethod
    def from_str(cls, text: str) -> Tokenizer:
        """Build from the JSON text of a tokenizer.json."""
        try:
            return cls(HFTokenizer.from_str(text))
        except DatawallError:
            raise
        except Exception as e:  # tokenizers raises plain Exception on malformed JSON
            raise DatawallError(f"tokenizer: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from None

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer directory (or a tokenizer.json file directly)."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise DatawallError(f"{file}: no tokenizer.json there")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatawallError(f"{file}: cannot read tokenizer ({e})") from None
        try:
            tok = cls.from_str(text)
        except DatawallError as e:
            raise DatawallError(f"{file}: {e}") from None
        config = file.parent / "tokenizer_config.json"
        if config.is_file():
            try:
                max_len = json.loads(config.read_text(encoding="utf-8")).get("model_max_length")
            except (OSError, ValueError, AttributeError):
                max_len = None
            if isinstance(max_len, int) and max_len < HF_MAX_LENGTH:
                tok.model_max_length = max_len
        return tok

    def save(self, directory: str | Path, model_max_length: int | None = None) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        max_len = model_max_length or self.model_max_length or HF_MAX_LENGTH
        atomic_write_text(directory / "tokenizer.json", self.to_str())
        atomic_write_json(directory / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
            "model_max_length": max_len,
            "split_special_tokens": True,  # matches encode(): "<eos>" inside text is plain text
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False, "add_eos_token": False,
        })
        atomic_write_json(directory / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS,
                                                                  "pad_token": PAD})

    def to_str(self) -> str:
        """The tokenizer.json text (stable: equal tokenizers give equal strings)."""
        return self.hf.to_str()

    # -- encoding -----------------------------------------------------------------------------

    def _check_chars(self, text: str) -> None:
        if self._alphabet is not None and not self._alphabet.issuperset(text):
            bad = sorted(set(text) - self._alphabet)
            shown = ", ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise DatawallError(f"tokenizer: character {shown} is not in the character vocabulary "
                                f"({len(self._alphabet)} characters)")

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        self._check_chars(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once (parallel in Rust)."""
        texts = list(texts)
        for t in texts:
            self._check_chars(t)
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # _fast skips offsets (>= 0.21)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`, special tokens skipped."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, or None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """Vocabulary entry of an id, or None."""
        return self.hf.id_to_token(int(i))

    # -- properties ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """'chars' (fixed character vocabulary) or 'bpe'."""
        return "chars" if self._alphabet is not None else "bpe"

    @property
    def alphabet(self) -> str | None:
        """The characters of a 'chars' tokenizer in id order; None for BPE."""
        return None if self._alphabet is None else "".join(sorted(self._alphabet))

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_str() == other.to_str()

    def __hash__(self) -> int:
        return hash(self.to_str())

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
