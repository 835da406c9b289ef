"""The JAX engine: a whole run of optimizer steps fused into one compiled call.

The step is pure: descend's own model function (``descend.model.loss_fn``)
under ``jax.value_and_grad``, descend's own optimizer update, and
``jax.lax.scan`` over the run's batches, all inside one ``jax.jit``, so an
epoch is one XLA computation and one dispatch.  The dataset is put on the
device once (by the training loop, through :meth:`JaxEngine.asarray` and
:meth:`JaxEngine.put_labels`); each call receives the run's batch indices (the
loop's order, so every engine sees the same batches) and gathers the rows on
the device.  Randomness is an explicit key per step,
``fold_in(PRNGKey(seed), global_step)``, so a resumed run draws what an
uninterrupted one would.  Augmentation is part of the same compiled step: its
draws hash ``(seed, step)`` on the device, with no host round trip per batch.

Precision: float32 by default.  ``dtype="float64"`` switches JAX's x64 mode
on for the whole process (JAX has no per-computation switch); a float32 engine
created afterwards still computes in float32, because every array it makes is
cast explicitly and Python constants are weakly typed.

Compilation is cached per shape in memory and on disk: JAX's persistent
compilation cache under ``$DESCEND_CACHE/jax`` (default ``~/.cache/descend/jax``),
with the size and compile-time thresholds at zero so that small programs are
kept too.  A second process training the same configuration loads the
compiled program instead of compiling it.  A cache directory the user has
configured for JAX already (``JAX_COMPILATION_CACHE_DIR``) is left alone.

Threads: XLA's CPU client sizes its thread pool once, when JAX first starts
its backends in the process.  ``threads=N`` gives the pool N threads (through
``PJRT_NPROC``, set just for that moment) if this engine is the first to start
JAX; once JAX is running in the process, ``threads`` is ignored without error
and the pool keeps its size (``engine.threads_applied`` says which happened).

Matrix products on the CPU: jaxlib 0.10's XLA hands them to YNNPACK by
default, which is slower than XLA's own Eigen kernels at descend's shapes
(batch 32 epoch of 784-300-10: 0.72 s against 0.59 s).  CPU programs are
compiled with ``CPU_COMPILER_OPTIONS``, which keep them on Eigen; an XLA that
does not know the option compiles with its defaults, and a user who sets it in
``XLA_FLAGS`` keeps their setting.

Buffer donation: on a GPU, a train state of ``DONATE_MIN_BYTES`` or more is
donated to the compiled call, so parameters and optimizer state are updated in
place and device memory holds one copy of them, not two.  Smaller states (every
MLP on MNIST-sized data) and every state on the CPU are not donated: the copy
it would save takes microseconds per run, and the caller's previous state stays
valid, so a Ctrl-C in the middle of a run can still checkpoint it.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from descend.engines.base import Engine, Trainer, TrainState, float_targets
from descend.errors import ConfigError
from descend.io.tree import flatten
from descend.model import loss_fn, predict_logits
from descend.model.augment import augment_rows


def _backend_started() -> bool:
    """Whether JAX has created its backends (after which XLA's thread pool is fixed)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", True))
    except ImportError:  # a JAX without that module: assume the worst
        return True


def _start_with_threads(threads: int | None) -> bool:
    """Import JAX and start its backends, with ``threads`` XLA CPU threads if they have not started yet.

    XLA's CPU client reads ``PJRT_NPROC`` once, when it is created; it is set
    only for that moment, so child processes do not inherit it.  (The older
    recipe ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
    intra_op_parallelism_threads=1`` no longer bounds the pool in current
    jaxlib: several threads still run.)  Returns whether ``threads`` took effect.
    """
    applied = bool(threads) and not _backend_started()
    previous = os.environ.get("PJRT_NPROC")
    if applied:
        os.environ["PJRT_NPROC"] = str(int(threads))
    try:
        import jax

        jax.devices()  # creates the backends (and XLA's thread pools) now
    finally:
        if applied:
            if previous is None:
                os.environ.pop("PJRT_NPROC", None)
            else:
                os.environ["PJRT_NPROC"] = previous
    return applied


_CACHE_CONFIGURED = False


def _configure_cache(jax) -> None:
    """Point JAX's persistent compilation cache at descend's cache directory (once per process)."""
    global _CACHE_CONFIGURED
    if _CACHE_CONFIGURED:
        return
    _CACHE_CONFIGURED = True
    from descend.data.download import cache_dir

    try:
        if jax.config.jax_compilation_cache_dir is None:
            path = cache_dir() / "jax"
            path.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(path))
        # Cache every program, however small or quick to compile: descend's are small.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    except (OSError, AttributeError):  # a read-only cache folder or an older JAX: compile every run
        pass


def _apply_updates(params, updates):
    """``p + u`` for every parameter, spelled ``p - (0 - u)``.

    The same numbers (up to the sign of a zero).  XLA:CPU (jaxlib 0.10) runs a
    lone ``add`` of two big arrays, which is what the momentum update is (``u``
    is the new velocity, itself part of the state), about 3x slower than a
    fused loop; this spelling makes it one (784-300-10, batch 32: 12% faster).
    """
    return {k: p - (0.0 - updates[k]) for k, p in params.items()}


DONATE_MIN_BYTES = 256 * 2**20

# XLA:CPU (jaxlib 0.10) hands matrix products to YNNPACK by default; its kernels
# are slower than XLA's Eigen ones at every shape descend trains (784-300-10,
# one thread, batch 32: 183 us against 118 us for the forward product; the
# epoch 0.72 s against 0.59 s; batch 500 and inference are faster too).  An
# empty fusion-type list keeps the products on Eigen.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# Convolutions are the other way round: XLA's defaults hand them to YNNPACK too, which runs them
# faster than Eigen does (and the per-frequency products of a convolution run as spectra, see
# ``jax_ops.conv2d``), so a network with a convolution compiles with XLA's defaults
# (docs/benchmarks.md has the figures).
_CPU_OPTIONS_SUPPORTED: bool | None = None


def _convolutional(spec) -> bool:
    from descend.model.layers import Conv2D

    return any(isinstance(layer, Conv2D) for layer in getattr(spec, "layers", ()))


def _compiler_options(engine, spec=None) -> dict | None:
    """``CPU_COMPILER_OPTIONS`` for a CPU engine whose jaxlib knows them, else None (XLA's defaults,
    also what a network with a convolution gets).

    An XLA without the option refuses the whole compilation, so it is probed
    once per process on a one-element program.  An option the user set in
    ``XLA_FLAGS`` is theirs: it is left out.
    """
    global _CPU_OPTIONS_SUPPORTED
    if engine.device != "cpu":
        return None
    if spec is not None and _convolutional(spec):
        return None
    user_flags = os.environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in CPU_COMPILER_OPTIONS.items() if f"--{k}" not in user_flags}
    if not options:
        return None
    if _CPU_OPTIONS_SUPPORTED is None:
        jax = engine.jax
        try:
            probe = jax.jit(lambda x: x + 1, compiler_options=options)
            probe(jax.device_put(np.zeros(1, np.float32), engine.jax_device)).block_until_ready()
            _CPU_OPTIONS_SUPPORTED = True
        except (TypeError, RuntimeError, ValueError):  # no compiler_options argument, or an unknown option
            _CPU_OPTIONS_SUPPORTED = False
    return options if _CPU_OPTIONS_SUPPORTED else None


def _build_run(engine, spec, optimizer, l1, l2, augment, label_smoothing, donate):
    """The jitted ``run_steps(params, model_state, opt_state, X, y, idx, global_step, seed)``.

    ``idx`` is ``(count, batch_size)`` row indices; the scan applies one
    optimizer step per row of ``idx`` and stacks the losses.
    """
    jax = engine.jax
    jnp = jax.numpy
    ops = engine.ops
    update = optimizer.update
    uses_key = spec.uses_dropout

    def objective(params, model_state, xb, yb, key):
        return loss_fn(ops, spec, params, model_state, xb, yb, l1=l1, l2=l2, label_smoothing=label_smoothing,
                       train=True, key=key)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def run_steps(params, model_state, opt_state, X, y, idx, global_step, seed):
        base = jax.random.PRNGKey(seed) if uses_key else None

        def step(carry, inputs):
            params, model_state, opt_state = carry
            rows, t = inputs
            xb = jnp.take(X, rows, axis=0, mode="clip")
            yb = jnp.take(y, rows, axis=0, mode="clip")
            if augment is not None:
                xb = augment_rows(ops, augment, xb, seed, t)
            key = jax.random.fold_in(base, t) if uses_key else None
            (loss, (new_state, _)), grads = grad_fn(params, model_state, xb, yb, key)
            updates, opt_state = update(grads, opt_state, params)
            return (_apply_updates(params, updates), new_state, opt_state), loss

        steps = global_step + jnp.arange(idx.shape[0], dtype=jnp.uint32)
        (params, model_state, opt_state), losses = jax.lax.scan(step, (params, model_state, opt_state), (idx, steps))
        return params, model_state, opt_state, losses

    return jax.jit(run_steps, donate_argnums=(0, 1, 2) if donate else (),
                   compiler_options=_compiler_options(engine, spec))


# Inference functions per model spec and device, shared by every engine in the process (jit caches per shape).
_LOGITS: dict = {}


class JaxTrainer(Trainer):
    """Runs of steps as one ``jax.jit``-compiled ``lax.scan`` (compiled once per shape)."""

    def __init__(self, engine, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        super().__init__(engine, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)
        self._key = (spec, optimizer, float(l1), float(l2), augment, self.label_smoothing)
        self._run = self._compiled(donate=False)
        self._donate = None  # decided on the first run, from the state's size

    def _compiled(self, donate: bool):
        """The jitted run for this (spec, optimizer, l1, l2, augment, label smoothing), shared by the engine's trainers."""
        runs = self.engine._runs
        key = (*self._key, donate)
        if key not in runs:
            runs[key] = _build_run(self.engine, *self._key, donate)
        return runs[key]

    def init(self, params, model_state, opt_state=None):
        """Put NumPy params/state on the device; a fresh optimizer state is built on the host.

        ``optimizer.init`` on NumPy arrays costs no compilation (on device
        arrays every ``zeros_like`` would be one small XLA program), and every
        leaf is then committed to the engine's device, like the outputs of
        :meth:`run`, so the second run does not compile again.
        """
        engine = self.engine
        if opt_state is None:
            host = {k: np.asarray(v).astype(engine.dtype) for k, v in params.items()}
            opt_state = self.optimizer.init(host)
        return TrainState(engine.put_tree(params), engine.put_tree(model_state), engine.put_tree(opt_state))

    def run(self, ts, X, y, order, batch_size, first, count, global_step, seed):
        engine = self.engine
        idx = np.asarray(order[first * batch_size:(first + count) * batch_size], dtype=np.int32)
        if idx.size != count * batch_size:
            raise ValueError(f"order holds {len(order)} rows: too few for {count} steps of {batch_size} "
                             f"from step {first}")
        idx = engine.jax.device_put(idx.reshape(count, batch_size), engine.jax_device)
        if self._donate is None:
            size = sum(getattr(leaf, "nbytes", 0) for leaf in flatten(tuple(ts))[0])
            self._donate = engine.device == "gpu" and size >= DONATE_MIN_BYTES
            if self._donate:
                self._run = self._compiled(donate=True)
        params, model_state, opt_state, losses = self._run(
            ts.params, ts.model_state, ts.opt_state, X, y, idx,
            np.uint32(global_step % 2**32), np.uint32(seed % 2**32))
        return TrainState(params, model_state, opt_state), np.asarray(losses)


class JaxEngine(Engine):
    name = "jax"

    def __init__(self, device="auto", dtype="float32", threads=None):
        from descend.backend import get_ops

        self.threads_applied = _start_with_threads(threads)
        import jax

        self.jax = jax
        _configure_cache(jax)
        if dtype == "float64" and not self.jax.config.jax_enable_x64:
            self.jax.config.update("jax_enable_x64", True)
        self.ops = get_ops("jax")
        self._gpus = self._devices("gpu")
        self.capabilities = frozenset({"float64", "fused_epoch", "autodiff"} | ({"gpu"} if self._gpus else set()))
        super().__init__(device, dtype, threads)
        self.jax_device = self._gpus[0] if self.device == "gpu" else self._devices("cpu")[0]
        self._runs = {}

    def _devices(self, kind):
        try:
            return self.jax.devices(kind)
        except RuntimeError:  # no such backend in this JAX installation
            return []

    def resolve_device(self, device):
        if device == "gpu" and not self._gpus:
            raise ConfigError("`device` 'gpu' is not available to JAX here (no GPU backend; "
                              "pip install \"descend[cuda]\"). Received: device='gpu'")
        return "gpu" if device in ("gpu", "auto") and self._gpus else "cpu"

    # Arrays -----------------------------------------------------------------
    def _put(self, a):
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(self.dtype, copy=False)
        elif a.dtype.kind in "iu" and a.dtype.itemsize > 4:  # step counts: int32 whether or not x64 is on
            a = a.astype(np.int32)
        return self.jax.device_put(a, self.jax_device)

    def asarray(self, x, dtype=None):
        return self.jax.device_put(np.asarray(x, dtype=dtype or self.dtype), self.jax_device)

    def put_labels(self, y):
        if float_targets(y):
            return self.asarray(y)
        return self.jax.device_put(np.asarray(y, dtype=np.int32), self.jax_device)

    def put_tree(self, tree):
        from descend.io.tree import map as tree_map

        return tree_map(self._put, tree)

    def to_numpy(self, x):
        return np.asarray(x)

    # Training ---------------------------------------------------------------
    def trainer(self, spec, optimizer, *, l1=0.0, l2=0.0, augment=None, label_smoothing=0.0):
        return JaxTrainer(self, spec, optimizer, l1=l1, l2=l2, augment=augment, label_smoothing=label_smoothing)

    def logits(self, spec, params, model_state, X, batch_size=10000):
        fn = _LOGITS.get((spec, self.device))
        if fn is None:
            ops = self.ops
            fn = _LOGITS[spec, self.device] = self.jax.jit(lambda p, s, x: predict_logits(ops, spec, p, s, x),
                                                           compiler_options=_compiler_options(self, spec))
        if not isinstance(X, self.jax.Array):  # NumPy input: in the engine's dtype, on its device
            X = self.asarray(X)
        n = int(X.shape[0])
        out = [np.asarray(fn(params, model_state, X[i:i + batch_size])) for i in range(0, n, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=self.dtype)


ENGINE_CLASS = JaxEngine
