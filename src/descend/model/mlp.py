"""The multilayer perceptron shorthand: ``MLP(hidden=(500, 300))`` builds a :class:`Network`.

It yields the parameter names and initial values (the same random draws)
the perceptron had before networks were made of layers, so every model file
written since loads and predicts as it did, and the same seed trains the same
weights.  Defined next to :class:`Network`, which writes such networks back
as the shorthand.
"""

from descend.model.layers import ACTIVATIONS, BN_EPS, BN_MOMENTUM, batchnorm
from descend.model.network import MLP, activation_of

__all__ = ["ACTIVATIONS", "BN_EPS", "BN_MOMENTUM", "MLP", "activation_of", "batchnorm"]
