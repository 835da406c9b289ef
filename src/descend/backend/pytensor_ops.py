"""The PyTensor ops namespace: the same vocabulary, building symbolic graphs."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

name = "pytensor"

matmul = pt.dot
exp = pt.exp
cos = pt.cos
log = pt.log
log1p = pt.log1p
tanh = pt.tanh
sqrt = pt.sqrt
square = pt.square
abs = pt.abs  # noqa: A001 - the namespace mirrors the array API's names
sign = pt.sign
floor = pt.floor
maximum = pt.maximum
minimum = pt.minimum
where = pt.switch
zeros_like = pt.zeros_like
ones_like = pt.ones_like
sigmoid = pt.sigmoid


def _dtype(dtype) -> str:
    return str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype


def asarray(x, dtype=None):
    if isinstance(x, pytensor.graph.basic.Variable):
        return x if dtype is None else pt.cast(x, _dtype(dtype))
    return pt.as_tensor_variable(np.asarray(x, dtype=dtype))


def zeros(shape, dtype="float32"):
    return pt.zeros(shape, dtype=_dtype(dtype))


def full(shape, value, dtype="float32"):
    return pt.full(shape, np.asarray(value, dtype=_dtype(dtype)), dtype=_dtype(dtype))


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return pt.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return pt.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return pt.max(x, axis=axis, keepdims=keepdims)


def relu(x):
    return pt.maximum(x, 0)


def take_labels(logp, y):
    """``logp[i, y[i]]`` for every row i."""
    return logp[pt.arange(logp.shape[0]), y]


def cast(x, dtype):
    return pt.cast(x, _dtype(dtype))


def to_numpy(x):
    if hasattr(x, "get_value"):
        return np.asarray(x.get_value())
    return np.asarray(x)


class RngChain:
    """A shared random generator threaded through a graph's draws.

    Each draw returns the generator's next state, which the next draw uses;
    the compiled function's updates store the last one back into ``shared``.
    """

    def __init__(self, shared):
        self.shared = shared
        self.current = shared

    def uniform(self, shape):
        self.current, draws = self.current.uniform(size=shape)
        return draws


def keep_mask(key, layer, keep, shape, dtype):
    """A {0, 1} dropout mask with P(1) = keep, drawn from the RngChain ``key`` (layers draw in order)."""
    return pt.cast(pt.lt(key.uniform(shape), keep), _dtype(dtype))
