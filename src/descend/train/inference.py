"""Probabilities from logits, and Monte-Carlo dropout: shared by single models and ensembles."""

from __future__ import annotations

import numpy as np

from descend.backend import numpy_ops
from descend.model import MLP, predict_logits


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def mc_dropout_proba(spec: MLP, params, state, x, *, samples: int, seed: int = 0) -> np.ndarray:
    """Mean softmax over ``samples`` passes with dropout on (batch norm in inference mode)."""
    total = 0.0
    for k in range(samples):
        total = total + softmax(predict_logits(numpy_ops, spec, params, state, x,
                                               key=np.random.default_rng([seed, k]), mc_dropout=True))
    return total / samples
