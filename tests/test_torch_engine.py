"""The PyTorch engine: autograd of descend's model + descend's own optimizers, eager.

Against the NumPy reference (optimizers, schedules, penalties, batch norm with
its running statistics, inference logits), dtype discipline, devices, threads,
dropout masks per (seed, step), and the fit loop's interrupt/resume on torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.backend import get_ops
from descend.engines import get_engine
from descend.engines.torch_engine import TorchEngine, TorchTrainer, step_generator_seed
from descend.errors import ConfigError, DivergenceError
from descend.io.tree import flatten, flatten_with_paths
from descend.model import MLP, init_params, init_state
from descend.optim import OPTIMIZERS, chain, exponential, make_optimizer, max_norm, step_decay
from descend.optim.base import step_counter
from descend.train import LambdaCallback, TrainConfig, fit, fit_options
from descend.train.loop import epoch_order

N, D, K = 96, 12, 4
RNG = np.random.default_rng(3)
X = RNG.standard_normal((N, D))
Y = RNG.integers(0, K, N)
CUDA = torch.cuda.is_available()


def run_steps(engine, spec, optimizer, *, steps=30, batch=16, l1=0.0, l2=0.0, seed=0, plateau=None):
    """``steps`` optimizer steps over seeded epochs; returns (losses, host TrainState, logits)."""
    trainer = engine.trainer(spec, optimizer, l1=l1, l2=l2)
    dtype = engine.dtype
    ts = trainer.init(init_params(spec, D, K, key=1, dtype=dtype), init_state(spec, D, K, dtype=dtype))
    Xd, yd = engine.asarray(X), engine.put_labels(Y)
    per_epoch, losses, step, epoch = N // batch, [], 0, 0
    while step < steps:
        count = min(per_epoch, steps - step)
        ts, chunk = trainer.run(ts, Xd, yd, epoch_order(5, epoch, N), batch, 0, count, step, seed)
        assert isinstance(chunk, np.ndarray) and chunk.shape == (count,)
        losses += list(chunk)
        step, epoch = step + count, epoch + 1
        if plateau is not None and epoch == 2:
            ts = trainer.with_lr_scale(ts, plateau)
    logits = engine.logits(spec, ts.params, ts.model_state, Xd, batch_size=40)
    return np.array(losses), trainer.to_numpy(ts), logits


def assert_matches_numpy(spec, make, *, device="cpu", dtype="float64", rtol=1e-9, **kw):
    ref_losses, ref, ref_logits = run_steps(get_engine("numpy", dtype=dtype), spec, make(), **kw)
    losses, got, logits = run_steps(get_engine("torch", device=device, dtype=dtype), spec, make(), **kw)
    atol = rtol * 1e-2
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol, err_msg="losses")
    assert set(got.params) == set(ref.params)
    for k in ref.params:
        np.testing.assert_allclose(got.params[k], ref.params[k], rtol=rtol, atol=atol, err_msg=k)
    assert set(got.model_state) == set(ref.model_state)
    for k in ref.model_state:
        np.testing.assert_allclose(got.model_state[k], ref.model_state[k], rtol=rtol, atol=atol, err_msg=k)
    ref_opt, got_opt = flatten_with_paths(ref.opt_state), flatten_with_paths(got.opt_state)
    assert set(got_opt) == set(ref_opt)
    for path, b in ref_opt.items():
        a = got_opt[path]
        assert np.asarray(a).dtype == np.asarray(b).dtype, path
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=path)
    np.testing.assert_allclose(logits, ref_logits, rtol=rtol, atol=atol, err_msg="logits")


SPEC = MLP(hidden=(10, 7))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_matches_numpy(name):
    lr = 0.01 if name.startswith(("adam", "rmsprop", "adagrad")) else 0.05
    assert_matches_numpy(SPEC, lambda: make_optimizer(name, lr), l2=1e-3)


@pytest.mark.parametrize("make", [
    lambda: make_optimizer("nesterov", step_decay(0.05, 0.5, 7)),
    lambda: make_optimizer("adam", exponential(0.01, 0.03)),
    lambda: chain(make_optimizer("momentum", 0.2), max_norm(0.6)),
], ids=["nesterov-step-decay", "adam-exponential", "momentum-max-norm"])
def test_schedules_and_constraints_match_numpy(make):
    assert_matches_numpy(SPEC, make)


def test_penalties_plateau_and_activations_match_numpy():
    assert_matches_numpy(MLP(hidden=(9,), activation="tanh"), lambda: make_optimizer("rmsprop+nesterov", 0.01),
                         l1=1e-3, l2=1e-2, plateau=0.25)
    assert_matches_numpy(MLP(hidden=(9,), activation="sigmoid"), lambda: make_optimizer("adagrad", 0.1))
    assert_matches_numpy(MLP(hidden=()), lambda: make_optimizer("sgd", 0.1), batch=N)
    assert_matches_numpy(SPEC, lambda: make_optimizer("momentum", 0.02), batch=1, steps=20)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_batchnorm_training_running_stats_and_inference_match_numpy(name):
    spec = MLP(hidden=(10, 7), batchnorm=True)
    assert_matches_numpy(spec, lambda: make_optimizer(name, 0.02))


def test_float32_matches_numpy_loosely():
    assert_matches_numpy(SPEC, lambda: make_optimizer("nesterov", 0.05), dtype="float32", rtol=1e-4)


@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop+nesterov"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_float32_stays_float32(name, batchnorm):
    spec = MLP(hidden=(8,), batchnorm=batchnorm)
    engine = get_engine("torch", device="cpu", dtype="float32")
    trainer = engine.trainer(spec, make_optimizer(name, exponential(0.01, 0.1)), l2=1e-3)
    ts = trainer.init(init_params(spec, D, K, key=0, dtype="float64"), init_state(spec, D, K, dtype="float64"))
    Xd = engine.asarray(X)
    assert Xd.dtype == torch.float32 and engine.put_labels(Y).dtype == torch.int64
    ts, losses = trainer.run(ts, Xd, engine.put_labels(Y), np.arange(N), 16, 0, 6, 0, 0)
    assert np.all(np.isfinite(losses))
    for tree in (ts.params, ts.model_state):
        assert all(v.dtype == torch.float32 and not v.requires_grad for v in tree.values())
    leaves, _ = flatten(ts.opt_state)
    counts = [v for v in leaves if not v.is_floating_point()]
    assert counts and all(v.dtype == torch.int32 and v.ndim == 0 and int(v) == 6 for v in counts)
    assert all(v.dtype == torch.float32 for v in leaves if v.is_floating_point())
    logits = engine.logits(spec, ts.params, ts.model_state, Xd)
    assert logits.dtype == np.float32 and logits.shape == (N, K)


def test_step_counter_is_int32_on_torch():
    count = step_counter({"w": torch.zeros(3)})
    assert isinstance(count, torch.Tensor) and count.dtype == torch.int32 and count.shape == ()
    assert get_ops("torch").zeros((), dtype="int32").dtype == torch.int32


def test_run_does_not_touch_its_inputs_and_chunks_compose():
    """Two runs of 3 steps equal one run of 6; the input state is left as it was."""
    spec = MLP(hidden=(8,), dropout_keep=(0.9, 0.7))
    engine = get_engine("torch", device="cpu", dtype="float64")
    trainer = engine.trainer(spec, make_optimizer("adam", 0.01))
    ts0 = trainer.init(init_params(spec, D, K, key=0, dtype="float64"), {})
    before = {k: v.clone() for k, v in ts0.params.items()}
    Xd, yd, order = engine.asarray(X), engine.put_labels(Y), epoch_order(0, 0, N)
    whole, losses = trainer.run(ts0, Xd, yd, order, 16, 0, 6, 10, 3)
    half, first = trainer.run(ts0, Xd, yd, order, 16, 0, 3, 10, 3)
    half, second = trainer.run(half, Xd, yd, order, 16, 3, 3, 13, 3)
    np.testing.assert_array_equal(np.concatenate([first, second]), losses)
    for k in before:
        assert torch.equal(ts0.params[k], before[k]) and not ts0.params[k].requires_grad
        assert torch.equal(whole.params[k], half.params[k])


def test_dropout_masks_depend_on_seed_and_step_only():
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5))
    engine = get_engine("torch", device="cpu", dtype="float64")
    Xd, yd, order = engine.asarray(X), engine.put_labels(Y), np.arange(N)
    p0 = init_params(spec, D, K, key=0, dtype="float64")

    def one_step(seed, step):
        trainer = engine.trainer(spec, make_optimizer("sgd", 0.1))
        ts, loss = trainer.run(trainer.init(p0, {}), Xd, yd, order, 32, 0, 1, step, seed)
        return loss[0], ts.params["dense0.W"]

    a, b = one_step(1, 5), one_step(1, 5)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    for other in (one_step(1, 6), one_step(2, 5)):
        assert other[0] != a[0] and not torch.equal(other[1], a[1])
    # the mask itself: keep rate near p, values in {0, 1}, and the documented seeding
    gen = torch.Generator().manual_seed(step_generator_seed(1, 5))
    mask = get_ops("torch").keep_mask(gen, 0, 0.8, (200, 50), torch.float64)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and abs(float(mask.mean()) - 0.8) < 0.03
    again = get_ops("torch").keep_mask(torch.Generator().manual_seed(step_generator_seed(1, 5)), 0, 0.8,
                                       (200, 50), torch.float64)
    assert torch.equal(mask, again)


def test_dropout_is_identity_at_inference():
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5))
    engine = get_engine("torch", device="cpu", dtype="float64")
    p = init_params(spec, D, K, key=0, dtype="float64")
    ref = get_engine("numpy", dtype="float64").logits(spec, p, {}, X)
    got = engine.logits(spec, engine.put_tree(p), {}, engine.asarray(X), batch_size=7)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_devices_capabilities_and_errors():
    engine = get_engine("torch", device="auto")
    assert isinstance(engine, TorchEngine) and isinstance(engine.trainer(SPEC, make_optimizer("sgd", 0.1)),
                                                          TorchTrainer)
    assert {"float64", "autodiff"} <= engine.capabilities
    assert ("gpu" in engine.capabilities) == CUDA
    assert engine.device == ("gpu" if CUDA else "cpu")
    assert get_engine("torch", device="cpu").torch_device == torch.device("cpu")
    if not CUDA:
        with pytest.raises(ConfigError, match="gpu"):
            get_engine("torch", device="gpu")
    assert get_engine("torch", dtype="float64").asarray(X).dtype == torch.float64
    empty = get_engine("torch", device="cpu").logits(SPEC, {}, {}, torch.zeros((0, D)))
    assert empty.shape[0] == 0


def test_threads_are_set_for_each_call_and_restored(monkeypatch):
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    engine = get_engine("torch", device="cpu", threads=other)
    trainer = engine.trainer(SPEC, make_optimizer("sgd", 0.1))
    ts = trainer.init(init_params(SPEC, D, K, key=0), {})
    ts, _ = trainer.run(ts, engine.asarray(X), engine.put_labels(Y), np.arange(N), 16, 0, 2, 0, 0)
    engine.logits(SPEC, ts.params, ts.model_state, engine.asarray(X))
    assert seen == [other, before, other, before] and torch.get_num_threads() == before
    seen.clear()
    get_engine("torch", device="cpu").logits(SPEC, ts.params, ts.model_state, engine.asarray(X))
    assert seen == []  # threads=None leaves PyTorch's setting alone


def _blobs(n=240, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


BASE = TrainConfig(dataset="synthetic", hidden=(8,), optimizer="nesterov", lr=0.01, batch_size=20, epochs=6,
                   schedule="plateau:0.5:1", early_stopping="patience", patience=3, eval_every=5, dtype="float64",
                   engine="torch")


def _fit(cfg, spec, checkpoint=None, resume=False, on_evaluation=None):
    X_, y_ = _blobs()
    engine = get_engine("torch", device="cpu", dtype=cfg.dtype)
    params = init_params(spec, X_.shape[1], 3, key=cfg.seed, dtype=cfg.dtype)
    Xe = engine.asarray(X_)
    return fit(engine, spec, fit_options(cfg), Xe[:180], engine.put_labels(y_[:180]), Xe[180:], y_[180:], params=params,
               model_state=init_state(spec, X_.shape[1], 3, dtype=cfg.dtype), checkpoint=checkpoint,
               resume=resume, 
               callbacks=[LambdaCallback(on_evaluation=on_evaluation)] if on_evaluation else [])


@pytest.mark.parametrize("spec", [MLP(hidden=(8,), dropout_keep=(1.0, 0.7)), MLP(hidden=(8,), batchnorm=True)],
                         ids=["dropout", "batchnorm"])
def test_fit_interrupt_then_resume_equals_uninterrupted(tmp_path, spec):
    cfg = BASE.replace(dropout_keep=spec.dropout_keep, batchnorm=spec.batchnorm)
    full = _fit(cfg, spec)
    assert full.history[-1]["valid_error"] < 0.3

    def interrupt_after_three(row, seen=[]):  # noqa: B006 - a counter local to this test
        seen.append(row)
        if len(seen) == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, spec, checkpoint=ckpt, on_evaluation=interrupt_after_three)
    assert ckpt.exists()
    resumed = _fit(cfg, spec, checkpoint=ckpt, resume=True)
    assert resumed.steps == full.steps
    assert [r["valid_error"] for r in resumed.history] == [r["valid_error"] for r in full.history]
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])
        np.testing.assert_array_equal(resumed.final_params[k], full.final_params[k])
    for k in full.model_state:
        np.testing.assert_array_equal(resumed.model_state[k], full.model_state[k])


def test_fit_matches_numpy_engine():
    spec = MLP(hidden=(8,))
    cfg = BASE.replace(schedule="exponential:0.1", early_stopping="none")
    X_, y_ = _blobs()
    results = {}
    for name in ("numpy", "torch"):
        engine = get_engine(name, device="cpu", dtype="float64")
        Xe = engine.asarray(X_)
        results[name] = fit(engine, spec, fit_options(cfg), Xe[:180], engine.put_labels(y_[:180]), Xe[180:], y_[180:],
                            params=init_params(spec, 6, 3, key=0, dtype="float64"), model_state={})
    for k in results["numpy"].params:
        np.testing.assert_allclose(results["torch"].params[k], results["numpy"].params[k], rtol=1e-9, atol=1e-12)
    assert [r["valid_error"] for r in results["torch"].history] == [r["valid_error"]
                                                                    for r in results["numpy"].history]


def test_divergence_is_reported_by_the_loop():
    spec = MLP(hidden=(8,))
    cfg = BASE.replace(optimizer="sgd", lr=1e6, schedule="constant", early_stopping="none", epochs=3)
    X_, y_ = _blobs()
    X_ = X_ * 1e3
    engine = get_engine("torch", device="cpu", dtype="float32")
    with pytest.raises(DivergenceError, match="diverged"):
        fit(engine, spec, fit_options(cfg), engine.asarray(X_), engine.put_labels(y_), None, None,
            params=init_params(spec, 6, 3, key=0), model_state={})


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)")
def test_cuda_matches_numpy_and_stays_on_the_device():
    # cuBLAS sums in another order than MKL: float64 agrees to ~1e-14, so 1e-7 leaves a wide margin.
    for name in ("nesterov", "adam", "rmsprop+nesterov"):
        assert_matches_numpy(SPEC, lambda: make_optimizer(name, 0.01), device="gpu", l2=1e-3, rtol=1e-7)
    assert_matches_numpy(MLP(hidden=(10, 7), batchnorm=True), lambda: make_optimizer("momentum", 0.02),
                         device="gpu", rtol=1e-7)
    assert_matches_numpy(SPEC, lambda: make_optimizer("nesterov", exponential(0.05, 0.03)), device="gpu",
                         dtype="float32", rtol=1e-4, steps=20)
    engine = get_engine("torch", device="gpu", dtype="float32")
    spec = MLP(hidden=(16,), dropout_keep=(0.8, 0.5), batchnorm=True)
    trainer = engine.trainer(spec, make_optimizer("adam", 0.01))
    ts0 = trainer.init(init_params(spec, D, K, key=0), init_state(spec, D, K))
    Xd, yd = engine.asarray(X), engine.put_labels(Y)
    assert Xd.is_cuda and yd.is_cuda
    ts, losses = trainer.run(ts0, Xd, yd, np.arange(N), 16, 0, 6, 0, 0)
    again, losses2 = trainer.run(ts0, Xd, yd, np.arange(N), 16, 0, 6, 0, 0)
    np.testing.assert_array_equal(losses, losses2)
    leaves = list(ts.params.values()) + list(ts.model_state.values()) + flatten(ts.opt_state)[0]
    assert all(v.is_cuda for v in leaves)
    for k in ts.params:
        assert torch.equal(ts.params[k], again.params[k])
