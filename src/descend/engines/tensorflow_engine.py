"""The TensorFlow engine: a whole run of optimizer steps as one ``tf.function`` loop.

Gradients come from ``tf.GradientTape`` over descend's own model function, and
the update is descend's own optimizer (not tf.keras'), so every rule and
convention is exactly the one the NumPy reference computes.  The dataset is put
on the device once; each call gathers its batches there.  ``jit_compile``
(XLA) is used where it pays: on CPU it fuses the element-wise work of a step.
Dropout keys are stateless seed pairs ``(seed, global step)``, folded per layer;
augmentation hashes the same pair inside the loop.
"""

from __future__ import annotations

import numpy as np

from descend.engines.base import Engine, Trainer, TrainState, float_targets
from descend.errors import ConfigError
from descend.model import loss_fn, predict_logits
from descend.model.augment import augment_rows
from descend.optim.base import apply_updates


def _tf():
    from descend.backend.tensorflow_ops import tf  # imports TensorFlow without its start-up noise

    return tf


class TensorflowTrainer(Trainer):
    def __init__(self, engine, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        super().__init__(engine, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)
        tf = _tf()
        ops = engine.ops
        spec, l1, l2, augment = self.spec, self.l1, self.l2, self.augment
        smoothing = self.label_smoothing
        update = optimizer.update
        dtype = ops.to_dtype(engine.dtype)

        def steps(params, model_state, opt_state, X, y, idx, seeds):
            count = tf.shape(idx)[0]

            def body(j, params, model_state, opt_state, losses):
                xb = tf.gather(X, idx[j])
                yb = tf.gather(y, idx[j])
                if augment is not None:
                    xb = augment_rows(ops, augment, xb, seeds[j][0], seeds[j][1])
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    loss, (new_state, _) = loss_fn(ops, spec, params, model_state, xb, yb, l1=l1, l2=l2,
                                                   label_smoothing=smoothing, train=True, key=seeds[j])
                grads = tape.gradient(loss, params)
                updates, opt_state = update(grads, opt_state, params)
                params = apply_updates(params, updates)
                model_state = {k: tf.stop_gradient(v) for k, v in new_state.items()}
                return j + 1, params, model_state, opt_state, losses.write(j, loss)

            # An explicit while_loop: descend's Python code is traced as written, not rewritten by autograph.
            _, params, model_state, opt_state, losses = tf.while_loop(
                lambda j, *_: j < count, body,
                (tf.constant(0), params, model_state, opt_state, tf.TensorArray(dtype, size=count)))
            return params, model_state, opt_state, losses.stack()

        self._steps = tf.function(steps, jit_compile=engine.jit_compile, reduce_retracing=True, autograph=False)

    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        tf = _tf()
        idx = np.asarray(order[first * batch_size:(first + count) * batch_size], dtype=np.int32)
        seeds = np.stack([np.full(count, seed, dtype=np.int64),
                          np.arange(global_step, global_step + count, dtype=np.int64)], axis=1)
        with tf.device(self.engine.tf_device):
            params, model_state, opt_state, losses = self._steps(
                ts.params, ts.model_state, ts.opt_state, X, y,
                tf.constant(idx.reshape(count, batch_size)), tf.constant(seeds))
        return TrainState(params, model_state, opt_state), losses.numpy()


class TensorflowEngine(Engine):
    name = "tensorflow"

    def __init__(self, device="auto", dtype="float32", threads=None, variant: str = "xla"):
        from descend.backend import get_ops

        tf = _tf()
        if threads:
            try:  # only possible before TensorFlow's runtime has started
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        self.ops = get_ops("tensorflow")
        self._gpus = tf.config.list_physical_devices("GPU")
        self.capabilities = frozenset({"float64", "fused_epoch", "autodiff"} | ({"gpu"} if self._gpus else set()))
        self.jit_compile = variant == "xla"
        super().__init__(device, dtype, threads)
        self.tf_device = "/GPU:0" if self.device == "gpu" else "/CPU:0"
        self._logits = {}

    def resolve_device(self, device):
        if device == "gpu" and not self._gpus:
            raise ConfigError("`device` 'gpu' is not available to TensorFlow here (no GPU visible). "
                              "Received: device='gpu'")
        return "gpu" if device in ("gpu", "auto") and self._gpus else "cpu"

    def asarray(self, x, dtype=None):
        tf = _tf()
        with tf.device(self.tf_device):
            return tf.constant(np.asarray(x, dtype=dtype or self.dtype))

    def put_labels(self, y):
        if float_targets(y):
            return self.asarray(y)
        tf = _tf()
        with tf.device(self.tf_device):
            return tf.constant(np.asarray(y, dtype=np.int32))

    def put_tree(self, tree):
        from descend.io.tree import map as tree_map

        tf = _tf()

        def put(a):
            a = np.asarray(a)
            with tf.device(self.tf_device):
                return tf.constant(a.astype(self.dtype) if a.dtype.kind == "f" else a)

        return tree_map(put, tree)

    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        return TensorflowTrainer(self, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        tf = _tf()
        fn = self._logits.get(spec)
        if fn is None:
            fn = self._logits[spec] = tf.function(
                lambda p, s, x: predict_logits(self.ops, spec, p, s, x), jit_compile=self.jit_compile,
                reduce_retracing=True, autograph=False)
        with tf.device(self.tf_device):
            out = [fn(params, model_state, X[i:i + batch_size]).numpy() for i in range(0, int(X.shape[0]), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


ENGINE_CLASS = TensorflowEngine
