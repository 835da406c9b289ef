"""Dropout, batch normalisation and max-norm: the NumPy reference against
finite differences and hand computations."""

import numpy as np
import pytest

from descend.backend import numpy_ops
from descend.engines import get_engine
from descend.engines.numpy_engine import value_and_grad
from descend.model import MLP, forward, init_params, init_state, loss_fn
from descend.model.mlp import BN_EPS
from descend.optim import apply_updates, chain, max_norm, sgd

from test_numpy_engine import _finite_difference


def _problem(spec, n=9, n_in=5, n_out=4, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(spec, n_in, n_out, key=seed, dtype="float64")
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    state = {k: v.astype(np.float64) for k, v in init_state(spec, n_in, n_out).items()}
    x = rng.standard_normal((n, n_in))
    y = rng.integers(0, n_out, n)
    return params, state, x, y


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("hidden,keep,bn", [
    ((6,), (0.8, 0.5), False),
    ((6, 3), (), True),
    ((6, 3), (0.9, 0.7, 0.6), True),
])
def test_backprop_through_dropout_and_batchnorm_matches_finite_differences(activation, hidden, keep, bn):
    spec = MLP(hidden=hidden, activation=activation, dropout_keep=keep, batchnorm=bn)
    params, state, x, y = _problem(spec)

    def objective(p):  # a fresh generator per call: the same masks every time
        return float(loss_fn(numpy_ops, spec, p, state, x, y, l2=0.01, train=True,
                             key=np.random.default_rng(7))[0])

    loss, grads, new_state = value_and_grad(spec, params, state, x, y, l2=0.01, rng=np.random.default_rng(7))
    assert loss == pytest.approx(objective(params), rel=1e-12)
    expected = _finite_difference(objective, params)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-8, err_msg=name)
    model_state, _ = loss_fn(numpy_ops, spec, params, state, x, y, train=True, key=np.random.default_rng(7))[1]
    for name in new_state:
        np.testing.assert_allclose(new_state[name], model_state[name], rtol=1e-12)


def test_batchnorm_params_replace_the_hidden_bias():
    spec = MLP(hidden=(6, 3), batchnorm=True)
    names = set(init_params(spec, 5, 4, key=0))
    assert names == {"dense0.W", "bn0.gamma", "bn0.beta", "dense1.W", "bn1.gamma", "bn1.beta", "dense2.W",
                     "dense2.b"}
    assert set(init_state(spec, 5, 4)) == {"bn0.mean", "bn0.var", "bn1.mean", "bn1.var"}


def test_batchnorm_running_statistics_are_the_ema_of_batch_statistics():
    spec = MLP(hidden=(4,), batchnorm=True)
    params, state, X, y = _problem(spec, n=40)
    engine = get_engine("numpy", dtype="float64")
    trainer = engine.trainer(spec, sgd(0.0 + 1e-12))  # weights (almost) frozen: z is known in advance
    ts = trainer.init(params, state)
    order = np.arange(40)
    ts, _ = trainer.run(ts, X, y, order, 10, 0, 4, 0, 0)
    mean, var = np.zeros(4), np.ones(4)
    for j in range(4):
        z = X[j * 10:(j + 1) * 10] @ params["dense0.W"]
        mean = 0.9 * mean + 0.1 * z.mean(axis=0)
        var = 0.9 * var + 0.1 * z.var(axis=0)
    np.testing.assert_allclose(ts.model_state["bn0.mean"], mean, rtol=1e-8)
    np.testing.assert_allclose(ts.model_state["bn0.var"], var, rtol=1e-8)


def test_batchnorm_inference_uses_running_statistics():
    spec = MLP(hidden=(3,), batchnorm=True)
    params, _, x, _ = _problem(spec)
    state = {"bn0.mean": np.array([0.5, -1.0, 2.0]), "bn0.var": np.array([4.0, 1.0, 0.25])}
    logits, new_state = forward(numpy_ops, spec, params, state, x, train=False)
    z = x @ params["dense0.W"]
    h = np.maximum(params["bn0.gamma"] * (z - state["bn0.mean"]) / np.sqrt(state["bn0.var"] + BN_EPS)
                   + params["bn0.beta"], 0)
    np.testing.assert_allclose(logits, h @ params["dense1.W"] + params["dense1.b"])
    assert new_state == state  # inference never moves the running averages


def test_keep_one_is_the_identity():
    spec_plain = MLP(hidden=(6,))
    spec_keep1 = MLP(hidden=(6,), dropout_keep=(1.0, 1.0))
    params, state, x, y = _problem(spec_plain)
    a = value_and_grad(spec_plain, params, state, x, y, rng=np.random.default_rng(0))
    b = value_and_grad(spec_keep1, params, state, x, y, rng=np.random.default_rng(0))
    assert a[0] == b[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8])
def test_keep_masks_keep_the_right_fraction(keep):
    mask = numpy_ops.keep_mask(np.random.default_rng(1), 0, keep, (200, 500), np.float32)
    assert set(np.unique(mask)) == {0.0, 1.0}
    # 100,000 Bernoulli draws: the standard error of the mean is < 0.0016.
    assert abs(mask.mean() - keep) < 0.006


def test_inverted_dropout_equals_the_curriculum_form():
    """Scaling kept units by 1/p in training == no scaling in training, weights times p at prediction."""
    spec = MLP(hidden=(6,), dropout_keep=(0.8, 0.5))
    params, state, x, _ = _problem(spec)
    inverted_train, _ = forward(numpy_ops, spec, params, state, x, train=True, key=np.random.default_rng(3))
    # The curriculum's network has weights W_c = W / p and applies unscaled masks.
    rng = np.random.default_rng(3)
    m0 = (rng.random(x.shape) < 0.8).astype(float)
    h = np.maximum((x * m0) @ (params["dense0.W"] / 0.8) + params["dense0.b"], 0)
    m1 = (rng.random(h.shape) < 0.5).astype(float)
    curriculum_train = (h * m1) @ (params["dense1.W"] / 0.5) + params["dense1.b"]
    np.testing.assert_allclose(inverted_train, curriculum_train, rtol=1e-12)
    # At prediction the curriculum multiplies by p: (p*x) @ (W/p) == x @ W, inverted dropout's identity.
    inverted_test, _ = forward(numpy_ops, spec, params, state, x, train=False)
    h = np.maximum((0.8 * x) @ (params["dense0.W"] / 0.8) + params["dense0.b"], 0)
    curriculum_test = (0.5 * h) @ (params["dense1.W"] / 0.5) + params["dense1.b"]
    np.testing.assert_allclose(inverted_test, curriculum_test, rtol=1e-12)


def test_dropout_masks_are_drawn_per_step_and_reproducible():
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5))
    params, state, X, y = _problem(spec, n=40)
    engine = get_engine("numpy", dtype="float64")
    trainer = engine.trainer(spec, sgd(0.1))
    order = np.arange(40)
    _, first = trainer.run(trainer.init(params, state), X, y, order, 10, 0, 4, 0, seed=5)
    _, again = trainer.run(trainer.init(params, state), X, y, order, 10, 0, 4, 0, seed=5)
    _, other = trainer.run(trainer.init(params, state), X, y, order, 10, 0, 4, 0, seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_max_norm_caps_incoming_weight_norms():
    rng = np.random.default_rng(0)
    params = {"dense0.W": rng.standard_normal((20, 5)) * 3, "dense0.b": np.full(5, 10.0)}
    opt = chain(sgd(0.1), max_norm(2.0))
    state = opt.init(params)
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    updates, _ = opt.update(grads, state, params)
    new = apply_updates(params, updates)
    norms = np.linalg.norm(new["dense0.W"], axis=0)
    assert np.all(norms <= 2.0 + 1e-9) and np.allclose(norms, 2.0)  # all exceeded the cap here
    np.testing.assert_allclose(new["dense0.b"], params["dense0.b"] - 0.1 * grads["dense0.b"])  # biases untouched
    # Columns under the cap are left exactly as plain SGD moves them.
    small = {"dense0.W": np.full((4, 2), 0.1), "dense0.b": np.zeros(2)}
    updates, _ = opt.update({k: np.zeros_like(v) for k, v in small.items()}, opt.init(small), small)
    np.testing.assert_allclose(apply_updates(small, updates)["dense0.W"], small["dense0.W"])
