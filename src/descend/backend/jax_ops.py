"""The JAX ops namespace: the same surface as ``numpy_ops``, on concrete arrays and tracers alike.

``descend.model`` and ``descend.optim`` call these under ``jax.jit``,
``jax.value_and_grad`` and ``jax.lax.scan``; ``descend.backend.namespace_of``
sends every ``jax.Array`` and tracer (type modules under ``jax`` / ``jaxlib``)
here.  Dtypes are never widened behind the caller's back: Python scalars are
weakly typed in JAX, so float32 arrays stay float32 even when a float64 engine
has switched on JAX's x64 mode in the same process.
"""

from __future__ import annotations

import builtins
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


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``.

    Stride-1 layers whose window products are many times the work of their spectra run as products
    of spectra (``_conv_dft``); the others as XLA's convolution (``_conv_direct``).  The two agree
    to rounding.
    """
    if spectral(x.shape, w.shape, stride, padding):
        return _conv_dft(x, w, padding)
    return _conv_direct(x, w, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_direct(x, w, stride, padding):
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


_conv_direct.defvjp(_conv2d_fwd, _conv2d_bwd)


# Convolution by discrete Fourier transforms ----------------------------------------------------
# A stride-1 cross-correlation is a product of spectra on a circle large enough that no window wraps
# onto image pixels: each map lies at the start of an nh x nw circle, nh >= height + max(pads), and
# the kernel's tap ``a`` at ``(a - lo) mod nh``, so output pixel ``i`` is the circular correlation at
# ``i``.  Per frequency the forward pass and both gradients are then one complex (batch x in) @
# (in x out) product, written as one real batched GEMM on [real | imaginary] stacks.
# The transforms of the maps are separable, a real DFT along each row and a complex one down each
# column, each a GEMM with a constant matrix: on maps this small XLA:CPU multiplies far faster than
# its FFT runs, and two one-axis GEMMs need a fifth of the multiply-adds of one 2-D DFT matrix.  The
# operands are laid out so that every GEMM reads and writes whole rows (pixels or frequencies major,
# batch and channels minor), leaving one transpose per transform.  Frequencies are ordered (column
# frequency v, row frequency u) throughout, the order the row transform produces them in.
# The spectral route's products are smaller than the direct route's and run at a lower rate, so it
# is taken only where its multiply-adds are well under the direct route's (the share was set from
# timings of both routes on the benchmark's and the recipes' layers, docs/benchmarks.md).
_DFT_SHARE = 0.7


def _circle(size, lo, hi):
    """The circle's length: ``size`` pixels and the larger pad, so no window wraps onto a pixel."""
    return size + builtins.max(lo, hi)


def _dft_geometry(x_shape, k, padding):
    """(lo, nh, nw, oh, ow): the top/left pad, the circle and the output size of a stride-1 convolution."""
    _, h, w, _ = x_shape
    lo, hi = _windows.conv_pads(k, padding)
    return (lo, _circle(h, lo, hi), _circle(w, lo, hi),
            _windows.conv_out(h, k, 1, padding), _windows.conv_out(w, k, 1, padding))


def _transform_cost(rows, cols, nh, nw):
    """Multiply-adds of one map's separable transform (either way) between rows x cols pixels and its spectrum."""
    v = nw // 2 + 1
    return 2 * v * rows * cols + 4 * nh * rows * v


def spectral(x_shape, w_shape, stride, padding) -> bool:
    """Whether ``conv2d`` of these shapes runs as products of spectra: stride 1, and the spectral
    route's multiply-adds (transforms and per-frequency products, forward and both gradients)
    well under the direct route's, for one image."""
    _, h, w, c = x_shape
    if stride != 1:
        return False
    k, _, _, f = w_shape
    if builtins.min(h, w) < k:
        return False
    _, nh, nw, oh, ow = _dft_geometry(x_shape, k, padding)
    products = 3 * 4 * nh * (nw // 2 + 1) * c * f
    transforms = 2 * _transform_cost(h, w, nh, nw) * c + 2 * _transform_cost(oh, ow, nh, nw) * f
    return products + transforms < _DFT_SHARE * 3 * oh * ow * k * k * c * f


def _mirror_weights(nh, nw):
    """Each column frequency's weight in a real inverse DFT (its mirror image is not stored), over nh * nw."""
    weight = np.full(nw // 2 + 1, 2.0)
    weight[0] = 1.0
    if nw % 2 == 0:
        weight[-1] = 1.0
    return weight / (nh * nw)


def _frozen(m):
    m.flags.writeable = False
    return m


# The matrices are a few kilobytes to a few hundred, so they are kept per layer shape.
@functools.lru_cache(maxsize=64)
def _row_dft(cols, nw):
    """(2v, cols): the real DFT along a row from ``cols`` pixels, rows (frequency, [cos | -sin])."""
    t = 2 * np.pi * np.outer(np.arange(nw // 2 + 1), np.arange(cols)) / nw
    return _frozen(np.stack([np.cos(t), -np.sin(t)], 1).reshape(-1, cols))


@functools.lru_cache(maxsize=64)
def _column_dft(rows, nh):
    """(2nh, 2rows): the complex DFT down a column from ``rows`` pixels, on [real | imaginary] pairs:
    (a + ib)(cos - i sin) = (a cos + b sin) + i(b cos - a sin)."""
    t = 2 * np.pi * np.outer(np.arange(nh), np.arange(rows)) / nh
    c, s = np.cos(t), np.sin(t)
    return _frozen(np.stack([np.stack([c, s], 1), np.stack([-s, c], 1)], 1).reshape(2 * nh, 2 * rows))


@functools.lru_cache(maxsize=64)
def _inverse_column_dft(rows, nh):
    """(2rows, 2nh): the inverse complex DFT down a column, at its first ``rows`` pixels:
    (a + ib)(cos + i sin) = (a cos - b sin) + i(a sin + b cos)."""
    t = 2 * np.pi * np.outer(np.arange(rows), np.arange(nh)) / nh
    c, s = np.cos(t), np.sin(t)
    return _frozen(np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 0).reshape(2 * rows, 2 * nh))


@functools.lru_cache(maxsize=64)
def _inverse_row_dft(cols, nh, nw):
    """(cols, 2v): the real inverse DFT along a row, at its first ``cols`` pixels, scaled by 1 / (nh nw)."""
    t = 2 * np.pi * np.outer(np.arange(cols), np.arange(nw // 2 + 1)) / nw
    m = np.stack([np.cos(t), -np.sin(t)], -1) * _mirror_weights(nh, nw)[None, :, None]
    return _frozen(m.reshape(cols, -1))


def _tap_angles(k, lo, nh, nw):
    """(k, k, v, nh): the phase of each kernel tap, placed on the circle, at each frequency."""
    rows, cols = (np.arange(k) - lo) % nh, (np.arange(k) - lo) % nw
    return 2 * np.pi * (np.arange(nh)[None, None, None, :] * rows[:, None, None, None] / nh
                        + np.arange(nw // 2 + 1)[None, None, :, None] * cols[None, :, None, None] / nw)


@functools.lru_cache(maxsize=64)
def _tap_dft(k, lo, nh, nw):
    """(taps, 2, bins): the real and imaginary parts of the 2-D DFT from the kernel's taps."""
    t = _tap_angles(k, lo, nh, nw)
    return _frozen(np.stack([np.cos(t), -np.sin(t)], 2).reshape(k * k, 2, -1))


@functools.lru_cache(maxsize=64)
def _inverse_tap_dft(k, lo, nh, nw):
    """(2, bins, taps): the real inverse 2-D DFT, evaluated at the kernel's taps."""
    t = _tap_angles(k, lo, nh, nw)
    m = np.stack([np.cos(t), -np.sin(t)], 0) * _mirror_weights(nh, nw)[:, None]
    return _frozen(m.transpose(0, 3, 4, 1, 2).reshape(2, -1, k * k))


def _over_column_frequencies(m, a):
    """``m @ a[i]`` for every column frequency i: (M, K) x (v, K, N) -> (v, M, N)."""
    return jax.lax.dot_general(jnp.broadcast_to(m, (a.shape[0],) + m.shape), a, (((2,), (1,)), ((0,), (0,))))


def _spectra(a, nh, nw):
    """(b, h, w, c) -> (bins, b, 2c): [real | imaginary] parts of each map's DFT on the circle."""
    b, h, w, c = a.shape
    v = nw // 2 + 1
    by_row = jnp.asarray(_row_dft(w, nw), a.dtype) @ jnp.transpose(a, (2, 1, 0, 3)).reshape(w, h * b * c)
    s = _over_column_frequencies(jnp.asarray(_column_dft(h, nh), a.dtype), by_row.reshape(v, 2 * h, b * c))
    return jnp.transpose(s.reshape(v, nh, 2, b, c), (0, 1, 3, 2, 4)).reshape(v * nh, b, 2 * c)


def _maps(s, nh, nw, rows, cols):
    """Inverse of ``_spectra``: (bins, b, 2c) -> (b, rows, cols, c), the first rows x cols pixels of each map."""
    _, b, c2 = s.shape
    c, v = c2 // 2, nw // 2 + 1
    pairs = jnp.transpose(s.reshape(v, nh, b, 2, c), (0, 1, 3, 2, 4)).reshape(v, 2 * nh, b * c)
    by_column = _over_column_frequencies(jnp.asarray(_inverse_column_dft(rows, nh), s.dtype), pairs)
    y = jnp.asarray(_inverse_row_dft(cols, nh, nw), s.dtype) @ by_column.reshape(2 * v, rows * b * c)
    return jnp.transpose(y.reshape(cols, rows, b, c), (2, 1, 0, 3))


def _blocks(a, b, c, d):
    """The block matrix [[a, b], [c, d]] of (bins, m, n) blocks."""
    return jnp.concatenate([jnp.concatenate([a, b], -1), jnp.concatenate([c, d], -1)], -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_dft(x, w, padding):
    return _conv_dft_fwd(x, w, padding)[0]


def _conv_dft_fwd(x, w, padding):
    k, _, c, f = w.shape
    lo, nh, nw, oh, ow = _dft_geometry(x.shape, k, padding)
    xs = _spectra(x, nh, nw)
    ws = jnp.einsum("pcf,prq->rqcf", w.reshape(k * k, c, f), jnp.asarray(_tap_dft(k, lo, nh, nw), w.dtype))
    wr, wi = ws[0], ws[1]
    # X conj(W) = [Xr | Xi] @ [[Wr, -Wi], [Wi, Wr]]
    y = _maps(xs @ _blocks(wr, -wi, wi, wr), nh, nw, oh, ow)
    return y, (xs, wr, wi, x.shape, k)


def _conv_dft_bwd(padding, residuals, g):
    xs, wr, wi, x_shape, k = residuals
    lo, nh, nw, _, _ = _dft_geometry(x_shape, k, padding)
    c, f = wr.shape[1:]
    gs = _spectra(g, nh, nw)
    # dx: G W = [Gr | Gi] @ [[Wr^T, Wi^T], [-Wi^T, Wr^T]], back to the input's pixels.
    wrt, wit = jnp.swapaxes(wr, 1, 2), jnp.swapaxes(wi, 1, 2)
    dx = _maps(gs @ _blocks(wrt, wit, -wit, wrt), nh, nw, x_shape[1], x_shape[2])
    # dW: the batch's sum of X conj(G), from the four blocks of [Xr | Xi]^T [Gr | Gi], back to the taps.
    p = jnp.swapaxes(xs, 1, 2) @ gs
    spectrum = jnp.stack([p[:, :c, :f] + p[:, c:, f:], p[:, c:, :f] - p[:, :c, f:]])
    inverse = jnp.asarray(_inverse_tap_dft(k, lo, nh, nw), g.dtype)
    return dx, jnp.einsum("rqcf,rqp->pcf", spectrum, inverse).reshape(k, k, c, f)


_conv_dft.defvjp(_conv_dft_fwd, _conv_dft_bwd)


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
