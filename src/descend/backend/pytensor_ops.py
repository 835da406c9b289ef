"""The PyTensor ops namespace: the same vocabulary, building symbolic graphs."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.gradient import grad_not_implemented
from pytensor.graph.op import Op

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


class _ConvOp(Op):
    """Base of the convolution ops: NumPy's im2col arithmetic (``descend.backend.windows``) in ``perform``.

    PyTensor has no convolution of its own, and as a graph of window gathers (whose
    gradient scatters the windows back) a convolution of the benchmark network's
    size ran several times slower than the same im2col in NumPy.  The forward op
    and its two gradient ops are each one Op, as in Theano's ``CorrMM`` family;
    BLAS does the products.
    """

    __props__ = ("stride", "padding")

    def __init__(self, stride: int, padding: str):
        self.stride, self.padding = int(stride), str(padding)

    def _node(self, inputs, like):
        """An Apply of ``inputs`` with one output shaped and typed like the variable ``like``."""
        inputs = [pt.as_tensor_variable(v) for v in inputs]
        dtype = pytensor.scalar.upcast(*(v.dtype for v in inputs))
        return Apply(self, inputs, [pt.tensor(dtype=dtype, shape=like.type.shape)])

    def pullback(self, inputs, outputs, cotangents):
        # The gradient ops are not differentiated again (nothing in descend takes second derivatives).
        return [grad_not_implemented(self, i, v) for i, v in enumerate(inputs)]


class _Conv2D(_ConvOp):
    """``y = conv2d(x, w)``: NHWC ``x``, HWIO ``w``."""

    def make_node(self, x, w):
        x, w = pt.as_tensor_variable(x), pt.as_tensor_variable(w)
        n, h, wd, _ = x.type.shape
        k, f = w.type.shape[0], w.type.shape[3]
        shape = (n, _windows.conv_out(h, k, self.stride, self.padding),
                 _windows.conv_out(wd, k, self.stride, self.padding), f)
        dtype = pytensor.scalar.upcast(x.dtype, w.dtype)
        return Apply(self, [x, w], [pt.tensor(dtype=dtype, shape=shape)])

    def perform(self, node, inputs, outputs):
        x, w = inputs
        cols, oh, ow = _windows.im2col(x, w.shape[0], self.stride, self.padding)
        y = (cols @ w.reshape(-1, w.shape[3])).reshape(x.shape[0], oh, ow, w.shape[3])
        outputs[0][0] = np.asarray(y, dtype=node.outputs[0].dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][0], *node.outputs[0].type.shape[1:])]

    def pullback(self, inputs, outputs, cotangents):
        x, w = inputs
        (dy,) = cotangents
        return [_Conv2DInputGrad(self.stride, self.padding)(dy, w, x),
                _Conv2DKernelGrad(self.stride, self.padding)(x, dy, w)]


class _Conv2DInputGrad(_ConvOp):
    """dL/dx from the output gradient ``dy`` and the kernel ``w`` (``x``: only its shape is read)."""

    def make_node(self, dy, w, x):
        return self._node([dy, w, x], x)

    def perform(self, node, inputs, outputs):
        dy, w, x = inputs
        dx = _windows.conv_input_grad(dy, w, x.shape, self.stride, self.padding)
        outputs[0][0] = np.asarray(dx, dtype=node.outputs[0].dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[2]]


class _Conv2DKernelGrad(_ConvOp):
    """dL/dw from the input ``x`` and the output gradient ``dy`` (``w``: only its shape is read)."""

    def make_node(self, x, dy, w):
        return self._node([x, dy, w], w)

    def perform(self, node, inputs, outputs):
        x, dy, w = inputs
        cols, _, _ = _windows.im2col(x, w.shape[0], self.stride, self.padding)
        dw = (cols.T @ dy.reshape(-1, w.shape[3])).reshape(w.shape)
        outputs[0][0] = np.asarray(dw, dtype=node.outputs[0].dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[2]]


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``: im2col and one matrix product (see ``_ConvOp``)."""
    _static(w, "conv2d", first=0)
    _static(x, "convolution and pooling")
    return _Conv2D(stride, padding)(x, w)


class _PoolOp(Op):
    """Base of the pooling ops: NumPy's window arithmetic (``descend.backend.windows``) in ``perform``.

    As window gathers and the scatter of their gradient, pooling ran several times
    slower in PyTensor than NumPy's elementwise work on strided views.
    """

    __props__ = ("size", "stride")

    def __init__(self, size: int, stride: int):
        self.size, self.stride = int(size), int(stride)

    def _pooled(self, x):
        """The output type of pooling ``x``."""
        n, h, w, c = x.type.shape
        return pt.tensor(dtype=x.dtype, shape=(n, (h - self.size) // self.stride + 1,
                                               (w - self.size) // self.stride + 1, c))

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][0], *out.type.shape[1:]) for out in node.outputs]

    def pullback(self, inputs, outputs, cotangents):
        # The gradient ops are not differentiated again (nothing in descend takes second derivatives).
        return [grad_not_implemented(self, i, v) for i, v in enumerate(inputs)]


class _MaxPool(_PoolOp):
    """``(y, arg)``: each window's maximum and the row-major offset of its first maximum.

    The gradient op reads the offsets the forward pass chose, so the window's gradient
    goes to its first maximum, as in the NumPy reference.
    """

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        y = self._pooled(x)
        index = "uint8" if self.size * self.size <= 256 else "int32"
        return Apply(self, [x], [y, pt.tensor(dtype=index, shape=y.type.shape)])

    def perform(self, node, inputs, outputs):
        best, arg = _windows.max_pool_with_argmax(inputs[0], self.size, self.stride)
        outputs[0][0], outputs[1][0] = best, arg

    def connection_pattern(self, node):
        return [[True, False]]

    def pullback(self, inputs, outputs, cotangents):
        (x,), (_, arg), (dy, _) = inputs, outputs, cotangents
        return [_MaxPoolGrad(self.size, self.stride)(dy, arg, x)]


class _MaxPoolGrad(_PoolOp):
    """dL/dx of :class:`_MaxPool` from the output gradient, the offsets of the maxima and ``x`` (for its shape)."""

    def make_node(self, dy, arg, x):
        dy, arg, x = (pt.as_tensor_variable(v) for v in (dy, arg, x))
        return Apply(self, [dy, arg, x], [pt.tensor(dtype=dy.dtype, shape=x.type.shape)])

    def perform(self, node, inputs, outputs):
        dy, arg, x = inputs
        outputs[0][0] = _windows.max_pool_grad(dy, arg, x.shape, self.size, self.stride)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[2]]


class _AvgPool(_PoolOp):
    """Each window's mean."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [self._pooled(x)])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = _windows.pool_windows(inputs[0], self.size, self.stride).mean(axis=-1)

    def pullback(self, inputs, outputs, cotangents):
        return [_AvgPoolGrad(self.size, self.stride)(cotangents[0], inputs[0])]


class _AvgPoolGrad(_PoolOp):
    """dL/dx of :class:`_AvgPool` from the output gradient and ``x`` (for its shape)."""

    def make_node(self, dy, x):
        dy, x = pt.as_tensor_variable(dy), pt.as_tensor_variable(x)
        return Apply(self, [dy, x], [pt.tensor(dtype=dy.dtype, shape=x.type.shape)])

    def perform(self, node, inputs, outputs):
        dy, x = inputs
        outputs[0][0] = _windows.avg_pool_grad(dy, x.shape, self.size, self.stride)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1]]


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    _static(x, "convolution and pooling")
    return _MaxPool(size, stride or size)(x)[0]


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    _static(x, "convolution and pooling")
    return _AvgPool(size, stride or size)(x)


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
