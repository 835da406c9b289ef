"""descend.MLPClassifier: scikit-learn's own estimator checks, and the ecosystem around it."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import unittest

import numpy as np
import pytest

pytest.importorskip("sklearn")  # in the dev extra: runs in CI

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris, make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import descend  # noqa: E402
from descend.estimator import MLPClassifier, batch_layout  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Two configurations: the defaults, and one exercising every other code path
# (another optimizer, a schedule, dropout, batch norm, early stopping on a held-out split).
ESTIMATORS = [
    MLPClassifier(),
    MLPClassifier(hidden=(16, 8), activation="tanh", optimizer="nesterov", lr=0.05, batch_size=32, epochs=60,
                  schedule="exponential:0.01", dropout_keep=(1.0, 0.9, 0.9), batchnorm=True, early_stopping=True,
                  threads=1),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check, monkeypatch):
    """The full suite (55 checks per configuration): nothing skipped, nothing marked expected-to-fail.

    Two checks skip themselves on a bare environment; here is how each still runs:

    - ``check_array_api_input`` skips unless SCIPY_ARRAY_API is set.  It runs with
      NumPy inputs only (the one namespace descend claims), so the variable is set.
    - ``check_classifier_data_not_an_array`` first fits on array-likes that are
      not arrays, then on pandas DataFrames, and raises SkipTest at that second
      step when pandas is missing.  pandas is not a dependency of descend: without
      it the first half has run and passed, and the DataFrame half is what is not
      checked (it passes with pandas installed).
    """
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    try:
        check(estimator)
    except unittest.SkipTest as exc:
        if "pandas is not installed" not in str(exc) or importlib.util.find_spec("pandas") is not None:
            raise


def _blobs(n=240, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, random_state=seed, cluster_std=2.0)
    return X, y


def test_import_descend_stays_light():
    code = "import sys, descend; print('sklearn' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert descend.MLPClassifier is MLPClassifier


def test_pipeline_with_standard_scaler():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden=(20,), lr=0.01, random_state=0))
    pipe.fit(X, y)
    assert pipe.score(X, y) > 0.95
    assert pipe.predict_proba(X[:5]).shape == (5, 3)
    np.testing.assert_allclose(pipe.predict_proba(X).sum(axis=1), 1.0)


def test_cross_val_score():
    X, y = load_iris(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(hidden=(20,), lr=0.01, random_state=0))])
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85


def test_grid_search_over_lr_and_hidden():
    X, y = _blobs()
    grid = GridSearchCV(MLPClassifier(epochs=30, random_state=0),
                        {"lr": [1e-4, 1e-2], "hidden": [(4,), (32,)]}, cv=3)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"lr", "hidden"}
    assert grid.best_params_["lr"] == 1e-2  # 30 epochs at 1e-4 barely move
    assert grid.cv_results_["mean_test_score"].shape == (4,)
    assert isinstance(grid.best_estimator_, MLPClassifier) and grid.best_estimator_.n_iter_ >= 1


def test_string_labels_round_trip():
    X, y = _blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = MLPClassifier(hidden=(16,), lr=0.01, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(clf.classes_)
    assert clf.score(X, names) > 0.8
    # probabilities follow classes_
    np.testing.assert_array_equal(clf.classes_[clf.predict_proba(X).argmax(axis=1)], pred)
    # pickling in the user's own process (what joblib / GridSearchCV do)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), pred)


def test_fitted_attributes_and_convergence():
    X, y = _blobs()
    clf = MLPClassifier(hidden=(8,), random_state=0, epochs=500, tol=1e-3, n_iter_no_change=5).fit(X, y)
    assert clf.n_features_in_ == 4 and len(clf.loss_curve_) == clf.n_iter_ < 500
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.validation_scores_ is None
    assert clf.params_["dense0.W"].shape == (4, 8) and clf.params_["dense1.W"].shape == (8, 3)
    assert clf.t_ == clf.n_iter_ * batch_layout(240, 200)[1]
    with pytest.warns(ConvergenceWarning, match="epochs=3"):
        MLPClassifier(epochs=3).fit(X, y)


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = _blobs(n=400)
    clf = MLPClassifier(hidden=(16,), lr=0.01, early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=4, epochs=300, random_state=1).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_ < 300
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_warm_start_continues():
    X, y = _blobs()
    cold = MLPClassifier(hidden=(8,), epochs=5, random_state=0).fit(X, y)
    warm = MLPClassifier(hidden=(8,), epochs=5, random_state=0, warm_start=True).fit(X, y)
    np.testing.assert_array_equal(cold.params_["dense0.W"], warm.params_["dense0.W"])
    first = dict(warm.params_)
    warm.fit(X, y)
    assert warm.n_iter_ == 10 and len(warm.loss_curve_) == 10
    assert not np.array_equal(first["dense0.W"], warm.params_["dense0.W"])
    # ten epochs in two warm fits = ten epochs in one fit (optimizer state and batch order carried over)
    once = MLPClassifier(hidden=(8,), epochs=10, random_state=0).fit(X, y)
    np.testing.assert_allclose(warm.loss_curve_, once.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(warm.params_["dense0.W"], once.params_["dense0.W"], rtol=1e-12)
    # without warm_start a second fit starts over
    cold.fit(X, y)
    assert cold.n_iter_ == 5
    # warm start with other classes is refused
    with pytest.raises(ValueError, match="same classes"):
        warm.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="cannot change"):
        warm.set_params(hidden=(9,)).fit(X, y)


def test_partial_fit_is_one_epoch_with_optimizer_state():
    X, y = _blobs()
    clf = MLPClassifier(hidden=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(4):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    # four partial_fit calls = a four-epoch fit
    full = MLPClassifier(hidden=(8,), epochs=4, random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.loss_curve_, full.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(X), full.predict_proba(X), rtol=1e-10)
    # later calls may see a subset of the classes, never an unknown one
    clf.partial_fit(X[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="number of features|features"):
        clf.partial_fit(X[:, :2], y)


def test_partial_fit_streams_minibatches_to_a_good_model():
    X, y = _blobs(n=600)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden=(16,), lr=0.01, random_state=0)
    for epoch in range(5):
        for chunk in np.array_split(np.arange(len(y)), 6):
            clf.partial_fit(X[chunk], y[chunk], classes=np.unique(y))
    assert clf.n_iter_ == 30 and clf.score(X, y) > 0.85


def test_hyperparameters_reach_the_training():
    X, y = _blobs()
    base = dict(hidden=(8,), epochs=5, random_state=0)
    losses = {k: MLPClassifier(**base, **v).fit(X, y).loss_curve_[-1] for k, v in {
        "plain": {}, "l2": {"l2": 1.0}, "l1": {"l1": 0.1}}.items()}
    assert losses["l2"] > losses["plain"] and losses["l1"] > losses["plain"]
    bn = MLPClassifier(**base, batchnorm=True).fit(X, y)
    assert "bn0.gamma" in bn.params_ and "bn0.mean" in bn.model_state_
    logistic = MLPClassifier(hidden=(), epochs=5, random_state=0).fit(X, y)
    assert set(logistic.params_) == {"dense0.W", "dense0.b"}
    sgd = MLPClassifier(**base, optimizer="sgd", lr=0.1, batch_size=0).fit(X, y)
    assert sgd.t_ == 5  # full batch: one step per epoch
    plateau = MLPClassifier(**base, schedule="plateau:0.5:0").fit(X, y)
    assert plateau.n_iter_ == 5


def test_bad_options_raise_value_error_naming_the_option():
    X, y = _blobs(n=60)
    for options, name in [({"optimizer": "adamax"}, "optimizer"), ({"lr": -1}, "lr"),
                          ({"activation": "gelu"}, "activation"), ({"dropout_keep": (0.5,)}, "dropout_keep"),
                          ({"batch_size": 2.5}, "batch_size"), ({"schedule": "triangle"}, "schedule"),
                          ({"engine": "nope"}, "engine"), ({"validation_fraction": 1.5}, "validation_fraction")]:
        with pytest.raises(ValueError, match=name):
            MLPClassifier(**options).fit(X, y)
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    from scipy import sparse

    with pytest.raises(TypeError, match="[Ss]parse data was passed"):
        MLPClassifier().fit(sparse.csr_matrix(X), y)


def test_clone_and_float32_input():
    X, y = _blobs()
    clf = MLPClassifier(hidden=(8,), epochs=5, random_state=0).fit(X.astype(np.float32), y)
    assert clf.params_["dense0.W"].dtype == np.float32
    assert not hasattr(clone(clf), "params_")
    assert MLPClassifier(dtype="float64", epochs=2).fit(X.astype(np.float32), y).params_["dense0.W"].dtype == np.float64


def test_inside_scikit_learn_bagging():
    """scikit-learn's own bagging over descend networks: rows and feature subsets, like `descend ensemble`."""
    from sklearn.ensemble import BaggingClassifier

    X, y = _blobs()
    bag = BaggingClassifier(MLPClassifier(hidden=(8,), epochs=100, lr=0.02), n_estimators=3, max_samples=0.8,
                            max_features=0.75, random_state=0).fit(X, y)
    assert len(bag.estimators_) == 3 and bag.score(X, y) > 0.8


def test_divergence_is_one_clear_error_and_keeps_the_last_finite_weights():
    from descend.errors import DivergenceError

    X, y = _blobs()
    clf = MLPClassifier(hidden=(8,), optimizer="sgd", lr=1e6, epochs=50, random_state=0)
    with pytest.raises(DivergenceError, match="diverged.*smaller lr"):
        clf.fit(X * 1e3, y)
    assert len(clf.loss_curve_) == clf.n_iter_ and all(np.isfinite(clf.loss_curve_))
    assert all(np.all(np.isfinite(v)) for v in clf.params_.values())
    assert np.all(np.isfinite(clf.predict_proba(X)))


def test_the_estimator_trains_with_descends_fit_loop():
    """Same seed, same numbers as ``descend.train.fit`` with equal batches and one evaluation per epoch."""
    from sklearn.utils import check_random_state

    from descend.engines import get_engine
    from descend.train import TrainConfig, fit, fit_options
    from descend.train.setup import build_network

    X, y = _blobs(n=250)
    clf = MLPClassifier(hidden=(8,), optimizer="nesterov", lr=0.05, batch_size=64, epochs=4, batchnorm=True,
                        random_state=0).fit(X, y)
    seed = int(check_random_state(0).randint(np.iinfo(np.int32).max))
    cfg = TrainConfig(hidden=(8,), batchnorm=True, optimizer="nesterov", lr=0.05, batch_size=64, epochs=4,
                      schedule="constant", dtype="float64", seed=seed, early_stopping="none")
    spec, params, state = build_network(cfg, 4, 3)
    engine = get_engine("numpy", dtype="float64")
    result = fit(engine, spec, fit_options(cfg, equal_batches=True), engine.asarray(X), engine.put_labels(y),
                 params=params, model_state=state)
    assert result.steps == clf.t_ == 4 * 4 and result.batch_size == 62  # ceil(250 / 64) = 4 batches of 62
    assert clf.loss_curve_ == [row["train_cost"] for row in result.history]
    for k in result.params:
        np.testing.assert_array_equal(clf.params_[k], result.params[k])
    for k in result.model_state:
        np.testing.assert_array_equal(clf.model_state_[k], result.model_state[k])
