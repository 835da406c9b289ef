"""Every engine against the NumPy reference (DESIGN §7: the hand-written NumPy engine is the oracle).

From the same initial weights (``descend.model.init_params``, one seed) and the
same batch order, 50 optimizer steps run through ``Trainer.run`` on the engine
and on NumPy, in two calls of 25 steps (the second starting mid-order, as the
fit loop's evaluation points make it).  Compared:

- the 50 per-step losses, elementwise, ``rtol`` relative;
- the final parameters (and batch-norm statistics) and the inference logits
  of all samples, with ``|got - ref| <= rtol * (|ref| + max|ref|)`` per
  tensor (a near-zero weight has no meaningful relative error of its own);

``rtol`` is 1e-5 in float64 and 1e-4 in float32.  Float32 runs are 20 steps:
adaptive rules divide by square roots of accumulated squares, so the rounding
of two float32 programs drifts apart over a long run while the algorithms agree.

Engines are discovered (``available_engines()`` minus numpy), so an engine
installed later is held to all of this at once.  The sweeps are sized to keep
compilation affordable: every optimizer x {constant, exponential} schedule in
float64, then smaller sweeps for schedules, activations, batch modes,
penalties, float32, the plateau multiplier and inference chunking.  GPU tests
are marked ``gpu`` and skipped where no engine sees a GPU (the only skip).
"""

from __future__ import annotations

import numpy as np
import pytest

from descend.engines import available_engines, get_engine
from descend.model import (
    MLP,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Network,
    init_params,
    init_state,
)
from descend.optim import OPTIMIZERS, make_optimizer
from descend.optim.schedules import ScheduleSpec
from descend.train.loop import epoch_order

ENGINES = [e for e in available_engines() if e != "numpy"]
STEPS = 50
STEPS_FLOAT32 = 20
N, D, K = 64, 20, 5
_rng = np.random.default_rng(0)
X = _rng.standard_normal((N, D))
Y = _rng.integers(0, K, N)
SPEC = MLP(hidden=(16, 8))
SEED = 3


def batch_order(batch: int, steps: int) -> np.ndarray:
    """Epoch permutations (the fit loop's own) concatenated to cover ``steps`` batches."""
    epochs = -(-steps * batch // N)
    return np.concatenate([epoch_order(7, e, N) for e in range(epochs)])


def trajectory(engine_name, spec, optimizer, *, batch=16, dtype="float64", l1=0.0, l2=0.0, steps=STEPS,
               plateau=None, device="auto", logits_batch=10000, data=(X, Y), n_out=K, label_smoothing=0.0):
    """``(losses, final TrainState as NumPy, inference logits)`` of ``steps`` steps on one engine."""
    engine = get_engine(engine_name, device="cpu" if engine_name == "numpy" else device, dtype=dtype)
    trainer = engine.trainer(spec, optimizer, l1=l1, l2=l2, label_smoothing=label_smoothing)
    rows, labels = data
    d = rows.shape[1]
    ts = trainer.init(init_params(spec, d, n_out, key=SEED, dtype=dtype), init_state(spec, d, n_out, dtype=dtype))
    Xd, yd = engine.asarray(rows), engine.put_labels(labels)
    order = batch_order(batch, steps)
    half = steps // 2
    ts, first = trainer.run(ts, Xd, yd, order, batch, 0, half, 0, SEED)
    if plateau is not None:
        ts = trainer.with_lr_scale(ts, plateau)
    ts, second = trainer.run(ts, Xd, yd, order, batch, half, steps - half, half, SEED)
    logits = engine.logits(spec, ts.params, ts.model_state, Xd, batch_size=logits_batch)
    return np.concatenate([first, second]), trainer.to_numpy(ts), np.asarray(logits)


def assert_close(got, ref, rtol, what):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same(engine_name, spec, make, *, dtype="float64", rtol=None, steps=None, loss_rtol=None, **kw):
    """Run ``make()`` (a fresh optimizer each time) on NumPy and on the engine; compare."""
    rtol = rtol or (1e-5 if dtype == "float64" else 1e-4)
    steps = steps or (STEPS if dtype == "float64" else STEPS_FLOAT32)
    ref_losses, ref, ref_logits = trajectory("numpy", spec, make(), dtype=dtype, steps=steps, **kw)
    losses, got, logits = trajectory(engine_name, spec, make(), dtype=dtype, steps=steps, **kw)
    assert np.all(np.isfinite(ref_losses)), "the reference diverged: the test setup is wrong"
    assert len(losses) == len(ref_losses) == steps
    np.testing.assert_allclose(losses, ref_losses, rtol=loss_rtol or rtol, err_msg="per-step losses")
    assert np.mean(ref_losses[-10:]) < np.mean(ref_losses[:10]), "no learning: the comparison would prove little"
    assert set(got.params) == set(ref.params)
    for name in ref.params:
        assert np.asarray(got.params[name]).dtype == np.dtype(dtype), name
        assert_close(got.params[name], ref.params[name], rtol, f"param {name}")
    for name in ref.model_state:
        assert_close(got.model_state[name], ref.model_state[name], rtol, f"state {name}")
    assert_close(logits, ref_logits, rtol, "inference logits")
    return losses, got


def lr_for(name: str) -> float:
    return 0.01 if name.startswith(("adam", "rmsprop", "adagrad")) else 0.05


def schedule(kind: str, lr0: float):
    """Step-unit schedules that change visibly within 50 steps."""
    text = {"constant": "constant", "step": "step:0.5:10", "exponential": "exponential:0.02",
            "inverse": "inverse:0.05"}[kind]
    return ScheduleSpec.parse(text, unit="step").build(lr0, steps_per_epoch=N // 16)


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def test_some_engine_besides_numpy_is_installed():
    assert ENGINES, "the parity suite needs at least one engine besides numpy (make test installs them all)"


@pytest.mark.parametrize("kind", ["constant", "exponential"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer(engine, optimizer, kind):
    assert_same(engine, SPEC, lambda: make_optimizer(optimizer, schedule(kind, lr_for(optimizer))))


@pytest.mark.parametrize("kind", ["step", "inverse"])
@pytest.mark.parametrize("optimizer", ["nesterov", "adam"])
def test_schedules(engine, kind, optimizer):
    assert_same(engine, SPEC, lambda: make_optimizer(optimizer, schedule(kind, lr_for(optimizer))))


def test_plateau_multiplier(engine):
    """``with_lr_scale`` (reduce-on-plateau) between two runs: the multiplier reaches the optimizer."""
    make = lambda: make_optimizer("rmsprop+nesterov", 0.01)  # noqa: E731
    _, scaled = assert_same(engine, SPEC, make, plateau=0.25)
    _, plain, _ = trajectory("numpy", SPEC, make())
    assert not np.allclose(scaled.params["dense0.W"], plain.params["dense0.W"]), "the multiplier had no effect"


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_activations(engine, activation):
    assert_same(engine, MLP(hidden=(16, 8), activation=activation), lambda: make_optimizer("momentum", 0.1))


@pytest.mark.parametrize("batch", [N, 1], ids=["full-batch", "stochastic"])
def test_batch_modes(engine, batch):
    assert_same(engine, SPEC, lambda: make_optimizer("nesterov", 0.02), batch=batch)


@pytest.mark.parametrize("l1,l2", [(1e-2, 0.0), (0.0, 1e-1), (1e-3, 1e-2)], ids=["l1", "l2", "l1+l2"])
def test_penalties(engine, l1, l2):
    assert_same(engine, SPEC, lambda: make_optimizer("adam", 0.01), l1=l1, l2=l2)


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "rmsprop+nesterov", "adamw"])
def test_float32(engine, optimizer):
    assert_same(engine, SPEC, lambda: make_optimizer(optimizer, lr_for(optimizer)), dtype="float32")


def test_logistic_regression(engine):
    assert_same(engine, MLP(hidden=()), lambda: make_optimizer("adagrad", 0.1))


def test_batchnorm_training_and_inference(engine):
    assert_same(engine, MLP(hidden=(16, 8), batchnorm=True), lambda: make_optimizer("nesterov", 0.05))


# Regression: a linear output of the targets' width, mean squared error (two targets, a smooth function of X).
Y_REGRESSION = np.stack([np.tanh(X[:, 0] - X[:, 1]), 0.5 * X[:, 2] * X[:, 3]], axis=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_regression(engine, optimizer, dtype):
    spec = MLP(hidden=(16, 8), activation="sigmoid", task="regression")
    assert_same(engine, spec, lambda: make_optimizer(optimizer, lr_for(optimizer) * 2), dtype=dtype,
                data=(X, Y_REGRESSION), n_out=2)


def test_regression_with_batchnorm_and_normal_init(engine):
    """The lecture notes' batch-norm network in small: N(0, 0.1^2) weights and biases, sigmoid, one target."""
    spec = MLP(hidden=(12, 12), activation="sigmoid", batchnorm=True, init="normal", task="regression")
    assert_same(engine, spec, lambda: make_optimizer("adam", 0.01), data=(X, Y_REGRESSION[:, :1]), n_out=1)


def test_max_norm(engine):
    from descend.optim import chain, max_norm

    assert_same(engine, SPEC, lambda: chain(make_optimizer("nesterov", 0.2), max_norm(0.5)))


def test_adamw_with_clip_and_warmup_cosine(engine):
    """AdamW (the weight tensors decayed, biases not), the global-norm clip before it, warmup + cosine."""
    lr = ScheduleSpec.parse("cosine:10:0.001", unit="step").build(0.02, N // 16, total_steps=STEPS)
    make = lambda clip=0.2: make_optimizer("adamw", lr, clip_norm=clip, weight_decay=0.5)  # noqa: E731
    _, got = assert_same(engine, SPEC, make)
    _, unclipped, _ = trajectory("numpy", SPEC, make(clip=None))
    assert not np.allclose(got.params["dense0.W"], unclipped.params["dense0.W"]), "the clip had no effect"


def test_clip_norm_with_momentum(engine):
    make = lambda: make_optimizer("momentum", 0.1, clip_norm=0.3)  # noqa: E731
    _, got = assert_same(engine, SPEC, make)
    _, unclipped, _ = trajectory("numpy", SPEC, make_optimizer("momentum", 0.1))
    assert not np.allclose(got.params["dense0.W"], unclipped.params["dense0.W"]), "the clip had no effect"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_label_smoothing(engine, dtype):
    make = lambda: make_optimizer("adam", 0.01)  # noqa: E731
    losses, got = assert_same(engine, SPEC, make, dtype=dtype, label_smoothing=0.2)
    plain_losses, plain, _ = trajectory("numpy", SPEC, make(), dtype=dtype, steps=len(losses))
    assert abs(losses[0] - plain_losses[0]) > 1e-3, "the smoothing had no effect on the loss"
    assert not np.allclose(got.params["dense0.W"], plain.params["dense0.W"]), "the smoothing had no effect"


def test_logits_in_chunks(engine):
    """``Engine.logits`` over several chunks (the last one short) equals NumPy's, from the same weights."""
    params = init_params(SPEC, D, K, key=SEED, dtype="float64")
    ref = get_engine("numpy", dtype="float64").logits(SPEC, params, {}, X, batch_size=N)
    eng = get_engine(engine, dtype="float64")
    ts = eng.trainer(SPEC, make_optimizer("sgd", 0.1)).init(params, {})
    got = eng.logits(SPEC, ts.params, ts.model_state, eng.asarray(X), batch_size=24)
    assert_close(got, ref, 1e-12, "logits in chunks of 24")


# A small convolutional network: every image layer type, batch norm per channel, dropout on feature maps.
IMAGE = (6, 6, 2)
X_IMAGES = _rng.standard_normal((N, int(np.prod(IMAGE))))
CNN = Network(IMAGE, (Conv2D(4, 3, bias=False), BatchNorm(), Activation("relu"), MaxPool2D(2), Dropout(0.7),
                      Conv2D(5, 2, padding="valid"), AvgPool2D(2), Flatten(), Dense(None)))


def _fixed_pattern(layer, keep, shape):
    """A {0, 1} pattern, the same on every engine: kept where a hash of the element's index is below ``keep``."""
    i = np.arange(int(np.prod(shape)))
    return (((i * 7919 + layer * 104729) % 1009) / 1009.0 < keep).reshape(tuple(shape))


@pytest.fixture
def fixed_dropout_masks(monkeypatch):
    """Every engine's ``keep_mask`` replaced by one fixed pattern.

    Engines draw masks from their own generators (JAX keys, torch and
    PyTensor generators, TensorFlow stateless seeds), so no two draw the same
    bits; with one pattern everywhere, the parity covers everything dropout
    does but the draw (the draws are each engine's own tests).
    """
    from descend.backend import get_ops

    def static(convert):
        return lambda key, layer, keep, shape, dtype: convert(_fixed_pattern(layer, keep, tuple(shape)), dtype)

    def symbolic(key, layer, keep, shape, dtype):
        import pytensor.tensor as pt

        i = pt.arange(pt.prod(shape))
        kept = pt.lt(((i * 7919 + layer * 104729) % 1009) / 1009.0, keep)
        return pt.cast(pt.reshape(kept, shape), str(dtype))

    monkeypatch.setattr(get_ops("numpy"), "keep_mask", static(lambda m, dtype: m.astype(dtype)))
    for name in ENGINES:
        ops = get_ops(name)
        if name == "pytensor":
            monkeypatch.setattr(ops, "keep_mask", symbolic)
        else:
            monkeypatch.setattr(ops, "keep_mask", static(lambda m, dtype, ops=ops: ops.cast(ops.asarray(m), dtype)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "rmsprop", "adam"])
def test_conv_network(engine, optimizer, dtype, fixed_dropout_masks):
    """conv-BN-ReLU-maxpool-dropout-conv-avgpool-dense, step for step: losses within 1e-9 (float32: 1e-4)."""
    lr = {"sgd": 0.1, "nesterov": 0.05, "rmsprop": 0.01, "adam": 0.01}[optimizer]
    rtol = 1e-9 if dtype == "float64" else 1e-4
    losses, _ = assert_same(engine, CNN, lambda: make_optimizer(optimizer, lr), dtype=dtype, steps=20, rtol=rtol,
                            data=(X_IMAGES, Y))
    if dtype == "float64":  # dropout was on: the same network without it trains differently
        plain = Network(IMAGE, tuple(layer for layer in CNN.layers if not isinstance(layer, Dropout)))
        assert not np.allclose(losses, trajectory("numpy", plain, make_optimizer(optimizer, lr), steps=20,
                                                  data=(X_IMAGES, Y))[0])


def _machine_has_gpu() -> bool:
    """An NVIDIA GPU with its driver loaded, checked without importing any engine."""
    import glob
    import shutil

    return bool(glob.glob("/proc/driver/nvidia/gpus/*") or glob.glob("/dev/nvidia[0-9]*")
                or shutil.which("nvidia-smi"))


def _gpu_engines():
    if not _machine_has_gpu():
        return []
    found = []
    for name in ENGINES:
        try:
            if "gpu" in get_engine(name, device="auto").capabilities:
                found.append(name)
        except Exception:  # noqa: BLE001 - an engine that cannot even start has no GPU either
            pass
    return found


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["nesterov", "adam"])
def test_gpu_matches_numpy(optimizer):
    """On device="gpu", float64 (no TF32 shortcuts), every engine that sees a GPU matches NumPy."""
    engines = _gpu_engines()
    if not engines:
        pytest.skip("no engine sees a GPU here")
    for name in engines:
        assert get_engine(name, device="gpu").device == "gpu"
        assert_same(name, MLP(hidden=(16, 8), batchnorm=True), lambda: make_optimizer(optimizer, lr_for(optimizer)),
                    device="gpu")


# The JAX engine runs a stride-1 convolution with many channels as products of spectra (the second
# convolution here): the network still trains like NumPy.
SPECTRAL_CNN = Network(IMAGE, (Conv2D(16, 3), Activation("relu"), Conv2D(16, 5), Activation("relu"), MaxPool2D(2),
                               Flatten(), Dense(None)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_spectral_convolution_network_on_jax(optimizer, dtype, monkeypatch):
    from descend.backend import jax_ops

    traced = []
    spectral_conv = jax_ops._conv_dft
    monkeypatch.setattr(jax_ops, "_conv_dft", lambda x, w, padding: traced.append(x.shape) or spectral_conv(x, w, padding))
    lr = {"sgd": 0.05, "adam": 0.005}[optimizer]
    assert_same("jax", SPECTRAL_CNN, lambda: make_optimizer(optimizer, lr), dtype=dtype, steps=20,
                rtol=1e-9 if dtype == "float64" else 1e-4, data=(X_IMAGES, Y))
    assert traced and all(shape[1:] == (6, 6, 16) for shape in traced)
