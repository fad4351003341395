"""Shared fixtures: a private cache dir and two threads, as on the CI machine."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy BLAS threads stall beside torch on 2 cores
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ANCHORS = REPO.parent / "shared" / "anchors"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep tokenizer/corpus caches and the run store out of the user's home during tests."""
    monkeypatch.setenv("DATAWALL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("DATAWALL_HOME", str(tmp_path_factory.getbasetemp() / "home"))
