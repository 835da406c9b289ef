"""The TensorFlow ops namespace (eager tensors and tf.function graphs alike)."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from descend.backend import windows as _windows

# TensorFlow's start-up chatter is not the user's business.  TF_CPP_MIN_LOG_LEVEL silences most of it, but
# TensorFlow 2.21 writes two lines from C++ before it reads that setting.
_STARTUP_NOISE = ("absl::InitializeLog()", "oneDNN custom operations are on")


def _import_tensorflow():
    """``import tensorflow``, with the start-up lines no setting silences dropped from stderr (the rest kept)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to filter
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
    return tensorflow


tf = _import_tensorflow()

name = "tensorflow"

matmul = tf.matmul
exp = tf.exp
cos = tf.cos
log = tf.math.log
log1p = tf.math.log1p
tanh = tf.tanh
sqrt = tf.sqrt
square = tf.square
abs = tf.abs  # noqa: A001 - the namespace mirrors the array API's names
sign = tf.sign
floor = tf.floor
maximum = tf.maximum
minimum = tf.minimum
where = tf.where
zeros_like = tf.zeros_like
ones_like = tf.ones_like
sigmoid = tf.sigmoid
relu = tf.nn.relu


def to_dtype(dtype):
    return tf.as_dtype(np.dtype(dtype) if isinstance(dtype, str) else dtype)


def asarray(x, dtype=None):
    if isinstance(x, tf.Tensor) and dtype is None:
        return x
    return tf.convert_to_tensor(np.asarray(x, dtype=dtype) if dtype is not None else x)


def zeros(shape, dtype="float32"):
    return tf.zeros(shape, dtype=to_dtype(dtype))


def full(shape, value, dtype="float32"):
    return tf.fill(shape, tf.constant(value, dtype=to_dtype(dtype)))


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return tf.reduce_mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return tf.reduce_max(x, axis=axis, keepdims=keepdims)


def take_labels(logp, y):
    """``logp[i, y[i]]`` for every row i."""
    return tf.gather(logp, tf.cast(y, tf.int32), axis=1, batch_dims=1)


def cast(x, dtype):
    return tf.cast(x, to_dtype(dtype))


def to_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def keep_mask(key, layer, keep, shape, dtype):
    """A {0, 1} dropout mask with P(1) = keep from the stateless seed pair ``key``, folded with the layer."""
    seed = tf.random.experimental.stateless_fold_in(key, layer)
    return tf.cast(tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32) < keep, dtype)


def reshape(x, shape):
    return tf.reshape(x, shape)


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    trailing = x.shape[1:]
    if trailing.is_fully_defined():
        return tf.reshape(x, (-1, int(np.prod(trailing))))
    return tf.reshape(x, tf.stack([tf.shape(x)[0], -1]))


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``, with explicit "same" pads.

    TensorFlow's own "SAME" pads by the input size at strides above 1; the
    explicit pads are the same at every stride.
    """
    lo, hi = _windows.conv_pads(int(w.shape[0]), padding)
    return tf.nn.conv2d(x, w, strides=stride, padding=[[0, 0], [lo, hi], [lo, hi], [0, 0]])


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return tf.nn.max_pool2d(x, size, stride or size, "VALID")


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return tf.nn.avg_pool2d(x, size, stride or size, "VALID")
