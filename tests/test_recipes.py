"""Recipes, class oversampling and Monte-Carlo dropout prediction."""

import numpy as np
import pytest

from descend.backend import numpy_ops
from descend.cli.main import build_parser
from descend.cli.train import build_config
from descend.errors import ConfigError
from descend.model import MLP, init_params, predict_logits
from descend.train.predict import mc_dropout_proba, softmax
from descend.train.recipes import RECIPES, recipe_values
from descend.train.run import oversample


def _config(*argv):
    args = build_parser().parse_args(["train", "mnist", *argv])
    args.argv = ["train", "mnist", *argv]
    return build_config(args)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_config(name):
    cfg = _config("--recipe", name)
    assert cfg.recipe == name
    for key, value in recipe_values(name).items():
        assert getattr(cfg, key) == value


def test_explicit_options_override_the_recipe():
    cfg = _config("--recipe", "dropout", "--epochs", "3", "--lr=0.01")
    assert (cfg.epochs, cfg.lr) == (3, 0.01)
    assert cfg.hidden == (1024, 1024) and cfg.max_norm == 3.0
    # The recipe's value wins over a default that was not typed, even when equal to the default.
    assert _config("--recipe", "dropout").momentum == 0.95


def test_unknown_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="`recipe` must be one of"):
        recipe_values("resnet")


def test_dropout_keep_must_match_the_layers():
    with pytest.raises(ConfigError, match="`dropout_keep` must be 3 keep probabilities"):
        _config("--hidden", "100,50", "--dropout-keep", "0.8,0.5")


def test_oversample_lifts_small_classes_to_the_median():
    y = np.array([0] * 50 + [1] * 40 + [2] * 7 + [3] * 30 + [4] * 3)
    rows = oversample(y, seed=0)
    np.testing.assert_array_equal(rows[:len(y)], np.arange(len(y)))  # every original row, once, first
    counts = np.bincount(y[rows])
    median = int(np.median(np.bincount(y)))
    assert list(counts) == [50, 40, median, 30, median]
    np.testing.assert_array_equal(rows, oversample(y, seed=0))
    assert not np.array_equal(rows, oversample(y, seed=1))


def test_mc_dropout_averages_stochastic_passes():
    spec = MLP(hidden=(32,), dropout_keep=(0.8, 0.5))
    params = init_params(spec, 10, 3, key=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((50, 10))
    proba = mc_dropout_proba(spec, params, {}, x, samples=200, seed=1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba, mc_dropout_proba(spec, params, {}, x, samples=200, seed=1))
    single = mc_dropout_proba(spec, params, {}, x, samples=1, seed=1)
    deterministic = softmax(predict_logits(numpy_ops, spec, params, {}, x))
    assert not np.allclose(single, deterministic)
    # Averaging many passes lands near the weight-scaling rule, much nearer than one pass.
    assert np.abs(proba - deterministic).mean() < 0.5 * np.abs(single - deterministic).mean()
