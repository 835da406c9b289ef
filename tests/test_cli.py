"""The command line end to end, in subprocesses, as a user runs it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ctrl_c_as_in_a_terminal
from descend.io.modelfile import load_checkpoint, load_model
from descend.reports.submission import read_submission

ROOT = Path(__file__).resolve().parents[1]


def descend(*args, timeout=300, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "descend", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("descend:") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _digits_csv(path, n, seed, labeled=True):
    """A Kaggle-layout CSV of separable fake digits (a bright band per class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.integers(0, 40, (n, 784))
    for i, label in enumerate(y):
        X[i, label * 78:(label + 1) * 78] += 200
    header = (["label"] if labeled else []) + [f"pixel{j}" for j in range(784)]
    rows = np.column_stack([y, X]) if labeled else X
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    return y


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    d = tmp_path_factory.mktemp("kaggle")
    _digits_csv(d / "train.csv", 600, 0)
    labels = _digits_csv(d / "test.csv", 50, 1, labeled=False)
    return d, labels


def test_train_writes_a_complete_run_directory_and_predict_round_trips(kaggle, tmp_path):
    d, test_labels = kaggle
    out = tmp_path / "run"
    proc = descend("train", d / "train.csv", "--hidden", "32", "--epochs", "3", "--engine", "numpy",
                   "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "history.csv", "model.safetensors", "cost.png", "error.png", "report.html"):
        assert (out / name).is_file(), name
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    model = load_model(out / "model.safetensors")
    assert model.metadata["classes"] == [str(i) for i in range(10)]
    assert model.metadata["spec"]["hidden"] == [32]

    sub = tmp_path / "submission.csv"
    proc = descend("predict", out / "model.safetensors", d / "test.csv", "--submission", sub)
    assert proc.returncode == 0, proc.stderr
    ids, labels = read_submission(sub)
    assert list(ids) == list(range(1, 51))
    assert np.mean(labels == test_labels) > 0.9  # the bands make this easy
    assert sub.read_text().splitlines()[0] == "ImageId,Label"

    # Labelled input: predict reports the error against the file's labels.
    proc = descend("predict", out / "model.safetensors", d / "train.csv")
    assert proc.returncode == 0 and "error" in proc.stderr


def test_predict_rejects_rows_of_the_wrong_width(kaggle, tmp_path):
    d, _ = kaggle
    out = tmp_path / "run"
    assert descend("train", d / "train.csv", "--hidden", "8", "--epochs", "1", "--engine", "numpy",
                   "--out", out, "--quiet").returncode == 0
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("label,a,b\n1,2,3\n0,1,1\n")
    _assert_one_line_error(descend("predict", out / "model.safetensors", narrow, "--submission", tmp_path / "sub.csv",
                                   "--output", tmp_path / "pred.csv"), "narrow.csv", "784")
    assert not (tmp_path / "sub.csv").exists() and not (tmp_path / "pred.csv").exists()


def test_predict_output_holds_every_class_probability(kaggle, tmp_path):
    from descend.train.predict import load_trained, read_inputs

    d, _ = kaggle
    out = tmp_path / "run"
    assert descend("train", d / "train.csv", "--hidden", "8", "--epochs", "1", "--engine", "numpy",
                   "--out", out, "--quiet").returncode == 0
    pred, sub = tmp_path / "predictions.csv", tmp_path / "submission.csv"
    proc = descend("predict", out / "model.safetensors", d / "test.csv", "--output", pred, "--submission", sub)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {sub} and {pred}" in proc.stderr
    lines = pred.read_text().splitlines()
    assert lines[0] == "row,label," + ",".join(f"p_{c}" for c in range(10))
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 51))
    proba = np.array([[float(v) for v in r[2:]] for r in rows])
    model = load_trained(out / "model.safetensors")
    expected = model.predict_proba(read_inputs(d / "test.csv")[0])
    np.testing.assert_array_equal(proba, expected)  # written with enough digits to read back exactly
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    labels = [r[1] for r in rows]
    assert labels == [str(i) for i in np.argmax(expected, axis=1)]
    assert labels == [str(v) for v in read_submission(sub)[1]]


def test_train_on_the_kaggle_test_file_says_it_is_for_predict(kaggle, tmp_path):
    d, _ = kaggle
    proc = descend("train", d / "test.csv", "--engine", "numpy", "--out", tmp_path / "never")
    _assert_one_line_error(proc, "test.csv", "no label column", "descend predict")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--momentum", "1.5"], "`momentum` must be in [0, 1). Received: momentum=1.5"),
    (["--lr", "-1"], "`lr` must be > 0. Received: lr=-1.0"),
    (["--schedule", "triangle"], "`schedule` must be one of"),
    (["--schedule", "step:0.5"], "step:FACTOR:EVERY"),
    (["--batch-size", "0"], "--batch-size"),
    (["--optimizer", "lion"], "--optimizer"),
    (["--engine", "caffe"], "`engine` must be one of"),
    (["--epochs", "0"], "`epochs` must be >= 1"),
])
def test_bad_options_exit_2_with_one_line(kaggle, args, fragment, tmp_path):
    d, _ = kaggle
    proc = descend("train", d / "train.csv", "--out", tmp_path / "never", *args)
    _assert_one_line_error(proc, fragment)
    assert not (tmp_path / "never").exists()


def test_validation_0_trains_on_every_row_without_selection_and_says_so(kaggle, tmp_path):
    d, _ = kaggle
    out = tmp_path / "run"
    proc = descend("train", d / "train.csv", "--validation", "0", "--hidden", "16", "--epochs", "3",
                   "--batch-size", "100", "--early-stopping", "patience", "--patience", "1", "--engine", "numpy",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert "600 train, no validation rows" in first and "without early stopping" in first, first
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[-2:] == ["valid_cost", "valid_error"]
    assert len(history) == 1 + 3 and all(line.endswith(",,") for line in history[1:])  # no validation columns
    metrics = load_model(out / "model.safetensors").metadata["metrics"]
    assert metrics["steps"] == 3 * 6 and not metrics["stopped_early"] and metrics["best_step"] is None
    assert "valid_error" not in metrics
    _assert_one_line_error(descend("train", d / "train.csv", "--validation", "-1", "--out", tmp_path / "never"),
                           "`validation` must be >= 0")


def test_resume_needs_a_run_directory(tmp_path):
    _assert_one_line_error(descend("train", "--resume", tmp_path / "nope"), "`resume` must be a run directory")
    _assert_one_line_error(descend("train", "--resume", tmp_path, "--out", tmp_path / "x"), "--out")


def test_missing_dataset_file_exits_2(tmp_path):
    _assert_one_line_error(descend("train", tmp_path / "nope.csv"), "nope.csv")


def test_divergence_exits_2_and_saves_no_model(kaggle, tmp_path):
    d, _ = kaggle
    out = tmp_path / "run"
    proc = descend("train", d / "train.csv", "--optimizer", "sgd", "--lr", "1e9", "--epochs", "2",
                   "--engine", "numpy", "--out", out, "--quiet")
    _assert_one_line_error(proc, "diverged", "learning rate")
    assert not (out / "model.safetensors").exists()


def test_help_shows_defaults():
    proc = descend("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for expected in ("(default: nesterov)", "(default: 0.05)", "(default: 500,300)", "(default: relu)"):
        assert expected in text


def _checkpoint_step(path):
    try:
        return load_checkpoint(path)[1]["step"]
    except Exception:  # not written yet
        return -1


@pytest.mark.parametrize("how", ["kill -9", "SIGINT"])
def test_killed_training_resumes_to_identical_weights(tmp_path, how):
    """Kill a real training process mid-run, resume it, compare with an uninterrupted run."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 3000)
    X = rng.standard_normal((3000, 64)).astype(np.float32) + y[:, None] * 0.3
    data = tmp_path / "data.npz"
    np.savez(data, X=X, y=y)
    args = ["--hidden", "256,128", "--batch-size", "1", "--epochs", "3", "--eval-every", "200", "--engine",
            "numpy", "--optimizer", "rmsprop+nesterov", "--lr", "1e-4", "--schedule", "plateau:0.5:1",
            "--quiet", "--dtype", "float64"]
    full = tmp_path / "full"
    assert descend("train", data, *args, "--out", full).returncode == 0

    part = tmp_path / "part"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "descend", "train", str(data), *args, "--out", str(part)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.time() + 120
    while _checkpoint_step(part / "checkpoint.safetensors") < 1000 and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if how == "SIGINT":
        assert proc.returncode == 130 and "--resume" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (part / "model.safetensors").exists()
    stopped_at = _checkpoint_step(part / "checkpoint.safetensors")
    assert 1000 <= stopped_at < 2250 * 3

    resumed = descend("train", "--resume", part)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_model(full / "model.safetensors"), load_model(part / "model.safetensors")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert (full / "history.csv").read_text().splitlines()[1:] != []
    assert _columns(full / "history.csv", "valid_error") == _columns(part / "history.csv", "valid_error")


def _columns(path, name):
    lines = path.read_text().splitlines()
    i = lines[0].split(",").index(name)
    return [line.split(",")[i] for line in lines[1:]]


def _mirror():
    mirror = os.environ.get("DESCEND_MIRROR")
    assert mirror, "set DESCEND_MIRROR to the data mirror (.ci/run does) to run the real-data tests"
    return mirror


def test_real_mnist_logistic_regression_trains(tmp_path):
    _mirror()
    out = tmp_path / "run"
    proc = descend("train", "mnist", "--hidden", "none", "--epochs", "1", "--engine", "numpy", "--optimizer",
                   "sgd", "--lr", "0.5", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "test error" in proc.stderr
    error = load_model(out / "model.safetensors").metadata["metrics"]["test_error"]
    assert error < 0.10


def test_real_fer2013_trains_and_reports_private_test(tmp_path):
    fer = Path(_mirror().split(":")[0]) / "fer2013" / "fer2013.csv.gz"
    out = tmp_path / "run"
    proc = descend("train", fer, "--hidden", "64", "--epochs", "1", "--engine", "numpy", "--optimizer", "adam",
                   "--lr", "1e-3", "--normalize", "standardize", "--out", out, "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stderr
    meta = load_model(out / "model.safetensors").metadata
    assert meta["metrics"]["test_size"] == 3589
    assert meta["classes"][1] == "Disgust"
    assert 0.0 < meta["metrics"]["test_error"] < 0.8  # better than the majority class (75% error)
