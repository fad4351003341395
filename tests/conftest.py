"""Shared fixtures: a private cache dir and two threads, as on the CI machine; anchor data that CI must have."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy BLAS threads stall beside torch on 2 cores
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ANCHORS = REPO.parent / "shared" / "anchors"
# .ci/run sets DATAWALL_CI; CI always has ../shared beside the clone, so a missing anchor is a failure there
IN_CI = bool(os.environ.get("DATAWALL_CI") or os.environ.get("CI"))

# two threads, as on the CI machine; one per process when pytest-xdist runs the files on two workers
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


def require_anchor(path: Path) -> Path:
    """`path` under ../shared/anchors: fail in CI when it is missing, skip (with the reason) elsewhere."""
    if not path.exists():
        msg = f"anchor data {path} not found (the reproduction tests read ../shared/anchors beside the clone)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def chinchilla_csv() -> Path:
    """Epoch's extraction of the Chinchilla points (../shared/anchors)."""
    return require_anchor(ANCHORS / "chinchilla_epoch_svg_extracted.csv")


@pytest.fixture(scope="session")
def datablations_csv() -> Path:
    """Muennighoff et al.'s data-constrained runs (../shared/anchors)."""
    return require_anchor(ANCHORS / "datablations_runs.csv")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep tokenizer/corpus caches and the run store out of the user's home during tests."""
    monkeypatch.setenv("DATAWALL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("DATAWALL_HOME", str(tmp_path_factory.getbasetemp() / "home"))
