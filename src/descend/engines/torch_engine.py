"""The PyTorch engine: eager autograd of descend's model, descend's own optimizers.

Each optimizer step is ``torch.autograd.grad`` of ``descend.model.loss_fn``
(the same function every engine runs) with respect to leaf tensors, then
descend's own optimizer ``update`` and ``apply_updates`` as plain tensor
arithmetic under ``torch.no_grad()``.  ``torch.optim`` is not used in the hot
loop: its per-step bookkeeping costs more than the update itself at small
batches, and descend's optimizers are the ones the parity tests pin down.

The dataset is put on the device once; a run's batch indices go to the device
in one transfer and rows are gathered there with ``index_select``.  Per-step
losses stay on the device and come back in one transfer at the end of the run,
so a GPU run never waits on the host between steps.  Augmentation runs on the
device too (its per-step key is two Python-int hashes, no transfer).  Dropout masks come from a
``torch.Generator`` on the device, seeded from ``(seed, global step)``, so a
resumed run draws the masks an uninterrupted one would.

Devices: ``cpu``, ``gpu`` (CUDA) and ``auto`` (CUDA when available).  No
``torch.compile``: on CPU it takes ~20 s to compile and the compiled step is
not faster for an MLP of this size.  ``threads`` sets ``torch.set_num_threads``
for the duration of each call (restored afterwards, so engines side by side in
one process do not step on each other); unset, PyTorch's own setting stands.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from descend.backend import get_ops
from descend.engines.base import Engine, Trainer, TrainState, float_targets
from descend.errors import ConfigError
from descend.io.tree import map as tree_map
from descend.model import loss_fn, predict_logits
from descend.model.augment import augment_rows
from descend.optim.base import apply_updates

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def step_generator_seed(seed: int, step: int) -> int:
    """The dropout generator's seed for optimizer step ``step`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """A scope in which PyTorch's intra-op pool uses ``threads`` threads (no-op when unset)."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


class TorchTrainer(Trainer):
    def __init__(self, engine, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        super().__init__(engine, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)
        self._generator = None

    def init(self, params, model_state, opt_state=None) -> TrainState:
        params = self.engine.put_tree(params)
        model_state = self.engine.put_tree(model_state)
        if opt_state is None:
            # Optimizers build their 0-d step counts and multipliers with ``ops.zeros`` /
            # ``ops.full``, which know no device: move every leaf next to the params.
            opt_state = tree_map(self.engine.to_device, self.optimizer.init(params))
        else:
            opt_state = self.engine.put_tree(opt_state)
        return TrainState(params, model_state, opt_state)

    def generator(self, seed: int, step: int) -> torch.Generator:
        """The (reused) device generator, seeded for optimizer step ``step``."""
        if self._generator is None:
            self._generator = torch.Generator(device=self.engine.torch_device)
        return self._generator.manual_seed(step_generator_seed(seed, step))

    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        engine = self.engine
        with torch_threads(engine.threads):
            return self._run(ts, X, y, order, batch_size, first, count, global_step, seed)

    def _run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        engine = self.engine
        ops, spec, l1, l2, smoothing = engine.ops, self.spec, self.l1, self.l2, self.label_smoothing
        update = self.optimizer.update
        dropout, batchnorm, augment = spec.uses_dropout, spec.batchnorm, self.augment
        params, model_state, opt_state = ts
        names = tuple(params)
        if not isinstance(X, torch.Tensor):  # callers should put data on the device once; tolerate NumPy
            X = engine.asarray(X)
        if not isinstance(y, torch.Tensor):
            y = engine.put_labels(y)
        idx = np.ascontiguousarray(order[first * batch_size:(first + count) * batch_size], dtype=np.int64)
        idx = torch.from_numpy(idx).to(engine.torch_device, non_blocking=True).view(count, batch_size)
        losses = []
        key = None
        grad = torch.autograd.grad
        enable_grad, no_grad = torch.enable_grad, torch.no_grad
        for j in range(count):
            rows = idx[j]
            xb, yb = X.index_select(0, rows), y.index_select(0, rows)
            if augment is not None:
                xb = augment_rows(ops, augment, xb, seed, global_step + j)
            if dropout:
                key = self.generator(seed, global_step + j)
            leaves = [params[k].detach().requires_grad_() for k in names]
            with enable_grad():
                loss, (new_state, _) = loss_fn(ops, spec, dict(zip(names, leaves)), model_state, xb, yb,
                                               l1=l1, l2=l2, label_smoothing=smoothing, train=True, key=key)
                grads = grad(loss, leaves)
            losses.append(loss.detach())
            with no_grad():
                if batchnorm:
                    model_state = {k: v.detach() for k, v in new_state.items()}
                updates, opt_state = update(dict(zip(names, grads)), opt_state, params)
                params = apply_updates(params, updates)
        host = torch.stack(losses).to(torch.float64).cpu().numpy() if losses else np.zeros(0)
        return TrainState(params, model_state, opt_state), host


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, device="auto", dtype="float32", threads=None):
        self.ops = get_ops("torch")
        self._cuda = torch.cuda.is_available()
        self.capabilities = frozenset({"float64", "autodiff"} | ({"gpu"} if self._cuda else set()))
        super().__init__(device, dtype, threads)
        self.torch_device = torch.device("cuda" if self.device == "gpu" else "cpu")
        self.torch_dtype = _DTYPES[dtype]

    def resolve_device(self, device):
        if device == "gpu" and not self._cuda:
            raise ConfigError("`device` 'gpu' is not available to PyTorch here (torch.cuda.is_available() is "
                              "False: no NVIDIA GPU, or a CPU-only build of torch). Received: device='gpu'")
        return "gpu" if device in ("gpu", "auto") and self._cuda else "cpu"

    # Arrays -----------------------------------------------------------------
    def _put(self, a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        if not a.flags.writeable:  # torch warns on (and must not alias) read-only NumPy memory
            a = a.copy()
        return torch.from_numpy(a).to(self.torch_device)

    def asarray(self, x, dtype=None):
        if isinstance(x, torch.Tensor):
            return x.to(device=self.torch_device, dtype=self.ops.to_dtype(dtype) or self.torch_dtype)
        return self._put(np.asarray(x, dtype=dtype or self.dtype))

    def put_labels(self, y):
        if float_targets(y) or (isinstance(y, torch.Tensor) and y.is_floating_point()):
            return self.asarray(y)
        if isinstance(y, torch.Tensor):
            return y.to(device=self.torch_device, dtype=torch.int64)
        return self._put(np.asarray(y, dtype=np.int64))

    def to_device(self, x):
        """A tensor (or NumPy array / scalar) on the engine's device, its dtype kept."""
        if isinstance(x, torch.Tensor):
            return x.to(self.torch_device)
        return self._put(np.asarray(x))

    def put_tree(self, tree):
        def put(a):
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().numpy()
            a = np.asarray(a)
            return self._put(a.astype(self.dtype) if a.dtype.kind == "f" else a)

        return tree_map(put, tree)

    # Training ---------------------------------------------------------------
    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        return TorchTrainer(self, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        if not isinstance(X, torch.Tensor):
            X = self.asarray(X)
        out = []
        with torch_threads(self.threads), torch.inference_mode():
            for i in range(0, X.shape[0], batch_size):
                out.append(predict_logits(self.ops, spec, params, model_state, X[i:i + batch_size]))
            if not out:
                return np.zeros((0, 0), dtype=self.dtype)
            return torch.cat(out).cpu().numpy()


ENGINE_CLASS = TorchEngine
