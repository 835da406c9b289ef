"""Learning-rate schedules (DESIGN §3) and the reduce-on-plateau controller."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from descend.errors import ConfigError
from descend.optim import (
    ReduceOnPlateau,
    ScheduleSpec,
    apply_updates,
    constant,
    exponential,
    inverse_time,
    per_epoch,
    scale_by_learning_rate,
    sgd,
    step_decay,
    warmup_cosine,
)

TS = [0, 1, 2, 3, 5, 9, 10, 11, 19, 20, 99, 100, 1000]


def as_forms(t):
    """``t`` as a Python int, a NumPy integer, a 0-d int32 array and a 0-d float array."""
    return [t, np.int64(t), np.asarray(t, dtype=np.int32), np.asarray(float(t))]


@pytest.mark.parametrize("t", TS)
def test_schedules_match_their_formulas(t):
    for tt in as_forms(t):
        assert float(constant(0.3)(tt)) == pytest.approx(0.3, rel=1e-15)
        assert float(step_decay(0.3, 0.5, 10)(tt)) == pytest.approx(0.3 * 0.5 ** math.floor(t / 10), rel=1e-14)
        assert float(step_decay(0.2, 0.1, 3)(tt)) == pytest.approx(0.2 * 0.1 ** math.floor(t / 3), rel=1e-12)
        assert float(step_decay(0.2, 0.5, 2.5)(tt)) == pytest.approx(0.2 * 0.5 ** math.floor(t / 2.5), rel=1e-14)
        assert float(exponential(0.3, 0.05)(tt)) == pytest.approx(0.3 * math.exp(-0.05 * t), rel=1e-14)
        assert float(exponential(0.3, 0.0)(tt)) == pytest.approx(0.3, rel=1e-15)
        assert float(inverse_time(0.3, 0.01)(tt)) == pytest.approx(0.3 / (1 + 0.01 * t), rel=1e-14)


def test_literal_schedule_values():
    assert [float(step_decay(1.0, 0.5, 2)(t)) for t in range(7)] == [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert float(inverse_time(1.0, 1.0)(3)) == 0.25
    assert float(exponential(2.0, math.log(2))(3)) == pytest.approx(0.25, rel=1e-15)


def test_schedules_work_on_arrays_of_steps():
    t = np.arange(30)
    np.testing.assert_allclose(step_decay(0.3, 0.5, 10)(t), 0.3 * 0.5 ** (t // 10), rtol=1e-14)
    np.testing.assert_allclose(exponential(0.3, 0.1)(t), 0.3 * np.exp(-0.1 * t), rtol=1e-14)
    np.testing.assert_allclose(inverse_time(0.3, 0.1)(t), 0.3 / (1 + 0.1 * t), rtol=1e-14)
    np.testing.assert_allclose(constant(0.3)(t), np.full(30, 0.3), rtol=0)


def test_schedules_keep_float32():
    t = np.asarray(7.0, dtype=np.float32)
    for fn in (constant(0.3), step_decay(0.3, 0.5, 2), exponential(0.3, 0.1), inverse_time(0.3, 0.1)):
        assert np.asarray(fn(t)).dtype == np.float32


@pytest.mark.parametrize("steps_per_epoch", [1, 4, 7])
def test_per_epoch(steps_per_epoch):
    epoch_schedule = step_decay(1.0, 0.5, 2)
    fn = per_epoch(epoch_schedule, steps_per_epoch)
    for t in range(60):
        epoch = t // steps_per_epoch
        assert float(fn(t)) == 0.5 ** (epoch // 2), t
    fn = per_epoch(exponential(0.1, 0.2), steps_per_epoch)
    for t in range(60):
        assert float(fn(np.asarray(t, dtype=np.int32))) == pytest.approx(0.1 * math.exp(-0.2 * (t // steps_per_epoch)))


def test_schedule_inside_an_optimizer_counts_steps_from_zero():
    spe = 3
    opt = sgd(per_epoch(step_decay(0.8, 0.5, 1), spe))
    p = {"w": np.array([0.0])}
    g = {"w": np.array([1.0])}
    state = opt.init(p)
    steps = []
    for _ in range(9):
        u, state = opt.update(g, state, p)
        p = apply_updates(p, u)
        steps.append(-float(u["w"][0]))
    assert steps == pytest.approx([0.8] * 3 + [0.4] * 3 + [0.2] * 3, rel=1e-15)


# --- ScheduleSpec ------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, args", [
    ("constant", "constant", ()),
    ("", "constant", ()),
    (None, "constant", ()),
    ("step:0.5:10", "step", (0.5, 10.0)),
    ("step:1:3", "step", (1.0, 3.0)),
    ("exponential:0.05", "exponential", (0.05,)),
    ("exponential:0", "exponential", (0.0,)),
    ("inverse:0.01", "inverse", (0.01,)),
    ("plateau", "plateau", ()),
    ("plateau:0.5", "plateau", (0.5,)),
    ("plateau:0.5:3", "plateau", (0.5, 3.0)),
    ("plateau:0.1:0", "plateau", (0.1, 0.0)),
    ("cosine", "cosine", ()),
    ("cosine:5", "cosine", (5.0,)),
    ("cosine:0.5:1e-05", "cosine", (0.5, 1e-5)),
    ("cosine:0:0", "cosine", (0.0, 0.0)),
])
def test_schedule_spec_parses(text, kind, args):
    spec = ScheduleSpec.parse(text)
    assert (spec.kind, spec.args, spec.unit) == (kind, args, "epoch")
    assert ScheduleSpec.parse(str(spec)) == spec  # str round-trips
    assert ScheduleSpec.parse(text, unit="step").unit == "step"


def test_schedule_spec_str():
    assert str(ScheduleSpec.parse("step:0.5:10")) == "step:0.5:10"
    assert str(ScheduleSpec.parse("exponential:0.05")) == "exponential:0.05"
    assert str(ScheduleSpec.parse("plateau")) == "plateau"


def test_schedule_spec_build():
    spe = 5
    fn = ScheduleSpec.parse("step:0.5:10").build(0.2, spe)
    for t in (0, 49, 50, 99, 100, 149, 150):
        assert float(fn(t)) == pytest.approx(0.2 * 0.5 ** ((t // spe) // 10)), t
    fn = ScheduleSpec.parse("exponential:0.05", unit="step").build(0.2, spe)
    assert float(fn(7)) == pytest.approx(0.2 * math.exp(-0.35))
    fn = ScheduleSpec.parse("inverse:0.01").build(0.2, spe)
    assert float(fn(23)) == pytest.approx(0.2 / (1 + 0.01 * 4))
    assert ScheduleSpec.parse("constant").build(0.2, spe) == 0.2
    assert ScheduleSpec.parse("plateau").build(0.2, spe) == 0.2


def test_schedule_spec_plateau_controller():
    assert ScheduleSpec.parse("exponential:0.05").plateau() is None
    ctl = ScheduleSpec.parse("plateau").plateau()
    assert (ctl.factor, ctl.patience) == (0.5, 5)
    ctl = ScheduleSpec.parse("plateau:0.2:3").plateau()
    assert (ctl.factor, ctl.patience) == (0.2, 3)
    assert isinstance(ctl.patience, int)


@pytest.mark.parametrize("text", [
    "bogus", "cosines:1", "Cosine:1", "cosine:-1", "cosine:1:-0.001", "cosine:1:0.1:3", "cosine:x", "cosine:inf",
    "cosine:1:nan", "Step:0.5:10", "step", "step:0.5", "step:0.5:10:1", "step:abc:10", "step:0:10",
    "step:1.5:10", "step:-0.5:10", "step:0.5:0", "step:0.5:-2", "exponential", "exponential:-0.1",
    "exponential:1:2", "exponential:inf", "exponential:nan", "exponential:", "inverse", "inverse:x",
    "inverse:-1", "constant:1", "plateau:2", "plateau:0", "plateau:1", "plateau:0.5:1.5", "plateau:0.5:-1",
    "plateau:0.5:3:1", "plateau:0.5:inf", ":0.5",
])
def test_schedule_spec_rejects(text):
    with pytest.raises(ConfigError) as info:
        ScheduleSpec.parse(text)
    message = str(info.value)
    assert "`schedule`" in message
    assert message.endswith(f"Received: schedule={text!r}"), message
    assert "\n" not in message


def test_schedule_spec_rejects_unit():
    with pytest.raises(ConfigError, match=re.escape("Received: schedule_unit='minute'")):
        ScheduleSpec.parse("constant", unit="minute")


# --- cosine with linear warmup ------------------------------------------------------------


def optax_warmup_cosine(t, lr0, warmup, total, lr_min):
    """optax.warmup_cosine_decay_schedule(init_value=0, peak_value=lr0, warmup_steps, decay_steps=total,
    end_value=lr_min), written out from optax's source: ``join_schedules`` of ``linear_schedule(0, lr0, warmup)``
    and, from ``warmup`` on, ``cosine_decay_schedule(lr0, total - warmup, alpha=lr_min/lr0)`` at ``t - warmup``."""
    if t < warmup:
        return 0.0 + (lr0 - 0.0) * (t / warmup)
    count = min(t - warmup, total - warmup)
    alpha = lr_min / lr0
    cosine_decay = 0.5 * (1 + math.cos(math.pi * count / (total - warmup)))
    return lr0 * ((1 - alpha) * cosine_decay + alpha)


@pytest.mark.parametrize("lr0, warmup, total, lr_min", [(0.1, 10, 100, 0.0), (0.5, 3, 20, 0.01), (1.0, 0, 7, 0.2),
                                                         (0.02, 1, 2, 0.0), (0.3, 2.5, 12, 1e-4)])
def test_warmup_cosine_matches_optax(lr0, warmup, total, lr_min):
    fn = warmup_cosine(lr0, warmup, total, lr_min)
    for t in range(total + 5):
        want = optax_warmup_cosine(t, lr0, warmup, total, lr_min)
        for tt in as_forms(t):
            assert float(fn(tt)) == pytest.approx(want, rel=1e-12, abs=1e-15), (t, tt)


def test_warmup_cosine_edges():
    lr0, warmup, total, lr_min = 1.0, 4, 14, 0.01
    fn = warmup_cosine(lr0, warmup, total, lr_min)
    lr = [float(fn(t)) for t in range(20)]
    assert lr[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]  # t counts from 0: the first step has rate 0; the peak at t=W
    assert lr[9] == pytest.approx((lr0 + lr_min) / 2, rel=1e-15)  # halfway through the decay
    assert lr[14] == pytest.approx(lr_min, rel=1e-14)  # the end
    assert lr[15:] == [lr[14]] * 5  # held there
    assert all(a > b for a, b in zip(lr[4:14], lr[5:15]))  # strictly decreasing after the peak
    no_warmup = warmup_cosine(0.5, 0, 10)
    assert float(no_warmup(0)) == 0.5 and float(no_warmup(5)) == pytest.approx(0.25, rel=1e-15)
    assert float(no_warmup(10)) == pytest.approx(0.0, abs=1e-17)


def test_warmup_cosine_on_arrays_and_float32():
    t = np.arange(30.0)
    got = warmup_cosine(0.1, 5, 25, 0.001)(t)
    np.testing.assert_allclose(got, [optax_warmup_cosine(x, 0.1, 5, 25, 0.001) for x in range(30)], rtol=1e-12)
    assert np.asarray(warmup_cosine(0.1, 5, 25)(np.asarray(7.0, dtype=np.float32))).dtype == np.float32
    assert np.asarray(warmup_cosine(0.1, 5, 25)(np.asarray(2.0, dtype=np.float32))).dtype == np.float32


def test_warmup_cosine_inside_an_optimizer_starts_at_rate_zero():
    opt = sgd(warmup_cosine(0.8, 2, 6, 0.1))
    p = {"w": np.array([0.0])}
    state = opt.init(p)
    steps = []
    for _ in range(7):
        u, state = opt.update({"w": np.array([1.0])}, state, p)
        steps.append(-float(u["w"][0]))
    assert steps == pytest.approx([0.0, 0.4, 0.8, 0.1 + 0.7 * 0.5 * (1 + math.cos(math.pi / 4)), 0.45,
                                   0.1 + 0.7 * 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.1], rel=1e-14)


def test_schedule_spec_builds_cosine_in_steps():
    fn = ScheduleSpec.parse("cosine:10:0.001", unit="step").build(0.1, 7, total_steps=100)
    for t in (0, 5, 9, 10, 55, 99, 100, 120):
        assert float(fn(t)) == pytest.approx(optax_warmup_cosine(t, 0.1, 10, 100, 0.001), rel=1e-12), t
    fn = ScheduleSpec.parse("cosine", unit="step").build(0.1, 7, total_steps=50)  # no warmup, down to 0
    assert float(fn(0)) == 0.1 and float(fn(25)) == pytest.approx(0.05) and abs(float(fn(50))) < 1e-17


def test_schedule_spec_cosine_in_epochs_counts_warmup_and_total_in_epochs_but_moves_every_step():
    spe, epochs = 5, 10
    fn = ScheduleSpec.parse("cosine:2:0.01").build(0.5, spe, total_steps=spe * epochs)
    for t in range(spe * epochs + 3):
        assert float(fn(t)) == pytest.approx(optax_warmup_cosine(t, 0.5, 2 * spe, spe * epochs, 0.01),
                                             rel=1e-12, abs=1e-15), t
    assert float(fn(3)) == pytest.approx(0.5 * 3 / 10)  # within the first epoch the rate already rises
    half = ScheduleSpec.parse("cosine:0.5").build(0.5, 4, total_steps=40)  # half an epoch = 2 steps
    assert [float(half(t)) for t in range(3)] == [0.0, 0.25, 0.5]


def test_schedule_spec_total_steps_changes_nothing_else():
    for text in ("constant", "step:0.5:2", "exponential:0.3", "inverse:0.1", "plateau:0.5:2"):
        for unit in ("epoch", "step"):
            spec = ScheduleSpec.parse(text, unit)
            a, b = spec.build(0.2, 3), spec.build(0.2, 3, total_steps=30)
            if not callable(a):
                assert a == b == 0.2
                continue
            assert [float(a(t)) for t in range(40)] == [float(b(t)) for t in range(40)]


@pytest.mark.parametrize("text, unit, lr0, total, message", [
    ("cosine:5", "step", 0.1, None, "schedule 'cosine:5' needs the run's total number of steps"),
    ("cosine", "epoch", 0.1, None, "schedule 'cosine' needs the run's total number of steps"),
    ("cosine:100", "step", 0.1, 100,
     "`schedule` warmup must be shorter than the run: 100 steps >= 100 total steps. Received: schedule='cosine:100'"),
    ("cosine:3:0.001", "epoch", 0.1, 40, "`schedule` warmup must be shorter than the run: 3 epochs = 60 steps >= "
                                         "40 total steps. Received: schedule='cosine:3:0.001'"),
    ("cosine:1:0.5", "step", 0.1, 40,
     "`schedule` LR_MIN must be <= the learning rate 0.1. Received: schedule='cosine:1:0.5'"),
    ("cosine:1", "step", 0.1, 0, "`total_steps` must be >= 1. Received: total_steps=0"),
])
def test_schedule_spec_cosine_rejects(text, unit, lr0, total, message):
    with pytest.raises(ConfigError) as info:
        ScheduleSpec.parse(text, unit).build(lr0, 20, total_steps=total)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_warmup_cosine_rejects_a_warmup_as_long_as_the_run():
    message = "`warmup` must be in [0, total) with total=10. Received: warmup=10"
    with pytest.raises(ConfigError, match=re.escape(message)):
        warmup_cosine(0.1, 10, 10)


# --- ReduceOnPlateau ---------------------------------------------------------------------


def observe_all(ctl, metrics):
    return [ctl.observe(m) for m in metrics]


def test_plateau_patience_and_factor():
    ctl = ReduceOnPlateau(factor=0.5, patience=2, threshold=0.0)
    #          best  bad1  bad2  bad3->cut  bad1  bad2  bad3->cut  better  bad1
    metrics = [1.0, 1.0, 1.2, 1.1, 1.0, 1.0, 1.0, 0.5, 0.6]
    assert observe_all(ctl, metrics) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert ctl.history == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert ctl.best == 0.5


def test_plateau_patience_zero_cuts_on_every_bad_evaluation():
    ctl = ReduceOnPlateau(factor=0.1, patience=0, threshold=0.0)
    assert observe_all(ctl, [1.0, 0.9, 0.95, 0.95, 0.8]) == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_plateau_threshold_is_relative():
    ctl = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.1)
    # 0.95 is not 10% better than 1.0: a bad evaluation; 0.89 is.
    assert observe_all(ctl, [1.0, 0.95, 0.89]) == [1, 0.5, 0.5]
    assert ctl.best == 0.89


def test_plateau_cooldown():
    ctl = ReduceOnPlateau(factor=0.5, patience=1, threshold=0.0, cooldown=2)
    metrics = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    # cut at the 2nd bad; 2 evaluations of cooldown are ignored; then 2 more bad ones cut again.
    assert observe_all(ctl, metrics) == [1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_plateau_cooldown_counts_improving_evaluations():
    """An improving evaluation during the cooldown still uses up one evaluation of it."""
    ctl = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.0, cooldown=2)
    # 1.0 best; 2.0 bad -> cut, cooldown 2; 0.5 improves (cooldown 1 left); 0.7 (cooldown 0 left);
    # 0.7 bad -> cut.
    assert observe_all(ctl, [1.0, 2.0, 0.5, 0.7, 0.7]) == [1, 0.5, 0.5, 0.5, 0.25]


def test_plateau_min_scale():
    ctl = ReduceOnPlateau(factor=0.1, patience=0, threshold=0.0, min_scale=0.05)
    assert observe_all(ctl, [1.0, 1.0, 1.0, 1.0]) == pytest.approx([1, 0.1, 0.05, 0.05])


def test_plateau_accepts_0d_arrays_and_nan():
    ctl = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.0)
    assert ctl.observe(np.asarray(1.0)) == 1.0
    assert ctl.observe(float("nan")) == 0.5  # nan is never an improvement
    assert ctl.best == 1.0


def test_plateau_round_trip_resumes_identically():
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.85, 0.9, 0.9, 0.9, 0.9, 0.8, 0.81, 0.82, 0.83, 0.84]
    kwargs = dict(factor=0.3, patience=1, threshold=0.01, cooldown=1, min_scale=0.01)
    full = ReduceOnPlateau(**kwargs)
    expected = observe_all(full, metrics)
    first = ReduceOnPlateau(**kwargs)
    observe_all(first, metrics[:6])
    saved = json.loads(json.dumps(first.to_dict()))  # what a checkpoint stores
    resumed = ReduceOnPlateau.from_dict(saved)
    assert resumed.to_dict() == first.to_dict()
    assert first.history + observe_all(resumed, metrics[6:]) == expected
    assert resumed.to_dict() == full.to_dict()


def test_plateau_round_trip_of_a_fresh_controller():
    ctl = ReduceOnPlateau()
    d = json.loads(json.dumps(ctl.to_dict()))
    assert d["best"] == math.inf
    assert ReduceOnPlateau.from_dict(d).to_dict() == ctl.to_dict()


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 1.0}, "`factor` must be in (0, 1). Received: factor=1.0"),
    ({"factor": 0.0}, "`factor` must be in (0, 1). Received: factor=0.0"),
    ({"patience": -1}, "`patience` must be >= 0. Received: patience=-1"),
    ({"threshold": -0.1}, "`threshold` must be >= 0. Received: threshold=-0.1"),
    ({"cooldown": -1}, "`cooldown` must be >= 0. Received: cooldown=-1"),
])
def test_plateau_validation(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ReduceOnPlateau(**kwargs)


def test_plateau_multiplier_drives_the_optimizer():
    """The loop copies ``scale`` into the optimizer state (ScaleByLearningRateState.scale)."""
    opt = scale_by_learning_rate(0.1)
    p = {"w": np.array([1.0])}
    state = opt.init(p)
    ctl = ReduceOnPlateau(factor=0.5, patience=0, threshold=0.0)
    ctl.observe(1.0)
    ctl.observe(1.0)
    state = state._replace(scale=np.asarray(ctl.scale, dtype=np.float64))
    u, _ = opt.update({"w": np.array([2.0])}, state, p)
    assert u["w"][0] == pytest.approx(-0.1 * 0.5 * 2.0)
