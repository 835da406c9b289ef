"""A predictions file: every row's predicted label and the probability of every class.

``row,label,p_<class>...`` with ``row`` the 1-based row of the input file, so the
file lines up with the input however it was read.  The probabilities are the
model's softmax, or an ensemble's combined vote; float32 values are written with
9 significant digits and float64 with 17, enough to read back the same numbers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write_text
from .submission import csv_class_names

__all__ = ["write_predictions", "write_values"]


def write_predictions(path: str | os.PathLike, labels, probabilities, class_names: Sequence) -> Path:
    """Write class indices ``labels`` and ``(rows, classes)`` probabilities atomically."""
    names = csv_class_names(class_names, "predictions file")
    y, proba = np.asarray(labels), np.asarray(probabilities)
    if proba.ndim != 2 or proba.shape[1] != len(names) or y.shape != (len(proba),):
        raise InputError(f"predictions: {len(names)} classes, labels of shape {y.shape} and "
                         f"probabilities of shape {proba.shape} do not agree")
    digits = 9 if proba.dtype == np.float32 else 17
    out = io.StringIO()
    out.write(",".join(["row", "label", *(f"p_{n}" for n in names)]) + "\n")
    for i, (label, row) in enumerate(zip(y, proba.tolist()), start=1):
        out.write(f"{i},{names[label]}," + ",".join(f"{p:.{digits}g}" for p in row) + "\n")
    return atomic_write_text(path, out.getvalue())



def write_values(path: str | os.PathLike, values, targets: Sequence[str]) -> Path:
    """A regression model's predictions: ``row,<target>...`` with ``row`` 1-based, 17 significant digits."""
    names = csv_class_names(targets, "predictions file")
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if v.shape[1] != len(names):
        raise InputError(f"predictions: {len(names)} targets but values of shape {v.shape}")
    out = io.StringIO()
    out.write(",".join(["row", *names]) + "\n")
    for i, row in enumerate(v.tolist(), start=1):
        out.write(f"{i}," + ",".join(f"{x:.17g}" for x in row) + "\n")
    return atomic_write_text(path, out.getvalue())
