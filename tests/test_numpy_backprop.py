"""Each layer type's hand-written VJP against central finite differences, in float64.

Every network here ends in a dense layer of 3 logits (the loss is softmax
cross-entropy); each puts one layer type (or one configuration of it) where
its input gradient matters, behind a first parameterised layer.  The loss the
backward differentiates is also checked against the engine-agnostic forward
(``descend.model.loss_fn`` on NumPy ops): the two passes compute one function.
"""

from __future__ import annotations

import numpy as np
import pytest

from descend.backend import numpy_ops, windows
from descend.engines import numpy_backprop
from descend.engines.numpy_backprop import VJPS, value_and_grad
from descend.model import (
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool2D,
    Network,
    loss_fn,
)
from descend.model.layers import LAYER_TYPES

IMAGE = (6, 6, 2)
N, K = 5, 3

NETWORKS = {
    "conv same": (Conv2D(3, 3), Activation("tanh"), Flatten(), Dense(K)),
    "conv even kernel": (Conv2D(2, 4), Activation("relu"), Conv2D(2, 2), Flatten(), Dense(K)),
    "conv strided same": (Conv2D(3, 3), Activation("tanh"), Conv2D(2, 3, stride=2), Flatten(), Dense(K)),
    # Three convolutions with patch matrices of one size: each holds its own buffer until its backward pass.
    "conv three alike": (Conv2D(2, 3), Activation("tanh"), Conv2D(2, 3), Activation("tanh"), Conv2D(2, 3), Flatten(),
                         Dense(K)),
    "conv valid": (Conv2D(3, 2), Activation("sigmoid"), Conv2D(2, 3, padding="valid"), Flatten(), Dense(K)),
    "conv strided valid": (Conv2D(3, 3), Conv2D(2, 3, stride=2, padding="valid"), Flatten(), Dense(K)),
    "max pool": (Conv2D(3, 3), MaxPool2D(2), Activation("relu"), Flatten(), Dense(K)),
    "max pool overlapping": (Conv2D(3, 3), MaxPool2D(3, 2), Flatten(), Dense(K)),
    "avg pool": (Conv2D(3, 3), AvgPool2D(2), Activation("tanh"), Flatten(), Dense(K)),
    "avg pool overlapping": (Conv2D(3, 3), AvgPool2D(3, 1), Flatten(), Dense(K)),
    "global avg pool": (Conv2D(4, 3), Activation("tanh"), GlobalAvgPool(), Dense(K)),
    "batch norm after conv": (Conv2D(3, 3, bias=False), BatchNorm(), Activation("tanh"), Conv2D(2, 3), Flatten(),
                              Dense(K)),
    "dropout after conv": (Conv2D(3, 3), Dropout(0.6), Activation("tanh"), Flatten(), Dense(K)),
    "dropout on the input": (Dropout(0.7), Conv2D(3, 3), Flatten(), Dense(K)),
    "dense, batch norm, dropout": (Flatten(), Dense(6, bias=False), BatchNorm(), Activation("sigmoid"),
                                   Dropout(0.5), Dense(4), Activation("relu"), Dense(K)),
}


def problem(layers, seed=0):
    net = Network(IMAGE, layers)
    rng = np.random.default_rng(seed)
    params, state = net.init(seed, "float64")
    # Off-default values, so every term of every gradient is exercised.
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}
    state = {k: v + 0.2 * np.abs(rng.standard_normal(v.shape)) for k, v in state.items()}
    x = rng.standard_normal((N, int(np.prod(IMAGE))))
    y = rng.integers(0, K, N)
    return net, params, state, x, y


def numeric_gradient(f, params, name, idx, eps=1e-6):
    plus = {k: v.copy() for k, v in params.items()}
    minus = {k: v.copy() for k, v in params.items()}
    plus[name][idx] += eps
    minus[name][idx] -= eps
    return (f(plus) - f(minus)) / (2 * eps)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.01, 0.2)])
@pytest.mark.parametrize("case", list(NETWORKS))
def test_vjp_matches_finite_differences(case, l1, l2):
    net, params, state, x, y = problem(NETWORKS[case])

    def objective(p):
        return float(value_and_grad(net, p, state, x, y, l1=l1, l2=l2, rng=np.random.default_rng(9))[0])

    loss, grads, new_state = value_and_grad(net, params, state, x, y, l1=l1, l2=l2, rng=np.random.default_rng(9))
    forward_loss, (forward_state, _) = loss_fn(numpy_ops, net, params, state, x, y, l1=l1, l2=l2, train=True,
                                               key=np.random.default_rng(9))
    assert loss == pytest.approx(float(forward_loss), rel=1e-12)
    assert set(new_state) == set(forward_state)
    for k in new_state:
        np.testing.assert_allclose(new_state[k], forward_state[k], rtol=1e-12, atol=1e-14)
    assert set(grads) == set(params)
    rng = np.random.default_rng(1)
    for name, p in params.items():
        flat = rng.choice(p.size, size=min(p.size, 12), replace=False)
        for i in flat:
            idx = np.unravel_index(i, p.shape)
            expected = numeric_gradient(objective, params, name, idx)
            assert grads[name][idx] == pytest.approx(expected, rel=1e-5, abs=1e-8), f"{name}{idx}"


# 486 floats hold two images' patch gradients of the strided conv of "conv strided same" (3x3 outputs, 3x3x3
# patches): the batch of 5 then goes in blocks of 2, 2 and 1; a budget of 1 float puts one image in each block.
@pytest.mark.parametrize("block_floats", [1, 486])
@pytest.mark.parametrize("case", ["conv even kernel", "conv strided same", "conv valid", "conv strided valid",
                                  "batch norm after conv"])
def test_conv_input_gradient_is_the_same_computed_a_block_of_images_at_a_time(monkeypatch, case, block_floats):
    net, params, state, x, y = problem(NETWORKS[case])
    whole = value_and_grad(net, params, state, x, y, rng=np.random.default_rng(9))[1]
    monkeypatch.setattr(windows, "_PATCH_BLOCK_FLOATS", block_floats)
    blocked = value_and_grad(net, params, state, x, y, rng=np.random.default_rng(9))[1]
    assert set(blocked) == set(whole)
    for name in whole:
        np.testing.assert_allclose(blocked[name], whole[name], rtol=1e-13, atol=1e-15, err_msg=name)


def test_conv_patch_buffers_come_back_after_the_backward_pass_and_serve_the_next_step(monkeypatch):
    pool = numpy_backprop._PatchBuffers()
    monkeypatch.setattr(numpy_backprop, "_patch_buffers", pool)
    net, params, state, x, y = problem(NETWORKS["conv three alike"])
    first = value_and_grad(net, params, state, x, y)
    buffers = list(pool._free)
    assert len(buffers) == 3 and len({id(b) for b in buffers}) == 3
    second = value_and_grad(net, params, state, x, y)
    assert {id(b) for b in pool._free} == {id(b) for b in buffers}  # reused, not allocated again
    assert first[0] == second[0]
    for name in first[1]:
        assert np.array_equal(first[1][name], second[1][name]), name


REGRESSION_NETWORKS = {
    "dense regression": (Flatten(), Dense(6), Activation("tanh"), Dense(2)),
    "batch norm regression": (Flatten(), Dense(5, bias=False), BatchNorm(), Activation("sigmoid"), Dense(1)),
}


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.01, 0.2)])
@pytest.mark.parametrize("case", list(REGRESSION_NETWORKS))
def test_mean_squared_error_gradient_matches_finite_differences(case, l1, l2):
    """Regression's loss (mean over batch and outputs of (pred - t)^2) through the same VJPs."""
    net, params, state, x, _ = problem(REGRESSION_NETWORKS[case])
    net = Network(net.input_shape, net.layers, "regression")
    width = net.layers[-1].units
    t = np.random.default_rng(4).standard_normal((N, width))

    def objective(p):
        return float(value_and_grad(net, p, state, x, t, l1=l1, l2=l2)[0])

    loss, grads, _ = value_and_grad(net, params, state, x, t, l1=l1, l2=l2)
    pred, _ = net.forward(numpy_ops, params, state, x, train=True)
    penalty = sum(0.5 * l2 * np.sum(params[k] ** 2) + l1 * np.sum(np.abs(params[k])) for k in net.weight_names)
    assert loss == pytest.approx(float(np.mean((pred - t) ** 2)) + penalty, rel=1e-12)
    assert loss == pytest.approx(float(loss_fn(numpy_ops, net, params, state, x, t, l1=l1, l2=l2)[0]), rel=1e-12)
    rng = np.random.default_rng(1)
    for name, p in params.items():
        for i in rng.choice(p.size, size=min(p.size, 12), replace=False):
            idx = np.unravel_index(i, p.shape)
            expected = numeric_gradient(objective, params, name, idx)
            assert grads[name][idx] == pytest.approx(expected, rel=1e-5, abs=1e-8), f"{name}{idx}"


def test_every_layer_type_has_a_vjp_and_a_finite_difference_case():
    assert set(VJPS) == set(LAYER_TYPES.values())
    covered = {type(layer) for layers in NETWORKS.values() for layer in layers}
    assert covered == set(LAYER_TYPES.values())


def test_dropout_draws_masks_only_in_training():
    net, params, state, x, y = problem(NETWORKS["dropout after conv"])
    a = value_and_grad(net, params, state, x, y, rng=np.random.default_rng(1))[0]
    b = value_and_grad(net, params, state, x, y, rng=np.random.default_rng(2))[0]
    assert a != b
    inference = value_and_grad(net, params, state, x, y, train=False)[0]
    assert inference == pytest.approx(float(loss_fn(numpy_ops, net, params, state, x, y, train=False)[0]), rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_label_smoothing_gradient_matches_finite_differences(smoothing):
    """Cross-entropy against (1-e)*onehot + e/K: the loss by its definition, and its gradient."""
    net, params, state, x, y = problem(NETWORKS["conv same"])

    def objective(p):
        return float(value_and_grad(net, p, state, x, y, label_smoothing=smoothing)[0])

    loss, grads, _ = value_and_grad(net, params, state, x, y, label_smoothing=smoothing)
    z, _ = net.forward(numpy_ops, params, state, x, train=True)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    target = (1 - smoothing) * np.eye(z.shape[1])[y] + smoothing / z.shape[1]
    assert loss == pytest.approx(float(-(target * logp).sum(1).mean()), rel=1e-12)
    assert loss == pytest.approx(float(loss_fn(numpy_ops, net, params, state, x, y, label_smoothing=smoothing)[0]),
                                 rel=1e-12)
    for name, p in params.items():
        for i in np.random.default_rng(2).choice(p.size, size=min(p.size, 12), replace=False):
            idx = np.unravel_index(i, p.shape)
            expected = numeric_gradient(objective, params, name, idx)
            assert grads[name][idx] == pytest.approx(expected, rel=1e-5, abs=1e-8), f"{name}{idx}"


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_max_pool_sends_each_window_gradient_to_its_first_maximum(size, stride):
    """Ties are the rule after a ReLU: the forward value, the chosen offset and the gradient (summed where
    windows overlap) equal the definition over a copy of every window, to the last bit."""
    from descend.backend.windows import max_pool_with_argmax, pool_windows

    rng = np.random.default_rng(size * 10 + stride)
    x = np.maximum(rng.standard_normal((3, 9, 11, 2)), 0)
    x[0, :4, :4, 0] = 1.0
    win = pool_windows(x, size, stride)
    arg = win.argmax(axis=-1)
    best, offset = max_pool_with_argmax(x, size, stride)
    np.testing.assert_array_equal(best, win.max(axis=-1))
    np.testing.assert_array_equal(offset, arg)
    dy = rng.standard_normal(best.shape)
    expected = np.zeros_like(x)
    n, oh, ow, c = best.shape
    for b, i, j, ch in np.ndindex(n, oh, ow, c):
        di, dj = divmod(int(arg[b, i, j, ch]), size)
        expected[b, i * stride + di, j * stride + dj, ch] += dy[b, i, j, ch]
    layer = MaxPool2D(size, stride)
    out, _, cache = VJPS[MaxPool2D].forward(layer, {}, {}, x, True, None)
    dx, _ = VJPS[MaxPool2D].backward(layer, {}, cache, dy, True)
    np.testing.assert_array_equal(out, best)
    np.testing.assert_allclose(dx, expected, rtol=0, atol=1e-12)
