"""Regression targets: which task a file's labels call for, their standardization and their metrics.

The task is explicit (``classification`` / ``regression``) or decided by
:data:`TASK_RULE`, the one statement of the default that ``--help`` quotes.
Targets are standardized with the training rows' mean and standard
deviation (:class:`TargetScaler`, stored in the model file) and the
standardization is undone at prediction, so predictions and the RMSE / MAE
reported are in the targets' own units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from descend.errors import InputError

TASKS = ("classification", "regression")
TASK_RULE = ("regression when --target names several columns, or one whose values are numbers not all "
             "integers, or an NPZ's y is 2-D or a float array holding a non-integer; classification otherwise")


def _numbers(labels: np.ndarray) -> np.ndarray | None:
    """``labels`` as float64 when every one is a number, else None."""
    if labels.dtype.kind in "biuf":
        return labels.astype(np.float64)
    try:
        return labels.astype(np.float64)
    except ValueError:
        return None


def continuous(labels: np.ndarray) -> bool:
    """Whether labels read as regression targets under :data:`TASK_RULE`: numbers, not all integers (or 2-D)."""
    if labels.ndim == 2:
        return True
    values = _numbers(labels)
    return values is not None and bool(np.any(np.isfinite(values) & (values % 1 != 0)))


def as_targets(path: Path, labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Raw labels (text or numbers, one column or ``(n, k)``) as float64 targets ``(n, k)``; bad values are
    one line naming the row and the column."""
    labels = labels.reshape(len(labels), -1)
    out = np.empty(labels.shape, dtype=np.float64)
    for j in range(labels.shape[1]):
        column = labels[:, j]
        values = _numbers(column)
        if values is None:
            for row, text in enumerate(column):
                try:
                    float(text)
                except ValueError:
                    raise InputError(f"{path}: row {row + 1}: target {names[j]!r} is {str(text)!r}, not a number "
                                     "(regression needs numeric targets; text labels are classes: "
                                     "--task classification)") from None
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path}: row {row + 1}: target {names[j]!r} is {values[row]}, not a finite number")
        out[:, j] = values
    return out


class TargetScaler:
    """``(y - mean) / std`` per target, fitted on training rows (a constant target gets std 1)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetScaler:
        y = np.asarray(y, dtype=np.float64)
        std = y.std(axis=0)
        return cls(y.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, y, dtype="float32") -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.mean) / self.std).astype(dtype)

    def inverse(self, z) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def arrays(self) -> dict[str, np.ndarray]:
        """What the model file stores (beside the target names in its metadata)."""
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_arrays(cls, arrays: dict) -> TargetScaler:
        return cls(arrays["mean"], arrays["std"])


def regression_metrics(outputs: np.ndarray, t: np.ndarray, std=None) -> dict[str, float]:
    """``cost`` (mean squared error in standardized units: the training loss), ``rmse`` and ``mae`` in the
    targets' units (``std`` per target undoes the standardization), and ``r2`` (1 - SSE/SST per target,
    averaged over the targets)."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(t), -1)
    t = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
    d = outputs - t
    scale = np.ones(t.shape[1]) if std is None else np.asarray(std, dtype=np.float64)
    du = d * scale
    sst = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    sse = np.sum(d * d, axis=0)
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), 0.0)
    return {"cost": float(np.mean(d * d)), "rmse": float(math.sqrt(np.mean(du * du))),
            "mae": float(np.mean(np.abs(du))), "r2": float(np.mean(r2))}
