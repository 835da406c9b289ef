"""The surface every engine offers, and the part of it they share.

An engine turns the engine-agnostic model (``descend.model``) and optimizers
(``descend.optim``) into something that runs: it moves the dataset to its
device once, and builds a :class:`Trainer` that advances a training state by a
run of optimizer steps, one compiled call where the engine can fuse them.

Batch order is decided by the caller (a NumPy permutation per epoch), so every
engine sees the same batches in the same order: the basis of the parity tests.
Randomness inside a step (dropout, augmentation) is derived from ``(seed, global
step)``, so a resumed run draws exactly what an uninterrupted one would.  A
trainer built with ``augment`` (a bound :class:`~descend.model.augment.Augmentation`)
transforms each training batch inside its step, on the device, before the loss;
the draws are the same integers on every engine, so every engine trains on
exactly the NumPy engine's augmented batches.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np

from descend.io.tree import map as tree_map
from descend.optim.transforms import ScaleByLearningRateState


class TrainState(NamedTuple):
    params: dict
    model_state: dict
    opt_state: Any


class Engine:
    """Base class: subclasses set ``name``, ``ops``, ``capabilities`` and build trainers."""

    name = "base"
    capabilities: frozenset = frozenset()

    def __init__(self, device: str = "auto", dtype: str = "float32", threads: int | None = None):
        self.device = self.resolve_device(device)
        self.dtype = dtype
        self.threads = threads

    def resolve_device(self, device: str) -> str:
        if device == "gpu":
            from descend.errors import ConfigError

            raise ConfigError(f"engine {self.name!r} has no GPU support. Received: device='gpu'")
        return "cpu"

    # Arrays -----------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """A float array (the engine's dtype unless told) on the engine's device."""
        return self.ops.asarray(np.asarray(x, dtype=dtype or self.dtype))

    def put_labels(self, y):
        """Class ids as integers; regression targets (floats, rows x outputs) in the engine's dtype."""
        if float_targets(y):
            return self.asarray(y)
        return self.ops.asarray(np.asarray(y, dtype=np.int64))

    def to_numpy(self, x) -> np.ndarray:
        return self.ops.to_numpy(x)

    def put_tree(self, tree):
        """A pytree of NumPy arrays onto the device (floats in the engine's dtype)."""
        def put(a):
            a = np.asarray(a)
            return self.ops.asarray(a.astype(self.dtype) if a.dtype.kind == "f" else a)
        return tree_map(put, tree)

    def tree_to_numpy(self, tree):
        return tree_map(self.to_numpy, tree)

    # Training ---------------------------------------------------------------
    def trainer(self, spec, optimizer, *, l1: float = 0.0, l2: float = 0.0, augment=None,
                label_smoothing: float = 0.0) -> Trainer:
        raise NotImplementedError

    def logits(self, spec, params, model_state, X, batch_size: int = 10000) -> np.ndarray:
        """Inference-mode logits for device array ``X``, as NumPy, in chunks."""
        raise NotImplementedError


class Trainer:
    """Advances a :class:`TrainState` by runs of optimizer steps.

    ``run(ts, X, y, order, batch_size, first, count, seed)`` applies ``count``
    steps; step ``j`` of the epoch uses rows ``order[j*batch_size:(j+1)*batch_size]``
    for ``j`` in ``first .. first+count-1``; it returns the new state and the
    ``count`` per-step losses (NumPy).  ``global_step`` is the optimizer step of
    the first of them (it seeds per-step randomness).  The loss is
    ``descend.model.loss_fn`` with penalties ``l1``, ``l2`` and
    ``label_smoothing``.
    """

    def __init__(self, engine: Engine, spec, optimizer, *, l1: float = 0.0, l2: float = 0.0, augment=None,
                 label_smoothing: float = 0.0):
        if augment is not None and augment.image_shape is None:
            raise ValueError("augment must be bound to the rows' image shape (Augmentation.bind)")
        self.engine, self.spec, self.optimizer, self.l1, self.l2 = engine, spec, optimizer, l1, l2
        self.augment = augment
        self.label_smoothing = float(label_smoothing)

    def init(self, params, model_state, opt_state=None) -> TrainState:
        """Put NumPy params/state (and optionally a restored optimizer state) on the device."""
        params = self.engine.put_tree(params)
        model_state = self.engine.put_tree(model_state)
        if opt_state is None:
            opt_state = self.optimizer.init(params)
        else:
            opt_state = self.engine.put_tree(opt_state)
        return TrainState(params, model_state, opt_state)

    def run(self, ts: TrainState, X, y, order: np.ndarray, batch_size: int, first: int, count: int,
            global_step: int, seed: int) -> tuple[TrainState, np.ndarray]:
        raise NotImplementedError

    def to_numpy(self, ts: TrainState) -> TrainState:
        return TrainState(*(self.engine.tree_to_numpy(part) for part in ts))

    def with_lr_scale(self, ts: TrainState, value: float) -> TrainState:
        """Set the reduce-on-plateau multiplier inside the optimizer state."""
        scale = self.engine.put_tree(np.asarray(value, dtype=self.engine.dtype))
        return ts._replace(opt_state=_replace_lr_scale(ts.opt_state, scale))


def _replace_lr_scale(node, scale):
    if isinstance(node, ScaleByLearningRateState):
        return node._replace(scale=scale)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_replace_lr_scale(n, scale) for n in node))
    if isinstance(node, (tuple, list)):
        return type(node)(_replace_lr_scale(n, scale) for n in node)
    return node


def float_targets(y) -> bool:
    """Whether ``y`` holds regression targets (floats) rather than class ids."""
    return isinstance(y, np.ndarray) and y.dtype.kind == "f"


def blas_threads(threads: int | None):
    """A scope in which BLAS uses ``threads`` threads (OMP_NUM_THREADS only works before NumPy loads)."""
    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads)


def batch_indices(order: np.ndarray, batch_size: int, step: int) -> np.ndarray:
    return order[step * batch_size:(step + 1) * batch_size]


def step_seed(seed: int, global_step: int) -> np.random.Generator:
    """The random generator of one optimizer step (dropout masks), resume-safe."""
    return np.random.default_rng([seed, global_step])
