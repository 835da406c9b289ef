"""The NumPy reference engine: its hand-written backprop against finite differences
and against the engine-agnostic model math it must mirror."""

import numpy as np
import pytest

from descend.backend import numpy_ops
from descend.engines import get_engine, heap, numpy_engine
from descend.engines.numpy_engine import value_and_grad
from descend.model import MLP, init_params, loss_fn
from descend.optim import sgd


def _problem(spec, n=7, n_in=5, n_out=4, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(spec, n_in, n_out, key=seed, dtype="float64")
    # Non-zero biases so every term of the gradient is exercised.
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    x = rng.standard_normal((n, n_in))
    y = rng.integers(0, n_out, n)
    return params, x, y


def _finite_difference(f, params, eps=1e-6):
    grads = {}
    for name, p in params.items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            g[idx] = (f(plus) - f(minus)) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("hidden", [(), (6,), (6, 3)])
@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.0, 0.3), (0.05, 0.0), (0.02, 0.1)])
def test_backprop_matches_finite_differences(activation, hidden, l1, l2):
    spec = MLP(hidden=hidden, activation=activation)
    params, x, y = _problem(spec)

    def objective(p):
        return float(loss_fn(numpy_ops, spec, p, {}, x, y, l1=l1, l2=l2)[0])

    loss, grads, _ = value_and_grad(spec, params, {}, x, y, l1=l1, l2=l2)
    expected = _finite_difference(objective, params)
    assert loss == pytest.approx(objective(params), rel=1e-12)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_penalties_skip_biases():
    spec = MLP(hidden=(3,))
    params, x, y = _problem(spec)
    _, plain, _ = value_and_grad(spec, params, {}, x, y)
    _, penalised, _ = value_and_grad(spec, params, {}, x, y, l1=0.1, l2=0.5)
    for name in params:
        if name.endswith(".b"):
            np.testing.assert_array_equal(plain[name], penalised[name])
        else:
            np.testing.assert_allclose(penalised[name] - plain[name],
                                       0.5 * params[name] + 0.1 * np.sign(params[name]))


def test_cross_entropy_is_stable_for_huge_logits():
    spec = MLP(hidden=())
    params = {"dense0.W": np.array([[1000.0, -1000.0]]), "dense0.b": np.zeros(2)}
    x = np.array([[1.0], [1.0]])
    y = np.array([0, 1])
    loss, grads, _ = value_and_grad(spec, params, {}, x, y)
    assert np.isfinite(loss) and loss == pytest.approx(1000.0)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_trainer_run_applies_steps_in_the_given_order():
    spec = MLP(hidden=(4,))
    params, x, y = _problem(spec, n=12, seed=3)
    engine = get_engine("numpy", dtype="float64")
    trainer = engine.trainer(spec, sgd(0.1))
    order = np.random.default_rng(1).permutation(12)
    ts, losses = trainer.run(trainer.init(params, {}), x, y, order, 4, 0, 3, 0, 0)
    # The same three steps by hand.
    p = {k: v.copy() for k, v in params.items()}
    by_hand = []
    for j in range(3):
        idx = order[4 * j:4 * j + 4]
        loss, g, _ = value_and_grad(spec, p, {}, x[idx], y[idx])
        by_hand.append(loss)
        p = {k: v - 0.1 * g[k] for k, v in p.items()}
    np.testing.assert_allclose(losses, by_hand, rtol=1e-12)
    for k in p:
        np.testing.assert_allclose(ts.params[k], p[k], rtol=1e-12)


def test_float32_stays_float32():
    spec = MLP(hidden=(4,))
    params, x, y = _problem(spec)
    engine = get_engine("numpy")
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    trainer = engine.trainer(spec, sgd(0.1))
    ts, _ = trainer.run(trainer.init(params32, {}), engine.asarray(x), y, np.arange(7), 3, 0, 2, 0, 0)
    assert all(v.dtype == np.float32 for v in ts.params.values())


def test_default_threads_policy():
    from descend.engines import default_threads

    assert default_threads("jax", 500, cores=2) == 2
    assert default_threads("jax", 32, cores=2) == 1
    assert default_threads("torch", 1, cores=16) == 1
    assert default_threads("numpy", 32, cores=2) == 2  # OpenBLAS gains from a second thread even here
    wide = 784 * 1024 + 1024 * 1024 + 1024 * 10
    assert default_threads("tensorflow", 100, wide, cores=2) == 2  # a wide network splits at smaller batches
    assert default_threads("tensorflow", 100, cores=2) == 1


def test_threads_scope_limits_blas_during_a_run():
    from threadpoolctl import threadpool_info

    engine = get_engine("numpy", threads=1)
    with engine.threads_scope():
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")


def _minor_faults_of_fresh_arrays(mib: int, count: int) -> int:
    """Page faults of allocating ``count`` arrays of ``mib`` MiB, writing every page and freeing them."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.empty(mib << 20, dtype=np.uint8) for _ in range(count)]
    for a in arrays:
        a.fill(1)
    del arrays, a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(heap._LIBC is None, reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults_while_a_trainer_runs():
    # Three 12 MiB maps a step, as a small CNN's feature maps and their gradients: by default glibc gives
    # back (and faults in again) more than a tenth of their pages every round; inside the scope none.
    pages = 3 * (12 << 20) // 4096
    with heap.freed_memory_kept(), heap.freed_memory_kept():
        _minor_faults_of_fresh_arrays(12, 3)
        again = _minor_faults_of_fresh_arrays(12, 3)
    assert again < pages // 10, f"{again} page faults for {pages} pages of memory freed a moment before"
    assert heap._depth == 0


def test_numpy_trainer_runs_inside_the_heap_scope(monkeypatch):
    entered = []

    class Scope:
        def __enter__(self):
            entered.append(heap._depth)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(numpy_engine, "freed_memory_kept", Scope)
    spec = MLP(hidden=(4,))
    params, x, y = _problem(spec, n=8, seed=3)
    trainer = get_engine("numpy", dtype="float64").trainer(spec, sgd(0.1))
    trainer.run(trainer.init(params, {}), x, y, np.arange(8), 4, 0, 2, 0, 0)
    assert entered == [0]
