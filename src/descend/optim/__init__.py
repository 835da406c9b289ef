"""Optimizers as pure, composable transformations, and learning-rate schedules."""

from descend.optim.aliases import (
    OPTIMIZERS,
    adagrad,
    adam,
    adamw,
    make_optimizer,
    momentum,
    nesterov,
    rmsprop,
    sgd,
)
from descend.optim.base import GradientTransformation, apply_updates, chain
from descend.optim.schedules import (
    ReduceOnPlateau,
    ScheduleSpec,
    constant,
    exponential,
    inverse_time,
    per_epoch,
    step_decay,
    warmup_cosine,
)
from descend.optim.transforms import (
    ScaleByLearningRateState,
    add_decayed_weights,
    add_l2,
    clip_by_global_norm,
    max_norm,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    trace,
)

__all__ = [
    "OPTIMIZERS", "GradientTransformation", "ReduceOnPlateau", "ScaleByLearningRateState", "ScheduleSpec",
    "adagrad", "adam", "adamw", "add_decayed_weights", "add_l2", "apply_updates", "chain", "clip_by_global_norm",
    "constant", "exponential", "inverse_time", "make_optimizer", "max_norm", "momentum", "nesterov", "per_epoch",
    "rmsprop", "scale", "scale_by_adam", "scale_by_learning_rate", "scale_by_rms", "scale_by_rss", "sgd",
    "step_decay", "trace", "warmup_cosine",
]
