"""reports/: metrics, PNG plots, the self-contained HTML report, Kaggle submissions, predictions files."""

from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from descend.errors import InputError
from descend.reports.html import write_report
from descend.reports.metrics import confusion_matrix, error_rate, per_class_precision_recall
from descend.reports.plots import plot_confusion, plot_history
from descend.reports.predictions import write_predictions
from descend.reports.submission import read_submission, write_submission

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _no_temps(directory) -> bool:
    return not any(".tmp" in p.name for p in directory.iterdir())


# ---------------------------------------------------------------- metrics

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 1, 0, 1, 1, 2, 0, 2, 1]


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    expected = np.array([[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 2, 0], [0, 0, 0, 0]])
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)
    assert error_rate(Y_TRUE, Y_PRED) == pytest.approx(3 / 9)


def test_precision_recall_hand_computed_with_zero_division():
    p, r, f1, support = per_class_precision_recall(confusion_matrix(Y_TRUE, Y_PRED, 4))
    # class 0: predicted 3 times (2 right), 3 true; class 1: predicted 4 (2 right), 2 true;
    # class 2: predicted 2 (2 right), 4 true; class 3: never seen -> zeros, no warning.
    np.testing.assert_allclose(p, [2 / 3, 2 / 4, 2 / 2, 0.0])
    np.testing.assert_allclose(r, [2 / 3, 2 / 2, 2 / 4, 0.0])
    np.testing.assert_allclose(f1, [2 / 3, 2 * 0.5 * 1 / 1.5, 2 * 1 * 0.5 / 1.5, 0.0])
    np.testing.assert_array_equal(support, [3, 2, 4, 0])
    assert support.dtype == np.int64


def test_metrics_reject_bad_labels():
    with pytest.raises(InputError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(InputError, match="2 labels"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(InputError, match="integers"):
        confusion_matrix([0.5], [0], 3)
    with pytest.raises(InputError):
        error_rate([], [])
    np.testing.assert_array_equal(confusion_matrix(np.array([1.0]), np.array([0]), 2), [[0, 0], [1, 0]])


# ---------------------------------------------------------------- plots


def _history(n=6):
    rows = []
    for i in range(n):
        rows.append({"epoch": (i + 1) / 2, "step": (i + 1) * 50, "time": 0.1 * i,
                     "train_cost": 1.0 / (i + 1), "valid_cost": 1.1 / (i + 1) + 0.01 * i,
                     "valid_error": 0.2 / (i + 1) + 0.002 * i, "train_error": 0.18 / (i + 1),
                     "lr": 0.1 * 0.5 ** i})
    return rows


def test_plot_history_writes_pngs(tmp_path):
    cost, err = plot_history(_history(), tmp_path / "cost.png", tmp_path / "error.png")
    for p in (cost, err):
        w, h = _png_size(p)
        assert w > 100 and h > 100 and p.stat().st_size > 1000
    assert _no_temps(tmp_path)


def test_plot_history_skips_missing_and_none(tmp_path):
    rows = [{"epoch": 1.0, "step": 10, "time": 1.0, "train_cost": 0.9},
            {"epoch": 2.0, "step": 20, "time": 2.0, "train_cost": 0.5, "valid_cost": None, "valid_error": None},
            {"epoch": 3.0, "step": 30, "train_cost": float("inf"), "lr": None}]
    plot_history(rows, tmp_path / "c.png", tmp_path / "e.png")
    assert _png_size(tmp_path / "c.png")[0] > 0 and _png_size(tmp_path / "e.png")[0] > 0
    plot_history([], tmp_path / "c0.png", tmp_path / "e0.png")
    assert (tmp_path / "e0.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_confusion_png(tmp_path):
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)  # includes an empty row
    path = plot_confusion(cm, ["zero", "one", "two", "three"], tmp_path / "cm.png")
    assert _png_size(path)[0] > 100
    plot_confusion(cm, None, tmp_path / "cm2.png")
    assert _png_size(tmp_path / "cm2.png")[0] > 100


def test_plots_are_thread_safe(tmp_path):
    errors = []

    def work(i):
        try:
            plot_confusion(np.eye(3, dtype=int) * (i + 1), None, tmp_path / f"cm{i}.png")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(_png_size(tmp_path / f"cm{i}.png")[0] > 0 for i in range(4))


def test_plots_do_not_use_pyplot():
    import descend.reports.plots as plots

    from pathlib import Path

    source = Path(plots.__file__).read_text(encoding="utf-8")
    assert "pyplot" not in source.replace("never ``pyplot``", "")


# ---------------------------------------------------------------- HTML report


def test_report_is_self_contained(tmp_path):
    plot_history(_history(), tmp_path / "cost.png", tmp_path / "error.png")
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3 + 1)
    classes = ["zero", "one", "<two>", "three & more"]
    out = write_report(
        tmp_path / "report.html",
        title="MLP <mnist>",
        config={"model": {"hidden": (300,), "activation": "relu"}, "optimizer": "nesterov", "lr": 0.1},
        metrics={"test_error": 0.01234, "valid_error": np.float64(0.015), "epochs": 12},
        images={"Cost": tmp_path / "cost.png", "Error": tmp_path / "error.png"},
        confusion=cm,
        classes=classes,
        per_class=None,
        history_tail=_history()[-2:],
    )
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "test_error" in text and "0.01234" in text and "model.hidden" in text and "nesterov" in text
    assert text.count("data:image/png;base64,") == 2
    assert '<table class="cm">' in text
    assert "&lt;two&gt;" in text and "three &amp; more" in text and "MLP &lt;mnist&gt;" in text
    assert "<two>" not in text
    assert "precision" in text and "recall" in text and "0.666667" in text
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    assert _no_temps(tmp_path)


def test_report_minimal_and_per_class_rows(tmp_path):
    out = write_report(tmp_path / "r.html", title="t", config={}, metrics={"a": None},
                       images={"missing": tmp_path / "nope.png"}, confusion=None, classes=None,
                       per_class=[{"class": "x", "precision": 0.5}], history_tail=None)
    text = out.read_text(encoding="utf-8")
    assert "missing" in text and "data:image/png" not in text and "precision" in text


# ---------------------------------------------------------------- submission


def test_submission_roundtrip(tmp_path):
    p = tmp_path / "submission.csv"
    labels = np.array([7, 2, 1, 0, 4], dtype=np.int64)
    write_submission(p, labels)
    lines = p.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and lines[1] == "1,7" and lines[-1] == "5,4"
    ids, got = read_submission(p)
    np.testing.assert_array_equal(ids, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(got, labels)


def test_submission_with_class_names(tmp_path):
    p = tmp_path / "s.csv"
    names = ["angry", "disgust", "fear"]
    write_submission(p, np.array([2, 0]), class_names=names)
    ids, got = read_submission(p)
    assert list(ids) == [1, 2] and list(got) == ["fear", "angry"]
    with pytest.raises(InputError, match="out of range"):
        write_submission(tmp_path / "bad.csv", np.array([3]), class_names=names)
    assert not (tmp_path / "bad.csv").exists()


def test_predictions_file_rows_labels_and_probabilities(tmp_path):
    p = tmp_path / "pred.csv"
    proba = np.array([[0.25, 0.75], [1 / 3, 2 / 3], [0.9, 0.1]])
    write_predictions(p, np.array([1, 1, 0]), proba, ["cat", "dog"])
    lines = p.read_text().splitlines()
    assert lines[0] == "row,label,p_cat,p_dog"
    assert lines[1] == "1,dog,0.25,0.75" and lines[3].startswith("3,cat,")
    back = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    np.testing.assert_array_equal(back, proba)
    f32 = proba.astype(np.float32)
    write_predictions(p, np.array([1, 1, 0]), f32, ["cat", "dog"])
    back = np.array([[float(v) for v in line.split(",")[2:]] for line in p.read_text().splitlines()[1:]])
    np.testing.assert_array_equal(back.astype(np.float32), f32)


@pytest.mark.parametrize("labels, proba, names, match", [
    ([0], [[0.5, 0.5]], ["a,b", "c"], "class name 'a,b' cannot be written to a CSV predictions file"),
    ([0, 1], [[0.5, 0.5]], ["a", "b"], "do not agree"),
    ([0], [[0.2, 0.3, 0.5]], ["a", "b"], "do not agree"),
])
def test_predictions_file_refuses_what_it_cannot_write(tmp_path, labels, proba, names, match):
    with pytest.raises(InputError, match=match):
        write_predictions(tmp_path / "pred.csv", np.array(labels), np.array(proba), names)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, match",
    [("", "empty"), ("Id,Label\n1,3\n", "header"), ("ImageId,Label\n0,3\n", "line 2: ImageId 0"),
     ("ImageId,Label\n1,3\n3,4\n", "line 3"), ("ImageId,Label\n1,3,4\n", "2 columns"),
     ("ImageId,Label\nx,3\n", "not an integer")],
)
def test_read_submission_rejects_malformed(tmp_path, content, match):
    p = tmp_path / "s.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=match) as e:
        read_submission(p)
    assert "s.csv" in str(e.value)
