"""Engine-agnostic model math: layers, networks (and the MLP shorthand), initialisation, forward pass, loss."""

from descend.model.functional import (
    forward,
    init_params,
    init_state,
    data_loss,
    loss_fn,
    mean_squared_error,
    penalty,
    predict_logits,
    softmax_cross_entropy,
    weight_names,
)
from descend.model.layers import (
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxPool2D,
)
from descend.model.mlp import MLP
from descend.model.network import Network
from descend.model.parse import GRAMMAR, parse_layers

__all__ = [
    "MLP",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "MaxPool2D",
    "GRAMMAR",
    "Network",
    "forward",
    "init_params",
    "init_state",
    "data_loss",
    "loss_fn",
    "mean_squared_error",
    "parse_layers",
    "penalty",
    "predict_logits",
    "softmax_cross_entropy",
    "weight_names",
]
