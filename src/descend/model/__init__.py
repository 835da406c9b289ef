"""Engine-agnostic model math: the MLP spec, initialisation, forward pass, loss."""

from descend.model.mlp import (
    MLP,
    forward,
    init_params,
    init_state,
    loss_fn,
    penalty,
    predict_logits,
    softmax_cross_entropy,
    weight_names,
)

__all__ = [
    "MLP",
    "forward",
    "init_params",
    "init_state",
    "loss_fn",
    "penalty",
    "predict_logits",
    "softmax_cross_entropy",
    "weight_names",
]
