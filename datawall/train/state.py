"""Training checkpoints: an HF model directory plus the optimizer and loop state, swapped in atomically."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from datawall.atomic import previous_directory
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
    payload = {"optimizer": optimizer.state_dict(), "loop": asdict(state)}
    save_checkpoint(run_dir / "checkpoint", model, tokenizer, meta | asdict(state),
                    extra=lambda tmp: torch.save(payload, tmp / STATE_FILE))


def find_training_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in run_dir (a crash between the swap's two renames leaves it aside)."""
    for candidate in (run_dir / "checkpoint", previous_directory(run_dir / "checkpoint")):
        if candidate is not None and (candidate / STATE_FILE).exists():
            return candidate
    return None


def load_training_checkpoint(path: Path, model, optimizer) -> LoopState:
    """Load weights into model and moments into optimizer in place; return the loop state."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt.model.state_dict())
    payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    return LoopState(**payload["loop"])
