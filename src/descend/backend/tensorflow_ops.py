"""The TensorFlow ops namespace (eager tensors and tf.function graphs alike)."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from descend.backend import bits as _bits
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


def add_bias(z, b):
    """``z + b``, ``b`` (one value per channel) broadcast along the last axis of ``z``."""
    return z + b


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
    k = int(w.shape[0])
    lo, hi = _windows.conv_pads(k, padding)

    # XLA:CPU runs the convolutions TensorFlow's own gradient emits far slower inside the engine's
    # compiled while_loop than outside one; these use only a forward convolution and one contraction.
    @tf.custom_gradient
    def conv(x, w):
        def grad(g):
            return _input_grad(g, w, tf.shape(x), k, stride, lo, hi), _kernel_grad(x, g, w.shape, stride, lo, hi)
        return tf.nn.conv2d(x, w, strides=stride, padding=[[0, 0], [lo, hi], [lo, hi], [0, 0]]), grad

    return conv(x, w)


def _input_grad(g, w, input_shape, k, stride, lo, hi):
    """dL/dx: the stride-dilated ``g`` convolved with the flipped, I/O-swapped kernel."""
    if stride > 1:  # zeros between the rows and columns of g
        n, oh, ow, c = tf.unstack(tf.shape(g))
        g = tf.pad(g[:, :, None, :, None, :], [[0, 0], [0, 0], [0, stride - 1], [0, 0], [0, stride - 1], [0, 0]])
        g = tf.reshape(g, tf.stack([n, oh * stride, ow * stride, c]))[:, :(oh - 1) * stride + 1, :(ow - 1) * stride + 1]
    # Rows and columns past the last window (stride not dividing the padded size) get no gradient.
    rest_h = (input_shape[1] + lo + hi - k) % stride
    rest_w = (input_shape[2] + lo + hi - k) % stride
    g = tf.pad(g, [[0, 0], [k - 1 - lo, k - 1 - hi + rest_h], [k - 1 - lo, k - 1 - hi + rest_w], [0, 0]])
    return tf.nn.conv2d(g, tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]), strides=1, padding="VALID")


def _kernel_grad(x, g, kernel_shape, stride, lo, hi):
    """dL/dW: matrix products of the strided input windows (im2col by slices) with ``g``, one per kernel row."""
    kh, kw, cin, cout = (int(d) for d in kernel_shape)
    # Channels first, as on the JAX engine: each kernel row's windows form a row-major (kw * cin, n * oh * ow)
    # matrix, a plain GEMM with g, where the windows-last contraction was a much slower transposed one.
    xt = tf.pad(tf.transpose(x, [3, 0, 1, 2]), [[0, 0], [0, 0], [lo, hi], [lo, hi]])
    oh, ow = tf.shape(g)[1], tf.shape(g)[2]
    span_h, span_w = (oh - 1) * stride + 1, (ow - 1) * stride + 1
    g_rows = tf.reshape(g, [-1, cout])
    rows = [tf.reshape(tf.stack([xt[:, :, i:i + span_h:stride, j:j + span_w:stride] for j in range(kw)]),
                       [kw * cin, -1]) @ g_rows
            for i in range(kh)]
    return tf.reshape(tf.stack(rows), kernel_shape)


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return tf.nn.max_pool2d(x, size, stride or size, "VALID")


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return tf.nn.avg_pool2d(x, size, stride or size, "VALID")


# Integer helpers of augmentation (see ``descend.backend.bits``) -----------------
def arange(n, like=None):
    """``[0, 1, ..., n-1]`` as int32; ``n`` None: ``like``'s number of rows (a batch of no static size)."""
    return tf.range(tf.shape(like)[0] if n is None else n, dtype=tf.int32)


def random_bits(seed, step, counter):
    """31 pseudo-random bits (int32) per element of the int tensor ``counter``, a pure function of
    ``(seed, step, counter)``: the same numbers on every backend.  ``seed`` and ``step`` may be tensors."""
    xor = tf.bitwise.bitwise_xor
    key = _bits.key_int64(tf.cast(seed, tf.int64), tf.cast(step, tf.int64), xor)
    return tf.cast(_bits.mix_int64(xor(tf.cast(counter, tf.int64), key), xor) // 2, tf.int32)


def take_along_rows(x, idx):
    """``out[i, j] = x[i, idx[i, j]]`` for 2-D ``x``, and 0 where ``idx[i, j] < 0``."""
    out = tf.gather(x, tf.maximum(idx, 0), axis=1, batch_dims=1)
    return tf.where(idx < 0, tf.zeros((), x.dtype), out)
