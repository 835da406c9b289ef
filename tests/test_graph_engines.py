"""The graph-building engines (TensorFlow, PyTensor) against the NumPy reference.

The generic parity suite covers every engine more broadly; these pin each
graph engine's own mechanics: compiled loops, shared variables, stateless or
reseeded dropout keys, batch-norm state, resume.
"""

import numpy as np
import pytest

from descend.engines import get_engine
from descend.model import MLP, init_params, init_state
from descend.optim import OPTIMIZERS, make_optimizer
from descend.optim.schedules import exponential
from descend.train import TrainConfig, fit

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 20))
Y = RNG.integers(0, 5, 64)
ORDER = np.random.default_rng(1).permutation(64)


def _run(engine_name, spec, optimizer_name, steps=12, dtype="float64", state=None, seed=0, l1=1e-3, l2=1e-2):
    engine = get_engine(engine_name, dtype=dtype)
    trainer = engine.trainer(spec, make_optimizer(optimizer_name, exponential(0.05, 0.01)), l1=l1, l2=l2)
    ts = trainer.init(init_params(spec, 20, 5, key=0, dtype=dtype), state or {})
    losses = []
    for k in range(0, steps, 4):
        ts, chunk = trainer.run(ts, engine.asarray(X), engine.put_labels(Y), ORDER, 16, 0, 4, k, seed)
        losses += list(chunk)
    return np.array(losses), trainer.to_numpy(ts)


ENGINES = ["tensorflow", "pytensor", "pytensor:numba"]


@pytest.fixture(params=ENGINES)
def engine_name(request):
    return request.param


# Every optimizer on each engine's default backend; the numba backend compiles every graph
# cold (about 7 s each in a fresh CI cache), so it gets one of each kind of rule.
PAIRS = [(e, o) for e in ("tensorflow", "pytensor") for o in OPTIMIZERS]
PAIRS += [("pytensor:numba", o) for o in ("nesterov", "adagrad", "adam", "rmsprop+nesterov")]


@pytest.mark.parametrize("engine_name,optimizer", PAIRS)
def test_matches_numpy_step_for_step_in_float64(engine_name, optimizer):
    spec = MLP(hidden=(16, 8), activation="tanh")
    a_loss, a = _run("numpy", spec, optimizer)
    b_loss, b = _run(engine_name, spec, optimizer)
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
        return fit(engine, spec, cfg, Xd[:48], yd[:48], Xd[48:], Y[48:], params=params, model_state={}, **kw)

    full = train()
    seen = []

    def stop(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint=ckpt, on_evaluation=stop)
    resumed = train(checkpoint=ckpt, resume=True)
    for k in full.params:
        np.testing.assert_array_equal(resumed.final_params[k], full.final_params[k])
