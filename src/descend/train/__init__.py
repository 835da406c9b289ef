"""Training: run setup, the fit loop and its callbacks, early stopping, checkpoints, history, progress."""

from descend.train.config import TrainConfig
from descend.train.early_stopping import EarlyStopping
from descend.train.loop import Callback, FitOptions, FitResult, FitState, LambdaCallback, fit, fit_options
from descend.train.run import RunResult, run_training

__all__ = ["Callback", "EarlyStopping", "FitOptions", "FitResult", "FitState", "LambdaCallback", "RunResult",
           "TrainConfig", "fit", "fit_options", "run_training"]
