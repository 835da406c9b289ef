"""The overfitting demonstration (``descend compare --preset overfit``) and compare on regression data: the
built-in ten points, the ``init`` and ``sampling`` knobs, runs without validation rows, fitted curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from descend.cli.main import main
from descend.data import load
from descend.errors import ConfigError
from descend.experiments.compare import run_compare
from descend.experiments.compare.build import build_study
from descend.model.layers import Activation, BatchNorm, Dense, Dropout
from descend.train import TrainConfig
from descend.train.loop import FitOptions, batch_order, batch_plan, epoch_order, fit_options
from descend.train.setup import build_network

POINTS_Y = [0.9819, 0.7973, 1.9737, 0.1838, 1.3180, -0.8361, -0.6591, -2.4701, -2.8122, -6.2512]


def _quiet(_line):
    pass


def _preset(seeds=1, **base):
    study = build_study(preset="overfit", seeds=seeds, base=base)
    return study, {run.label: run.config for run in study.runs}


# --- the preset as specified -------------------------------------------------------------------------------


def test_builtin_points():
    ds = load("overfit-points")
    assert ds.task == "regression" and ds.targets == ("y",) and ds.validation is None and ds.test is None
    np.testing.assert_allclose(ds.train.X[:, 0], np.linspace(-4.5, 4.5, 10))
    np.testing.assert_allclose(ds.train.y[:, 0], POINTS_Y)
    held = load("overfit-points", validation=2, seed=0)
    assert len(held.train) == 8 and len(held.validation) == 2


def test_preset_builds_the_lecture_network():
    study, configs = _preset()
    assert study.dataset == "overfit-points" and list(configs) == ["plain", "dropout 0.2", "batch norm"]
    for label, cfg in configs.items():
        assert (cfg.hidden, cfg.activation, cfg.init, cfg.optimizer, cfg.lr, cfg.schedule) == \
            ((30, 100, 100, 30), "sigmoid", "normal", "adam", 1e-3, "constant")
        assert (cfg.batch_size, cfg.sampling, cfg.validation, cfg.early_stopping) == (50, "replacement", 0, "none")
        batch, per_epoch = batch_plan(fit_options(cfg), 10)
        assert (batch, per_epoch * cfg.epochs) == (50, 10_000)  # 10,000 steps of 50 rows drawn from 10
        spec, params, _ = build_network(cfg, 1, 1, task="regression")
        assert spec.task == "regression"  # linear output, mean squared error
        dense = [layer for layer in spec.layers if isinstance(layer, Dense)]
        assert [d.units for d in dense] == [30, 100, 100, 30, None] and {d.init_name for d in dense} == {"normal"}
        assert [layer.name for layer in spec.layers if isinstance(layer, Activation)] == ["sigmoid"] * 4
        kinds = [type(layer).__name__ for layer in spec.layers]
        if label == "plain":
            assert kinds == ["Dense", "Activation"] * 4 + ["Dense"]
        elif label == "dropout 0.2":  # keep 0.8 after every hidden layer, nothing on the input
            assert kinds == ["Dropout", "Dense", "Activation"] * 4 + ["Dropout", "Dense"]
            assert [d.keep for d in spec.layers if isinstance(d, Dropout)] == [1.0, 0.8, 0.8, 0.8, 0.8]
        else:  # batch norm between each hidden layer's product and its activation, in place of its bias
            assert kinds == ["Dense", "BatchNorm", "Activation"] * 4 + ["Dense"]
            assert [d.bias for d in dense] == [False] * 4 + [True]
        big = params["dense2.W"]  # 100 x 100 values from N(0, 0.1^2); biases too
        assert big.shape == (100, 100) and abs(big.std() - 0.1) < 0.005 and abs(big.mean()) < 0.005
        if label != "batch norm":
            assert abs(params["dense2.b"].std() - 0.1) < 0.04 and np.all(params["dense2.b"] != 0)
    plain = build_network(configs["plain"], 1, 1, task="regression")[1]
    norm = build_network(configs["batch norm"], 1, 1, task="regression")[1]
    for name in ("dense0.W", "dense3.W", "dense4.W"):  # the same start with and without batch norm
        np.testing.assert_array_equal(plain[name], norm[name])


def test_sampling_with_replacement_and_the_default_order():
    shuffle = FitOptions(batch_size=3, seed=4)
    np.testing.assert_array_equal(batch_order(shuffle, 2, 10), epoch_order(4, 2, 10))  # the default: unchanged
    assert batch_plan(shuffle, 10) == (3, 3)
    drawn = FitOptions(batch_size=50, seed=4, sampling="replacement")
    order = batch_order(drawn, 2, 10)
    assert order.shape == (50,) and order.min() >= 0 and order.max() < 10 and len(np.unique(order)) == 10
    np.testing.assert_array_equal(order, batch_order(drawn, 2, 10))  # a pure function of (seed, epoch)
    assert not np.array_equal(order, batch_order(drawn, 3, 10))
    assert batch_plan(FitOptions(batch_size=4, sampling="replacement"), 10) == (4, 2)


@pytest.mark.parametrize("changes, message", [
    ({"sampling": "sometimes"}, "`sampling` must be one of ('shuffle', 'replacement'). Received: sampling='sometimes'"),
    ({"init": "uniform"}, "`init` must be one of ('he', 'glorot', 'normal')"),
])
def test_bad_knobs_are_config_errors(changes, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_init_reaches_layer_text_networks_too():
    cfg = TrainConfig(layers="dense:8,dense:4", init="normal", activation="sigmoid")
    spec, params, _ = build_network(cfg, 3, 1, task="regression")
    assert {layer.init_name for layer in spec.layers if isinstance(layer, Dense)} == {"normal"}
    assert np.all(params["dense0.b"] != 0)


# --- training --------------------------------------------------------------------------------------------


def test_plain_overfits_far_below_dropout(tmp_path):
    """The full 10,000 steps on the default engine: the plain network passes through the ten points, dropout
    cannot."""
    study, _ = _preset(threads=1)
    study = study.__class__(**{**study.__dict__, "runs": study.runs[:2]})
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    plain, dropout = (result.records[(i, 0)]["metrics"]["final_train_mse"] for i in (0, 1))
    assert plain < 0.01 and dropout > 0.1 and dropout > 20 * plain


def _only(study, *indices):
    return study.__class__(**{**study.__dict__, "runs": tuple(study.runs[i] for i in indices)})


def test_numpy_and_default_engine_agree_on_the_preset(tmp_path):
    """The NumPy reference and the default engine take the same batches drawn with replacement and train
    alike: the plain network to float32 rounding over 60 steps; batch norm in float64 over 20 (Adam turns the
    rounding of near-zero gradients into whole steps there, so float32 trajectories part within a few; dropout
    masks are each engine's own)."""
    runs = {}
    for engine in ("numpy", "jax"):
        study, _ = _preset(engine=engine, epochs=60, eval_every=20, threads=1)
        runs[engine, "plain"] = run_compare(_only(study, 0, 1), tmp_path / engine, workers=1, log=_quiet).records
        study, _ = _preset(engine=engine, epochs=20, eval_every=10, threads=1, dtype="float64")
        runs[engine, "bn"] = run_compare(_only(study, 2), tmp_path / f"{engine}-bn", workers=1, log=_quiet).records
    plain, dropout = runs["numpy", "plain"][(0, 0)], runs["numpy", "plain"][(1, 0)]
    orders = plain["fingerprint"]["batch_orders"]
    assert len(orders) == 60 and orders == dropout["fingerprint"]["batch_orders"]
    assert plain["fingerprint"] == runs["jax", "plain"][(0, 0)]["fingerprint"]

    def column(record, key):
        return np.array([row[key] for row in record["history"][1:]], float)

    for key in ("train_mse", "train_cost"):
        np.testing.assert_allclose(column(plain, key), column(runs["jax", "plain"][(0, 0)], key), rtol=1e-5)
        np.testing.assert_allclose(column(runs["numpy", "bn"][(0, 0)], key), column(runs["jax", "bn"][(0, 0)], key),
                                   rtol=1e-6)


def test_report_holds_every_seed_fitted_curve_and_the_loss_curves(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", "--preset", "overfit", "--seeds", "2", "--epochs", "40", "--eval-every", "20",
                 "--engine", "numpy", "--threads", "1", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| plain | 2/2 |" in printed and "final train RMSE" in printed and "no validation rows" in printed
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    assert len(records) == 6 and {(r["label"], r["seed"]) for r in records} == {
        (label, seed) for label in ("plain", "dropout 0.2", "batch norm") for seed in (0, 1)}
    for r in records:
        curve = r["fitted_curve"]
        assert len(curve["x"]) == 200 and curve["x"][0] == -4.5 and curve["x"][-1] == 4.5
        np.testing.assert_allclose(curve["points_y"], POINTS_Y)
        assert np.all(np.isfinite(curve["y"])) and np.std(curve["y"]) > 0
        rows = r["history"]
        assert [row["step"] for row in rows] == [0, 20, 40] and all(row["train_mse"] >= 0 for row in rows)
        assert r["metric"] == "train_rmse" and r["metrics"]["final_train_mse"] == pytest.approx(
            r["metrics"]["final_train_rmse"] ** 2)
    # the curve is in y's units: the prediction at the points gives the recorded training MSE
    r = records[0]
    xs, ys = np.asarray(r["fitted_curve"]["x"]), np.asarray(r["fitted_curve"]["y"])
    at_points = np.interp(np.linspace(-4.5, 4.5, 10), xs, ys)
    assert np.mean((at_points - POINTS_Y) ** 2) == pytest.approx(r["metrics"]["final_train_mse"], rel=0.05)
    html = (out / "report.html").read_text()
    for png in ("fits.png", "curves-step.png", "curves-epoch.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("data:image/png;base64,") == 4  # the fitted curves and the three loss-curve pictures
    assert "fitted curves: each configuration" in html and "seed 1" in html
    runs_csv = (out / "runs.csv").read_text().splitlines()
    assert runs_csv[0].split(",")[8:11] == ["final_train_rmse", "final_train_mse", "best_train_rmse"]
    assert len(runs_csv) == 7


def test_compare_on_a_small_regression_csv(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 2))
    y = 3 * X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(60) + 100
    path = tmp_path / "r.csv"
    path.write_text("a,b,y\n" + "".join(f"{a},{b},{t}\n" for (a, b), t in zip(X, y)))
    out = tmp_path / "c"
    assert main(["compare", str(path), "--target", "y", "--run", "adam lr=0.01", "--run", "sgd lr=1e-4",
                 "--seeds", "1", "--epochs", "30", "--batch-size", "10", "--hidden", "8", "--engine", "numpy",
                 "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "final valid RMSE" in printed and "final valid MSE" in printed
    records = {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json"))}
    adam, sgd = records["adam lr=0.01"]["metrics"], records["sgd lr=0.0001"]["metrics"]
    assert records["adam lr=0.01"]["metric"] == "valid_rmse" and "fitted_curve" not in records["adam lr=0.01"]
    # in y's units (the targets' spread is about 3.2): adam fits, the tiny SGD step barely moves
    assert adam["final_valid_rmse"] < 1.0 < sgd["final_valid_rmse"]
    assert adam["final_valid_mse"] == pytest.approx(adam["final_valid_rmse"] ** 2)
    assert "valid_mse" in records["adam lr=0.01"]["history"][-1]
    assert "ends ahead of" not in printed and "sgd lr=0.0001 ends behind adam lr=0.01" in printed


@pytest.mark.parametrize("argv, message", [
    (["--run", "adam sampling=sometimes"], "`sampling` must be one of ('shuffle', 'replacement'). "
                                           "Received: sampling='sometimes'"),
    (["--run", "adam init=uniform"], "`init` must be one of ('he', 'glorot', 'normal')"),
    (["--run", "adam early_stopping=patience"], "`early_stopping` chooses on validation rows"),
    (["--task", "classification"], "`task` must be 'regression' for dataset 'overfit-points' (one target, y). "
                                   "Received: task='classification'"),
    (["--target", "z"], "`target` must be y for dataset 'overfit-points'. Received: target='z'"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    code = main(["compare", "--preset", "overfit", "--seeds", "1", "--epochs", "2", "--engine", "numpy",
                 "--workers", "1", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert not out.exists()  # the data is loaded before anything is written
    assert err.startswith("descend: ") and message in err and "\n" not in err


def test_a_run_stored_before_the_new_options_is_not_redone(tmp_path):
    """A result.json written before ``init`` and ``sampling`` existed counts as finished on resume."""
    study = build_study("overfit-points", runs=("adam lr=0.01",), seeds=1,
                        base={"epochs": 3, "hidden": (4,), "engine": "numpy", "validation": 0.0})
    out = tmp_path / "c"
    first = run_compare(study, out, workers=1, log=_quiet)
    path = next((out / "runs").glob("*/result.json"))
    record = json.loads(path.read_text())
    assert record["config"]["init"] is None and record["config"]["sampling"] == "shuffle"
    record["config"] = {k: v for k, v in record["config"].items() if k not in ("init", "sampling")}
    path.write_text(json.dumps(record))
    assert first.skipped == 0 and run_compare(study, out, workers=1, log=_quiet).skipped == 1
    record["config"]["lr"] = 0.02  # a different configuration is redone
    path.write_text(json.dumps(record))
    assert run_compare(study, out, workers=1, log=_quiet).skipped == 0


def test_train_takes_init_and_sampling_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "overfit-points", "--layers", "dense:8", "--init", "normal", "--sampling", "replacement",
                 "--batch-size", "32", "--epochs", "2", "--engine", "numpy", "--validation", "0", "--quiet",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["init"] == "normal" and config["sampling"] == "replacement"
    steps = [line.split(",")[1] for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2"]  # an epoch of 32 rows drawn from 10 is one step


@pytest.mark.parametrize("argv, message", [
    (["--init", "uniform"], "--init: invalid choice: 'uniform'"),
    (["--sampling", "sometimes"], "--sampling: invalid choice: 'sometimes'"),
])
def test_train_rejects_an_unknown_init_or_sampling_in_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as info:
        main(["train", "overfit-points", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and message in err and not out.exists()
