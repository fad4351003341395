"""Figures without pyplot (no global state, no display needed), rendered to PNG bytes or files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from datawall.atomic import atomic_write_bytes


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (5.2, 4.0)) -> tuple[Figure, np.ndarray]:
    """A Figure with a rows x cols grid of Axes (returned as a flat array)."""
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> bytes:
    """Write a figure as PNG (atomically) and return the bytes."""
    data = png_bytes(fig, dpi)
    atomic_write_bytes(path, data)
    return data
