"""The NumPy engine: the reference, with backpropagation written by hand.

Every other engine is tested against this one, and this one is tested
against finite differences.  The backward pass (``numpy_backprop``: one VJP
per layer type) mirrors ``descend.model``'s forward exactly (same layers,
same loss, same penalties).
"""

from __future__ import annotations

import numpy as np

from descend.backend import numpy_ops
from descend.engines.base import Engine, Trainer, TrainState, batch_indices, blas_threads, step_seed
from descend.engines.heap import freed_memory_kept
from descend.engines.numpy_backprop import value_and_grad
from descend.model.augment import augment_rows
from descend.optim.base import apply_updates


class NumpyTrainer(Trainer):
    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        params, model_state, opt_state = ts
        losses = np.empty(count)
        update = self.optimizer.update
        # A diverging run overflows; the loop reports the non-finite loss itself, in one line.
        with (np.errstate(over="ignore", invalid="ignore", divide="ignore"), self.engine.threads_scope(),
              freed_memory_kept()):
            return self._run(params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count,
                             global_step, seed)

    def _run(self, params, model_state, opt_state, losses, update, X, y, order, batch_size, first, count,
             global_step, seed):
        for j in range(count):
            idx = batch_indices(order, batch_size, first + j)
            xb, yb = X[idx], y[idx]
            if self.augment is not None:
                xb = augment_rows(numpy_ops, self.augment, xb, seed, global_step + j)
            rng = step_seed(seed, global_step + j) if self.spec.uses_dropout else None
            loss, grads, model_state = value_and_grad(
                self.spec, params, model_state, xb, yb, l1=self.l1, l2=self.l2,
                label_smoothing=self.label_smoothing, rng=rng)
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

    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        return NumpyTrainer(self, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        from descend.model import predict_logits

        out = [predict_logits(numpy_ops, spec, params, model_state, X[i:i + batch_size])
               for i in range(0, len(X), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


ENGINE_CLASS = NumpyEngine
