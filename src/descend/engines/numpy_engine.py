"""The NumPy engine: the reference, with backpropagation written by hand.

Every other engine is tested against this one, and this one is tested
against finite differences.  The backward pass mirrors ``descend.model``'s
forward exactly (same layers, same loss, same penalties) and skips the
gradient with respect to the input, which nothing needs.
"""

from __future__ import annotations

import numpy as np

from descend.backend import numpy_ops
from descend.engines.base import Engine, Trainer, TrainState, batch_indices
from descend.model.mlp import weight_names
from descend.optim.base import apply_updates


def _activate(name, z):
    """Activation applied in place to ``z`` (a fresh pre-activation array)."""
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    return numpy_ops.sigmoid(z)


def _activation_grad(name, a, da):
    """dL/dz from dL/da, using the activation's output ``a``."""
    if name == "relu":
        da *= a > 0
        return da
    if name == "tanh":
        return da * (1.0 - a * a)
    return da * a * (1.0 - a)


def value_and_grad(spec, params, model_state, x, y, *, l1=0.0, l2=0.0, train=True, rng=None):
    """``(loss, grads, new_state)`` of the training objective for one batch.

    Loss = mean softmax cross-entropy + l2/2*sum(W^2) + l1*sum(|W|), gradients of that mean.
    """
    n_layers = spec.n_layers
    acts = [x]
    h = x
    for i in range(n_layers):
        z = h @ params[f"dense{i}.W"]
        z += params[f"dense{i}.b"]
        h = _activate(spec.activation, z) if i < n_layers - 1 else z
        acts.append(h)
    logits = acts[-1]
    n = x.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, y]))
    delta = exp / sums  # softmax
    delta[rows, y] -= 1.0
    delta /= n

    grads = {}
    for i in reversed(range(n_layers)):
        W = params[f"dense{i}.W"]
        grads[f"dense{i}.W"] = acts[i].T @ delta
        grads[f"dense{i}.b"] = delta.sum(axis=0)
        if i > 0:
            delta = _activation_grad(spec.activation, acts[i], delta @ W.T)

    if l1 or l2:
        for name in weight_names(spec):
            w = params[name]
            if l2:
                loss += 0.5 * l2 * float(np.sum(w * w))
                grads[name] = grads[name] + l2 * w
            if l1:
                loss += l1 * float(np.sum(np.abs(w)))
                grads[name] = grads[name] + l1 * np.sign(w)
    return loss, grads, model_state


class NumpyTrainer(Trainer):
    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        params, model_state, opt_state = ts
        losses = np.empty(count)
        update = self.optimizer.update
        # A diverging run overflows; the loop reports the non-finite loss itself, in one line.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run(params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count)

    def _run(self, params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count):
        for j in range(count):
            idx = batch_indices(order, batch_size, first + j)
            xb, yb = X[idx], y[idx]
            loss, grads, model_state = value_and_grad(
                self.spec, params, model_state, xb, yb, l1=self.l1, l2=self.l2)
            losses[j] = loss
            if not np.isfinite(loss):
                return TrainState(params, model_state, opt_state), losses[: j + 1]
            updates, opt_state = update(grads, opt_state, params)
            params = apply_updates(params, updates)
        return TrainState(params, model_state, opt_state), losses


class NumpyEngine(Engine):
    name = "numpy"
    ops = numpy_ops
    capabilities = frozenset({"float64", "hand_written_backprop"})

    def __init__(self, device="auto", dtype="float32", threads=None):
        super().__init__(device, dtype, threads)
        if threads:
            _limit_blas_threads(threads)

    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0):
        return NumpyTrainer(self, spec, optimizer, l1=l1, l2=l2)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        from descend.model import predict_logits

        out = [predict_logits(numpy_ops, spec, params, model_state, X[i:i + batch_size])
               for i in range(0, len(X), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


def _limit_blas_threads(threads: int) -> None:
    """Cap BLAS threads when threadpoolctl is present (OMP_NUM_THREADS works only before import)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)


ENGINE_CLASS = NumpyEngine
