"""Corpora (stdlib and user files) and the content-keyed tokenizer/token cache."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from datawall.atomic import atomic_directory
from datawall.data import Tokenizer, corpus_stats, corpus_tokenizer, corpus_tokens, load_corpus, stdlib_files
from datawall.errors import DatawallError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DATAWALL_CACHE", str(path))
    return path


def test_stdlib_files_exclude_tests_and_site_packages():
    files = stdlib_files()
    root = load_corpus("stdlib", max_files=1).root
    rels = [p.relative_to(root).as_posix() for p in files]
    assert rels == sorted(rels)
    assert {"os.py", "json/__init__.py", "collections/__init__.py"} <= set(rels)
    for rel in rels:
        parts = rel.split("/")
        assert not {"test", "tests", "idle_test", "site-packages", "__pycache__"} & set(parts[:-1]), rel
        assert not parts[-1].startswith("_sysconfigdata"), rel
    assert "encodings/cp1252.py" not in rels  # generated codec table
    assert "encodings/utf_8.py" in rels
    assert len(files) > 300


def test_stdlib_subset_is_deterministic():
    a, b = load_corpus("stdlib", max_files=25), load_corpus("stdlib", max_files=25)
    assert a.name == "stdlib" and len(a.files) == 25
    assert a.fingerprint == b.fingerprint
    assert list(a.documents()) == list(b.documents())
    assert load_corpus("stdlib", max_files=24).fingerprint != a.fingerprint


def test_directory_corpus(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# b\n")
    (tmp_path / "a.txt").write_text("a text\n")
    (tmp_path / "c.py").write_text("print('c')\n")
    (tmp_path / "skip.csv").write_text("x,y\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.txt").write_text("hidden\n")
    corpus = load_corpus(str(tmp_path))
    assert list(corpus.documents()) == ["a text\n", "print('c')\n", "# b\n"]
    before = corpus.fingerprint
    assert load_corpus(str(tmp_path)).fingerprint == before
    (tmp_path / "a.txt").write_text("a texT\n")
    assert load_corpus(str(tmp_path)).fingerprint != before
    stats = corpus_stats(corpus)
    assert (stats.files, stats.documents, stats.chars, stats.tokens) == (3, 3, len("a texT\nprint('c')\n# b\n"), None)


def test_text_file_and_errors(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("line one\r\nline two\n", newline="")
    assert list(load_corpus(f).documents()) == ["line one\r\nline two\n"]
    with pytest.raises(DatawallError, match="no such file"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatawallError, match="no .txt"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "empty" / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DatawallError, match="latin.txt: not UTF-8"):
        list(load_corpus(tmp_path / "empty").documents())


def test_jsonl_corpus_rows_and_errors(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "first\n"}) + "\n\n" + json.dumps({"text": "second", "id": 2}) + "\n")
    corpus = load_corpus(f)
    assert list(corpus.documents()) == ["first\n", "second"]
    assert list(load_corpus(f, max_files=1).documents()) == ["first\n"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": "unterminated\n')
    with pytest.raises(DatawallError, match=r"bad\.jsonl:2: not valid JSON"):
        list(load_corpus(bad).documents())
    bad.write_text(json.dumps({"text": "ok"}) + "\n\n" + json.dumps({"txt": "no"}) + "\n")
    with pytest.raises(DatawallError, match=r'bad\.jsonl:3: .*"text"'):
        list(load_corpus(bad).documents())


def test_corpus_tokenizer_and_tokens_are_cached(cache):
    corpus = load_corpus("stdlib", max_files=40)
    tok = corpus_tokenizer(corpus, vocab_size=400)
    assert tok.kind == "bpe" and tok.vocab_size == 400
    entries = list((cache / "tokenizers").iterdir())
    assert len(entries) == 1
    stamp = (entries[0] / "tokenizer.json").stat().st_mtime_ns
    assert corpus_tokenizer(load_corpus("stdlib", max_files=40), vocab_size=400) == tok
    assert (entries[0] / "tokenizer.json").stat().st_mtime_ns == stamp  # loaded, not retrained

    tokens, bounds = corpus_tokens(corpus, tok)
    docs = list(corpus.documents())
    assert tokens.dtype == np.uint16 and len(bounds) == len(docs) + 1 and bounds[-1] == len(tokens)
    for i in (0, 7, len(docs) - 1):
        doc = tokens[bounds[i]:bounds[i + 1]]
        assert doc[-1] == tok.eos_id
        assert tok.decode(doc[:-1]) == docs[i]
    again = corpus_tokens(load_corpus("stdlib", max_files=40), tok)
    assert np.array_equal(again.tokens, tokens) and np.array_equal(again.doc_bounds, bounds)
    stats = corpus_stats(corpus, tok)
    assert stats.tokens == len(tokens) - len(docs) and stats.documents == len(docs)
    assert not list(cache.rglob("*.tmp"))


def test_racing_writers_see_whole_entries(cache, tmp_path):
    corpus = load_corpus("stdlib", max_files=15)
    tok = Tokenizer.train_bpe(corpus.documents(), vocab_size=300)
    results, errors = [], []

    def work() -> None:
        try:
            results.append(corpus_tokens(corpus, tok))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r.tokens, results[0].tokens) for r in results)
    assert len(list((cache / "tokens").iterdir())) == 1 and not list(cache.rglob(".*.tmp-*"))
    # the loser of a rename race discards its copy and keeps the winner's
    final = tmp_path / "final"
    final.mkdir()
    (final / "f").write_text("winner")
    with atomic_directory(final, replace=False) as tmp:
        (tmp / "f").write_text("loser")
    assert (final / "f").read_text() == "winner" and not list(tmp_path.glob(".final.*"))
