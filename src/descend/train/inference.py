"""Probabilities from logits, Monte-Carlo dropout and inference chunk sizes: shared by single models and ensembles."""

from __future__ import annotations

import math

import numpy as np

from descend.backend import numpy_ops
from descend.model import MLP, predict_logits


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: Float elements the widest activation of one inference chunk may hold (64 MB in float32): a convolution's
#: feature maps and unfolded patches grow with every row, so image networks predict in smaller chunks.
CHUNK_ELEMENTS = 2 ** 24


def inference_rows(spec, most: int = 10_000) -> int:
    """Rows per inference chunk: ``most``, or fewer for an image network whose activations per row are large."""
    if not spec.image_input:
        return most
    net = spec.resolve(math.prod(spec.input_shape), 1)  # the output layer's width does not matter here
    shapes = net.shapes()
    widest = max(math.prod(s) for s in shapes)
    for layer, s in zip(net.layers, shapes):
        filters = getattr(layer, "filters", None)
        if filters:
            widest = max(widest, layer.macs(s) // filters)  # the unfolded patches of a convolution
    return int(min(most, max(1, CHUNK_ELEMENTS // widest)))


def mc_dropout_proba(spec: MLP, params, state, x, *, samples: int, seed: int = 0) -> np.ndarray:
    """Mean softmax over ``samples`` passes with dropout on (batch norm in inference mode).

    An image network runs each pass in chunks of rows (:func:`inference_rows`), its
    masks drawn in turn from the pass's generator.
    """
    rows = inference_rows(spec, most=max(len(x), 1))
    total = 0.0
    for k in range(samples):
        key = np.random.default_rng([seed, k])
        if rows >= len(x):  # one pass over every row, as a network without images always does
            logits = predict_logits(numpy_ops, spec, params, state, x, key=key, mc_dropout=True)
        else:
            logits = np.concatenate([predict_logits(numpy_ops, spec, params, state, x[i:i + rows], key=key,
                                                    mc_dropout=True) for i in range(0, len(x), rows)])
        total = total + softmax(logits)
    return total / samples
