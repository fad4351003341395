"""Tokens for every experiment: tokenizers, corpora, token budgets and task examples."""

from datawall.data.budget import IGNORE, Doc, PackedStream, corpus_docs, heldout_rows
from datawall.data.cache import CorpusTokens, cache_dir, corpus_tokenizer, corpus_tokens
from datawall.data.corpus import STDLIB, Corpus, CorpusStats, corpus_stats, load_corpus, stdlib_files
from datawall.data.examples import ExampleStream, example_rows
from datawall.data.task_docs import task_docs
from datawall.data.tokenizer import Tokenizer

__all__ = [
    "IGNORE",
    "STDLIB",
    "Corpus",
    "CorpusStats",
    "CorpusTokens",
    "Doc",
    "ExampleStream",
    "PackedStream",
    "Tokenizer",
    "cache_dir",
    "corpus_docs",
    "corpus_stats",
    "corpus_tokenizer",
    "corpus_tokens",
    "example_rows",
    "heldout_rows",
    "load_corpus",
    "stdlib_files",
    "task_docs",
]
