"""The PyTensor ops namespace: the same vocabulary, building symbolic graphs."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from descend.backend.windows import conv_out, conv_pads

name = "pytensor"

matmul = pt.dot
exp = pt.exp
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


def reshape(x, shape):
    return pt.reshape(x, shape)


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    return pt.flatten(x, 2)


def _static(x, what, first=1):
    """``x``'s static shape; PyTensor must know the window geometry when it builds the graph."""
    shape = x.type.shape
    if any(s is None for s in shape[first:]):
        raise ValueError(f"{what} needs static image and kernel shapes; got {shape}")
    return shape


def _window_slices(x, size, stride, oh, ow):
    """Every window position's strided slice ``x[:, i::stride, j::stride, :]`` cut to ``oh`` x ``ow``."""
    return [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
            for i in range(size) for j in range(size)]


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``: im2col from strided slices, one product.

    PyTensor has no convolution of its own; the patches are its window slices
    side by side (HWIO order), and the product is one ``dot``.
    """
    _, h, wd, c = _static(x, "conv2d")
    k, _, _, f = _static(w, "conv2d", first=0)
    lo, hi = conv_pads(k, padding)
    if lo or hi:
        x = pt.set_subtensor(pt.zeros((x.shape[0], h + lo + hi, wd + lo + hi, c), dtype=x.dtype)[
            :, lo:lo + h, lo:lo + wd, :], x)
    oh, ow = conv_out(h, k, stride, padding), conv_out(wd, k, stride, padding)
    cols = pt.concatenate(_window_slices(x, k, stride, oh, ow), axis=3)
    out = pt.dot(pt.reshape(cols, (-1, k * k * c)), pt.reshape(w, (k * k * c, f)))
    return pt.reshape(out, (-1, oh, ow, f))


def _pool_slices(x, size, stride):
    _, h, wd, _ = _static(x, "pooling")
    stride = stride or size
    return _window_slices(x, size, stride, (h - size) // stride + 1, (wd - size) // stride + 1)


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    parts = _pool_slices(x, size, stride)
    out = parts[0]
    for part in parts[1:]:
        out = pt.maximum(out, part)
    return out


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    parts = _pool_slices(x, size, stride)
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out * (1.0 / (size * size))
