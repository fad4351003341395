"""Training checkpoints: an HF model directory plus the optimizer and loop state, swapped in atomically."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from datawall.atomic import atomic_write
from datawall.model import load_checkpoint, save_checkpoint

STATE_FILE = "trainer_state.pt"


@dataclass
class LoopState:
    """Where the loop stands: everything besides weights and optimizer moments needed to continue."""

    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    wall_seconds: float = 0.0


def save_training_checkpoint(run_dir: Path, model, tokenizer, meta: dict, optimizer, state: LoopState) -> None:
    """Write run_dir/checkpoint (model + trainer state) so that a crash at any moment leaves one intact copy."""
    final, staged, old = run_dir / "checkpoint", run_dir / ".checkpoint.new", run_dir / ".checkpoint.old"
    shutil.rmtree(staged, ignore_errors=True)
    save_checkpoint(staged, model, tokenizer, meta | asdict(state))
    payload = {"optimizer": optimizer.state_dict(), "loop": asdict(state)}
    atomic_write(staged / STATE_FILE, lambda p: torch.save(payload, p))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def find_training_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in run_dir (a crash between the two renames leaves it in .old)."""
    for candidate in (run_dir / "checkpoint", run_dir / ".checkpoint.old"):
        if (candidate / STATE_FILE).exists():
            return candidate
    return None


def load_training_checkpoint(path: Path, model, optimizer) -> LoopState:
    """Load weights into model and moments into optimizer in place; return the loop state."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt.model.state_dict())
    payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    return LoopState(**payload["loop"])
