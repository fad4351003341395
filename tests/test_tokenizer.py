"""Tokenizers: exact round trips, strict character vocabularies, HF-format save/load."""

from __future__ import annotations

import json

import pytest

from datawall.data import Tokenizer
from datawall.errors import DatawallError

ALPHABET = "0123456789+-*=#\n <>abcdeos\t"
TRICKY = "héllo\twörld\n\n  ünïcode 😀 ∑ 中文 \r\n\ttabs\tand  spaces \u00a0nbsp <eos> <bos>\n"
TRAIN_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i)  # tab indented\n",
    "Ünïcödé text: naïve café, 東京, emoji 🎉🎉\n",
    "x = {'k': [1, 2, 3]}\r\nwhile True:\n    break\n",
] * 20


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.train_bpe(TRAIN_TEXTS, vocab_size=320)


def test_chars_ids_and_round_trip():
    tok = Tokenizer.for_chars(ALPHABET)
    assert tok.kind == "chars"
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size == 4 + len(set(ALPHABET))  # <pad> <bos> <eos> <unk>
    chars = sorted(set(ALPHABET))
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert [tok.id_to_token(4 + i) for i in range(len(chars))] == chars
    text = "12+34=46\n\n  #### 46\t<a>\n "
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per character, whitespace included
    assert ids == [4 + chars.index(c) for c in text]
    assert tok.decode(ids) == text


def test_chars_unknown_character_is_an_error_naming_it():
    tok = Tokenizer.for_chars(ALPHABET)
    with pytest.raises(DatawallError, match="'Z'"):
        tok.encode("12+Z")
    with pytest.raises(DatawallError, match="'é'"):
        tok.encode_batch(["12", "é"])


def test_special_token_text_is_encoded_as_characters():
    tok = Tokenizer.for_chars(ALPHABET)
    ids = tok.encode("<eos>")
    assert len(ids) == 5 and tok.eos_id not in ids
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "<eos>"  # specials skipped


def test_bpe_round_trip_is_exact(bpe):
    assert bpe.kind == "bpe"
    assert (bpe.token_to_id("<pad>"), bpe.token_to_id("<bos>"), bpe.token_to_id("<eos>")) == (0, 1, 2)
    assert bpe.vocab_size <= 320
    for text in [TRICKY, *TRAIN_TEXTS[:4], "", " ", "\n", "\t\t", "   leading", "trailing   "]:
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.encode_batch([TRICKY, "ab"]) == [bpe.encode(TRICKY), bpe.encode("ab")]
    assert bpe.eos_id not in bpe.encode("<eos>")
    # merges were learned: common text takes fewer tokens than bytes
    assert len(bpe.encode(TRAIN_TEXTS[0])) < len(TRAIN_TEXTS[0].encode())


def test_save_load_equality(tmp_path, bpe):
    for name, tok in [("chars", Tokenizer.for_chars(ALPHABET)), ("bpe", bpe)]:
        d = tmp_path / name
        tok.save(d, model_max_length=128)
        assert {p.name for p in d.iterdir()} == {"tokenizer.json", "tokenizer_config.json",
                                                 "special_tokens_map.json"}
        config = json.loads((d / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
        assert (config["bos_token"], config["eos_token"], config["pad_token"]) == ("<bos>", "<eos>", "<pad>")
        assert config["model_max_length"] == 128
        back = Tokenizer.load(d)
        assert back == tok and back.kind == tok.kind and back.vocab_size == tok.vocab_size
        assert back.model_max_length == 128
        text = "12+34=46\n" if name == "chars" else TRICKY
        assert back.encode(text) == tok.encode(text)
        assert Tokenizer.load(d / "tokenizer.json") == tok
    with pytest.raises(DatawallError):
        Tokenizer.load(tmp_path / "chars").encode("Z")  # the strict check survives a reload


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(DatawallError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path / "nowhere")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(DatawallError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models
    HFTokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="b")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(DatawallError, match="tokenizer_config.json beside it"):  # a foreign tokenizer, no config
        Tokenizer.load(tmp_path)
    with pytest.raises(DatawallError, match="vocab_size"):
        Tokenizer.train_bpe(["abc"], vocab_size=100)
    with pytest.raises(DatawallError, match="empty"):
        Tokenizer.for_chars("")


def test_transformers_fast_tokenizer_agrees(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    cases = [("chars", Tokenizer.for_chars(ALPHABET), ["12+34=46\n#### 46", "<eos> a\t\n  b", " "]),
             ("bpe", bpe, [TRICKY, TRAIN_TEXTS[0], "  x", "a <eos> b"])]
    for name, tok, texts in cases:
        tok.save(tmp_path / name)
        hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path / name))
        assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)
        assert len(hf) == tok.vocab_size
        for text in texts:
            assert hf(text)["input_ids"] == tok.encode_prompt(text) == [1, *tok.encode(text)], (name, text)
            assert hf.decode(tok.encode(text), skip_special_tokens=True) == tok.decode(tok.encode(text))
