"""Backpropagation by hand: one forward/backward pair (a VJP) per layer type, and the loop over them.

Every other engine differentiates ``descend.model`` automatically and is
tested against this one; this one is tested against finite differences.
``VJPS`` maps each layer type to its pair:

- ``forward(layer, params, state, x, train, key) -> (y, new_state, cache)``
- ``backward(layer, params, cache, dy, need_dx) -> (dx or None, grads)``

with the layer's local parameter names (``"W"``, ``"gamma"``...).  The
forward computes what the layer's ``apply`` computes on ``numpy_ops`` (same
masks, drawn in the same order) and keeps what the backward needs.
Convolution is im2col: the image patches as one matrix, so the forward pass
and each half of the backward pass are one matrix product.  Nothing computes
the gradient with respect to the input rows, which nothing needs.
"""

from __future__ import annotations

import threading
from typing import Callable, NamedTuple

import numpy as np
from descend.backend import numpy_ops
from descend.backend.windows import (avg_pool_grad, conv_input_grad, im2col, im2col_size, max_pool_grad,
                                     max_pool_with_argmax)
from descend.model.layers import (
    BN_EPS,
    BN_MOMENTUM,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerKey,
    MaxPool2D,
)


class VJP(NamedTuple):
    forward: Callable
    backward: Callable


# Dense -------------------------------------------------------------------------
def _dense_forward(layer, p, s, x, train, key):
    z = x @ p["W"]
    if layer.bias:
        z += p["b"]
    return z, s, x


def _dense_backward(layer, p, x, dy, need_dx):
    grads = {"W": x.T @ dy}
    if layer.bias:
        grads["b"] = dy.sum(axis=0)
    return (dy @ p["W"].T if need_dx else None), grads


# Conv2D ------------------------------------------------------------------------
class _PatchBuffers:
    """Reused buffers for the forward pass's patch matrices, which live until the layer's backward pass.

    A large convolution's patches (for the benchmark network's second layer, 80 MB a step) are bigger
    than the largest block the C allocator recycles, so a fresh array is new memory from the kernel every
    step, and faulting its pages in costs several times the copy into it.  A buffer is taken in the
    forward pass and given back by the backward pass once its weight gradient is formed; a step that
    stops in between only leaves one to the garbage collector.
    """

    def __init__(self, keep: int = 4):
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, size: int, dtype) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.size == size and buf.dtype == dtype:
                    return self._free.pop(i)
        return np.empty(size, dtype=dtype)

    def give(self, buf: np.ndarray) -> None:
        with self._lock:
            self._free.append(buf)
            del self._free[:-self._keep]


_patch_buffers = _PatchBuffers()


def _conv_forward(layer, p, s, x, train, key):
    W = p["W"]
    buf = _patch_buffers.take(im2col_size(x.shape, layer.kernel, layer.stride, layer.padding), x.dtype)
    cols, oh, ow = im2col(x, layer.kernel, layer.stride, layer.padding, out=buf)
    z = (cols @ W.reshape(-1, W.shape[3])).reshape(x.shape[0], oh, ow, W.shape[3])
    if layer.bias:
        z += p["b"]
    return z, s, (buf, cols, x.shape, oh, ow)


def _conv_backward(layer, p, cache, dy, need_dx):
    buf, cols, shape, oh, ow = cache
    W = p["W"]
    dy2 = dy.reshape(-1, W.shape[3])
    grads = {"W": (cols.T @ dy2).reshape(W.shape)}
    _patch_buffers.give(buf)
    if layer.bias:
        grads["b"] = dy2.sum(axis=0)
    if not need_dx:
        return None, grads
    return conv_input_grad(dy, W, shape, layer.stride, layer.padding), grads


# Pooling -----------------------------------------------------------------------
def _max_pool_forward(layer, p, s, x, train, key):
    best, arg = max_pool_with_argmax(x, layer.size, layer.stride)
    return best, s, (x.shape, arg)


def _max_pool_backward(layer, p, cache, dy, need_dx):
    shape, arg = cache
    # The window's gradient goes to its maximum (the first, on exact ties).
    return max_pool_grad(dy, arg, shape, layer.size, layer.stride), {}


def _avg_pool_forward(layer, p, s, x, train, key):
    return numpy_ops.avg_pool2d(x, layer.size, layer.stride), s, x.shape


def _avg_pool_backward(layer, p, cache, dy, need_dx):
    return avg_pool_grad(dy, cache, layer.size, layer.stride), {}


def _gap_forward(layer, p, s, x, train, key):
    return x.mean(axis=(1, 2)), s, x.shape


def _gap_backward(layer, p, shape, dy, need_dx):
    n, h, w, c = shape
    return np.broadcast_to(dy[:, None, None, :] * (1.0 / (h * w)), shape).copy(), {}


def _flatten_forward(layer, p, s, x, train, key):
    return x.reshape(x.shape[0], -1), s, x.shape


def _flatten_backward(layer, p, shape, dy, need_dx):
    return dy.reshape(shape), {}


# Dropout, batch norm, activations -----------------------------------------------
def _dropout_forward(layer, p, s, x, train, key):
    if key is None or layer.keep >= 1.0:
        return x, s, None
    scale = numpy_ops.keep_mask(key.key, key.index, layer.keep, x.shape, x.dtype)
    scale *= 1.0 / layer.keep
    return x * scale, s, scale


def _dropout_backward(layer, p, scale, dy, need_dx):
    return (dy if scale is None else dy * scale), {}


def _stat_axes(x):
    """Batch norm's statistics axes: the batch for vectors, batch and image axes for feature maps."""
    return 0 if x.ndim == 2 else tuple(range(x.ndim - 1))


def _batchnorm_forward(layer, p, s, z, train, key):
    axes = _stat_axes(z)
    if train:
        mean = z.mean(axis=axes)
        centered = z - mean
        var = np.mean(centered * centered, axis=axes)
        s = {"mean": BN_MOMENTUM * s["mean"] + (1.0 - BN_MOMENTUM) * mean,
             "var": BN_MOMENTUM * s["var"] + (1.0 - BN_MOMENTUM) * var}
    else:
        centered, var = z - s["mean"], s["var"]
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = centered * inv_std
    return p["gamma"] * xhat + p["beta"], s, (xhat, inv_std, train)


def _batchnorm_backward(layer, p, cache, dy, need_dx):
    """dL/dz through batch norm; in training the batch statistics depend on z too."""
    xhat, inv_std, train = cache
    axes = _stat_axes(dy)
    grads = {"gamma": np.sum(dy * xhat, axis=axes), "beta": dy.sum(axis=axes)}
    if not need_dx:
        return None, grads
    dxhat = dy * p["gamma"]
    if not train:
        return dxhat * inv_std, grads
    return inv_std * (dxhat - dxhat.mean(axis=axes) - xhat * np.mean(dxhat * xhat, axis=axes)), grads


def _activation_forward(layer, p, s, z, train, key):
    if layer.name == "relu":
        a = np.maximum(z, 0)
    else:
        a = np.tanh(z) if layer.name == "tanh" else numpy_ops.sigmoid(z)
    return a, s, a


def _activation_backward(layer, p, a, dy, need_dx):
    """dL/dz from dL/da, using the activation's output ``a`` (ReLU: where it is positive)."""
    if layer.name == "relu":
        return dy * (a > 0), {}
    if layer.name == "tanh":
        return dy * (1.0 - a * a), {}
    return dy * a * (1.0 - a), {}


VJPS = {
    Dense: VJP(_dense_forward, _dense_backward),
    Conv2D: VJP(_conv_forward, _conv_backward),
    MaxPool2D: VJP(_max_pool_forward, _max_pool_backward),
    AvgPool2D: VJP(_avg_pool_forward, _avg_pool_backward),
    GlobalAvgPool: VJP(_gap_forward, _gap_backward),
    Flatten: VJP(_flatten_forward, _flatten_backward),
    Dropout: VJP(_dropout_forward, _dropout_backward),
    BatchNorm: VJP(_batchnorm_forward, _batchnorm_backward),
    Activation: VJP(_activation_forward, _activation_backward),
}


def _softmax_cross_entropy(logits, y, label_smoothing=0.0):
    """``(mean cross-entropy, its gradient with respect to the logits)``.

    Against the targets ``t = (1-e)*onehot + e/K`` the gradient is
    ``(softmax - t) / n``.
    """
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    delta = exp / sums  # softmax
    if label_smoothing:
        e = float(label_smoothing)
        loss = float(np.mean(np.log(sums[:, 0]) - (1.0 - e) * shifted[rows, y] - e * shifted.mean(axis=1)))
        delta -= e / logits.shape[1]
        delta[rows, y] -= 1.0 - e
    else:
        loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, y]))
        delta[rows, y] -= 1.0
    delta /= n
    return loss, delta


def _mean_squared_error(pred, t):
    """``(mean of (pred - t)**2 over batch and outputs, its gradient with respect to pred)``."""
    d = pred - t
    return float(np.mean(d * d)), d * (2.0 / d.size)


def value_and_grad(spec, params, model_state, x, y, *, l1=0.0, l2=0.0, label_smoothing=0.0, train=True, rng=None):
    """``(loss, grads, new_state)`` of the training objective for one batch of rows ``x``.

    Loss = mean softmax cross-entropy (against labels smoothed by
    ``label_smoothing``; regression: mean squared error) + l2/2*sum(W^2) + l1*sum(|W|) over the
    weight tensors, gradients of that mean.  Dropout masks come from ``rng``
    (a NumPy Generator, used in training), drawn layer by layer exactly as
    ``spec.forward`` draws them.
    """
    if spec.image_input:
        x = x.reshape(-1, *spec.input_shape)
    plan = spec._plan
    new_state = dict(model_state)
    caches = []
    h = x
    for name, layer, rank, param_names, state_names in plan:
        p = {k: params[f"{name}.{k}"] for k in param_names}
        s = {k: model_state[f"{name}.{k}"] for k in state_names}
        key = LayerKey(rng, rank) if train and isinstance(layer, Dropout) else None
        h, s, cache = VJPS[type(layer)].forward(layer, p, s, h, train, key)
        if state_names:
            new_state.update({f"{name}.{k}": v for k, v in s.items()})
        caches.append(cache)

    loss, delta = (_mean_squared_error(h, y) if spec.task == "regression"
                   else _softmax_cross_entropy(h, y, label_smoothing))
    grads = {}
    first = next((i for i, (_, _, _, names, _) in enumerate(plan) if names), len(plan))
    for i in reversed(range(first, len(plan))):
        name, layer, _, param_names, _ = plan[i]
        p = {k: params[f"{name}.{k}"] for k in param_names}
        delta, g = VJPS[type(layer)].backward(layer, p, caches[i], delta, i > first)
        grads.update({f"{name}.{k}": v for k, v in g.items()})

    if l1 or l2:
        for name in spec.weight_names:
            w = params[name]
            if l2:
                loss += 0.5 * l2 * float(np.sum(w * w))
                grads[name] = grads[name] + l2 * w
            if l1:
                loss += l1 * float(np.sum(np.abs(w)))
                grads[name] = grads[name] + l1 * np.sign(w)
    return loss, grads, new_state
