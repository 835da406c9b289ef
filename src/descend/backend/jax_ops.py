"""The JAX ops namespace: the same surface as ``numpy_ops``, on concrete arrays and tracers alike.

``descend.model`` and ``descend.optim`` call these under ``jax.jit``,
``jax.value_and_grad`` and ``jax.lax.scan``; ``descend.backend.namespace_of``
sends every ``jax.Array`` and tracer (type modules under ``jax`` / ``jaxlib``)
here.  Dtypes are never widened behind the caller's back: Python scalars are
weakly typed in JAX, so float32 arrays stay float32 even when a float64 engine
has switched on JAX's x64 mode in the same process.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from descend.backend import bits as _bits
from descend.backend import windows as _windows

name = "jax"

matmul = jnp.matmul
exp = jnp.exp
cos = jnp.cos
log = jnp.log
log1p = jnp.log1p
tanh = jnp.tanh
sqrt = jnp.sqrt
square = jnp.square
abs = jnp.abs  # noqa: A001 - the namespace mirrors the array API's names
sign = jnp.sign
floor = jnp.floor
maximum = jnp.maximum
minimum = jnp.minimum
where = jnp.where
zeros_like = jnp.zeros_like
ones_like = jnp.ones_like


def _dtype(dtype):
    """A string, NumPy or JAX dtype as something ``jnp`` accepts (None stays None)."""
    return None if dtype is None else np.dtype(dtype)


def asarray(x, dtype=None):
    return jnp.asarray(x, dtype=_dtype(dtype))


def zeros(shape, dtype="float32"):
    return jnp.zeros(shape, dtype=_dtype(dtype))


def full(shape, value, dtype="float32"):
    return jnp.full(shape, value, dtype=_dtype(dtype))


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return jnp.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return jnp.max(x, axis=axis, keepdims=keepdims)


def sigmoid(x):
    return jax.nn.sigmoid(x)


def relu(x):
    # d relu / dz = 0 at z = 0, as in the NumPy reference's backward pass.
    return jax.nn.relu(x)


def take_labels(logp, y):
    """``logp[i, y[i]]`` for every row i.

    Written as a masked sum over the classes rather than a gather: the
    gradient is then an element-wise select instead of a scatter, which XLA
    fuses into the softmax's backward pass.
    """
    y = jnp.asarray(y)
    classes = jax.lax.broadcasted_iota(y.dtype, logp.shape, logp.ndim - 1)
    return jnp.sum(jnp.where(classes == y[:, None], logp, jnp.zeros((), logp.dtype)), axis=-1)


def cast(x, dtype):
    return jnp.asarray(x).astype(_dtype(dtype))


def to_numpy(x):
    return np.asarray(x)


def keep_mask(key, layer, keep, shape, dtype):
    """A {0, 1} dropout mask with P(1) = keep from the step's PRNG key folded with the layer index."""
    return jax.random.bernoulli(jax.random.fold_in(key, layer), keep, shape).astype(dtype)


@jax.custom_vjp
def add_bias(z, b):
    """``z + b``, ``b`` (one value per channel) broadcast along the last axis of ``z``."""
    return z + b


def _add_bias_fwd(z, b):
    return z + b, None


# The bias gradient sums the output gradient over every pixel of the batch.  Left to autodiff, that
# reduction of a feature map becomes a strided ``reduce-window`` loop that XLA:CPU runs far slower
# than a matrix-vector product over the same elements.
def _add_bias_bwd(_, g):
    channels = g.shape[-1]
    rows = g.reshape(-1, channels)
    return g, jnp.ones((rows.shape[0],), g.dtype) @ rows


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def reshape(x, shape):
    return jnp.reshape(x, shape)


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    return jnp.reshape(x, (x.shape[0], -1))


_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride, padding):
    pads = _windows.conv_pads(w.shape[0], padding)
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [pads, pads],
                                        dimension_numbers=_NHWC_HWIO)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w`` (XLA's convolution, no transposes)."""
    return _conv(x, w, stride, padding)


def _conv2d_fwd(x, w, stride, padding):
    return _conv(x, w, stride, padding), (x, w)


# XLA:CPU runs the convolutions autodiff emits for the gradients (window-reversed, kernel-sized
# outputs) far slower inside a ``lax.scan`` body than outside one (jax-ml/jax#12868), and the
# engine fuses its steps into a scan; the backward pass below uses only forward convolutions and
# one contraction, which stay fast there.
def _conv2d_bwd(stride, padding, residuals, g):
    x, w = residuals
    return _input_grad(g, w, x.shape, stride, padding), _kernel_grad(x, g, w.shape, stride, padding)


def _input_grad(g, w, input_shape, stride, padding):
    """dL/dx as a forward convolution of the stride-dilated ``g`` with the flipped, I/O-swapped kernel."""
    k = w.shape[0]
    lo, hi = _windows.conv_pads(k, padding)
    # Rows and columns past the last window (stride not dividing the padded size) get no gradient.
    rest_h, rest_w = ((size + lo + hi - k) % stride for size in input_shape[1:3])
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    return jax.lax.conv_general_dilated(g, flipped, (1, 1), [(k - 1 - lo, k - 1 - hi + rest_h),
                                                             (k - 1 - lo, k - 1 - hi + rest_w)],
                                        lhs_dilation=(stride, stride), dimension_numbers=_NHWC_HWIO)


def _kernel_grad(x, g, kernel_shape, stride, padding):
    """dL/dW as matrix products of the strided input windows (im2col by slices) with ``g``, one per kernel row."""
    kh, kw, cin, cout = kernel_shape
    pads = _windows.conv_pads(kh, padding)
    # Channels first, (cin, n, h, w): each kernel row's windows are then a (kw * cin, n * oh * ow) row-major
    # matrix and its product with g a plain GEMM; XLA:CPU runs the windows-last contraction
    # (nhwkc,nhwo->kco) as a transposed GEMM over one large window tensor, several times slower.
    xt = jnp.pad(jnp.transpose(x, (3, 0, 1, 2)), ((0, 0), (0, 0), pads, pads))
    n, oh, ow = g.shape[:3]
    span_h, span_w = (oh - 1) * stride + 1, (ow - 1) * stride + 1
    g_rows = g.reshape(n * oh * ow, cout)
    rows = [jnp.stack([jax.lax.slice(xt, (0, 0, i, j), (cin, n, i + span_h, j + span_w), (1, 1, stride, stride))
                       for j in range(kw)]).reshape(kw * cin, n * oh * ow) @ g_rows
            for i in range(kh)]
    return jnp.stack(rows).reshape(kernel_shape)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _pool(x, init, reducer, size, stride):
    # A concrete (NumPy) initial value: JAX recognises max/add with their identity and can differentiate them.
    stride = stride or size
    return jax.lax.reduce_window(x, np.asarray(init, x.dtype), reducer, (1, size, size, 1), (1, stride, stride, 1),
                                 "VALID")


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    stride = stride or size
    if stride == size:
        return _max_pool_tiles(x, size)
    return _pool(x, -jnp.inf, jax.lax.max, size, stride)


def _tiles(x, k):
    """``(n, oh, k, ow, k, c)``: the non-overlapping k x k windows of ``x`` (rows and columns past the last one dropped)."""
    n, h, w, c = x.shape
    oh, ow = h // k, w // k
    return x[:, :oh * k, :ow * k].reshape(n, oh, k, ow, k, c)


# Non-overlapping windows (stride == size, the common case) are a reshape and a reduction, and the
# gradient is an element-wise select per window position; autodiff of ``reduce_window`` would emit a
# ``select_and_scatter``, which XLA:CPU runs several times slower.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_tiles(x, k):
    return jnp.max(_tiles(x, k), axis=(2, 4))


def _max_pool_tiles_fwd(x, k):
    y = jnp.max(_tiles(x, k), axis=(2, 4))
    return y, (x, y)


def _max_pool_tiles_bwd(k, residuals, g):
    """The window's gradient goes to its maximum: the first in row-major order on exact ties, as in NumPy's."""
    x, y = residuals
    n, h, w, c = x.shape
    oh, ow = y.shape[1:3]
    t = _tiles(x, k)
    taken = jnp.zeros(y.shape, dtype=bool)
    zero = jnp.zeros((), g.dtype)
    rows = []
    for i in range(k):
        cols = []
        for j in range(k):
            hit = (t[:, :, i, :, j, :] == y) & ~taken
            taken = taken | hit
            cols.append(jnp.where(hit, g, zero))
        rows.append(jnp.stack(cols, axis=3))
    dx = jnp.stack(rows, axis=2).reshape(n, oh * k, ow * k, c)
    if (oh * k, ow * k) != (h, w):
        dx = jnp.pad(dx, ((0, 0), (0, h - oh * k), (0, w - ow * k), (0, 0)))
    return (dx,)


_max_pool_tiles.defvjp(_max_pool_tiles_fwd, _max_pool_tiles_bwd)


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _pool(x, 0.0, jax.lax.add, size, stride) * (1.0 / (size * size))


# Integer helpers of augmentation (see ``descend.backend.bits``) -----------------
def arange(n, like=None):
    """``[0, 1, ..., n-1]`` as int32 (``like``: an array whose device the result goes to; XLA places it)."""
    return jnp.arange(n, dtype=jnp.int32)


def _mix(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(_bits.C1)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(_bits.C2)
    return x ^ (x >> 15)


def random_bits(seed, step, counter):
    """31 pseudo-random bits (int32) per element of the int array ``counter``, a pure function of
    ``(seed, step, counter)``: the same numbers on every backend.  ``seed`` and ``step`` may be traced."""
    seed = jnp.asarray(seed).astype(jnp.uint32) + jnp.uint32(_bits.GOLDEN)
    key = _mix(_mix(seed) ^ jnp.asarray(step).astype(jnp.uint32))
    return (_mix(key ^ jnp.asarray(counter).astype(jnp.uint32)) >> 1).astype(jnp.int32)


def take_along_rows(x, idx):
    """``out[i, j] = x[i, idx[i, j]]`` for 2-D ``x``, and 0 where ``idx[i, j] < 0``."""
    out = jnp.take_along_axis(x, jnp.maximum(idx, 0), axis=1, mode="clip")
    return jnp.where(idx < 0, jnp.zeros((), x.dtype), out)
