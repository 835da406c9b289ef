"""The PyTorch ops namespace: the NumPy namespace's functions, on ``torch.Tensor``.

Same names and signatures as :mod:`descend.backend.numpy_ops`.  Functions accept
Python scalars and NumPy arrays where NumPy's do (``maximum(x, 0)``), turning
them into tensors of the other operand's dtype and device.  A ``dtype`` may be a
string (``"float32"``), a ``torch.dtype``, a NumPy dtype or a Python type.
"""

from __future__ import annotations

import builtins

import numpy as np
import torch

from descend.backend import bits as _bits
from descend.backend import windows as _windows

name = "torch"

_PY_TYPES = {builtins.float: torch.float64, builtins.int: torch.int64, builtins.bool: torch.bool}


def to_dtype(dtype):
    """``dtype`` (string, torch dtype, NumPy dtype or Python type) as a ``torch.dtype``; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _PY_TYPES:
        return _PY_TYPES[dtype]
    np_dtype = np.dtype(dtype)
    try:
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype
    except TypeError:
        raise TypeError(f"dtype {dtype!r} has no torch equivalent") from None


def _tensor(x, like=None, cpu_scalar=False):
    """``x`` as a tensor (on ``like``'s device when given).

    Python scalars become 0-d tensors, which PyTorch's type promotion lets the
    other operand's dtype win over, as NumPy does with scalars.  With
    ``cpu_scalar`` (elementwise binary arithmetic, whose kernels take a 0-d CPU
    tensor as a scalar on any device) a Python scalar stays on the CPU:
    building it on a GPU would be a blocking host-to-device copy in the middle
    of a training step.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(like, torch.Tensor):
        if cpu_scalar and isinstance(x, (builtins.int, builtins.float, builtins.bool)):
            return torch.as_tensor(x)
        return torch.as_tensor(x, device=like.device)
    return torch.as_tensor(x)


def _pair(a, b, cpu_scalar=False):
    if isinstance(a, torch.Tensor):
        return a, _tensor(b, a, cpu_scalar)
    if isinstance(b, torch.Tensor):
        return _tensor(a, b, cpu_scalar), b
    return torch.as_tensor(a), torch.as_tensor(b)


def _unary(fn):
    def op(x):
        return fn(_tensor(x))

    op.__name__ = fn.__name__
    op.__doc__ = f"``torch.{fn.__name__}`` (accepts scalars and NumPy arrays)."
    return op


exp = _unary(torch.exp)
cos = _unary(torch.cos)
log = _unary(torch.log)
log1p = _unary(torch.log1p)
tanh = _unary(torch.tanh)
sqrt = _unary(torch.sqrt)
square = _unary(torch.square)
abs = _unary(torch.abs)  # noqa: A001 - the namespace mirrors the array API's names
sign = _unary(torch.sign)
floor = _unary(torch.floor)
sigmoid = _unary(torch.sigmoid)


def matmul(a, b):
    a, b = _pair(a, b)
    return torch.matmul(a, b)


def maximum(a, b):
    a, b = _pair(a, b, cpu_scalar=True)
    return torch.maximum(a, b)


def minimum(a, b):
    a, b = _pair(a, b, cpu_scalar=True)
    return torch.minimum(a, b)


def where(condition, x, y):
    x, y = _pair(x, y)
    condition = _tensor(condition, x).to(dtype=torch.bool)
    return torch.where(condition, x, y)


def zeros_like(x, dtype=None):
    return torch.zeros_like(_tensor(x), dtype=to_dtype(dtype))


def ones_like(x, dtype=None):
    return torch.ones_like(_tensor(x), dtype=to_dtype(dtype))


def asarray(x, dtype=None):
    return torch.as_tensor(x, dtype=to_dtype(dtype))


def zeros(shape, dtype="float32"):
    return torch.zeros(shape, dtype=to_dtype(dtype))


def full(shape, value, dtype="float32"):
    return torch.full(shape, value, dtype=to_dtype(dtype))


def _dims(x, axis):
    if axis is None:
        return tuple(range(x.ndim))
    return axis


def sum(x, axis=None, keepdims=False):  # noqa: A001
    x = _tensor(x)
    if x.ndim == 0:
        return x.clone()
    return torch.sum(x, dim=_dims(x, axis), keepdim=keepdims)


def mean(x, axis=None, keepdims=False):
    x = _tensor(x)
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)  # NumPy's mean of integers is float64
    if x.ndim == 0:
        return x.clone()
    return torch.mean(x, dim=_dims(x, axis), keepdim=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    x = _tensor(x)
    if x.ndim == 0:
        return x.clone()
    return torch.amax(x, dim=_dims(x, axis), keepdim=keepdims)


def relu(x):
    return torch.relu(_tensor(x))


def take_labels(logp, y):
    """``logp[i, y[i]]`` for every row i."""
    if isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.device == logp.device:
        index = y  # the engines' labels: no conversion to dispatch in the hot loop
    else:
        index = torch.as_tensor(y, device=logp.device).long()
    return torch.gather(logp, 1, index.unsqueeze(1)).squeeze(1)


def cast(x, dtype):
    return _tensor(x).to(to_dtype(dtype))


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def keep_mask(key, layer, keep, shape, dtype):
    """A {0, 1} dropout mask with P(1) = keep, drawn from the ``torch.Generator`` ``key``.

    The generator is the step's own (seeded by seed and step) and layers draw
    in order, so ``layer`` needs no part in the draw.
    """
    return (torch.rand(tuple(shape), generator=key, dtype=dtype, device=key.device) < keep).to(dtype)


def add_bias(z, b):
    """``z + b``, ``b`` (one value per channel) broadcast along the last axis of ``z``."""
    return z + b


def reshape(x, shape):
    return torch.reshape(_tensor(x), tuple(shape))


def flatten(x):
    """``(n, ...) -> (n, prod(...))``, row-major."""
    return torch.flatten(_tensor(x), 1)


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def conv2d(x, w, stride=1, padding="same"):
    """Cross-correlation of NHWC ``x`` with the HWIO kernel ``w``; PyTorch computes it in NCHW / OIHW."""
    lo, hi = _windows.conv_pads(w.shape[0], padding)
    xt = _nchw(x)
    if lo or hi:
        xt = torch.nn.functional.pad(xt, (lo, hi, lo, hi))
    return _nhwc(torch.nn.functional.conv2d(xt, w.permute(3, 2, 0, 1), stride=stride))


def max_pool2d(x, size, stride=None):
    """The maximum of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _nhwc(torch.nn.functional.max_pool2d(_nchw(x), size, stride or size))


def avg_pool2d(x, size, stride=None):
    """The mean of each valid ``size`` x ``size`` window, every ``stride`` (default ``size``) pixels."""
    return _nhwc(torch.nn.functional.avg_pool2d(_nchw(x), size, stride or size))


# Integer helpers of augmentation (see ``descend.backend.bits``) -----------------
def arange(n, like=None):
    """``[0, 1, ..., n-1]`` as int32, on ``like``'s device when given."""
    return torch.arange(int(n), dtype=torch.int32, device=like.device if isinstance(like, torch.Tensor) else None)


def random_bits(seed, step, counter):
    """31 pseudo-random bits (int32) per element of the int tensor ``counter``, a pure function of
    ``(seed, step, counter)``: the same numbers on every backend."""
    counter = _tensor(counter)
    if isinstance(seed, torch.Tensor) or isinstance(step, torch.Tensor):
        key = _bits.key_int64(_tensor(seed, counter).long(), _tensor(step, counter).long(), torch.bitwise_xor)
    else:  # Python ints (the engine's loop): the scalar part on the host, no kernel launches
        key = _bits.key_int(seed, step)
    return (_bits.mix_int64(torch.bitwise_xor(counter.long(), key), torch.bitwise_xor) // 2).to(torch.int32)


def take_along_rows(x, idx):
    """``out[i, j] = x[i, idx[i, j]]`` for 2-D ``x``, and 0 where ``idx[i, j] < 0``."""
    x, idx = _tensor(x), _tensor(idx)
    out = torch.gather(x, 1, idx.clamp(min=0).long())
    return out.masked_fill(idx < 0, 0)
