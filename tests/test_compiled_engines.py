"""The compiled engines (JAX, TensorFlow, PyTensor): their own mechanics.

The generic parity suite holds every engine to the NumPy reference; these pin
what each compiled engine does its own way: fused loops, shared variables,
stateless or reseeded dropout keys, batch-norm state, resume, compile caches,
the GPU.
"""

import numpy as np
import pytest

from descend.engines import get_engine
from descend.model import MLP, init_params, init_state
from descend.optim import make_optimizer
from descend.optim.schedules import exponential
from descend.train import LambdaCallback, TrainConfig, fit, fit_options

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 20))
Y = RNG.integers(0, 5, 64)
ORDER = np.random.default_rng(1).permutation(64)


def _run(engine_name, spec, optimizer_name, steps=12, dtype="float64", state=None, seed=0, l1=1e-3, l2=1e-2,
         options=None):
    engine = get_engine(engine_name, dtype=dtype)
    optimizer = make_optimizer(optimizer_name, exponential(0.05, 0.01), **(options or {}))
    trainer = engine.trainer(spec, optimizer, l1=l1, l2=l2)
    ts = trainer.init(init_params(spec, 20, 5, key=0, dtype=dtype), state or {})
    losses = []
    for k in range(0, steps, 4):
        ts, chunk = trainer.run(ts, engine.asarray(X), engine.put_labels(Y), ORDER, 16, 0, 4, k, seed)
        losses += list(chunk)
    return np.array(losses), trainer.to_numpy(ts)


ENGINES = ["jax", "tensorflow", "pytensor", "pytensor:numba"]


@pytest.fixture(params=ENGINES)
def engine_name(request):
    return request.param


# Every optimizer on every engine's default backend is in the generic parity suite; the
# numba backend compiles each graph cold (about 7 s in a fresh CI cache), so it gets one of
# each kind of rule here (AdamW with the global-norm clip in front: decay and clip in one graph).
PAIRS = [("pytensor:numba", o, {}) for o in ("nesterov", "adagrad", "adam", "rmsprop+nesterov")] + [
    ("pytensor:numba", "adamw", {"clip_norm": 0.5, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("engine_name,optimizer,options", PAIRS,
                         ids=[f"{e}-{o}{'-' if kw else ''}{'-'.join(kw)}" for e, o, kw in PAIRS])
def test_matches_numpy_step_for_step_in_float64(engine_name, optimizer, options):
    spec = MLP(hidden=(16, 8), activation="tanh")
    a_loss, a = _run("numpy", spec, optimizer, options=options)
    b_loss, b = _run(engine_name, spec, optimizer, options=options)
    np.testing.assert_allclose(b_loss, a_loss, rtol=1e-10)
    for k in a.params:
        np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-9, atol=1e-12)


def test_batchnorm_training_and_running_statistics_match_numpy(engine_name):
    spec = MLP(hidden=(16, 8), batchnorm=True)
    state = {k: v.astype(np.float64) for k, v in init_state(spec, 20, 5).items()}
    a_loss, a = _run("numpy", spec, "nesterov", state=state)
    b_loss, b = _run(engine_name, spec, "nesterov", state=state)
    np.testing.assert_allclose(b_loss, a_loss, rtol=1e-9)
    for k in a.model_state:
        np.testing.assert_allclose(b.model_state[k], a.model_state[k], rtol=1e-9, atol=1e-12)
    engine = get_engine(engine_name, dtype="float64")
    logits = engine.logits(spec, engine.put_tree(b.params), engine.put_tree(b.model_state), engine.asarray(X))
    expected = get_engine("numpy", dtype="float64").logits(spec, a.params, a.model_state, X)
    np.testing.assert_allclose(logits, expected, rtol=1e-9, atol=1e-12)


def test_float32_stays_float32(engine_name):
    _, ts = _run(engine_name, MLP(hidden=(8,)), "adam", dtype="float32")
    assert all(v.dtype == np.float32 for v in ts.params.values())
    assert all(np.asarray(v).dtype == np.float32 for v in ts.opt_state[0].mu.values())


def test_jax_compile_cache_survives_the_process(tmp_path):
    """A second process running the same configuration finds its compiled code on disk."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from descend.engines import get_engine\n"
            "from descend.model import MLP, init_params\n"
            "from descend.optim import nesterov\n"
            "e = get_engine('jax'); spec = MLP(hidden=(32,))\n"
            "tr = e.trainer(spec, nesterov(0.05)); ts = tr.init(init_params(spec, 20, 5, key=0), {})\n"
            "X = e.asarray(np.random.default_rng(0).random((64, 20))); y = e.put_labels(np.arange(64) % 5)\n"
            "tr.run(ts, X, y, np.arange(64), 16, 0, 4, 0, 0)\n")
    env = {**os.environ, "DESCEND_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    cache = tmp_path / "jax"
    first = sorted(p.name for p in cache.iterdir())
    assert first, "the first run wrote no compiled executables"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert sorted(p.name for p in cache.iterdir()) == first, "the second run compiled again"


def _gpu_available():
    try:
        return bool(get_engine("jax").capabilities & {"gpu"})
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="no GPU visible to JAX")
def test_jax_on_gpu_matches_numpy():
    spec = MLP(hidden=(16, 8), batchnorm=True)
    state = {k: v.astype(np.float64) for k, v in init_state(spec, 20, 5).items()}
    a_loss, a = _run("numpy", spec, "rmsprop+nesterov", state=state)
    engine = get_engine("jax", device="gpu", dtype="float64")
    assert engine.device == "gpu"
    trainer = engine.trainer(spec, make_optimizer("rmsprop+nesterov", exponential(0.05, 0.01)), l1=1e-3, l2=1e-2)
    ts = trainer.init(init_params(spec, 20, 5, key=0, dtype="float64"), state)
    losses = []
    for k in range(0, 12, 4):
        ts, chunk = trainer.run(ts, engine.asarray(X), engine.put_labels(Y), ORDER, 16, 0, 4, k, 0)
        losses += list(chunk)
    np.testing.assert_allclose(losses, a_loss, rtol=1e-9)


def test_dropout_masks_depend_on_seed_and_step_only(engine_name):
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5))
    a, _ = _run(engine_name, spec, "sgd", steps=8, seed=3, l1=0, l2=0)
    b, _ = _run(engine_name, spec, "sgd", steps=8, seed=3, l1=0, l2=0)
    c, _ = _run(engine_name, spec, "sgd", steps=8, seed=4, l1=0, l2=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_resumes_to_identical_weights(engine_name, tmp_path):
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), optimizer="rmsprop+nesterov", lr=0.01, batch_size=16,
                      epochs=4, schedule="plateau:0.5:0", eval_every=3, early_stopping="none", dtype="float64",
                      engine=engine_name)
    engine = get_engine(engine_name, dtype="float64")
    spec = MLP(hidden=(8,))
    params = init_params(spec, 20, 5, key=0, dtype="float64")
    Xd, yd = engine.asarray(X), engine.put_labels(Y)

    def train(**kw):
        return fit(engine, spec, fit_options(cfg), Xd[:48], yd[:48], Xd[48:], Y[48:], params=params, model_state={},
                   **kw)

    full = train()
    seen = []

    def stop(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint=ckpt, callbacks=[LambdaCallback(on_evaluation=stop)])
    resumed = train(checkpoint=ckpt, resume=True)
    for k in full.params:
        np.testing.assert_array_equal(resumed.final_params[k], full.final_params[k])


def test_tensorflow_starts_without_its_startup_noise_and_keeps_other_stderr():
    """TensorFlow 2.21 prints absl/oneDNN lines on import that TF_CPP_MIN_LOG_LEVEL does not silence: the
    ops module drops exactly those, and whatever else reaches stderr during the import still gets through."""
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def loud(name, *a, **k):\n"
            "    if name == 'tensorflow': print('kept: a line of our own', file=sys.stderr)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = loud\n"
            "from descend.backend import tensorflow_ops\n"
            "builtins.__import__ = real\n"
            "print(tensorflow_ops.tf.__version__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "absl::InitializeLog" not in out.stderr and "oneDNN custom operations" not in out.stderr
    assert "kept: a line of our own" in out.stderr


def test_pytensor_variants_compile_with_the_linker_they_name():
    """``pytensor`` is the C backend and ``pytensor:numba`` numba (PyTensor 3 made numba what ``FAST_RUN``
    means, which silently turned the C variant into a second numba one)."""
    from pytensor.compile.mode import get_mode
    from pytensor.link.numba.linker import NumbaLinker
    from pytensor.link.vm import VMLinker

    c = get_mode(get_engine("pytensor").mode).linker
    assert isinstance(c, VMLinker) and c.use_cloop
    assert isinstance(get_mode(get_engine("pytensor:numba").mode).linker, NumbaLinker)


@pytest.mark.parametrize("engine_name", ["pytensor", "pytensor:numba"])
def test_pytensor_convolutional_network_trains_like_numpy_without_warnings(engine_name, recwarn):
    """descend's convolution and pooling ops run their NumPy code on both linkers (numba's object mode),
    step for step like the NumPy engine, and neither PyTensor's BLAS notice nor numba's reaches the user."""
    from descend.model import Activation, Conv2D, Dense, Flatten, MaxPool2D, Network

    spec = Network((8, 8, 1), (Conv2D(4, 3), Activation("relu"), MaxPool2D(2), Conv2D(3, 3, stride=2, padding="valid"),
                               Flatten(), Dense(3)))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((48, 64)), rng.integers(0, 3, 48)
    losses = {}
    for name in ("numpy", engine_name):
        engine = get_engine(name, dtype="float64")
        trainer = engine.trainer(spec, make_optimizer("adam", 0.01))
        ts = trainer.init(*spec.init(0, dtype="float64"))
        losses[name] = trainer.run(ts, engine.asarray(X), engine.put_labels(y), np.arange(48), 8, 0, 6, 0, 0)[1]
    np.testing.assert_allclose(losses[engine_name], losses["numpy"], rtol=1e-12)
    assert not [w for w in recwarn if "object mode" in str(w.message) or "BLAS" in str(w.message)]
