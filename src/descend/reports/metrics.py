"""Classification metrics computed from labels, in NumPy (no scikit-learn needed).

Convention (as scikit-learn): confusion rows are true classes, columns predicted.
Divisions by zero (a class never predicted / never present) give 0.0, silently.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["confusion_matrix", "per_class_precision_recall", "error_rate"]


def _labels(name: str, y, n_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind not in "iub" and not (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    ):
        raise InputError(f"{name}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise InputError(f"{name}: label {bad} out of range [0, {n_classes - 1}]")
    return y


def _pair(y_true, y_pred, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels("y_true", y_true, n_classes), _labels("y_pred", y_pred, n_classes)
    if t.shape != p.shape:
        raise InputError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return t, p


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class i predicted as j (int64)."""
    t, p = _pair(y_true, y_pred, n_classes)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.shape(a), dtype=np.float64), where=np.asarray(b) != 0)


def per_class_precision_recall(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (precision, recall, f1, support) from a confusion matrix."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise InputError(f"confusion matrix must be square, got shape {cm.shape}")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.int64)
    precision = _safe_div(tp, cm.sum(axis=0).astype(np.float64))
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def error_rate(y_true, y_pred) -> float:
    """Fraction of misclassified samples (0..1); empty input is an InputError."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        raise InputError("error_rate: no labels")
    return float(np.mean(t != p))
