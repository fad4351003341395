"""An on-disk cache of samples keyed by (backend identity, prompt or chat messages, sampling params, sample index).

A re-run never pays twice for a sample and an interrupted run resumes with the samples it already has.
sqlite3 (stdlib) in WAL mode: each batch is one transaction, so a crash loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from datawall.errors import DatawallError
from datawall.sampling.backends import Completion, Prompt


def params_key(**params: object) -> str:
    """Canonical JSON of the sampling parameters that change what a sample is."""
    return json.dumps(params, sort_keys=True)


class SampleCache:
    """get/put completions by (identity, prompt, params, index); counts hits and stores."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT, idx INTEGER, value TEXT, "
                            "PRIMARY KEY (key, idx))")
        except sqlite3.DatabaseError as e:
            raise DatawallError(f"{self.path}: not a usable sample cache ({e}); delete it or pass another "
                                "--cache") from None
        self.hits = 0
        self.stored = 0

    @staticmethod
    def key(identity: str, prompt: Prompt, params: str) -> str:
        """One key per (backend, prompt, params); the sample index is the second column. Chat messages are
        keyed by their canonical JSON behind a NUL-delimited marker (text prompts keep their old keys), so chat
        and plain samples never mix."""
        text = prompt if isinstance(prompt, str) else "\0chat\0" + json.dumps(prompt, sort_keys=True)
        return hashlib.sha256("\0".join((identity, text, params)).encode()).hexdigest()

    def get(self, key: str, indices: list[int]) -> dict[int, Completion]:
        """The cached samples among `indices`."""
        wanted = set(indices)
        rows = self.db.execute("SELECT idx, value FROM samples WHERE key = ?", (key,)).fetchall()
        found = {idx: Completion(**json.loads(value)) for idx, value in rows if idx in wanted}
        self.hits += len(found)
        return found

    def put(self, items: list[tuple[str, int, Completion]]) -> None:
        """Store (key, index, completion) triples in one transaction."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?)",
                                [(k, i, json.dumps(asdict(c))) for k, i, c in items])
        self.stored += len(items)

    def close(self) -> None:
        """Close the database."""
        self.db.close()
