"""Optimizers against DESIGN §3, written out by hand in plain NumPy.

Every expected value below is computed from the DESIGN table's formulas,
spelled out step by step, never by calling descend; two steps with different
gradients so that accumulators and velocities matter.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest

from descend.errors import ConfigError
from descend.optim import (
    OPTIMIZERS,
    GradientTransformation,
    ScaleByLearningRateState,
    adagrad,
    adam,
    adamw,
    add_decayed_weights,
    add_l2,
    apply_updates,
    chain,
    clip_by_global_norm,
    exponential,
    make_optimizer,
    momentum,
    nesterov,
    rmsprop,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    sgd,
    trace,
)

# A zero gradient entry (W[1, 1] in G1) checks that eps keeps 0/0 away.
P0 = {"W": np.array([[0.5, -1.0], [2.0, 0.25]]), "b": np.array([0.1, -0.3])}
G1 = {"W": np.array([[0.2, -0.4], [1.5, 0.0]]), "b": np.array([-0.05, 0.3])}
G2 = {"W": np.array([[-0.1, 0.6], [0.5, 2.0]]), "b": np.array([0.25, -0.3])}

LR = 0.1
MU = 0.9
# A schedule under which "lr inside" and "lr outside the velocity" differ.
SCHED_LR0, SCHED_K = 0.1, 0.5
LR_T = [SCHED_LR0 * math.exp(-SCHED_K * t) for t in range(2)]  # lr at steps 0 and 1


def run_two_steps(opt: GradientTransformation):
    """(params after step 1, params after step 2) for G1 then G2."""
    state = opt.init(P0)
    u1, state = opt.update(G1, state, P0)
    p1 = apply_updates(P0, u1)
    u2, state = opt.update(G2, state, p1)
    p2 = apply_updates(p1, u2)
    return p1, p2


def per_key(fn):
    """Apply an elementwise two-step rule ``fn(w0, g1, g2) -> (w1, w2)`` to every parameter
    (a dict of rules: each parameter its own)."""
    out = {k: (fn[k] if isinstance(fn, dict) else fn)(P0[k], G1[k], G2[k]) for k in P0}
    return {k: v[0] for k, v in out.items()}, {k: v[1] for k, v in out.items()}


# --- the DESIGN table, by hand ------------------------------------------------------------


def sgd_by_hand(lr):
    def rule(w0, g1, g2):
        w1 = w0 - lr * g1
        w2 = w1 - lr * g2
        return w1, w2
    return rule


def momentum_by_hand(lrs, mu):
    """``v = mu*v - lr_t*g; w += v`` (learning rate inside the velocity)."""
    def rule(w0, g1, g2):
        v0 = np.zeros_like(w0)
        v1 = mu * v0 - lrs[0] * g1
        w1 = w0 + v1
        v2 = mu * v1 - lrs[1] * g2
        w2 = w1 + v2
        return w1, w2
    return rule


def momentum_torch_by_hand(lrs, mu):
    """PyTorch's form: ``b = mu*b + g; w -= lr_t*b``."""
    def rule(w0, g1, g2):
        b1 = g1
        w1 = w0 - lrs[0] * b1
        b2 = mu * b1 + g2
        w2 = w1 - lrs[1] * b2
        return w1, w2
    return rule


def nesterov_by_hand(lrs, mu):
    """``v' = mu*v - lr_t*g; w += -mu*v + (1+mu)*v'`` (DESIGN's first form)."""
    def rule(w0, g1, g2):
        v0 = np.zeros_like(w0)
        v1 = mu * v0 - lrs[0] * g1
        w1 = w0 - mu * v0 + (1 + mu) * v1
        v2 = mu * v1 - lrs[1] * g2
        w2 = w1 - mu * v1 + (1 + mu) * v2
        return w1, w2
    return rule


def nesterov_torch_by_hand(lrs, mu):
    """PyTorch's form: ``b = mu*b + g; w -= lr_t*(g + mu*b)``."""
    def rule(w0, g1, g2):
        b1 = g1
        w1 = w0 - lrs[0] * (g1 + mu * b1)
        b2 = mu * b1 + g2
        w2 = w1 - lrs[1] * (g2 + mu * b2)
        return w1, w2
    return rule


def adagrad_by_hand(lr, eps=1e-10, c0=0.0, eps_in_sqrt=False, mu=0.0, nesterov=False):
    """``c += g**2; s = g/(sqrt(c)+eps)`` then ``w -= lr*s`` or a (Nesterov) velocity of ``-lr*s``."""
    def denom(c):
        return np.sqrt(c + eps) if eps_in_sqrt else np.sqrt(c) + eps

    def rule(w0, g1, g2):
        c1 = c0 + g1**2
        s1 = g1 / denom(c1)
        c2 = c1 + g2**2
        s2 = g2 / denom(c2)
        return velocity_steps(w0, s1, s2, lr, mu, nesterov)
    return rule


def rmsprop_by_hand(lr, rho=0.9, eps=1e-8, eps_in_sqrt=False, mu=0.0, nesterov=False):
    """``c = rho*c + (1-rho)*g**2; s = g/(sqrt(c)+eps)``."""
    def denom(c):
        return np.sqrt(c + eps) if eps_in_sqrt else np.sqrt(c) + eps

    def rule(w0, g1, g2):
        c1 = rho * 0.0 + (1 - rho) * g1**2
        s1 = g1 / denom(c1)
        c2 = rho * c1 + (1 - rho) * g2**2
        s2 = g2 / denom(c2)
        return velocity_steps(w0, s1, s2, lr, mu, nesterov)
    return rule


def velocity_steps(w0, s1, s2, lr, mu, nesterov):
    """Two steps of ``w -= lr*s`` (mu=0), momentum or Nesterov with the lr inside the velocity."""
    if mu == 0.0:
        w1 = w0 - lr * s1
        return w1, w1 - lr * s2
    v1 = -lr * s1
    v2 = mu * v1 - lr * s2
    if nesterov:
        w1 = w0 + (1 + mu) * v1
        return w1, w1 - mu * v1 + (1 + mu) * v2
    w1 = w0 + v1
    return w1, w1 + v2


def adam_by_hand(lr, b1=0.9, b2=0.999, eps=1e-8, bias_correction="standard", eps_in_sqrt=False):
    def direction(m, v, t):
        if bias_correction == "standard":
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            return m_hat / (np.sqrt(v_hat + eps) if eps_in_sqrt else np.sqrt(v_hat) + eps)
        if bias_correction == "folded":  # Keras: sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)
            return math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        return m / (np.sqrt(v) + eps)

    def rule(w0, g1, g2):
        m1 = b1 * 0.0 + (1 - b1) * g1
        v1 = b2 * 0.0 + (1 - b2) * g1**2
        w1 = w0 - lr * direction(m1, v1, 1)
        m2 = b1 * m1 + (1 - b1) * g2
        v2 = b2 * v1 + (1 - b2) * g2**2
        w2 = w1 - lr * direction(m2, v2, 2)
        return w1, w2
    return rule


def adamw_by_hand(lrs, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's step: ``w *= 1 - lr_t*wd``, then the Adam step ``w -= lr_t*m_hat/(sqrt(v_hat)+eps)``."""
    def rule(w0, g1, g2):
        m1 = (1 - b1) * g1
        v1 = (1 - b2) * g1**2
        w1 = w0 * (1 - lrs[0] * wd)
        w1 = w1 - lrs[0] * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
        m2 = b1 * m1 + (1 - b1) * g2
        v2 = b2 * v1 + (1 - b2) * g2**2
        w2 = w1 * (1 - lrs[1] * wd)
        w2 = w2 - lrs[1] * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
        return w1, w2
    return rule


def sched():
    return exponential(SCHED_LR0, SCHED_K)


# (id, builder, by-hand rule).  The names of OPTIMIZERS are built through make_optimizer
# with their defaults, so the defaults of the DESIGN table are checked too.
GOLDEN = [
    ("sgd", lambda: make_optimizer("sgd", LR), sgd_by_hand(LR)),
    ("momentum", lambda: make_optimizer("momentum", LR), momentum_by_hand([LR, LR], MU)),
    ("nesterov", lambda: make_optimizer("nesterov", LR), nesterov_by_hand([LR, LR], MU)),
    ("adagrad", lambda: make_optimizer("adagrad", LR), adagrad_by_hand(LR)),
    ("rmsprop", lambda: make_optimizer("rmsprop", 0.01), rmsprop_by_hand(0.01)),
    ("adam", lambda: make_optimizer("adam", 0.01), adam_by_hand(0.01)),
    ("adagrad+momentum", lambda: make_optimizer("adagrad+momentum", LR), adagrad_by_hand(LR, mu=MU)),
    ("adagrad+nesterov", lambda: make_optimizer("adagrad+nesterov", LR),
     adagrad_by_hand(LR, mu=MU, nesterov=True)),
    ("rmsprop+momentum", lambda: make_optimizer("rmsprop+momentum", 0.01), rmsprop_by_hand(0.01, mu=MU)),
    ("rmsprop+nesterov", lambda: make_optimizer("rmsprop+nesterov", 0.01),
     rmsprop_by_hand(0.01, mu=MU, nesterov=True)),
    # adamw's default mask decays the weight tensor W, not the bias b
    ("adamw", lambda: make_optimizer("adamw", 0.01),
     {"W": adamw_by_hand([0.01, 0.01], 0.01), "b": adam_by_hand(0.01)}),
    # options
    ("sgd-schedule", lambda: sgd(sched()), lambda w0, g1, g2: (w0 - LR_T[0] * g1, w0 - LR_T[0] * g1 - LR_T[1] * g2)),
    ("adagrad-c0.1-eps_in_sqrt", lambda: adagrad(LR, eps=1e-7, initial_accumulator=0.1, eps_in_sqrt=True),
     adagrad_by_hand(LR, eps=1e-7, c0=0.1, eps_in_sqrt=True)),
    ("adagrad-c0.1", lambda: adagrad(LR, initial_accumulator=0.1), adagrad_by_hand(LR, c0=0.1)),
    ("rmsprop-rho0.8", lambda: rmsprop(0.01, rho=0.8), rmsprop_by_hand(0.01, rho=0.8)),
    ("rmsprop-rho0.99-eps_in_sqrt", lambda: rmsprop(0.01, rho=0.99, eps=1e-2, eps_in_sqrt=True),
     rmsprop_by_hand(0.01, rho=0.99, eps=1e-2, eps_in_sqrt=True)),
    ("adam-standard-b1b2", lambda: adam(0.01, b1=0.8, b2=0.99, eps=1e-3),
     adam_by_hand(0.01, b1=0.8, b2=0.99, eps=1e-3)),
    ("adam-folded", lambda: adam(0.01, eps=1e-3, bias_correction="folded"),
     adam_by_hand(0.01, eps=1e-3, bias_correction="folded")),
    ("adam-none", lambda: adam(0.01, eps=1e-3, bias_correction="none"),
     adam_by_hand(0.01, eps=1e-3, bias_correction="none")),
    ("adam-eps_in_sqrt", lambda: adam(0.01, eps=1e-3, eps_in_sqrt=True),
     adam_by_hand(0.01, eps=1e-3, eps_in_sqrt=True)),
    ("adamw-all", lambda: adamw(0.01, weight_decay=0.5, mask="all"), adamw_by_hand([0.01, 0.01], 0.5)),
    ("adamw-names", lambda: adamw(0.01, weight_decay=0.5, mask=["b"]),
     {"W": adam_by_hand(0.01), "b": adamw_by_hand([0.01, 0.01], 0.5)}),
    ("adamw-callable", lambda: adamw(0.01, weight_decay=0.5, mask=lambda name: name == "W"),
     {"W": adamw_by_hand([0.01, 0.01], 0.5), "b": adam_by_hand(0.01)}),
    ("adamw-wd0", lambda: adamw(0.01, weight_decay=0.0, mask="all"), adam_by_hand(0.01)),
    # the decay uses the scheduled rate of each step
    ("adamw-schedule", lambda: adamw(sched(), weight_decay=0.5, b1=0.8, b2=0.99, eps=1e-6, mask="all"),
     adamw_by_hand(LR_T, 0.5, b1=0.8, b2=0.99, eps=1e-6)),
    # momentum / Nesterov: the lr inside or outside the velocity
    ("momentum-inside-const", lambda: momentum(LR, MU, lr_inside=True), momentum_by_hand([LR, LR], MU)),
    ("momentum-outside-const", lambda: momentum(LR, MU, lr_inside=False), momentum_by_hand([LR, LR], MU)),
    ("momentum-outside-const-torchform", lambda: momentum(LR, MU, lr_inside=False),
     momentum_torch_by_hand([LR, LR], MU)),
    ("momentum-inside-sched", lambda: momentum(sched(), MU, lr_inside=True), momentum_by_hand(LR_T, MU)),
    ("momentum-outside-sched", lambda: momentum(sched(), MU, lr_inside=False), momentum_torch_by_hand(LR_T, MU)),
    ("nesterov-inside-const", lambda: nesterov(LR, MU, lr_inside=True), nesterov_by_hand([LR, LR], MU)),
    ("nesterov-outside-const", lambda: nesterov(LR, MU, lr_inside=False), nesterov_by_hand([LR, LR], MU)),
    ("nesterov-outside-const-torchform", lambda: nesterov(LR, MU, lr_inside=False),
     nesterov_torch_by_hand([LR, LR], MU)),
    ("nesterov-inside-sched", lambda: nesterov(sched(), MU, lr_inside=True), nesterov_by_hand(LR_T, MU)),
    ("nesterov-outside-sched", lambda: nesterov(sched(), MU, lr_inside=False), nesterov_torch_by_hand(LR_T, MU)),
    ("momentum-mu0.5", lambda: make_optimizer("momentum", LR, momentum=0.5), momentum_by_hand([LR, LR], 0.5)),
    ("rmsprop+nesterov-mu0.5", lambda: make_optimizer("rmsprop+nesterov", 0.01, momentum=0.5, rho=0.95),
     rmsprop_by_hand(0.01, rho=0.95, mu=0.5, nesterov=True)),
]


@pytest.mark.parametrize("builder, rule", [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_golden_two_steps(builder, rule):
    got1, got2 = run_two_steps(builder())
    want1, want2 = per_key(rule)
    for k in P0:
        np.testing.assert_allclose(got1[k], want1[k], rtol=1e-12, atol=1e-15, err_msg=f"step 1, {k}")
        np.testing.assert_allclose(got2[k], want2[k], rtol=1e-12, atol=1e-15, err_msg=f"step 2, {k}")
        assert got2[k].dtype == np.float64


def test_golden_covers_every_optimizer_name():
    assert set(OPTIMIZERS) <= {g[0] for g in GOLDEN}


def test_the_options_make_a_difference():
    """The variants above are not accidentally equal, so each golden case pins its option."""
    def final(rule):
        return per_key(rule)[1]["W"]

    def differs(a, b):
        assert not np.allclose(final(a), final(b), rtol=1e-6, atol=0)

    differs(momentum_by_hand(LR_T, MU), momentum_torch_by_hand(LR_T, MU))
    differs(nesterov_by_hand(LR_T, MU), nesterov_torch_by_hand(LR_T, MU))
    differs(nesterov_by_hand([LR, LR], MU), momentum_by_hand([LR, LR], MU))
    differs(adagrad_by_hand(LR, eps=1e-7, c0=0.1, eps_in_sqrt=True), adagrad_by_hand(LR, eps=1e-7))
    differs(adagrad_by_hand(LR, c0=0.1), adagrad_by_hand(LR))
    differs(rmsprop_by_hand(0.01, rho=0.99, eps=1e-2, eps_in_sqrt=True), rmsprop_by_hand(0.01, rho=0.99, eps=1e-2))
    differs(adam_by_hand(0.01, eps=1e-3, bias_correction="folded"), adam_by_hand(0.01, eps=1e-3))
    differs(adam_by_hand(0.01, eps=1e-3, bias_correction="none"), adam_by_hand(0.01, eps=1e-3))
    differs(adam_by_hand(0.01, eps=1e-3, eps_in_sqrt=True), adam_by_hand(0.01, eps=1e-3))
    # ... and descend agrees on which differ.
    a = run_two_steps(momentum(sched(), MU, lr_inside=True))[1]["W"]
    b = run_two_steps(momentum(sched(), MU, lr_inside=False))[1]["W"]
    assert not np.allclose(a, b, rtol=1e-6, atol=0)


def test_literal_numbers():
    """A few values worked out on paper: w=1, g=0.5 twice."""
    p = {"w": np.array([1.0])}
    g = {"w": np.array([0.5])}

    def two(opt):
        s = opt.init(p)
        u, s = opt.update(g, s, p)
        p1 = apply_updates(p, u)
        u, s = opt.update(g, s, p1)
        return p1["w"][0], apply_updates(p1, u)["w"][0]

    assert two(sgd(0.1)) == pytest.approx((0.95, 0.90), rel=1e-14)
    assert two(momentum(0.1, 0.9)) == pytest.approx((0.95, 0.855), rel=1e-14)  # v: -0.05, -0.095
    assert two(nesterov(0.1, 0.9)) == pytest.approx((0.905, 0.7695), rel=1e-14)
    assert two(adagrad(0.1)) == pytest.approx((0.9, 0.9 - 0.05 / math.sqrt(0.5)), rel=1e-9)
    assert two(adam(0.1)) == pytest.approx((0.9, 0.8), rel=1e-7)  # |m_hat / sqrt(v_hat)| = 1
    w1 = 1 - 0.01 * 0.5 / math.sqrt(0.025)
    w2 = w1 - 0.01 * 0.5 / math.sqrt(0.9 * 0.025 + 0.025)
    assert two(rmsprop(0.01)) == pytest.approx((w1, w2), rel=1e-7)  # eps=1e-8 ignored on paper


# --- more behaviour -----------------------------------------------------------------------


def test_schedule_is_evaluated_at_the_step_count():
    lr0, k = 0.3, 0.2
    opt = sgd(exponential(lr0, k))
    p = {"w": np.array([0.0, 0.0])}
    g = {"w": np.array([1.0, -2.0])}
    state = opt.init(p)
    for t in range(6):
        u, state = opt.update(g, state, p)
        np.testing.assert_allclose(u["w"], -lr0 * math.exp(-k * t) * g["w"], rtol=1e-14)
    assert int(state[0].count) == 6


def test_plateau_scale_multiplies_the_step():
    opt = momentum(LR, MU)
    state = opt.init(P0)
    lr_state = state[0]
    assert isinstance(lr_state, ScaleByLearningRateState)
    assert float(lr_state.scale) == 1.0
    half = (lr_state._replace(scale=np.full((), 0.5)), *state[1:])
    u_full, _ = opt.update(G1, state, P0)
    u_half, _ = opt.update(G1, half, P0)
    for k in P0:
        np.testing.assert_allclose(u_half[k], 0.5 * u_full[k], rtol=1e-14)


def test_add_l2_and_scale():
    opt = chain(add_l2(0.1, names=["W"]), scale(2.0))
    state = opt.init(P0)
    u, state = opt.update(G1, state, P0)
    np.testing.assert_allclose(u["W"], 2.0 * (G1["W"] + 0.1 * P0["W"]), rtol=1e-14)
    np.testing.assert_allclose(u["b"], 2.0 * G1["b"], rtol=1e-14)
    opt = add_l2(0.1)
    u, _ = opt.update(G1, opt.init(P0), P0)
    np.testing.assert_allclose(u["b"], G1["b"] + 0.1 * P0["b"], rtol=1e-14)
    with pytest.raises(ValueError, match="params"):
        opt.update(G1, opt.init(P0))


def test_building_blocks_compose_to_the_aliases():
    pairs = [
        (chain(scale_by_rss(), scale_by_learning_rate(LR)), adagrad(LR)),
        (chain(scale_by_rms(decay=0.9), scale_by_learning_rate(0.01)), rmsprop(0.01)),
        (chain(scale_by_adam(), scale_by_learning_rate(0.01)), adam(0.01)),
        (chain(scale_by_learning_rate(LR), trace(MU)), momentum(LR, MU)),
        (chain(trace(MU, nesterov=True), scale_by_learning_rate(LR)), nesterov(LR, MU, lr_inside=False)),
    ]
    for block, alias in pairs:
        a, b = run_two_steps(block), run_two_steps(alias)
        for k in P0:
            np.testing.assert_array_equal(a[0][k], b[0][k])
            np.testing.assert_array_equal(a[1][k], b[1][k])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_stays_float32(name):
    p = {k: v.astype(np.float32) for k, v in P0.items()}
    g = {k: v.astype(np.float32) for k, v in G1.items()}
    opt = make_optimizer(name, 0.01)
    state = opt.init(p)
    for _ in range(2):
        u, state = opt.update(g, state, p)
        p = apply_updates(p, u)
    assert all(v.dtype == np.float32 for v in p.values()), {k: v.dtype for k, v in p.items()}


def test_many_steps_stay_finite_and_descend():
    """On f(w) = 0.5*|w - target|**2 every optimizer makes progress and stays finite."""
    target = np.array([1.0, -2.0, 0.5])
    for name in OPTIMIZERS:
        opt = make_optimizer(name, 0.05)
        p = {"w": np.zeros(3)}
        state = opt.init(p)
        for _ in range(200):
            u, state = opt.update({"w": p["w"] - target}, state, p)
            p = apply_updates(p, u)
        assert np.all(np.isfinite(p["w"])), name
        assert np.linalg.norm(p["w"] - target) < 0.5 * np.linalg.norm(target), name


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, lr, options, message", [
    ("momentum", 0.1, {"momentum": 1.5}, "`momentum` must be in [0, 1). Received: momentum=1.5"),
    ("nesterov", 0.1, {"momentum": -0.1}, "`momentum` must be in [0, 1). Received: momentum=-0.1"),
    ("momentum", 0.1, {"momentum": 1.0}, "`momentum` must be in [0, 1). Received: momentum=1.0"),
    ("rmsprop+nesterov", 0.1, {"momentum": 1.5}, "`momentum` must be in [0, 1). Received: momentum=1.5"),
    ("adagrad", 0.1, {"momentum": 2}, "`momentum` must be in [0, 1). Received: momentum=2"),
    ("sgd", 0, {}, "`learning_rate` must be > 0. Received: learning_rate=0"),
    ("sgd", -1, {}, "`learning_rate` must be > 0. Received: learning_rate=-1"),
    ("adam", -0.5, {}, "`learning_rate` must be > 0. Received: learning_rate=-0.5"),
    ("momentum", 0.0, {}, "`learning_rate` must be > 0. Received: learning_rate=0.0"),
    ("sgd", float("nan"), {}, "`learning_rate` must be > 0. Received: learning_rate=nan"),
    ("rmsprop", 0.1, {"rho": 1.0}, "`rho` must be in [0, 1). Received: rho=1.0"),
    ("rmsprop", 0.1, {"rho": -0.1}, "`rho` must be in [0, 1). Received: rho=-0.1"),
    ("rmsprop", 0.1, {"eps": -1e-8}, "`eps` must be >= 0. Received: eps=-1e-08"),
    ("adagrad", 0.1, {"eps": -1.0}, "`eps` must be >= 0. Received: eps=-1.0"),
    ("adagrad", 0.1, {"initial_accumulator": -0.1},
     "`initial_accumulator` must be >= 0. Received: initial_accumulator=-0.1"),
    ("adam", 0.1, {"b1": 1.0}, "`b1` must be in [0, 1). Received: b1=1.0"),
    ("adam", 0.1, {"b2": 1.5}, "`b2` must be in [0, 1). Received: b2=1.5"),
    ("adam", 0.1, {"eps": -1.0}, "`eps` must be >= 0. Received: eps=-1.0"),
    ("adam", 0.1, {"bias_correction": "keras"},
     "`bias_correction` must be one of ('standard', 'folded', 'none'). Received: bias_correction='keras'"),
    ("adamw+nesterov", 0.1, {},
     f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer='adamw+nesterov'"),
    ("adamw", 0.1, {"weight_decay": -0.01},
     "`weight_decay` must be a finite number >= 0. Received: weight_decay=-0.01"),
    ("adamw", 0.1, {"weight_decay": float("nan")},
     "`weight_decay` must be a finite number >= 0. Received: weight_decay=nan"),
    ("adamw", 0.1, {"weight_decay": "0.01"},
     "`weight_decay` must be a finite number >= 0. Received: weight_decay='0.01'"),
    ("adamw", 0.1, {"mask": "biases"}, "`mask` must be one of ('weights', 'all'), a function of the parameter name "
                                       "or a collection of parameter names. Received: mask='biases'"),
    ("adamw", 0.1, {"mask": 3}, "Received: mask=3"),
    ("adamw", 0.1, {"b1": 1.0}, "`b1` must be in [0, 1). Received: b1=1.0"),
    ("adamw", 0.1, {"eps": -1.0}, "`eps` must be >= 0. Received: eps=-1.0"),
    ("adamw", 0.0, {}, "`learning_rate` must be > 0. Received: learning_rate=0.0"),
    ("adamw", 0.1, {"momentum": 0.9}, "`momentum` does not apply to optimizer='adamw'"),
    ("adamw", 0.1, {"rho": 0.9}, "optimizer 'adamw' takes no option 'rho'"),
    ("sgd", 0.1, {"clip_norm": 0}, "`clip_norm` must be a finite number > 0 (None for no clipping). "
                                   "Received: clip_norm=0"),
    ("adamw", 0.1, {"clip_norm": -1.0}, "`clip_norm` must be a finite number > 0 (None for no clipping). "
                                        "Received: clip_norm=-1.0"),
    ("momentum", 0.1, {"clip_norm": float("inf")}, "Received: clip_norm=inf"),
    ("adam", 0.1, {"clip_norm": True}, "Received: clip_norm=True"),
    ("adamw", 0.1, {"clip_norm": 1.0, "weight_decay": -1}, "Received: weight_decay=-1"),
    ("rmsprop+adam", 0.1, {}, f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer='rmsprop+adam'"),
    ("sgd", 0.1, {"momentum": 0.9}, "Received: momentum=0.9"),
    ("adam", 0.1, {"momentum": 0.9}, "Received: momentum=0.9"),
])
def test_make_optimizer_rejects_bad_values(name, lr, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        make_optimizer(name, lr, **options)
    assert isinstance(info.value, ValueError)  # ConfigError is a ValueError too
    assert "\n" not in str(info.value)


def test_valid_edge_values_are_accepted():
    make_optimizer("momentum", 0.1, momentum=0.0)
    make_optimizer("sgd", 0.1, momentum=0.0)
    make_optimizer("sgd", 0.1, momentum=None)
    make_optimizer("rmsprop", 0.1, rho=0.0, eps=0.0)
    make_optimizer("adam", 0.1, b1=0.0, b2=0.0, eps=0.0)
    make_optimizer("adagrad", 1e-12, initial_accumulator=0.0, eps=0.0)
    make_optimizer("sgd", exponential(0.1, 0.1))  # a schedule is a valid learning rate


def test_make_optimizer_does_not_consume_the_callers_options():
    options = {"momentum": 0.5, "rho": 0.95}
    make_optimizer("rmsprop+momentum", 0.1, **options)
    assert options == {"momentum": 0.5, "rho": 0.95}


def test_make_optimizer_momentum_for_adaptive_names():
    """``adagrad`` with momentum=mu is ``adagrad+momentum`` with mu."""
    a = run_two_steps(make_optimizer("adagrad", LR, momentum=0.5))[1]
    b = run_two_steps(make_optimizer("adagrad+momentum", LR, momentum=0.5))[1]
    for k in P0:
        np.testing.assert_array_equal(a[k], b[k])


# --- purity -------------------------------------------------------------------------------


def leaves(tree):
    """Every array in a nested structure of tuples / NamedTuples / dicts, with its path."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            for path, leaf in leaves(v):
                yield (k, *path), leaf
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            for path, leaf in leaves(v):
                yield (i, *path), leaf
    else:
        yield (), tree


def snapshot(tree):
    return [(path, np.array(leaf, copy=True)) for path, leaf in leaves(tree)]


def assert_unchanged(tree, snap):
    now = list(leaves(tree))
    assert [p for p, _ in now] == [p for p, _ in snap]
    for (path, leaf), (_, before) in zip(now, snap):
        np.testing.assert_array_equal(np.asarray(leaf), before, err_msg=str(path))


PURITY = [(name, lambda name=name: make_optimizer(name, 0.1)) for name in OPTIMIZERS] + [
    ("momentum-outside-sched", lambda: momentum(sched(), MU, lr_inside=False)),
    ("nesterov-outside", lambda: nesterov(0.1, MU, lr_inside=False)),
    ("adagrad-c0.1", lambda: adagrad(0.1, initial_accumulator=0.1, eps_in_sqrt=True)),
    ("adam-folded", lambda: adam(0.1, bias_correction="folded")),
    ("l2+adam", lambda: chain(add_l2(0.01), scale_by_adam(), scale_by_learning_rate(0.1))),
    ("adamw-clip", lambda: make_optimizer("adamw", 0.1, clip_norm=0.5, mask="all")),
    ("momentum-clip", lambda: make_optimizer("momentum", 0.1, clip_norm=10.0)),
]


@pytest.mark.parametrize("builder", [b for _, b in PURITY], ids=[n for n, _ in PURITY])
def test_update_never_mutates_its_inputs(builder):
    opt = builder()
    params = copy.deepcopy(P0)
    state = opt.init(params)
    assert isinstance(state, tuple)
    for grads in (copy.deepcopy(G1), copy.deepcopy(G2), copy.deepcopy(G1)):
        snaps = snapshot(params), snapshot(grads), snapshot(state)
        updates, new_state = opt.update(grads, state, params)
        new_params = apply_updates(params, updates)
        assert_unchanged(params, snaps[0])
        assert_unchanged(grads, snaps[1])
        assert_unchanged(state, snaps[2])
        assert isinstance(new_state, tuple)
        assert type(new_state) is type(state)
        assert [p for p, _ in leaves(new_state)] == [p for p, _ in leaves(state)]  # same structure
        # The new arrays share no memory with the inputs, so a later in-place edit can't leak back.
        for _, new in leaves((updates, new_params, new_state)):
            for _, old in leaves((params, grads)):
                if isinstance(new, np.ndarray) and new.ndim:
                    assert not np.shares_memory(new, old)
        params, state = new_params, new_state


def test_chain_state_is_a_tuple_of_the_blocks_states():
    opt = chain(scale_by_rss(), scale_by_learning_rate(0.1), trace(0.9))
    state = opt.init(P0)
    assert type(state) is tuple and len(state) == 3
    _, new_state = opt.update(G1, state, P0)
    assert type(new_state) is tuple and len(new_state) == 3
    assert [type(s) for s in new_state] == [type(s) for s in state]
    assert chain().init(P0) == ()
    u, s = chain().update(G1, (), P0)
    assert u is G1 and s == ()


def test_init_does_not_alias_params():
    opt = make_optimizer("adagrad", 0.1, initial_accumulator=0.1)
    state = opt.init(P0)
    for _, leaf in leaves(state):
        for p in P0.values():
            if isinstance(leaf, np.ndarray) and leaf.ndim:
                assert not np.shares_memory(leaf, p)


def test_unknown_option_is_a_config_error_naming_it():
    from descend.errors import ConfigError
    from descend.optim import make_optimizer

    with pytest.raises(ConfigError, match="optimizer 'sgd' takes no option 'rho' \\(it takes no options\\)"):
        make_optimizer("sgd", 0.1, rho=0.9)
    with pytest.raises(ConfigError, match="takes no option 'rho' \\(it takes b1, b2,"):
        make_optimizer("adam", 0.1, rho=0.9)


# --- decoupled weight decay and gradient clipping -------------------------------------------


def global_norm(grads):
    return math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))


def test_clip_by_global_norm_scales_every_gradient_by_one_factor():
    clip = 1.0
    norm = global_norm(G1)  # sqrt(0.04 + 0.16 + 2.25 + 0 + 0.0025 + 0.09) = 1.5946...
    assert norm > clip
    opt = clip_by_global_norm(clip)
    u, state = opt.update(G1, opt.init(P0), P0)
    assert state == ()
    for k in G1:
        np.testing.assert_allclose(u[k], G1[k] * (clip / norm), rtol=1e-14)
    assert global_norm(u) == pytest.approx(clip, rel=1e-14)


def test_clip_literal_numbers():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    u, _ = clip_by_global_norm(1.0).update(g, (), None)
    assert float(u["a"][0]) == pytest.approx(0.6, rel=1e-15) and float(u["b"][0, 0]) == pytest.approx(0.8, rel=1e-15)
    u, _ = clip_by_global_norm(5.0).update(g, (), None)  # exactly at the limit: unchanged
    assert float(u["a"][0]) == 3.0 and float(u["b"][0, 0]) == 4.0
    u, _ = clip_by_global_norm(4.0, eps=1.0).update(g, (), None)  # 4 / (5 + 1)
    assert float(u["a"][0]) == pytest.approx(2.0, rel=1e-15)


def test_clip_leaves_a_small_gradient_bit_identical():
    u, _ = clip_by_global_norm(10.0).update(G1, (), P0)
    for k in G1:
        np.testing.assert_array_equal(u[k], G1[k])


def test_clip_keeps_a_zero_gradient_zero_without_dividing_by_zero():
    zeros = {k: np.zeros_like(v) for k, v in G1.items()}
    with np.errstate(all="raise"):
        u, _ = clip_by_global_norm(1.0).update(zeros, (), P0)
        u32, _ = clip_by_global_norm(1.0).update({k: v.astype(np.float32) for k, v in zeros.items()}, (), P0)
    for k in zeros:
        np.testing.assert_array_equal(u[k], 0.0)
        assert u32[k].dtype == np.float32


def test_clip_comes_before_the_rule():
    """``clip_norm`` feeds the clipped gradient to the rule: momentum's velocity accumulates clipped steps."""
    clip = 0.5
    opt = make_optimizer("momentum", LR, clip_norm=clip)
    got1, got2 = run_two_steps(opt)
    c1, c2 = clip / global_norm(G1), clip / global_norm(G2)
    assert c1 < 1 and c2 < 1
    state = opt.init(P0)
    assert state[0] == ()  # the clip block is first in the chain
    for k in P0:
        v1 = -LR * c1 * G1[k]
        v2 = MU * v1 - LR * c2 * G2[k]
        np.testing.assert_allclose(got1[k], P0[k] + v1, rtol=1e-13)
        np.testing.assert_allclose(got2[k], P0[k] + v1 + v2, rtol=1e-13)


def test_clip_does_not_touch_the_decoupled_decay():
    """AdamW clips the gradient only; the weight decay term is added after, unclipped."""
    clipped = run_two_steps(make_optimizer("adamw", 0.01, clip_norm=0.1, weight_decay=0.5, mask="all"))[1]

    g1 = {k: v * (0.1 / global_norm(G1)) for k, v in G1.items()}
    g2 = {k: v * (0.1 / global_norm(G2)) for k, v in G2.items()}
    for k in P0:
        want = adamw_by_hand([0.01, 0.01], 0.5)(P0[k], g1[k], g2[k])[1]
        np.testing.assert_allclose(clipped[k], want, rtol=1e-12)


def test_add_decayed_weights():
    u, state = add_decayed_weights(0.1).update(G1, (), P0)  # default: weight tensors only
    assert state == ()
    np.testing.assert_allclose(u["W"], G1["W"] + 0.1 * P0["W"], rtol=1e-15)
    np.testing.assert_array_equal(u["b"], G1["b"])
    u, _ = add_decayed_weights(0.1, mask="all").update(G1, (), P0)
    np.testing.assert_allclose(u["b"], G1["b"] + 0.1 * P0["b"], rtol=1e-15)
    names = {"dense0.W": 1.0, "dense0.b": 2.0, "conv1.W": 3.0, "bn0.gamma": 4.0, "bn0.beta": 5.0, "Wx": 6.0}
    params = {k: np.array([v]) for k, v in names.items()}
    u, _ = add_decayed_weights(1.0).update({k: np.zeros(1) for k in names}, (), params)
    assert {k for k, v in u.items() if v[0] != 0} == {"dense0.W", "conv1.W"}
    with pytest.raises(ValueError, match="params"):
        add_decayed_weights(0.1).update(G1, ())


def test_adamw_decay_follows_the_plateau_multiplier():
    """The decay is part of the step ``-lr*s*(adam + wd*w)``, so reduce-on-plateau scales it too."""
    opt = adamw(0.01, weight_decay=0.5, mask="all")
    state = opt.init(P0)
    half = tuple(s._replace(scale=np.full((), 0.5)) if isinstance(s, ScaleByLearningRateState) else s
                 for s in state)
    u_full, _ = opt.update(G1, state, P0)
    u_half, _ = opt.update(G1, half, P0)
    for k in P0:
        np.testing.assert_allclose(u_half[k], 0.5 * u_full[k], rtol=1e-14)


def test_adamw_differs_from_adam_with_an_l2_gradient():
    """Decoupled decay is not L2 folded into the gradient (the reason AdamW exists)."""
    decoupled = run_two_steps(adamw(0.01, weight_decay=0.5, mask="all"))[1]
    coupled = run_two_steps(chain(add_l2(0.5), scale_by_adam(), scale_by_learning_rate(0.01)))[1]
    plain = run_two_steps(adam(0.01))[1]
    assert not np.allclose(decoupled["W"], coupled["W"], rtol=1e-6, atol=0)
    assert not np.allclose(decoupled["W"], plain["W"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("builder, message", [
    (lambda: clip_by_global_norm(0.0), "`max_norm` must be a finite number > 0. Received: max_norm=0.0"),
    (lambda: clip_by_global_norm(-2), "`max_norm` must be a finite number > 0. Received: max_norm=-2"),
    (lambda: clip_by_global_norm(1.0, eps=-1e-6), "`eps` must be a finite number >= 0. Received: eps=-1e-06"),
    (lambda: add_decayed_weights(-0.5), "`weight_decay` must be a finite number >= 0. Received: weight_decay=-0.5"),
    (lambda: add_decayed_weights(0.1, mask="none"), "Received: mask='none'"),
    (lambda: adamw(0.1, weight_decay=float("inf")), "Received: weight_decay=inf"),
])
def test_building_blocks_reject_bad_values(builder, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        builder()
    assert "\n" not in str(info.value)


def test_adamw_conventions():
    from descend.optim.conventions import applies, convention_options, family, resolve

    assert family("adamw") == "adam"
    assert convention_options("torch", "adamw")["decay_mask"] == "all"
    assert convention_options("keras", "adamw")["bias_correction"] == "folded"
    assert resolve("descend", "adamw")["mask"] == "weights"
    kwargs = resolve("torch", "adamw", {"weight_decay": 0.05})
    assert kwargs == {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_in_sqrt": False, "bias_correction": "standard",
                      "mask": "all", "weight_decay": 0.05}
    assert resolve("torch", "adamw", {"mask": "weights"})["mask"] == "weights"  # explicit beats the convention
    make_optimizer("adamw", 0.01, **kwargs)
    assert applies("weight_decay", "adamw") and not applies("weight_decay", "adam")
    assert "decay_mask" not in convention_options("torch", "adam")
    with pytest.raises(ConfigError, match=re.escape("optimizer option `weight_decay` does not apply to "
                                                    "optimizer='adam'")):
        resolve("torch", "adam", {"weight_decay": 0.01})
