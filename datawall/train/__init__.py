"""One training loop (loop.train) for every objective (objectives/: lm, reward), its configs and checkpoints."""

from datawall.train.config import LoopConfig, OptimConfig, TrainConfig
from datawall.train.loop import TrainResult, train
from datawall.train.objectives import Objective, Step
from datawall.train.objectives.lm import LMObjective, heldout_loss, train_lm
from datawall.train.optim import ParamGroup, make_optimizer

__all__ = ["LMObjective", "LoopConfig", "Objective", "OptimConfig", "ParamGroup", "Step", "TrainConfig",
           "TrainResult", "heldout_loss", "make_optimizer", "train", "train_lm"]
