"""The multilayer perceptron shorthand: ``MLP(hidden=(500, 300))`` builds a :class:`Network`.

It yields the parameter names and initial values (the same random draws)
the perceptron had before networks were made of layers, so every model file
written since loads and predicts as it did, and the same seed trains the same
weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from descend.errors import require
from descend.model.layers import (
    ACTIVATIONS,
    BN_EPS,
    BN_MOMENTUM,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    init_for,
)

if TYPE_CHECKING:
    from descend.model.network import Network

__all__ = ["ACTIVATIONS", "BN_EPS", "BN_MOMENTUM", "MLP", "activation_of"]


def activation_of(dense: Dense) -> str:
    """The activation an MLP without hidden layers is recorded with: the one its initialisation follows."""
    return "relu" if dense.init_name == "he" else "tanh"


def MLP(hidden=(300,), activation: str = "relu", dropout_keep=(), batchnorm: bool = False, *,
        input_shape=None, task: str = "classification") -> Network:  # noqa: N802 - reads as the class it was
    """A fully connected network: ``n_in -> hidden... -> n_outputs`` logits.

    Layer ``i`` is ``dropout(keep[i]) -> dense_i -> [batch norm] -> activation``
    for hidden layers and ``dropout(keep[-1]) -> dense_last`` for the output;
    ``dropout_keep`` holds the keep probability of the input and of each hidden
    layer's output (empty: no dropout).  Batch norm replaces the hidden dense
    layers' biases.  Initialisation follows ``activation`` in every layer,
    the output layer included (He for ReLU, Glorot for tanh and sigmoid);
    ``hidden=()`` is multinomial logistic regression.  Parameter names are
    ``dense{i}.W``, ``dense{i}.b`` and ``bn{i}.gamma`` / ``bn{i}.beta``.
    """
    hidden = tuple(int(h) for h in hidden)
    dropout_keep = tuple(float(p) for p in dropout_keep)
    require(all(h > 0 for h in hidden), "hidden", "positive layer sizes", hidden)
    require(activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", activation)
    require(len(dropout_keep) in (0, len(hidden) + 1), "dropout_keep",
            f"{len(hidden) + 1} keep probabilities (input, then each hidden layer)", dropout_keep)
    require(all(0.0 < p <= 1.0 for p in dropout_keep), "dropout_keep", "probabilities in (0, 1]", dropout_keep)
    init_name = init_for(activation)
    layers: list[Layer] = []
    for i, units in enumerate((*hidden, None)):
        if dropout_keep:
            layers.append(Dropout(dropout_keep[i]))
        last = i == len(hidden)
        layers.append(Dense(units, bias=last or not batchnorm, init_name=init_name))
        if not last:
            if batchnorm:
                layers.append(BatchNorm())
            layers.append(Activation(activation))
    from descend.model.network import Network

    return Network(input_shape, tuple(layers), task)


def _from_dict(d: dict) -> Network:
    from descend.model.network import Network

    return Network.from_dict(d)


MLP.from_dict = _from_dict  # model files name their spec "MLP"; callers load them as ``MLP.from_dict``
