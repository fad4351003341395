"""Tokenizers: datawall's own (a fixed character vocabulary for task worlds, byte-level BPE for corpora) and any
Hugging Face `tokenizer.json` with the special tokens, stop tokens and chat template its directory names.

All are `tokenizers.Tokenizer` objects underneath and save as a standard directory (tokenizer.json,
tokenizer_config.json, special_tokens_map.json) that `transformers.AutoTokenizer.from_pretrained` loads and
encodes identically. datawall's own add `<bos>` themselves (a post-processor, as Llama's do), have an `<unk>`
entry (lm-eval and transformers expect one; datawall's own encode still refuses characters outside a
character vocabulary) and keep special-token text literal: a task text holding "<eos>" is characters.
A foreign tokenizer keeps its own rules: whether it adds bos, whether special-token text in a prompt is parsed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from datawall.atomic import atomic_write_json, atomic_write_text, read_json_object
from datawall.data.chat_template import render_chat
from datawall.errors import DatawallError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0-3 in datawall's own tokenizers (older ones stop at <eos>, id 2)
HF_MAX_LENGTH = int(1e30)  # what transformers writes when a tokenizer has no length limit
_CONFIG_SPECIALS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_name(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _chat_template(config: dict[str, Any], directory: Path) -> str | None:
    """The default chat template: chat_template.jinja (transformers 5) or tokenizer_config's chat_template."""
    file = directory / "chat_template.jinja"
    if file.is_file():
        return file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def _stop_ids(directory: Path) -> list[int]:
    """eos_token_id of generation_config.json as a list (Llama 3 lists several end-of-turn tokens)."""
    value = read_json_object(directory / "generation_config.json", missing_ok=True).get("eos_token_id")
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


class Tokenizer:
    """A `tokenizers.Tokenizer` with named special tokens, stop tokens, an optional chat template and HF-format I/O."""

    def __init__(self, hf: HFTokenizer, *, bos: str | None = BOS, eos: str = EOS, pad: str | None = PAD,
                 unk: str | None = None, stop_ids: Iterable[int] = (), chat_template: str | None = None,
                 split_special_tokens: bool = True, config: dict[str, Any] | None = None):
        self.hf = hf
        # datawall's own: text that happens to contain "<eos>" is encoded as characters, never as the control token
        self.hf.encode_special_tokens = split_special_tokens
        self._special_lock = threading.Lock()
        self._alphabet: frozenset[str] | None = None
        if isinstance(hf.model, models.WordLevel):
            self._alphabet = frozenset(t for t in hf.get_vocab(with_added_tokens=False) if len(t) == 1)
        self.bos, self.eos, self.unk = bos, eos, unk
        self.pad = pad if pad is not None else eos  # a tokenizer without one pads with eos, as transformers users do
        for role, token in (("bos", bos), ("eos", eos), ("pad", self.pad), ("unk", unk)):
            if token is not None and hf.token_to_id(token) is None:
                raise DatawallError(f"tokenizer: its {role} token {token!r} is not in the vocabulary")
        self.bos_id = hf.token_to_id(bos) if bos is not None else None
        self.eos_id: int = hf.token_to_id(eos)
        self.pad_id: int = hf.token_to_id(self.pad)
        self.unk_id = hf.token_to_id(unk) if unk is not None else None
        # sampling stops at any of these (eos first); Llama 3 ends a chat turn with <|eot_id|>, not eos
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys([self.eos_id, *stop_ids]))
        self.chat_template = chat_template
        self.config = dict(config or {})  # a foreign tokenizer_config.json, written back as it was
        # whether encoding with special tokens puts bos first (Llama, datawall); SmolLM2's does not
        probe = hf.encode("a", add_special_tokens=True).ids
        self.adds_bos = self.bos_id is not None and bool(probe) and probe[0] == self.bos_id
        self.model_max_length: int | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def _native(cls, hf: HFTokenizer) -> Tokenizer:
        """datawall's conventions on hf: bos added by a post-processor, <unk> named when the vocabulary has it."""
        bos = hf.token_to_id(BOS)
        if bos is None or hf.token_to_id(PAD) != 0 or hf.token_to_id(EOS) is None:
            raise DatawallError(f"tokenizer: expected datawall's special tokens {PAD}, {BOS}, {EOS} at ids 0-2 "
                                f"(a foreign tokenizer.json needs its tokenizer_config.json beside it)")
        if hf.post_processor is None:  # checkpoints from before the post-processor: same ids, bos now added
            hf.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B:1",
                                                              special_tokens=[(BOS, bos)])
        unk = UNK if hf.token_to_id(UNK) is not None else None
        return cls(hf, unk=unk)

    @classmethod
    def for_chars(cls, alphabet: str) -> Tokenizer:
        """One token per character of `alphabet` (sorted), after <pad>=0, <bos>=1, <eos>=2, <unk>=3."""
        chars = sorted(set(alphabet))
        if not chars:
            raise DatawallError("tokenizer: the character alphabet is empty")
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for c in chars:
            vocab[c] = len(vocab)
        # <unk> exists for HF tools that require one; datawall's encode refuses an unknown character instead
        hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(SPECIAL_TOKENS)
        return cls._native(hf)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
        """Train byte-level BPE on `texts`; exact round trip of any text; specials take ids 0-3."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise DatawallError(f"tokenizer: BPE vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                                f"(the byte alphabet plus special tokens), got {vocab_size}")
        hf = HFTokenizer(models.BPE(unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer)
        return cls._native(hf)

    @staticmethod
    def _parse(text: str) -> HFTokenizer:
        try:
            return HFTokenizer.from_str(text)
        except Exception as e:  # tokenizers raises plain Exception on malformed JSON
            raise DatawallError(f"tokenizer: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from None

    @classmethod
    def from_str(cls, text: str) -> Tokenizer:
        """A datawall tokenizer from the JSON text of its tokenizer.json."""
        return cls._native(cls._parse(text))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer directory (or a tokenizer.json file directly): datawall's own, or any HF tokenizer
        whose tokenizer_config.json (or special_tokens_map.json) names its special tokens."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise DatawallError(f"{file}: no tokenizer.json there")
        try:
            hf = cls._parse(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DatawallError(f"{file}: cannot read tokenizer ({e})") from None
        except DatawallError as e:
            raise DatawallError(f"{file}: {e}") from None
        directory = file.parent
        config = read_json_object(directory / "tokenizer_config.json", missing_ok=True)
        specials_map = read_json_object(directory / "special_tokens_map.json", missing_ok=True)
        named = {k: _token_name(v) for k, v in specials_map.items()}
        named |= {k: _token_name(config[k]) for k in _CONFIG_SPECIALS if _token_name(config.get(k))}
        try:
            if (not named or (named.get("bos_token") == BOS and named.get("pad_token") == PAD)) \
                    and "chat_template" not in config:
                tok = cls._native(hf)
                tok.stop_ids = tuple(dict.fromkeys([*tok.stop_ids, *_stop_ids(directory)]))
            else:
                if not named.get("eos_token"):
                    raise DatawallError("tokenizer_config.json names no eos_token (needed to stop sampling)")
                tok = cls(hf, bos=named.get("bos_token"), eos=named["eos_token"], pad=named.get("pad_token"),
                          unk=named.get("unk_token"), stop_ids=_stop_ids(directory),
                          chat_template=_chat_template(config, directory),
                          split_special_tokens=bool(config.get("split_special_tokens", False)),
                          config=config or {k: v for k, v in named.items() if v})
        except DatawallError as e:
            raise DatawallError(f"{file}: {str(e).removeprefix('tokenizer: ')}") from None
        max_len = config.get("model_max_length")
        if isinstance(max_len, int) and max_len < HF_MAX_LENGTH:
            tok.model_max_length = max_len
        return tok

    def save(self, directory: str | Path, model_max_length: int | None = None) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        max_len = model_max_length or self.model_max_length or HF_MAX_LENGTH
        specials = {"bos_token": self.bos, "eos_token": self.eos, "pad_token": self.pad, "unk_token": self.unk}
        specials = {k: v for k, v in specials.items() if v is not None}
        if self.config:
            config = dict(self.config) | {"model_max_length": max_len}
            if config.get("tokenizer_class") in (None, "TokenizersBackend"):  # transformers 5's name; 4.x reads this
                config["tokenizer_class"] = "PreTrainedTokenizerFast"
            if self.chat_template is not None:
                config["chat_template"] = self.chat_template
        else:
            config = {
                "tokenizer_class": "PreTrainedTokenizerFast", **specials,
                "model_max_length": max_len,
                "split_special_tokens": True,  # matches encode(): "<eos>" inside text is plain text
                "clean_up_tokenization_spaces": False,
                "add_bos_token": self.adds_bos, "add_eos_token": False,
            }
        atomic_write_text(directory / "tokenizer.json", self.to_str())
        atomic_write_json(directory / "tokenizer_config.json", config)
        atomic_write_json(directory / "special_tokens_map.json", specials)

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

    def with_bos(self, ids: Sequence[int]) -> list[int]:
        """ids with bos in front when this tokenizer adds one and they do not start with it already."""
        ids = [int(i) for i in ids]
        return [self.bos_id, *ids] if self.adds_bos and (not ids or ids[0] != self.bos_id) else ids

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt as the model expects it: bos first when this tokenizer adds one."""
        return self.with_bos(self.encode(text))

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The conversation rendered by the checkpoint's chat template (DatawallError when it has none)."""
        if self.chat_template is None:
            raise DatawallError("--chat: this model has no chat template (datawall's own checkpoints are base "
                                "models: prompt them without --chat)")
        names = {k: v for k, v in self.config.items() if k.endswith("_token") and isinstance(v, str)}
        return render_chat(self.chat_template, messages, add_generation_prompt,
                           **(names | {"bos_token": self.bos, "eos_token": self.eos, "pad_token": self.pad,
                                       "unk_token": self.unk}))

    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation, its special-token text parsed as special tokens (as
        transformers' apply_chat_template(tokenize=True)): nothing is added in front."""
        text = self.apply_chat_template(messages, add_generation_prompt)
        with self._special_lock:
            split, self.hf.encode_special_tokens = self.hf.encode_special_tokens, False
            try:
                return self.hf.encode(text, add_special_tokens=False).ids
            finally:
                self.hf.encode_special_tokens = split

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`, special tokens skipped."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, or None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """Vocabulary entry of an id, or None."""
        return self.hf.id_to_token(int(i))

    def is_special(self, i: int) -> bool:
        """Whether id i is one of the named special or stop tokens."""
        return i in (self.pad_id, self.bos_id, self.eos_id, self.unk_id) or i in self.stop_ids

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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_str() == other.to_str()

    def __hash__(self) -> int:
        return hash(self.to_str())

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
