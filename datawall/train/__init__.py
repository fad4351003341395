"""One training loop for pretraining and SFT, its configs, checkpoints and evaluation."""

from datawall.train.config import OptimConfig, TrainConfig
from datawall.train.loop import TrainResult, heldout_loss, train

__all__ = ["OptimConfig", "TrainConfig", "TrainResult", "heldout_loss", "train"]
