"""The NumPy ops namespace (the reference every other engine is compared with)."""

from __future__ import annotations

import functools

import numpy as np

from descend.backend import bits as _bits
from descend.backend import windows as _windows

name = "numpy"

matmul = np.matmul
exp = np.exp
cos = np.cos
log = np.log
log1p = np.log1p
tanh = np.tanh
sqrt = np.sqrt
square = np.square
abs = np.abs  # noqa: A001 - the namespace mirrors the array API's names
sign = np.sign
floor = np.floor
maximum = np.maximum
minimum = np.minimum
where = np.where
zeros_like = np.zeros_like
ones_like = np.ones_like


def asarray(x, dtype=None):
    return np.asarray(x, dtype=dtype)


def zeros(shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


def full(shape, value, dtype="float32"):
    return np.full(shape, value, dtype=dtype)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return np.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return np.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return np.max(x, axis=axis, keepdims=keepdims)


def sigmoid(x):
    # exp of a non-positive number only: no overflow warning for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def relu(x):
    return np.maximum(x, 0)


def take_labels(logp, y):
    """``logp[i, y[i]]`` for every row i."""
    return np.take_along_axis(logp, np.asarray(y)[:, None], axis=1)[:, 0]


def cast(x, dtype):
    return np.asarray(x).astype(dtype, copy=False)


def to_numpy(x):
    return np.asarray(x)


def keep_mask(key, layer, keep, shape, dtype):
    """A {0, 1} dropout mask with P(1) = keep, drawn from the Generator ``key``.

    The generator is the step's own (seeded by seed and step), and layers draw
    in order, so ``layer`` needs no part in the draw.
    """
    return (key.random(shape) < keep).astype(dtype)


def add_bias(z, b):
    """``z + b``, ``b`` (one value per channel) broadcast along the last axis of ``z``."""
    return z + b


def reshape(x, shape):
    return np.reshape(x, shape)


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    return np.reshape(x, (x.shape[0], -1))


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w`` (square): im2col and one matrix product."""
    cols, oh, ow = _windows.im2col(x, w.shape[0], stride, padding)
    return (cols @ w.reshape(-1, w.shape[3])).reshape(x.shape[0], oh, ow, w.shape[3])


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return functools.reduce(np.maximum, _windows.window_offsets(x, size, stride or size))


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _windows.pool_windows(x, size, stride or size).mean(axis=-1)


# Integer helpers of augmentation (see ``descend.backend.bits``) -----------------
def arange(n, like=None):
    """``[0, 1, ..., n-1]`` as int32 (``like``: an array whose device the result goes to; NumPy has one)."""
    return np.arange(n, dtype=np.int32)


def _mix(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(_bits.C1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(_bits.C2)
    return x ^ (x >> np.uint32(15))


def random_bits(seed, step, counter):
    """31 pseudo-random bits (int32) per element of the int array ``counter``, a pure function of
    ``(seed, step, counter)``: the same numbers on every backend."""
    with np.errstate(over="ignore"):
        seed = np.uint32((int(seed) + _bits.GOLDEN) & _bits.MASK)
        key = _mix(_mix(seed) ^ np.uint32(int(step) & _bits.MASK))
        return (_mix(key ^ np.asarray(counter).astype(np.uint32)) >> np.uint32(1)).astype(np.int32)


def take_along_rows(x, idx):
    """``out[i, j] = x[i, idx[i, j]]`` for 2-D ``x``, and 0 where ``idx[i, j] < 0``."""
    idx = np.asarray(idx)
    out = np.take_along_axis(x, np.maximum(idx, 0), axis=1)
    return np.where(idx < 0, np.zeros((), x.dtype), out)
