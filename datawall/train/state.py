"""Training checkpoints: the model in its own directory format plus the optimizer and loop state, swapped in
atomically; and the best evaluation's weights, kept beside them as a second checkpoint.

run_dir/checkpoint   the model's directory (an HF directory for a Transformer, a reward-model directory for a
                     RewardModel, ...) + trainer_state.pt (AdamW moments, LoopState)
run_dir/best         the model's directory at the best evaluation so far + selection.json (step, score, metrics)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from datawall.atomic import DiskFullError, disk_size, previous_directory, require_space

STATE_FILE = "trainer_state.pt"
SELECTION_FILE = "selection.json"


@dataclass
class LoopState:
    """Where the loop stands: everything besides weights and optimizer moments needed to continue."""

    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    wall_seconds: float = 0.0
    best_step: int | None = None  # the evaluation run_dir/best holds
    best_score: float | None = None  # its criterion (lower is better)
    best_metrics: dict = field(default_factory=dict)
    evals_since_best: int = 0
    stopped: bool = False  # early stopping ended the run before its last step

    def counters(self) -> dict:
        """What a checkpoint's metadata records about the training that made it."""
        return {"step": self.step, "tokens": self.tokens, "flops": self.flops, "wall_seconds": self.wall_seconds}


class ModelFormat(Protocol):
    """How the loop writes and reads the model it trains (its own directory format)."""

    def save(self, model: torch.nn.Module, directory: Path, meta: dict, extra: Callable[[Path], None]) -> None:
        """Write model (with meta) to directory atomically; extra(tmp) adds files swapped in with it."""

    def load_into(self, model: torch.nn.Module, directory: Path) -> None:
        """Load the weights saved in directory into model, in place."""


@dataclass
class HFFormat:
    """A Transformer as a Hugging Face Llama directory with its tokenizer (datawall.model.save_checkpoint)."""

    tokenizer: object
    meta: dict = field(default_factory=dict)

    def save(self, model, directory: Path, meta: dict, extra: Callable[[Path], None]) -> None:
        from datawall.model import save_checkpoint

        save_checkpoint(directory, model, self.tokenizer, self.meta | meta, extra=extra)

    def load_into(self, model, directory: Path) -> None:
        from datawall.model import load_checkpoint

        model.load_state_dict(load_checkpoint(directory).model.state_dict())


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested state dict (each storage once)."""
    seen, total = set(), 0
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            key = (x.untyped_storage().data_ptr(), x.device)
            if key not in seen:
                seen.add(key)
                total += x.untyped_storage().nbytes()
        elif isinstance(x, dict):
            stack += list(x.values())
        elif isinstance(x, list | tuple):
            stack += list(x)
    return total


def _check_space(directory: Path, estimate: int, what: str) -> None:
    """Refuse before writing when the disk cannot hold the new copy beside the old (the swap needs both)."""
    need = max(disk_size(directory), estimate) + 64 * 1024  # json, tokenizer, filesystem slack
    require_space(directory, need, what)


def _write_state(payload: dict) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp / STATE_FILE, "wb") as f:  # a file object keeps ENOSPC in the error torch raises
            torch.save(payload, f)
    return write


def save_training_checkpoint(run_dir: Path, model, fmt: ModelFormat, optimizer, state: LoopState) -> None:
    """Write run_dir/checkpoint (model + trainer state) so that a crash at any moment leaves one intact copy.

    A full disk raises one line (DiskFullError) and leaves the previous checkpoint as it was: free space and
    run again to resume from it.
    """
    target = run_dir / "checkpoint"
    payload = {"optimizer": optimizer.state_dict(), "loop": asdict(state)}
    try:
        _check_space(target, _tensor_bytes(model.state_dict()) + _tensor_bytes(payload),
                     f"the step-{state.step} checkpoint")
        fmt.save(model, target, state.counters(), extra=_write_state(payload))
    except DiskFullError as e:
        kept = find_training_checkpoint(run_dir)
        if kept is None:
            raise
        step = torch.load(kept / STATE_FILE, map_location="cpu", weights_only=True)["loop"]["step"]
        raise DiskFullError(f"{e}; the step-{step} checkpoint is kept: free space and rerun to resume") from None


def save_best(run_dir: Path, model, fmt: ModelFormat, state: LoopState, criterion: str) -> None:
    """Write run_dir/best: the model now, as the best evaluation (state.best_*) describes it."""
    selection = {"step": state.best_step, "criterion": criterion, "score": state.best_score,
                 "metrics": state.best_metrics}

    def write(tmp: Path) -> None:
        (tmp / SELECTION_FILE).write_text(json.dumps(selection, indent=2) + "\n")

    target = run_dir / "best"
    _check_space(target, _tensor_bytes(model.state_dict()), f"the best checkpoint (step {state.best_step})")
    fmt.save(model, target, state.counters(), extra=write)


def find_best(run_dir: Path) -> tuple[Path, dict] | None:
    """run_dir/best (or the copy an interrupted swap left aside) and its selection.json, or None."""
    for candidate in (run_dir / "best", previous_directory(run_dir / "best")):
        if candidate is not None and (candidate / SELECTION_FILE).is_file():
            return candidate, json.loads((candidate / SELECTION_FILE).read_text())
    return None


def find_training_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in run_dir (a crash between the swap's two renames leaves it aside)."""
    for candidate in (run_dir / "checkpoint", previous_directory(run_dir / "checkpoint")):
        if candidate is not None and (candidate / STATE_FILE).exists():
            return candidate
    return None


def load_training_checkpoint(path: Path, model, fmt: ModelFormat, optimizer) -> LoopState:
    """Load weights into model and moments into optimizer in place; return the loop state."""
    fmt.load_into(model, path)
    payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    return LoopState(**payload["loop"])
