"""The JAX engine's own behaviour (numerical parity with NumPy is tests/test_engine_parity.py).

float32 stays float32 next to a float64 engine (x64 mode is process-wide),
one fused ``lax.scan`` equals the same steps run one call each, the fit loop
end to end against NumPy's history, resume after an interrupt with dropout
and a plateau schedule, the persistent compilation cache across processes,
``threads``, devices, the CPU compiler options, the ops namespace and tracer dispatch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from descend.backend import get_ops, namespace_of, numpy_ops
from descend.engines import get_engine, jax_engine
from descend.errors import ConfigError
from descend.io.tree import flatten
from descend.model import MLP, init_params, init_state
from descend.optim import make_optimizer
from descend.train import LambdaCallback, TrainConfig, fit, fit_options
from descend.train.loop import epoch_order

N, D, K = 96, 12, 4


def _data(n=N, d=D, k=K, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def _leaves(tree):
    return flatten(tree)[0]


# ops namespace ----------------------------------------------------------------

def test_ops_surface_matches_numpy():
    jops = get_ops("jax")
    public = {n for n in dir(numpy_ops) if not n.startswith("_") and callable(getattr(numpy_ops, n))}
    public -= {"annotations"}
    missing = {n for n in public if not hasattr(jops, n)}
    assert not missing, f"jax_ops lacks {sorted(missing)}"
    assert jops.name == "jax"


def test_ops_agree_with_numpy():
    jops = get_ops("jax")
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 5)).astype(np.float32) * 30
    y = rng.integers(0, 5, 7)
    for fn in ("sigmoid", "relu", "exp", "tanh", "abs", "sign", "floor", "square"):
        np.testing.assert_allclose(np.asarray(getattr(jops, fn)(jnp.asarray(z))), getattr(numpy_ops, fn)(z),
                                   rtol=1e-6, atol=1e-30, err_msg=fn)
    np.testing.assert_array_equal(np.asarray(jops.take_labels(jnp.asarray(z), jnp.asarray(y))),
                                  numpy_ops.take_labels(z, y))
    for axis, keepdims in [(None, False), (0, False), (1, True)]:
        for fn in ("sum", "mean", "max"):
            np.testing.assert_allclose(np.asarray(getattr(jops, fn)(jnp.asarray(z), axis=axis, keepdims=keepdims)),
                                       getattr(numpy_ops, fn)(z, axis=axis, keepdims=keepdims), rtol=1e-6)
    assert jops.zeros((2, 3)).dtype == jnp.float32
    assert jops.full((), 1.5, dtype="float32").dtype == jnp.float32
    assert jops.to_numpy(jops.asarray([1, 2])).tolist() == [1, 2]


@pytest.mark.parametrize("dtype", ["float32", np.float32, np.dtype("float32"), jnp.float32, jnp.dtype("float32")])
def test_cast_accepts_every_dtype_spelling(dtype):
    assert get_ops("jax").cast(jnp.arange(3), dtype).dtype == jnp.float32


def scanned_gradients(conv, xs, w):
    """(the sum of dL/dw over ``xs``, dL/dx of each x) for L = sum(tanh(conv(x, w))), inside a jitted ``lax.scan``."""
    def body(total, x):
        loss = lambda x_, w_: jnp.sum(jnp.tanh(conv(x_, w_)))  # noqa: E731 - a non-uniform output gradient
        dx, dw = jax.grad(loss, argnums=(0, 1))(x, w)
        return total + dw, dx
    return jax.jit(lambda: jax.lax.scan(body, jnp.zeros_like(w), xs))()


@pytest.mark.parametrize("kernel, stride, padding", [(5, 1, "same"), (4, 2, "same"), (3, 3, "valid"), (4, 1, "valid")])
def test_conv2d_gradients_inside_a_scan_equal_xla_autodiff(kernel, stride, padding):
    """The direct route's own kernel gradient (the engine's scan avoids XLA's slow one) against autodiff of XLA's conv."""
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.standard_normal((2, 3, 9, 8, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 4, 6)), jnp.float32)
    pads = ((kernel - 1) // 2, kernel // 2) if padding == "same" else (0, 0)

    def xla_conv(x, w_):
        return jax.lax.conv_general_dilated(x, w_, (stride, stride), [pads, pads],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    dw, dx = scanned_gradients(lambda x, w_: get_ops("jax")._conv_direct(x, w_, stride, padding), xs, w)
    dw_xla, dx_xla = scanned_gradients(xla_conv, xs, w)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(dw_xla), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(dx_xla), rtol=1e-5, atol=1e-6)


def test_conv2d_takes_the_spectral_route_only_where_it_pays():
    spectral = get_ops("jax").spectral
    assert spectral((128, 14, 14, 32), (5, 5, 32, 64), 1, "same")  # the CNN benchmark's second convolution
    assert not spectral((128, 28, 28, 1), (5, 5, 1, 32), 1, "same")  # one input channel: windows are cheap
    assert not spectral((128, 14, 14, 32), (5, 5, 32, 64), 2, "same")
    assert not spectral((128, 4, 4, 32), (5, 5, 32, 64), 1, "valid")  # no output pixel
    assert spectral((128, 48, 48, 64), (3, 3, 64, 64), 1, "same")  # separable transforms stay cheap on big maps
    assert spectral((128, 28, 28, 32), (3, 3, 32, 32), 1, "same")
    assert not spectral((128, 14, 14, 16), (3, 3, 16, 16), 1, "same")  # few channels: the transforms cost more


@pytest.mark.parametrize("shape, kernel, padding", [((3, 14, 14, 4), 5, "same"), ((2, 9, 7, 3), 3, "valid"),
                                                    ((2, 8, 11, 2), 4, "same"), ((2, 7, 5, 3), 2, "same"),
                                                    ((1, 5, 6, 2), 5, "valid"), ((2, 3, 3, 2), 5, "same")])
def test_spectral_convolution_and_its_gradients_equal_the_direct_ones(shape, kernel, padding):
    """Forward values and both gradients of the spectral route against XLA's convolution, float64."""
    jax.config.update("jax_enable_x64", True)
    ops = get_ops("jax")
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal(shape))
    w = jnp.asarray(rng.standard_normal((kernel, kernel, shape[3], 3)))
    direct, direct_vjp = jax.vjp(lambda a, b: ops._conv_direct(a, b, 1, padding), x, w)
    got, got_vjp = jax.vjp(lambda a, b: ops._conv_dft(a, b, padding), x, w)
    g = jnp.asarray(rng.standard_normal(direct.shape))
    assert got.shape == direct.shape and got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), np.asarray(direct), rtol=0, atol=1e-11)
    for mine, reference in zip(got_vjp(g), direct_vjp(g)):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(reference), rtol=0, atol=1e-11)


def test_spectral_convolution_gradients_inside_a_scan_equal_xla_autodiff():
    """float32, inside ``lax.scan`` as the engine runs it, through the public ``conv2d``."""
    rng = np.random.default_rng(7)
    xs = jnp.asarray(rng.standard_normal((2, 3, 6, 6, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 5, 16, 16)), jnp.float32)
    assert get_ops("jax").spectral(xs.shape[1:], w.shape, 1, "same")

    dw, dx = scanned_gradients(lambda x, w_: get_ops("jax").conv2d(x, w_, 1, "same"), xs, w)
    dw_xla, dx_xla = scanned_gradients(lambda x, w_: jax.lax.conv_general_dilated(
        x, w_, (1, 1), [(2, 2), (2, 2)], dimension_numbers=("NHWC", "HWIO", "NHWC")), xs, w)
    for got, reference in ((dw, dw_xla), (dx, dx_xla)):  # float32 rounding, relative to the gradient's scale
        reference = np.asarray(reference)
        np.testing.assert_allclose(np.asarray(got), reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_namespace_of_arrays_and_tracers():
    seen = []

    def record(x):
        seen.append(namespace_of(x).name)
        return x

    assert namespace_of(jnp.ones(2)).name == "jax"
    assert namespace_of(np.ones(2)).name == "numpy"
    assert namespace_of(np.ones(2), jnp.ones(2)).name == "jax"

    def scanned(x):
        def body(c, z):
            record(c), record(z)
            return c + z, c
        return jax.lax.scan(body, record(x)[0], x)

    jax.jit(scanned)(jnp.ones(3))
    jax.grad(lambda x: record(x).sum())(jnp.ones(2))
    jax.vmap(record)(jnp.ones(2))
    assert seen == ["jax"] * 5


# engine -------------------------------------------------------------------------

def test_capabilities_and_device():
    engine = get_engine("jax", device="cpu")
    assert {"float64", "fused_epoch", "autodiff"} <= engine.capabilities
    assert engine.device == "cpu"
    assert engine.asarray(np.ones((2, 2))).devices() == {engine.jax_device}
    if not jax.devices() or all(d.platform == "cpu" for d in jax.devices()):
        assert "gpu" not in engine.capabilities
        assert get_engine("jax", device="auto").device == "cpu"
        with pytest.raises(ConfigError, match="gpu"):
            get_engine("jax", device="gpu")


@pytest.mark.gpu
def test_gpu_device():
    if "gpu" not in get_engine("jax").capabilities:
        pytest.skip("JAX sees no GPU here")
    engine = get_engine("jax", device="gpu")
    assert engine.device == "gpu" and engine.jax_device.platform == "gpu"
    X, y = _data()
    spec = MLP(hidden=(16,))
    trainer = engine.trainer(spec, make_optimizer("nesterov", 0.05))
    ts = trainer.init(init_params(spec, D, K, key=0), {})
    assert all(leaf.devices() == {engine.jax_device} for leaf in _leaves(ts))
    ts, losses = trainer.run(ts, engine.asarray(X), engine.put_labels(y), epoch_order(0, 0, N), 16, 0, 6, 0, 0)
    assert np.all(np.isfinite(losses)) and all(leaf.devices() == {engine.jax_device} for leaf in _leaves(ts))


def _run_all(engine, spec, optimizer, X, y, batch, count, *, seed=0):
    trainer = engine.trainer(spec, optimizer)
    ts = trainer.init(init_params(spec, D, K, key=1, dtype=engine.dtype), init_state(spec, D, K, dtype=engine.dtype))
    order = np.concatenate([epoch_order(seed, e, N) for e in range(-(-count * batch // N))])
    ts, losses = trainer.run(ts, engine.asarray(X), engine.put_labels(y), order, batch, 0, count, 0, seed)
    return trainer, ts, losses


def test_float32_stays_float32_next_to_float64():
    X, y = _data()
    spec = MLP(hidden=(16, 8), batchnorm=True)
    e64 = get_engine("jax", dtype="float64")  # switches JAX's x64 mode on for the process
    _, ts64, losses64 = _run_all(e64, spec, make_optimizer("adam", 0.01), X, y, 16, 6)
    assert losses64.dtype == np.float64 and ts64.params["dense0.W"].dtype == jnp.float64
    e32 = get_engine("jax", dtype="float32")
    trainer, ts, losses = _run_all(e32, spec, make_optimizer("adam", 0.01), X, y, 16, 6)
    assert losses.dtype == np.float32
    for leaf in _leaves(ts):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    ts = trainer.with_lr_scale(ts, 0.5)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in _leaves(ts))
    assert e32.logits(spec, ts.params, ts.model_state, e32.asarray(X)).dtype == np.float32
    assert e32.asarray(X.astype(np.float64)).dtype == jnp.float32
    assert e32.put_tree({"a": np.zeros(2), "n": np.zeros((), np.int64)})["a"].dtype == jnp.float32


@pytest.mark.parametrize("batch,count,dropout", [(1, 100, False), (16, 12, True)],
                         ids=["stochastic", "mini-batch-dropout"])
def test_fused_scan_equals_one_call_per_step(batch, count, dropout):
    """``count`` steps in one compiled scan == the same steps as ``count`` calls of one step.

    With dropout the masks come from ``fold_in(PRNGKey(seed), global_step)``
    however the steps are grouped into calls.
    """
    X, y = _data()
    engine = get_engine("jax", dtype="float64")
    spec = MLP(hidden=(16,), dropout_keep=(0.9, 0.7) if dropout else ())
    make = lambda: make_optimizer("rmsprop+nesterov", 0.01)  # noqa: E731
    _, fused, fused_losses = _run_all(engine, spec, make(), X, y, batch, count, seed=5)

    trainer = engine.trainer(spec, make())
    ts = trainer.init(init_params(spec, D, K, key=1, dtype="float64"), {})
    order = np.concatenate([epoch_order(5, e, N) for e in range(-(-count * batch // N))])
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    losses = []
    for j in range(count):
        ts, loss = trainer.run(ts, Xd, yd, order, batch, j, 1, j, 5)
        losses.append(loss[0])
    # The same arithmetic; XLA may fuse a one-step program differently (last-bit rounding only).
    np.testing.assert_allclose(fused_losses, losses, rtol=1e-9)
    for name in fused.params:
        np.testing.assert_allclose(np.asarray(fused.params[name]), np.asarray(ts.params[name]), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_dropout_masks_depend_on_seed_and_step():
    X, y = _data()
    engine = get_engine("jax", dtype="float64")
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5))
    trainer = engine.trainer(spec, make_optimizer("sgd", 0.1))
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    start = init_params(spec, D, K, key=1, dtype="float64")

    def losses(seed, global_step):
        return trainer.run(trainer.init(start, {}), Xd, yd, epoch_order(0, 0, N), 16, 0, 6, global_step, seed)[1]

    a = losses(1, 0)
    np.testing.assert_array_equal(a, losses(1, 0))
    assert not np.allclose(a, losses(2, 0))
    assert not np.allclose(a, losses(1, 6))
    no_dropout = engine.trainer(MLP(hidden=(16,)), make_optimizer("sgd", 0.1))
    plain = no_dropout.run(no_dropout.init(start, {}), Xd, yd, epoch_order(0, 0, N), 16, 0, 6, 0, 1)[1]
    assert not np.allclose(a, plain)


def test_conv_network_steps_fuse_into_one_compiled_scan():
    """A span of conv-net steps is one XLA program (a while loop around the convolutions), compiled once,
    and equals the same steps run one call each; rows stay 2-D on the device and become NHWC inside."""
    from descend.model import Activation, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, Network

    X, y = _data(d=48)
    spec = Network((4, 4, 3), (Conv2D(4, 3, bias=False), BatchNorm(), Activation("relu"), MaxPool2D(2), Flatten(),
                               Dense(None)))
    engine = get_engine("jax", dtype="float64")
    trainer = engine.trainer(spec, make_optimizer("adam", 0.01))
    start = (init_params(spec, 48, K, key=1, dtype="float64"), init_state(spec, 48, K, dtype="float64"))
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    assert Xd.ndim == 2
    order = epoch_order(0, 0, N)
    fused, fused_losses = trainer.run(trainer.init(*start), Xd, yd, order, 16, 0, 6, 0, 0)
    assert trainer._run._cache_size() == 1
    ts = trainer.init(*start)
    args = (ts.params, ts.model_state, ts.opt_state, Xd, yd, jnp.zeros((6, 16), jnp.int32), np.uint32(0),
            np.uint32(0))
    hlo = trainer._run.lower(*args).as_text()
    assert "while" in hlo and "convolution" in hlo
    losses = []
    for j in range(6):
        ts, loss = trainer.run(ts, Xd, yd, order, 16, j, 1, j, 0)
        losses.append(loss[0])
    np.testing.assert_allclose(fused_losses, losses, rtol=1e-9)
    for name in fused.params:
        np.testing.assert_allclose(np.asarray(fused.params[name]), np.asarray(ts.params[name]), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_run_compiles_once_per_shape_and_lr_scale_needs_no_recompile():
    X, y = _data()
    engine = get_engine("jax")
    spec = MLP(hidden=(16,))
    trainer, ts, _ = _run_all(engine, spec, make_optimizer("momentum", 0.05), X, y, 16, 6)
    ts = trainer.with_lr_scale(ts, 0.1)
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    ts, _ = trainer.run(ts, Xd, yd, epoch_order(0, 1, N), 16, 0, 6, 6, 0)
    ts, _ = trainer.run(ts, Xd, yd, epoch_order(0, 2, N), 16, 0, 6, 12, 0)
    assert trainer._run._cache_size() == 1
    scales = [leaf for leaf in _leaves(ts.opt_state) if leaf.shape == () and leaf.dtype == jnp.float32]
    assert [float(s) for s in scales] == [pytest.approx(0.1)]
    # a second trainer for the same (spec, optimizer, l1, l2) reuses the compiled function
    assert engine.trainer(spec, trainer.optimizer)._run is trainer._run



def test_cpu_matrix_products_stay_on_eigen():
    X, y = _data()
    engine = get_engine("jax", device="cpu")
    spec = MLP(hidden=(16,))
    trainer = engine.trainer(spec, make_optimizer("momentum", 0.05))
    ts = trainer.init(init_params(spec, D, K, key=0), {})
    idx = engine.jax.device_put(np.arange(2 * 16, dtype=np.int32).reshape(2, 16))
    args = (ts.params, ts.model_state, ts.opt_state, engine.asarray(X), engine.put_labels(y), idx,
            np.uint32(0), np.uint32(0))
    assert jax_engine._compiler_options(engine) == jax_engine.CPU_COMPILER_OPTIONS
    compiled = trainer._run.lower(*args).compile().as_text()
    assert " dot(" in compiled and "ynn" not in compiled.lower()


def test_a_convolutional_network_compiles_with_xlas_defaults():
    from descend.model import Conv2D, Dense, Flatten, Network

    engine = get_engine("jax", device="cpu")
    cnn = Network((28, 28, 1), (Conv2D(8, 3, stride=2), Flatten(), Dense(None)))
    assert jax_engine._compiler_options(engine, cnn) is None
    assert jax_engine._compiler_options(engine, MLP()) == jax_engine.CPU_COMPILER_OPTIONS
    assert jax_engine._compiler_options(engine) == jax_engine.CPU_COMPILER_OPTIONS


def test_an_xla_option_the_user_set_is_left_to_them(monkeypatch):
    engine = get_engine("jax", device="cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert jax_engine._compiler_options(engine) is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert jax_engine._compiler_options(engine) == jax_engine.CPU_COMPILER_OPTIONS


def test_an_xla_without_the_cpu_options_compiles_with_its_defaults(monkeypatch):
    monkeypatch.setattr(jax_engine, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option_in_any_xla": ""})
    monkeypatch.setattr(jax_engine, "_CPU_OPTIONS_SUPPORTED", None)
    engine = get_engine("jax", device="cpu")
    assert jax_engine._compiler_options(engine) is None
    X, y = _data()
    spec = MLP(hidden=(16,))
    trainer = jax_engine._build_run(engine, spec, make_optimizer("sgd", 0.1), l1=0.0, l2=0.0, augment=None,
                                    label_smoothing=0.0, donate=False)
    params = engine.put_tree(init_params(spec, D, K, key=0))
    idx = engine.jax.device_put(np.arange(16, dtype=np.int32).reshape(1, 16))
    out = trainer(params, {}, make_optimizer("sgd", 0.1).init(params), engine.asarray(X), engine.put_labels(y), idx,
                  np.uint32(0), np.uint32(0))
    assert np.isfinite(np.asarray(out[-1])).all()

def test_with_lr_scale_changes_the_step():
    X, y = _data()
    engine = get_engine("jax", dtype="float64")
    spec = MLP(hidden=(16,))
    trainer = engine.trainer(spec, make_optimizer("sgd", 0.1))
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    start = init_params(spec, D, K, key=1, dtype="float64")
    ts0 = trainer.init(start, {})
    full, _ = trainer.run(ts0, Xd, yd, epoch_order(0, 0, N), N, 0, 1, 0, 0)
    half, _ = trainer.run(trainer.with_lr_scale(trainer.init(start, {}), 0.5), Xd, yd, epoch_order(0, 0, N), N, 0,
                          1, 0, 0)
    for name in start:
        np.testing.assert_allclose(np.asarray(half.params[name]) - start[name],
                                   0.5 * (np.asarray(full.params[name]) - start[name]), rtol=1e-12, atol=1e-15)


# the fit loop ---------------------------------------------------------------------

BASE = TrainConfig(dataset="synthetic", hidden=(16,), optimizer="nesterov", lr=0.05, batch_size=16, epochs=4,
                   schedule="exponential:0.2", early_stopping="none", seed=3)


def _fit(engine_name, cfg, spec, *, checkpoint=None, resume=False, on_evaluation=None):
    X, y = _data()
    engine = get_engine(engine_name, dtype=cfg.dtype)
    Xe = engine.asarray(X)
    return fit(engine, spec, fit_options(cfg), Xe[:72], engine.put_labels(y[:72]), Xe[72:], y[72:],
               params=init_params(spec, D, K, key=cfg.seed, dtype=cfg.dtype), model_state={},
               checkpoint=checkpoint, resume=resume, 
               callbacks=[LambdaCallback(on_evaluation=on_evaluation)] if on_evaluation else [])


def test_fit_loop_matches_numpy_history():
    cfg = BASE.replace(dtype="float64", eval_every=3, l2=1e-3)
    spec = MLP(hidden=(16,))
    ref, got = _fit("numpy", cfg, spec), _fit("jax", cfg, spec)
    assert got.steps == ref.steps == 4 * (72 // 16)
    assert len(got.history) == len(ref.history) > 4
    for a, b in zip(got.history, ref.history):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        for key in ("train_cost", "valid_cost"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
        assert a["valid_error"] == b["valid_error"]
    for name in ref.params:
        np.testing.assert_allclose(got.params[name], ref.params[name], rtol=1e-6, atol=1e-9)
    assert ref.history[-1]["valid_error"] < 0.5


def test_interrupt_then_resume_equals_uninterrupted(tmp_path):
    """Dropout (keys from seed and global step), a plateau schedule (``with_lr_scale``) and momentum state."""
    cfg = BASE.replace(schedule="plateau:0.5:1", eval_every=2, epochs=4, dropout_keep=(0.9, 0.8),
                       monitor="valid_cost")
    spec = MLP(hidden=(16,), dropout_keep=(0.9, 0.8))
    full = _fit("jax", cfg, spec)
    calls = []

    def interrupt_after_three(row):
        calls.append(row)
        if len(calls) == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _fit("jax", cfg, spec, checkpoint=ckpt, on_evaluation=interrupt_after_three)
    assert ckpt.exists()
    resumed = _fit("jax", cfg, spec, checkpoint=ckpt, resume=True)
    assert resumed.steps == full.steps
    assert [r["train_cost"] for r in resumed.history] == [r["train_cost"] for r in full.history]
    for name in full.final_params:
        np.testing.assert_array_equal(resumed.final_params[name], full.final_params[name])


# process-level settings (fresh interpreters) ---------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jax.monitoring

    events = {}

    def listen(name, **kwargs):
        events[name] = events.get(name, 0) + 1

    jax.monitoring.register_event_listener(listen)
    from descend.engines import get_engine
    from descend.model import MLP, init_params, init_state
    from descend.optim import make_optimizer
    from descend.train.loop import epoch_order

    engine = get_engine("jax", device="cpu")
    spec = MLP(hidden=(32, 16))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((128, 20)), rng.integers(0, 5, 128)
    trainer = engine.trainer(spec, make_optimizer("adam", 0.01))
    ts = trainer.init(init_params(spec, 20, 5, key=0), {})
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    started = time.perf_counter()
    ts, losses = trainer.run(ts, Xd, yd, epoch_order(0, 0, 128), 16, 0, 8, 0, 0)
    first = time.perf_counter() - started
    logits = engine.logits(spec, ts.params, ts.model_state, Xd)
    print(json.dumps({"events": events, "first_run_s": first, "loss": float(losses[-1]),
                      "cache_dir": jax.config.jax_compilation_cache_dir}))
""")


def _child(code, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "PJRT_"))}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_persistent_compilation_cache_across_processes(tmp_path):
    """The second process compiles nothing: every program comes from ``$DESCEND_CACHE/jax``."""
    env = {"DESCEND_CACHE": str(tmp_path / "cache")}
    first = _child(CHILD, env, tmp_path)
    assert first["cache_dir"] == str(tmp_path / "cache" / "jax")
    entries = list((tmp_path / "cache" / "jax").iterdir())
    assert first["events"].get("/jax/compilation_cache/cache_misses", 0) >= 2, first  # run + logits written
    assert entries
    second = _child(CHILD, env, tmp_path)
    hits = second["events"].get("/jax/compilation_cache/cache_hits", 0)
    assert second["events"].get("/jax/compilation_cache/cache_misses", 0) == 0, second
    assert hits >= 2 and hits == second["events"]["/jax/compilation_cache/compile_requests_use_cache"], second
    assert second["loss"] == first["loss"]  # the cached program computes the same thing


def test_threads_apply_before_jax_starts_and_are_ignored_after(tmp_path):
    code = textwrap.dedent("""
        import json, os
        from descend.engines import get_engine
        import jax, jax.numpy as jnp

        one = get_engine("jax", threads=1)
        two = get_engine("jax", threads=2)
        f = jax.jit(lambda a: (a @ a).sum())
        a = jnp.ones((1000, 1000))
        for _ in range(20):
            f(a).block_until_ready()
        busy = []  # CPU ticks of every thread of this process (Linux)
        for task in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
            with open(f"/proc/self/task/{task}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            busy.append(int(fields[11]) + int(fields[12]))
        print(json.dumps({"first": one.threads_applied, "second": two.threads_applied,
                          "nproc": os.environ.get("PJRT_NPROC"), "busy": sorted(busy, reverse=True)}))
    """)
    out = _child(code, {"DESCEND_CACHE": str(tmp_path / "cache")}, tmp_path)
    assert out["first"] is True and out["second"] is False
    assert out["nproc"] is None  # set only while XLA's CPU client started: children do not inherit it
    # One pool thread: besides it and the Python thread, no thread did real work
    # (with XLA's default pool, about a third of the work runs on other threads).
    busy = out["busy"]
    if busy:
        assert sum(busy[2:]) <= 0.15 * sum(busy), busy
