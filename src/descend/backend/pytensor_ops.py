"""The PyTensor ops namespace: the same vocabulary, building symbolic graphs."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from descend.backend import bits as _bits
from descend.backend import windows as _windows

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


def add_bias(z, b):
    """``z + b``, ``b`` (one value per channel) broadcast along the last axis of ``z``."""
    return z + b


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


def _window_index(h, w, k, stride, padding):
    """For each output pixel and window position (row-major), the input pixel it reads; ``h*w`` is a zero pixel."""
    lo, _ = _windows.conv_pads(k, padding)
    oh, ow = _windows.conv_out(h, k, stride, padding), _windows.conv_out(w, k, stride, padding)
    rows = (np.arange(oh) * stride)[:, None, None, None] + np.arange(k)[None, None, :, None] - lo
    cols = (np.arange(ow) * stride)[None, :, None, None] + np.arange(k)[None, None, None, :] - lo
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return np.where(inside, rows * w + cols, h * w).reshape(-1).astype(np.int64), oh, ow


def _gather_windows(x, k, stride, padding):
    """``(oh*ow, k*k, n, c)``: every window of ``x``, gathered in one indexing op (and its gradient in one)."""
    _, h, w, c = _static(x, "convolution and pooling")
    index, oh, ow = _window_index(h, w, k, stride, padding)
    n = x.shape[0]
    pixels = pt.reshape(x, (n, h * w, c)).dimshuffle(1, 0, 2)
    if padding == "same":
        pixels = pt.concatenate([pixels, pt.zeros((1, n, c), dtype=x.dtype)], axis=0)
    return pt.reshape(pixels[index], (oh * ow, k * k, n, c)), oh, ow


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``: im2col by one gather, one product.

    PyTensor has no convolution of its own.  Gathering the windows with one
    constant index (rather than one slice per window position) keeps the
    graph, and its compile time, small.
    """
    k, _, c, f = _static(w, "conv2d", first=0)
    windows, oh, ow = _gather_windows(x, k, stride, padding)
    cols = pt.reshape(windows.dimshuffle(2, 0, 1, 3), (-1, k * k * c))
    return pt.reshape(pt.dot(cols, pt.reshape(w, (k * k * c, f))), (-1, oh, ow, f))


def _pool(x, size, stride, reduce):
    windows, oh, ow = _gather_windows(x, size, stride or size, "valid")
    return pt.reshape(reduce(windows, axis=1).dimshuffle(1, 0, 2), (-1, oh, ow, x.type.shape[3]))


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _pool(x, size, stride, pt.max)


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _pool(x, size, stride, pt.mean)


# Integer helpers of augmentation (see ``descend.backend.bits``) -----------------
def arange(n, like=None):
    """``[0, 1, ..., n-1]`` as int32 (``n`` may be symbolic; ``like`` is for backends with devices)."""
    return pt.cast(pt.arange(n), "int32")


def random_bits(seed, step, counter):
    """31 pseudo-random bits (int32) per element of the int array ``counter``, a pure function of
    ``(seed, step, counter)``: the same numbers on every backend.  ``seed`` and ``step`` may be symbolic."""
    xor = pt.bitwise_xor
    key = _bits.key_int64(pt.cast(seed, "int64"), pt.cast(step, "int64"), xor)
    return pt.cast(_bits.mix_int64(xor(pt.cast(counter, "int64"), key), xor) // 2, "int32")


def take_along_rows(x, idx):
    """``out[i, j] = x[i, idx[i, j]]`` for 2-D ``x``, and 0 where ``idx[i, j] < 0``."""
    out = x[pt.arange(x.shape[0])[:, None], pt.maximum(idx, 0)]
    return pt.switch(pt.lt(idx, 0), pt.zeros((), dtype=x.dtype), out)
