"""Training: the fit loop, early stopping, checkpoints, history, progress."""

from descend.train.config import TrainConfig
from descend.train.early_stopping import EarlyStopping
from descend.train.loop import FitResult, fit
from descend.train.run import RunResult, run_training

__all__ = ["EarlyStopping", "FitResult", "RunResult", "TrainConfig", "fit", "run_training"]
