"""The PyTensor engine, in Theano's own idiom.

Parameters, optimizer state and batch-norm statistics live in shared
variables; the dataset is a shared variable too (put on the device once, the
tutorials' advice).  One ``pytensor.function(inputs=[batch indices],
outputs=loss, updates=...)`` is compiled per training configuration, with
gradients from ``pytensor.grad`` of descend's own model function and updates
from descend's own optimizer, built symbolically.  Each optimizer step is one
call of that function from Python, as in the Theano tutorials.

Backends: the C backend (PyTensor's ``CVM`` mode: the ``fast_run`` rewrites and C
code compiled by the system's C++ compiler, the default) or numba (``--engine
pytensor:numba``).  ``FAST_RUN`` is not named: since PyTensor 3 it means numba.
Numba's fastmath is turned off: it assumes no NaNs (so a diverging run could not
be detected) and reorders arithmetic.  Compiled code is cached on disk by
PyTensor (C modules in its compiledir, numba functions through numba's cache), so
a second run skips the cold compile.  Convolution and max pooling are descend's
own ops, NumPy code in ``perform`` (see ``descend.backend.pytensor_ops``); numba
runs them in its object mode.  Speeds are in docs/benchmarks.md.

Dropout masks come from a RandomStream reseeded from ``(seed, global step)``
at the start of every run of steps; runs of steps end at evaluations, which
is where a resumed run starts, so resuming draws the same masks.  Augmentation
takes the seed and the global step as two more inputs of the step function.
"""

from __future__ import annotations

import warnings

import numpy as np

from descend.engines.base import Engine, Trainer, TrainState, blas_threads, float_targets
from descend.engines.heap import freed_memory_kept
from descend.errors import ConfigError
from descend.io.tree import flatten, unflatten
from descend.model import loss_fn, predict_logits
from descend.model.augment import augment_rows
from descend.optim.base import apply_updates

MODES = {"c": "CVM", "numba": "NUMBA"}


def _pytensor():
    import pytensor

    pytensor.config.numba__fastmath = False
    # PyTensor warns, once, when it finds no BLAS to link its C code to; without one its matrix products
    # (Dot22) run NumPy's, and NumPy brings its own BLAS, so the warning does not apply here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
        pytensor.config.blas__ldflags  # noqa: B018 - reading it runs (and caches) PyTensor's BLAS search
    return pytensor


def _compile(inputs, outputs, **kwargs):
    """``pytensor.function``, without numba's notice that descend's convolution and pooling ops (NumPy code by
    design, see ``descend.backend.pytensor_ops``) run in its object mode."""
    pytensor = _pytensor()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numba will use object mode to run _", category=UserWarning)
        return pytensor.function(inputs, outputs, **kwargs)


class PytensorTrainer(Trainer):
    """Shared variables + one compiled step function; ``init`` (re)loads their values."""

    def __init__(self, engine, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        super().__init__(engine, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)
        self._fn = None
        self._data = None

    # The graph is built on first use, when the shapes of the params and state are known.
    def _build(self, params, model_state, opt_state):
        pytensor = _pytensor()
        import pytensor.tensor as pt
        from descend.backend.pytensor_ops import RngChain

        ops = self.engine.ops
        # Static shapes: convolution and pooling are built from window slices of known geometry.
        self.p = {k: pytensor.shared(v, name=k, shape=np.shape(v)) for k, v in params.items()}
        self.s = {k: pytensor.shared(v, name=k, shape=np.shape(v)) for k, v in model_state.items()}
        leaves, self._opt_def = flatten(opt_state)
        self.o = [pytensor.shared(np.asarray(v), name=f"opt{i}") for i, v in enumerate(leaves)]
        self.X = pytensor.shared(np.zeros((1, 1), dtype=self.engine.dtype), name="X")
        regression = self.spec.task == "regression"
        self.y = pytensor.shared(np.zeros((1, 1), dtype=self.engine.dtype) if regression
                                 else np.zeros(1, dtype=np.int64), name="y")
        self.rng = pt.random.shared_rng(np.random.default_rng(0), name="dropout_rng")
        key = RngChain(self.rng)

        idx = pt.lvector("idx")
        inputs, xb = [idx], self.X[idx]
        if self.augment is not None:
            seed, step = pt.lscalar("seed"), pt.lscalar("step")
            inputs += [seed, step]
            xb = augment_rows(ops, self.augment, xb, seed, step)
        loss, (new_state, _) = loss_fn(ops, self.spec, self.p, self.s, xb, self.y[idx],
                                       l1=self.l1, l2=self.l2, label_smoothing=self.label_smoothing,
                                       train=True, key=key)
        names = list(self.p)
        grads = dict(zip(names, pytensor.grad(loss, [self.p[k] for k in names])))
        sym_opt = unflatten(self._opt_def, self.o)
        updates, new_opt = self.optimizer.update(grads, sym_opt, self.p)
        new_params = apply_updates(self.p, updates)
        new_opt_leaves, _ = flatten(new_opt)
        pairs = [(self.p[k], pt.cast(new_params[k], self.p[k].dtype)) for k in names]
        pairs += [(self.s[k], pt.cast(new_state[k], self.s[k].dtype)) for k in self.s]
        pairs += [(shared, pt.cast(expr, shared.dtype)) for shared, expr in zip(self.o, new_opt_leaves)]
        if key.current is not self.rng:
            pairs.append((self.rng, key.current))
        self._fn = _compile(inputs, loss, updates=pairs, mode=self.engine.mode, name="descend_train_step")

    def init(self, params, model_state, opt_state=None) -> TrainState:
        params = {k: np.asarray(v, dtype=self.engine.dtype) for k, v in params.items()}
        model_state = {k: np.asarray(v, dtype=self.engine.dtype) for k, v in model_state.items()}
        if opt_state is None:
            opt_state = self.optimizer.init(params)
        if self._fn is None:
            self._build(params, model_state, opt_state)
        self._load(TrainState(params, model_state, opt_state))
        return self._snapshot()

    def _load(self, ts: TrainState) -> None:
        for k, v in ts.params.items():
            self.p[k].set_value(np.array(v, dtype=self.p[k].dtype))
        for k, v in ts.model_state.items():
            self.s[k].set_value(np.array(v, dtype=self.s[k].dtype))
        for shared, v in zip(self.o, flatten(ts.opt_state)[0]):
            shared.set_value(np.array(v, dtype=shared.dtype))
        self._current = ts

    def _snapshot(self) -> TrainState:
        ts = TrainState({k: v.get_value() for k, v in self.p.items()},
                        {k: v.get_value() for k, v in self.s.items()},
                        unflatten(self._opt_def, [v.get_value() for v in self.o]))
        self._current = ts
        return ts

    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        if ts is not self._current:  # a state from elsewhere (a checkpoint, with_lr_scale): load it
            self._load(ts)
        if self._data is not (X, y):
            self.X.set_value(X, borrow=True)
            self.y.set_value(self.engine.put_labels(y), borrow=True)
            self._data = (X, y)
        self.rng.set_value(np.random.default_rng([seed, global_step]))
        # The convolution ops allocate their patch matrices afresh every step (see engines.heap).
        with blas_threads(self.engine.threads), freed_memory_kept():
            return self._steps(order, batch_size, first, count, global_step, seed)

    def _steps(self, order, batch_size, first, count, global_step, seed):
        losses = np.empty(count)
        step = self._fn
        start = first * batch_size
        # The step's augmentation draws hash (seed, step): words mod 2**32, as on every engine.
        extra = (lambda j: (seed % 2**32, (global_step + j) % 2**32)) if self.augment is not None else (lambda j: ())
        for j in range(count):
            losses[j] = step(order[start + j * batch_size:start + (j + 1) * batch_size], *extra(j))
            if not np.isfinite(losses[j]):
                return self._snapshot(), losses[: j + 1]
        return self._snapshot(), losses

    def to_numpy(self, ts):
        return ts

    def with_lr_scale(self, ts, value):
        new = super().with_lr_scale(ts, value)
        self._load(new)
        return new


class PytensorEngine(Engine):
    name = "pytensor"
    capabilities = frozenset({"float64", "autodiff", "compiled_step"})

    def __init__(self, device="auto", dtype="float32", threads=None, variant: str = "c"):
        from descend.backend import get_ops

        backend = variant
        if backend not in MODES:
            raise ConfigError(f"`backend` must be one of {tuple(MODES)}. Received: backend={backend!r}")
        self.backend = backend
        _pytensor()
        self.ops = get_ops("pytensor")
        self.mode = MODES[backend]
        super().__init__(device, dtype, threads)
        self._logits = {}

    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def put_labels(self, y):
        if float_targets(y):
            return self.asarray(y)
        return np.asarray(y, dtype=np.int64)

    def put_tree(self, tree):
        from descend.io.tree import map as tree_map

        def put(a):
            a = np.asarray(a)
            return a.astype(self.dtype) if a.dtype.kind == "f" else a

        return tree_map(put, tree)

    def to_numpy(self, x):
        return np.asarray(x)

    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        return PytensorTrainer(self, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        _pytensor()
        import pytensor.tensor as pt

        key = (spec, tuple((k, np.shape(v)) for k, v in params.items()),
               tuple((k, np.shape(v)) for k, v in model_state.items()))
        fn = self._logits.get(key)
        if fn is None:
            x = pt.matrix("x", dtype=self.dtype)
            p = {k: pt.tensor(name=k, dtype=self.dtype, shape=np.shape(v)) for k, v in params.items()}
            s = {k: pt.tensor(name=k, dtype=self.dtype, shape=np.shape(v)) for k, v in model_state.items()}
            out = predict_logits(self.ops, spec, p, s, x)
            fn = self._logits[key] = _compile([x, *p.values(), *s.values()], out, mode=self.mode)
        pv = [np.asarray(params[k], dtype=self.dtype) for k in params]
        sv = [np.asarray(model_state[k], dtype=self.dtype) for k in model_state]
        out = [fn(np.asarray(X[i:i + batch_size], dtype=self.dtype), *pv, *sv) for i in range(0, len(X), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


ENGINE_CLASS = PytensorEngine
