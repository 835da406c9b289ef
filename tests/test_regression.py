"""Regression end to end: CSV --target / NPZ float y, standardized targets, RMSE/MAE/R^2, model file, predict,
and the one-line errors of bad targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from descend.cli.main import main
from descend.data import load
from descend.train import TrainConfig, run_training
from descend.train.predict import load_trained, predict_file


def _csv(path, rows):
    path.write_text("a,b,c,y,z\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3))
    y = 50 + 10 * (X @ [1.0, 2.0, -1.0]) + 0.5
    return _csv(tmp_path / "r.csv", [(*x, t, 2 * t) for x, t in zip(X, y)]), X, y


def test_task_rule(table, tmp_path):
    path, X, y = table
    assert load(path, target=("y",)).targets == ("y",)
    two = load(path, target=("y", "z"))
    assert two.task == "regression" and two.train.y.shape[1] == 2 and two.n_features == 3
    np.savez(tmp_path / "f.npz", X=X, y=y)
    assert load(tmp_path / "f.npz").task == "regression"
    np.savez(tmp_path / "i.npz", X=X, y=(y > 50).astype(float))  # float y of integers: classes, as before
    assert load(tmp_path / "i.npz").task == "classification"
    assert load(tmp_path / "i.npz", task="regression").task == "regression"


def test_train_predict_and_model_file(table, tmp_path):
    path, X, y = table
    cfg = TrainConfig(dataset=str(path), target=("y",), hidden=(16,), optimizer="adam", lr=0.01, epochs=40,
                      batch_size=8, engine="numpy", schedule="constant", early_stopping="patience")
    res = run_training(cfg, out=tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["valid_r2"] > 0.8 and metrics["valid_rmse"] < 0.5 * y.std()
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"valid_rmse", "valid_mae", "valid_r2"} <= set(history) and "valid_error" not in history
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["task"] == "regression"
    model = load_trained(tmp_path / "run" / "model.safetensors")
    assert model.task == "regression" and model.targets == ("y",)
    # the standardization is stored and undone: predictions are in the targets' units
    np.testing.assert_allclose(model.target_scaler.mean, load(path, target=("y",)).train.y.mean(axis=0))
    assert res.metrics["valid_rmse"] == metrics["valid_rmse"]
    values = model.predict_values(np.column_stack([X, 2 * y]))  # z is a feature when y alone is the target
    assert values.shape == (80, 1) and abs(values.mean() - y.mean()) < 0.2 * y.std()
    out = predict_file(tmp_path / "run" / "model.safetensors", path, output=tmp_path / "p.csv")
    assert out.rmse == pytest.approx(float(np.sqrt(np.mean((values[:, 0] - y) ** 2))), rel=1e-5)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,y" and len(lines) == 81
    assert float(lines[1].split(",")[1]) == pytest.approx(values[0, 0], rel=1e-6)


def test_monitor_valid_rmse_and_early_stopping(table, tmp_path):
    path, _, _ = table
    cfg = TrainConfig(dataset=str(path), target=("y", "z"), hidden=(8,), optimizer="adam", lr=0.05, epochs=60,
                      batch_size=8, engine="numpy", schedule="constant", monitor="valid_rmse", patience=3)
    res = run_training(cfg, out=tmp_path / "run", progress=False)
    rmse = [row["valid_rmse"] for row in res.fit.history]
    assert res.fit.best_metric == pytest.approx(min(rmse))


def _cli(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("rows, args, message", [
    ([(1, 2, 3, 1.5, 1), (2, 3, 4, "nan", 1), (3, 4, 5, 2.5, 1)], ("--target", "y", "--task", "regression"),
     "line 3: target 'y' is NaN, not a finite number"),
    ([(1, 2, 3, 1.5, 1), (2, 3, 4, "cat", 1), (3, 4, 5, 2.5, 1)], ("--target", "y", "--task", "regression"),
     "line 3: target 'y' is 'cat', not a number"),
    ([(1, 2, 3, 1.5, 1), (2, 3, 4, 2.5, 1)], ("--target", "missing"), "no column 'missing' in header"),
])
def test_bad_targets_are_one_line_exit_2(tmp_path, capsys, rows, args, message):
    path = _csv(tmp_path / "bad.csv", rows)
    code, err = _cli(capsys, "train", str(path), *args, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x"))
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_text_labels_with_task_regression(tmp_path, capsys):
    np.savez(tmp_path / "t.npz", X=np.ones((6, 2)), y=np.array(list("abcabc")))
    code, err = _cli(capsys, "train", str(tmp_path / "t.npz"), "--task", "regression", "--quiet")
    assert code == 2 and len(err) == 1 and "text labels" in err[0]


def test_submission_with_a_regression_model_is_an_error(table, tmp_path, capsys):
    path, _, _ = table
    run_training(TrainConfig(dataset=str(path), target=("y",), hidden=(4,), epochs=1, engine="numpy"),
                 out=tmp_path / "run", progress=False)
    capsys.readouterr()
    code, err = _cli(capsys, "predict", str(tmp_path / "run" / "model.safetensors"), str(path), "--submission",
                     str(tmp_path / "s.csv"))
    assert code == 2 and len(err) == 1 and "regression model" in err[0]


def test_export_refuses_a_regression_ensemble_in_one_line(table, tmp_path, capsys):
    path, _, _ = table
    out = tmp_path / "ens"
    code, err = _cli(capsys, "ensemble", str(path), "--target", "y", "--members", "2", "--epochs", "1",
                     "--hidden", "4", "--engine", "numpy", "--workers", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    code, err = _cli(capsys, "export", str(out / "ensemble.safetensors"), "--output", str(tmp_path / "e.onnx"))
    assert code == 2 and len(err) == 1 and "classifiers only" in err[0]
    assert not (tmp_path / "e.onnx").exists()


def test_export_refuses_a_regression_model_in_one_line(table, tmp_path, capsys):
    path, _, _ = table
    run_training(TrainConfig(dataset=str(path), target=("y",), hidden=(4,), epochs=1, engine="numpy"),
                 out=tmp_path / "run", progress=False)
    capsys.readouterr()
    code, err = _cli(capsys, "export", str(tmp_path / "run" / "model.safetensors"), "--output", str(tmp_path / "m.onnx"))
    assert code == 2 and len(err) == 1 and "classifiers only" in err[0]
    assert not (tmp_path / "m.onnx").exists()
