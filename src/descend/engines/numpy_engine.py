"""The NumPy engine: the reference, with backpropagation written by hand.

Every other engine is tested against this one, and this one is tested
against finite differences.  The backward pass mirrors ``descend.model``'s
forward exactly (same layers, same loss, same penalties) and skips the
gradient with respect to the input, which nothing needs.
"""

from __future__ import annotations

import numpy as np

from descend.backend import numpy_ops
from descend.engines.base import Engine, Trainer, TrainState, batch_indices, blas_threads, step_seed
from descend.model.mlp import BN_EPS, BN_MOMENTUM, weight_names
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

    Loss = mean softmax cross-entropy + l2/2*sum(W^2) + l1*sum(|W|), gradients
    of that mean.  Dropout masks come from ``rng`` (a NumPy Generator), drawn
    layer by layer exactly as ``descend.model.forward`` draws them.
    """
    n_layers, last = spec.n_layers, spec.n_layers - 1
    inputs, scales, caches, outputs = [], [], [], []
    new_state = dict(model_state)
    h = x
    for i in range(n_layers):
        keep = spec.keep(i)
        scale = None
        if train and keep < 1.0:
            scale = numpy_ops.keep_mask(rng, i, keep, h.shape, h.dtype)
            scale *= 1.0 / keep
            h = h * scale
        inputs.append(h)
        scales.append(scale)
        z = h @ params[f"dense{i}.W"]
        if i < last and spec.batchnorm:
            z, caches_i = _batchnorm_forward(z, params, new_state, i, train)
            caches.append(caches_i)
        else:
            z += params[f"dense{i}.b"]
            caches.append(None)
        h = _activate(spec.activation, z) if i < last else z
        outputs.append(h)
    logits = outputs[-1]
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
        if i < last:
            delta = _activation_grad(spec.activation, outputs[i], delta)
            if caches[i] is not None:
                delta = _batchnorm_backward(delta, params, caches[i], grads, i)
        W = params[f"dense{i}.W"]
        grads[f"dense{i}.W"] = inputs[i].T @ delta
        if caches[i] is None:
            grads[f"dense{i}.b"] = delta.sum(axis=0)
        if i > 0:
            delta = delta @ W.T
            if scales[i] is not None:
                delta *= scales[i]

    if l1 or l2:
        for name in weight_names(spec):
            w = params[name]
            if l2:
                loss += 0.5 * l2 * float(np.sum(w * w))
                grads[name] = grads[name] + l2 * w
            if l1:
                loss += l1 * float(np.sum(np.abs(w)))
                grads[name] = grads[name] + l1 * np.sign(w)
    return loss, grads, new_state


def _batchnorm_forward(z, params, state, i, train):
    gamma, beta = params[f"bn{i}.gamma"], params[f"bn{i}.beta"]
    if train:
        mean = z.mean(axis=0)
        centered = z - mean
        var = np.mean(centered * centered, axis=0)
        state[f"bn{i}.mean"] = BN_MOMENTUM * state[f"bn{i}.mean"] + (1.0 - BN_MOMENTUM) * mean
        state[f"bn{i}.var"] = BN_MOMENTUM * state[f"bn{i}.var"] + (1.0 - BN_MOMENTUM) * var
    else:
        centered, var = z - state[f"bn{i}.mean"], state[f"bn{i}.var"]
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = centered * inv_std
    return gamma * xhat + beta, (xhat, inv_std)


def _batchnorm_backward(dy, params, cache, grads, i):
    """dL/dz through training-mode batch norm (batch statistics depend on z)."""
    xhat, inv_std = cache
    grads[f"bn{i}.gamma"] = np.sum(dy * xhat, axis=0)
    grads[f"bn{i}.beta"] = dy.sum(axis=0)
    dxhat = dy * params[f"bn{i}.gamma"]
    return inv_std * (dxhat - dxhat.mean(axis=0) - xhat * np.mean(dxhat * xhat, axis=0))


class NumpyTrainer(Trainer):
    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        params, model_state, opt_state = ts
        losses = np.empty(count)
        update = self.optimizer.update
        # A diverging run overflows; the loop reports the non-finite loss itself, in one line.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), self.engine.threads_scope():
            return self._run(params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count,
                             global_step, seed)

    def _run(self, params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count,
             global_step, seed):
        for j in range(count):
            idx = batch_indices(order, batch_size, first + j)
            xb, yb = X[idx], y[idx]
            rng = step_seed(seed, global_step + j) if self.spec.uses_dropout else None
            loss, grads, model_state = value_and_grad(
                self.spec, params, model_state, xb, yb, l1=self.l1, l2=self.l2, rng=rng)
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

    def threads_scope(self):
        """A context in which BLAS uses ``self.threads`` threads (no-op when unset)."""
        return blas_threads(self.threads)

    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0):
        return NumpyTrainer(self, spec, optimizer, l1=l1, l2=l2)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        from descend.model import predict_logits

        out = [predict_logits(numpy_ops, spec, params, model_state, X[i:i + batch_size])
               for i in range(0, len(X), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


ENGINE_CLASS = NumpyEngine
