"""The JAX ops namespace: the same surface as ``numpy_ops``, on concrete arrays and tracers alike.

``descend.model`` and ``descend.optim`` call these under ``jax.jit``,
``jax.value_and_grad`` and ``jax.lax.scan``; ``descend.backend.namespace_of``
sends every ``jax.Array`` and tracer (type modules under ``jax`` / ``jaxlib``)
here.  Dtypes are never widened behind the caller's back: Python scalars are
weakly typed in JAX, so float32 arrays stay float32 even when a float64 engine
has switched on JAX's x64 mode in the same process.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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


def reshape(x, shape):
    return jnp.reshape(x, shape)


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    return jnp.reshape(x, (x.shape[0], -1))


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w`` (XLA's convolution, no transposes)."""
    pads = _windows.conv_pads(w.shape[0], padding)
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [pads, pads],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _pool(x, init, reducer, size, stride):
    # A concrete (NumPy) initial value: JAX recognises max/add with their identity and can differentiate them.
    stride = stride or size
    return jax.lax.reduce_window(x, np.asarray(init, x.dtype), reducer, (1, size, size, 1), (1, stride, stride, 1),
                                 "VALID")


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _pool(x, -jnp.inf, jax.lax.max, size, stride)


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _pool(x, 0.0, jax.lax.add, size, stride) * (1.0 / (size * size))
