"""descend.MLPRegressor: scikit-learn's own estimator checks, targets' units, multi-output, warm starts."""

from __future__ import annotations

import importlib.util
import pickle
import unittest

import numpy as np
import pytest

pytest.importorskip("sklearn")  # in the dev extra: runs in CI

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import descend  # noqa: E402
from descend.estimator import MLPClassifier, MLPRegressor, batch_layout  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# The defaults, and one configuration exercising the other code paths (another optimizer, a schedule,
# dropout, batch norm, early stopping on a held-out split).
ESTIMATORS = [
    MLPRegressor(),
    MLPRegressor(hidden=(16, 8), activation="tanh", optimizer="nesterov", lr=0.02, batch_size=32, epochs=60,
                 schedule="exponential:0.01", dropout_keep=(1.0, 0.9, 0.9), batchnorm=True, early_stopping=True,
                 threads=1),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check, monkeypatch):
    """The full suite, nothing skipped or marked expected-to-fail (the two self-skipping checks as for
    the classifier: SCIPY_ARRAY_API is set, and only the pandas half of the not-an-array check may skip)."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    try:
        check(estimator)
    except unittest.SkipTest as exc:
        if "pandas is not installed" not in str(exc) or importlib.util.find_spec("pandas") is not None:
            raise


def _sine(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n, 1))
    return X, np.sin(X[:, 0])


FAST = dict(hidden=(32,), lr=0.01, batch_size=32, epochs=100, random_state=0)


def test_exported_beside_the_classifier():
    assert descend.MLPRegressor is MLPRegressor
    assert "MLPRegressor" in dir(descend)
    assert isinstance(MLPRegressor(), descend.estimator._BaseMLP) and isinstance(MLPClassifier(),
                                                                                 descend.estimator._BaseMLP)


def test_learns_a_sine_and_score_is_r2():
    X, y = _sine()
    reg = MLPRegressor(**FAST).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (300,) and pred.dtype == np.float64
    assert reg.score(X, y) == pytest.approx(r2_score(y, pred)) and reg.score(X, y) > 0.9
    assert reg.n_outputs_ == 1 and reg.n_features_in_ == 1
    assert len(reg.loss_curve_) == reg.n_iter_ and reg.best_loss_ == min(reg.loss_curve_)
    assert reg.t_ == reg.n_iter_ * batch_layout(300, 32)[1]
    assert reg.params_["dense1.W"].shape == (32, 1)


def test_targets_are_standardized_inside_and_predictions_in_their_units():
    X, y = _sine()
    plain = MLPRegressor(**FAST).fit(X, y)
    scaled = MLPRegressor(**FAST).fit(X, y * 1000 + 5)
    np.testing.assert_allclose(scaled.target_mean_, [y.mean() * 1000 + 5])
    np.testing.assert_allclose(scaled.target_scale_, [y.std() * 1000])
    # the network sees the same standardized targets: the same weights, predictions scaled back
    np.testing.assert_allclose(scaled.params_["dense0.W"], plain.params_["dense0.W"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(scaled.predict(X), plain.predict(X) * 1000 + 5, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scaled.loss_curve_, plain.loss_curve_, rtol=1e-6)


def test_multi_output_shapes_and_r2():
    X, y = _sine()
    Y = np.column_stack([y, 100 * np.cos(X[:, 0])])
    reg = MLPRegressor(**FAST).fit(X, Y)
    assert reg.n_outputs_ == 2 and reg.predict(X).shape == (300, 2) and reg.params_["dense1.W"].shape == (32, 2)
    assert reg.score(X, Y) == pytest.approx(r2_score(Y, reg.predict(X))) and reg.score(X, Y) > 0.9
    column = MLPRegressor(**FAST).fit(X, y[:, None])
    assert column.predict(X).shape == (300, 1)  # a 2-D y stays 2-D
    with pytest.raises(ValueError, match="2 target columns.*n_outputs_=1"):
        column.partial_fit(X, Y)


def test_early_stopping_scores_r2_and_keeps_the_best_weights():
    X, y = _sine(n=400)
    reg = MLPRegressor(hidden=(32,), lr=0.01, batch_size=32, epochs=300, early_stopping=True,
                       validation_fraction=0.2, n_iter_no_change=4, random_state=1).fit(X, y)
    assert len(reg.validation_scores_) == reg.n_iter_ < 300 and reg.best_loss_ is None
    assert reg.best_validation_score_ == max(reg.validation_scores_) > 0.9
    # the weights kept are those of the best validation R²: recompute it on the same held-out rows
    n_valid = int(round(0.2 * 400))
    valid = np.random.default_rng([reg._seed, 0x7A11D]).permutation(400)[:n_valid]
    assert r2_score(y[valid], reg.predict(X[valid])) == pytest.approx(reg.best_validation_score_, abs=1e-9)


def test_warm_start_and_partial_fit_continue():
    X, y = _sine()
    once = MLPRegressor(hidden=(8,), epochs=6, random_state=0).fit(X, y)
    warm = MLPRegressor(hidden=(8,), epochs=3, random_state=0, warm_start=True).fit(X, y).fit(X, y)
    assert warm.n_iter_ == 6
    np.testing.assert_allclose(warm.loss_curve_, once.loss_curve_, rtol=1e-12)
    stream = MLPRegressor(hidden=(8,), random_state=0)
    for _ in range(6):
        stream.partial_fit(X, y)
    np.testing.assert_allclose(stream.predict(X), once.predict(X), rtol=1e-10)
    with pytest.warns(ConvergenceWarning, match="MLPRegressor: stopped after epochs=3"):
        MLPRegressor(hidden=(8,), epochs=3).fit(X, y)


def test_bad_options_raise_value_error_naming_the_option():
    X, y = _sine(n=40)
    for options, name in [({"optimizer": "adamax"}, "optimizer"), ({"lr": -1}, "lr"),
                          ({"activation": "identity"}, "activation"), ({"batch_size": 2.5}, "batch_size"),
                          ({"epochs": 0}, "epochs"), ({"tol": -1}, "tol"),
                          ({"n_iter_no_change": 0}, "n_iter_no_change"),
                          ({"validation_fraction": 1.5}, "validation_fraction"), ({"dtype": "int8"}, "dtype"),
                          ({"init": "xavier"}, "init")]:
        with pytest.raises(ValueError, match=f"{name}.*Received: {name}="):
            MLPRegressor(**options).fit(X, y)
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X)
    with pytest.raises(ValueError, match="[Ii]nput y contains NaN"):
        MLPRegressor().fit(X, np.where(np.arange(40) == 3, np.nan, y))


def test_init_draws_the_named_initialisation():
    X, y = _sine(n=40)
    fan_in, width = X.shape[1], 64
    spreads = {}
    for init in (None, "he", "glorot"):
        reg = MLPRegressor(hidden=(width,), init=init, epochs=1, batch_size=40, lr=1e-9, random_state=0).fit(X, y)
        spreads[init] = float(np.std(reg.params_["dense0.W"]))
    assert spreads[None] == spreads["he"]  # ReLU's default is He
    assert spreads["he"] == pytest.approx(np.sqrt(2 / fan_in), rel=0.25)
    assert spreads["glorot"] == pytest.approx(np.sqrt(2 / (fan_in + width)), rel=0.25)


def test_clone_pickle_and_pipeline():
    X, y = _sine()
    reg = MLPRegressor(**FAST).fit(X.astype(np.float32), y)
    assert reg.params_["dense0.W"].dtype == np.float32 and reg.predict(X).dtype == np.float64
    assert not hasattr(clone(reg), "params_") and clone(reg).get_params() == reg.get_params()
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    scores = cross_val_score(make_pipeline(StandardScaler(), MLPRegressor(**{**FAST, "epochs": 40})), X, 3 * y + 1,
                             cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
