"""The model's math as functions of a network spec, written once over an engine's ``ops`` namespace.

The same functions run eagerly on NumPy and PyTorch, traced on JAX and
TensorFlow and symbolically on PyTensor, so every engine computes exactly
this math.  Loss: mean softmax cross-entropy over the batch, computed with
log-sum-exp (classification, optionally against smoothed labels), or the mean over batch and outputs of
``(pred - t)**2`` (regression), plus ``l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight tensors only
(dense and conv kernels; not biases, not batch norm).
"""

from __future__ import annotations

import numpy as np

from descend.model.network import Network


def init_params(spec: Network, n_in: int, n_out: int, key, dtype="float32") -> dict[str, np.ndarray]:
    """Initial parameters as NumPy arrays for ``n_in`` features and ``n_out`` outputs; engines convert them.

    ``key`` is an int seed or a ``numpy.random.Generator``: randomness is always
    explicit, so the same seed gives every engine the same starting point.
    He-normal (std sqrt(2/fan_in)) for ReLU, Glorot-uniform for tanh/sigmoid,
    zero biases.
    """
    return spec.resolve(n_in, n_out).init_params(key, dtype)


def init_state(spec: Network, n_in: int, n_out: int, dtype="float32") -> dict[str, np.ndarray]:
    """Non-trained state: batch-norm running mean and variance (empty without batch norm)."""
    return spec.resolve(n_in, n_out).init_state(dtype)


def weight_names(spec: Network) -> tuple[str, ...]:
    """Names of the weight tensors: the only parameters L1/L2 apply to."""
    return spec.weight_names


def forward(ops, spec: Network, params, state, x, *, train: bool = False, key=None, dropout: bool | None = None):
    """Logits for a batch ``x`` of shape (n, features).  Returns ``(logits, new_state)``.

    ``train`` selects batch statistics for batch norm (and updates the running
    averages in ``new_state``).  ``dropout`` (default: ``train``) applies
    dropout masks drawn from ``key`` via ``ops.keep_mask(key, k, keep, shape,
    dtype)`` for dropout layer ``k``; Monte-Carlo dropout prediction is
    ``train=False, dropout=True``.
    """
    return spec.forward(ops, params, state, x, train=train, key=key, dropout=dropout)


def softmax_cross_entropy(ops, logits, y, label_smoothing: float = 0.0):
    """Mean of ``logsumexp(z) - z[y]`` over the batch, stable for large logits.

    With ``label_smoothing`` ``e`` the target is ``(1-e)*onehot(y) + e/K`` over
    the ``K`` classes: the mean of ``logsumexp(z) - (1-e)*z[y] - e*mean_k(z_k)``
    (the targets sum to 1, so the shift by the row maximum still cancels).
    """
    m = ops.max(logits, axis=1, keepdims=True)
    z = logits - m
    lse = ops.log(ops.sum(ops.exp(z), axis=1))
    if not label_smoothing:
        return ops.mean(lse - ops.take_labels(z, y))
    e = float(label_smoothing)
    return ops.mean(lse - (1.0 - e) * ops.take_labels(z, y) - e * ops.mean(z, axis=1))


def mean_squared_error(ops, pred, t):
    """Mean of ``(pred - t)**2`` over the batch and the outputs."""
    d = pred - t
    return ops.mean(d * d)


def data_loss(ops, spec: Network, outputs, y, label_smoothing=0.0):
    """The task's loss of the network's outputs: cross-entropy of class ids, or squared error of targets."""
    if spec.task == "regression":
        return mean_squared_error(ops, outputs, y)
    return softmax_cross_entropy(ops, outputs, y, label_smoothing)


def penalty(ops, spec: Network, params, *, l1: float = 0.0, l2: float = 0.0):
    """``l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight tensors (not biases)."""
    total = 0.0
    for name in spec.weight_names:
        w = params[name]
        if l2:
            total = total + 0.5 * l2 * ops.sum(w * w)
        if l1:
            total = total + l1 * ops.sum(ops.abs(w))
    return total


def loss_fn(ops, spec: Network, params, state, x, y, *, l1=0.0, l2=0.0, label_smoothing=0.0, train=True, key=None):
    """Training objective and what came with it: ``(loss, (new_state, logits))``."""
    logits, new_state = spec.forward(ops, params, state, x, train=train, key=key)
    loss = data_loss(ops, spec, logits, y, label_smoothing) + penalty(ops, spec, params, l1=l1, l2=l2)
    return loss, (new_state, logits)


def predict_logits(ops, spec: Network, params, state, x, *, key=None, mc_dropout: bool = False):
    """Inference-mode logits (with ``mc_dropout``, one Monte-Carlo dropout sample drawn from ``key``)."""
    logits, _ = spec.forward(ops, params, state, x, train=False, key=key, dropout=mc_dropout)
    return logits
