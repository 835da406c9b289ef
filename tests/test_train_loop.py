"""The fit loop on small synthetic problems: batch modes, evaluation cadence,
early stopping, divergence, schedules with plateau, interrupt and resume."""

import numpy as np
import pytest

from descend.engines import get_engine
from descend.errors import DivergenceError
from descend.model import MLP, init_params
from descend.train import EarlyStopping, TrainConfig, fit
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
    return fit(engine, spec, cfg, Xe[:180], y[:180], Xe[180:], y[180:], params=params, model_state={},
               checkpoint=checkpoint, resume=resume, on_evaluation=on_evaluation)


BASE = TrainConfig(dataset="synthetic", hidden=(8,), optimizer="momentum", lr=0.05, batch_size=20, epochs=6,
                   schedule="constant", early_stopping="none")


@pytest.mark.parametrize("batch_size,steps", [(0, 1), (1, 180), (20, 9), (50, 3)])
def test_batch_modes(batch_size, steps):
    cfg = BASE.replace(batch_size=batch_size, epochs=2)
    assert batch_plan(cfg, 180)[1] == steps
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
