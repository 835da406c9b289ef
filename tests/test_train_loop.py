"""The fit loop on small synthetic problems: batch modes, evaluation cadence,
early stopping, divergence, schedules with plateau, interrupt and resume."""

import numpy as np
import pytest

from descend.engines import get_engine
from descend.errors import DivergenceError
from descend.model import MLP, init_params, init_state
from descend.train import Callback, EarlyStopping, FitOptions, LambdaCallback, TrainConfig, fit, fit_options
from descend.train.loop import batch_plan, epoch_order


def _blobs(n=240, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    X = centers[y] + rng.standard_normal((n, d))
    return X.astype(np.float32), y


def _fit(cfg, checkpoint=None, resume=False, on_evaluation=None, seed=0):
    X, y = _blobs(seed=seed)
    engine = get_engine("numpy", dtype=cfg.dtype)
    spec = MLP(hidden=cfg.hidden, activation=cfg.activation)
    params = init_params(spec, X.shape[1], 3, key=cfg.seed, dtype=cfg.dtype)
    Xe = engine.asarray(X)
    return fit(engine, spec, fit_options(cfg), Xe[:180], y[:180], Xe[180:], y[180:], params=params, model_state={},
               checkpoint=checkpoint, resume=resume, 
               callbacks=[LambdaCallback(on_evaluation=on_evaluation)] if on_evaluation else [])


BASE = TrainConfig(dataset="synthetic", hidden=(8,), optimizer="momentum", lr=0.05, batch_size=20, epochs=6,
                   schedule="constant", early_stopping="none")


@pytest.mark.parametrize("batch_size,steps", [(0, 1), (1, 180), (20, 9), (50, 3)])
def test_batch_modes(batch_size, steps):
    cfg = BASE.replace(batch_size=batch_size, epochs=2)
    assert batch_plan(fit_options(cfg), 180)[1] == steps
    result = _fit(cfg)
    assert result.steps == 2 * steps
    assert [row["epoch"] for row in result.history] == [1.0, 2.0]


def test_training_learns_and_is_deterministic():
    a, b = _fit(BASE), _fit(BASE)
    assert a.history[-1]["valid_error"] < 0.2 < 0.9
    assert a.history[-1]["train_cost"] < a.history[0]["train_cost"]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_epoch_order_depends_on_seed_and_epoch_only():
    np.testing.assert_array_equal(epoch_order(3, 2, 50), epoch_order(3, 2, 50))
    assert not np.array_equal(epoch_order(3, 2, 50), epoch_order(3, 3, 50))
    assert sorted(epoch_order(1, 0, 50)) == list(range(50))


def test_eval_every_steps():
    result = _fit(BASE.replace(eval_every=4, epochs=2))  # 18 steps -> evaluations at 4, 8, 12, 16, 18
    assert [row["step"] for row in result.history] == [4, 8, 12, 16, 18]


def test_patience_rule_stops_and_restores_best():
    stopper = EarlyStopping("patience", patience=2)
    seq = [0.5, 0.4, 0.45, 0.41]
    assert [stopper.observe(m) for m in seq] == [(True, False), (True, False), (False, False), (False, True)]
    assert stopper.best == 0.4 and stopper.best_evaluation == 2


def test_geometric_rule_extends_horizon_on_significant_improvement():
    stopper = EarlyStopping("geometric", patience=2, patience_increase=2.0, improvement_threshold=0.995)
    assert stopper.observe(1.0) == (True, False)      # horizon max(2, 1*2) = 2
    assert stopper.observe(0.5) == (True, False)      # horizon max(2, 2*2) = 4
    assert stopper.observe(0.499) == (True, False)    # < best but not by 0.5%: horizon stays 4
    assert stopper.horizon == 4
    assert stopper.observe(0.6) == (False, True)      # 4 evaluations reached


def test_loop_returns_best_weights_with_early_stopping():
    cfg = BASE.replace(early_stopping="patience", patience=2, epochs=30, lr=0.5, optimizer="sgd")
    result = _fit(cfg)
    errors = [row["valid_error"] for row in result.history]
    assert result.best_step == result.history[int(np.argmin(errors))]["step"]
    if result.stopped_early:
        assert len(result.history) - 1 - int(np.argmin(errors)) == 2


def test_divergence_stops_with_a_clear_message():
    cfg = BASE.replace(optimizer="sgd", lr=1e12, hidden=(8,))
    with pytest.raises(DivergenceError, match=r"diverged.*at step \d+ \(epoch \d+\) with learning rate 1e\+12.*--lr"):
        _fit(cfg)


def test_plateau_schedule_reduces_lr():
    cfg = BASE.replace(schedule="plateau:0.5:0", epochs=12, lr=0.05, monitor="valid_cost")
    result = _fit(cfg)
    lrs = [row["lr"] for row in result.history]
    assert min(lrs) < lrs[0] and all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_exponential_schedule_is_per_epoch():
    cfg = BASE.replace(schedule="exponential:0.5", epochs=3)
    result = _fit(cfg)
    lrs = [row["lr"] for row in result.history]
    np.testing.assert_allclose(lrs, [0.05, 0.05 * np.exp(-0.5), 0.05 * np.exp(-1.0)], rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["nesterov", "adam", "rmsprop+nesterov"])
@pytest.mark.parametrize("schedule", ["constant", "plateau:0.5:1"])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, optimizer, schedule):
    cfg = BASE.replace(optimizer=optimizer, lr=0.01, schedule=schedule, early_stopping="patience", patience=3,
                       eval_every=5)
    full = _fit(cfg)

    evaluations = []

    def interrupt_after_three(row):
        evaluations.append(row)
        if len(evaluations) == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, checkpoint=ckpt, on_evaluation=interrupt_after_three)
    assert ckpt.exists()
    resumed = _fit(cfg, checkpoint=ckpt, resume=True)
    assert resumed.steps == full.steps
    assert [r["valid_error"] for r in resumed.history] == [r["valid_error"] for r in full.history]
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])
        np.testing.assert_array_equal(resumed.final_params[k], full.final_params[k])


# --- the best snapshot, callbacks, warm starts ------------------------------------------------------------


def _fit_bn(cfg, **kw):
    X, y = _blobs()
    engine = get_engine("numpy", dtype=cfg.dtype)
    spec = MLP(hidden=cfg.hidden, activation=cfg.activation, batchnorm=True)
    params = init_params(spec, X.shape[1], 3, key=cfg.seed, dtype=cfg.dtype)
    Xe = engine.asarray(X)
    return fit(engine, spec, fit_options(cfg), Xe[:180], y[:180], Xe[180:], y[180:], params=params,
               model_state=init_state(spec, X.shape[1], 3, dtype=cfg.dtype), **kw)


BN_EARLY = BASE.replace(batchnorm=True, early_stopping="patience", patience=3, epochs=40, lr=0.5, optimizer="sgd")


def test_early_stopping_returns_the_batchnorm_statistics_of_the_best_step(tmp_path):
    """The best snapshot is params AND model state: the running statistics are those of best_step, not of the
    last step (the same training stopped at best_step has exactly these weights and statistics)."""
    result = _fit_bn(BN_EARLY)
    assert result.stopped_early and result.best_step < result.steps
    assert result.best_step % result.steps_per_epoch == 0
    at_best = _fit_bn(BN_EARLY.replace(early_stopping="none", epochs=result.best_step // result.steps_per_epoch))
    assert at_best.steps == result.best_step
    for k in at_best.params:
        np.testing.assert_array_equal(result.params[k], at_best.params[k])
    assert set(result.model_state) == {"bn0.mean", "bn0.var"}
    for k in at_best.model_state:
        np.testing.assert_array_equal(result.model_state[k], at_best.model_state[k])
        assert not np.array_equal(result.final.model_state[k], at_best.model_state[k])  # the last step's differ


def test_resume_keeps_the_best_batchnorm_statistics(tmp_path):
    full = _fit_bn(BN_EARLY)
    best_row = [r["step"] for r in full.history].index(full.best_step)

    def interrupt_after_best(row, seen=[]):  # noqa: B006 - a counter local to this test
        seen.append(row)
        if len(seen) == best_row + 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _fit_bn(BN_EARLY, checkpoint=ckpt, callbacks=[LambdaCallback(on_evaluation=interrupt_after_best)])
    resumed = _fit_bn(BN_EARLY, checkpoint=ckpt, resume=True)
    assert resumed.best_step == full.best_step
    for k in full.model_state:
        np.testing.assert_array_equal(resumed.model_state[k], full.model_state[k])
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])


def test_callbacks_see_the_start_every_batch_order_and_every_row_and_can_stop():
    events = []

    class Recorder(Callback):
        def on_train_begin(self, params, model_state):
            events.append(("begin", params["dense0.W"].copy()))

        def on_epoch_order(self, epoch, order):
            events.append(("order", epoch, order.copy()))

        def on_evaluation(self, row):
            events.append(("row", row["step"]))
            return row["step"] >= 4 * 9  # stop after the fourth epoch

        def on_train_end(self, result):
            events.append(("end", result.steps))

    X, y = _blobs()
    start = init_params(MLP(hidden=(8,)), X.shape[1], 3, key=BASE.seed)
    result = fit(get_engine("numpy"), MLP(hidden=(8,)), fit_options(BASE), X[:180], y[:180], X[180:], y[180:],
                 params=start, model_state={}, callbacks=[Recorder()])
    assert events[0][0] == "begin"
    np.testing.assert_array_equal(events[0][1], start["dense0.W"])
    orders = [e for e in events if e[0] == "order"]
    assert [e[1] for e in orders] == [0, 1, 2, 3]
    for epoch, order in ((e[1], e[2]) for e in orders):
        np.testing.assert_array_equal(order, epoch_order(BASE.seed, epoch, 180))
    assert [e[1] for e in events if e[0] == "row"] == [9, 18, 27, 36]
    assert events[-1] == ("end", 36)
    assert result.stopped_by_callback and result.stopped_early and result.steps == 36 < 6 * 9


def test_warm_start_continues_exactly_where_a_longer_fit_would_be():
    """Two fits of 3 epochs, the second from the first's final state = one fit of 6 epochs."""
    X, y = _blobs()
    engine, spec = get_engine("numpy"), MLP(hidden=(8,))
    cfg = BASE.replace(optimizer="adam", lr=0.01, schedule="exponential:0.3", early_stopping="none")
    start = init_params(spec, X.shape[1], 3, key=0)
    once = fit(engine, spec, fit_options(cfg), X[:180], y[:180], X[180:], y[180:], params=start, model_state={})
    first = fit(engine, spec, fit_options(cfg, epochs=3), X[:180], y[:180], X[180:], y[180:], params=start,
                model_state={})
    assert (first.final.step, first.final.epoch) == (27, 3)
    second = fit(engine, spec, fit_options(cfg, epochs=3), X[:180], y[:180], X[180:], y[180:], start=first.final)
    assert (second.final.step, second.final.epoch) == (54, 6)
    assert [r["step"] for r in second.history] == [36, 45, 54]
    assert [r["train_cost"] for r in first.history + second.history] == [r["train_cost"] for r in once.history]
    for k in once.params:
        np.testing.assert_array_equal(second.params[k], once.params[k])


def test_divergence_carries_the_last_finite_state():
    cfg = BASE.replace(optimizer="sgd", lr=1e12)
    with pytest.raises(DivergenceError) as info:
        _fit(cfg)
    result = info.value.result
    assert not np.isfinite(info.value.loss) and result.final.step <= info.value.step
    assert all(np.all(np.isfinite(v)) for v in result.final.params.values())


def test_fit_options_from_a_config():
    options = fit_options(BASE.replace(early_stopping="geometric", patience=4, seed=7))
    assert isinstance(options, FitOptions) and options.restore_best
    assert (options.early_stopping, options.patience, options.seed, options.batch_size) == ("geometric", 4, 7, 20)
    assert not fit_options(BASE).restore_best
    assert batch_plan(fit_options(BASE, batch_size=50, equal_batches=True), 180) == (45, 4)


def test_the_saved_model_holds_the_batchnorm_statistics_of_the_best_step(tmp_path):
    """descend train's model file: with early stopping, the weights and running statistics of best_step."""
    from descend.io.modelfile import load_model
    from descend.train import run_training

    X, y = _blobs(n=300)
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    cfg = BN_EARLY.replace(dataset=str(path), validation=60, normalize="none", engine="numpy")
    run = run_training(cfg, out=tmp_path / "run", progress=False)
    assert run.fit.stopped_early and run.fit.best_step < run.fit.steps
    epochs = run.fit.best_step // run.fit.steps_per_epoch
    at_best = run_training(cfg.replace(early_stopping="none", epochs=epochs), out=tmp_path / "at-best",
                           progress=False)
    saved = load_model(tmp_path / "run" / "model.safetensors")
    reference = load_model(at_best.run_dir / "model.safetensors")
    assert set(saved.state) == {"bn0.mean", "bn0.var"}
    for k in reference.state:
        np.testing.assert_array_equal(saved.state[k], reference.state[k])
    for k in reference.params:
        np.testing.assert_array_equal(saved.params[k], reference.params[k])


def test_cosine_schedule_spans_the_whole_fit():
    """The fit tells a cosine schedule its total steps: warmup, then decay to LR_MIN at the run's end."""
    from descend.optim.schedules import warmup_cosine

    result = _fit(BASE.replace(schedule="cosine:1:0.001", epochs=4))  # warmup 1 epoch (9 steps) of 36
    expected = warmup_cosine(0.05, 9, 36, 0.001)
    assert [row["lr"] for row in result.history] == pytest.approx(
        [float(expected(np.float64(step - 1))) for step in (9, 18, 27, 36)], rel=1e-12)
    assert result.history[-1]["lr"] < 0.0012


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad+momentum"])
def test_every_optimizer_name_trains(optimizer):
    result = _fit(BASE.replace(optimizer=optimizer, lr=0.01, epochs=2))
    assert result.history[-1]["train_cost"] < result.history[0]["train_cost"] and result.steps == 18
