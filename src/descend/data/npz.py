"""NumPy ``.npz`` archives holding ``X`` and ``y`` (optionally ``X_test``, ``y_test``, ``classes``).

Loaded with ``allow_pickle=False``: an archive can hold only plain arrays, so
opening a stranger's file can never run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from descend.data.csvfiles import nonfinite
from descend.data.dataset import Table
from descend.data.files import check_file
from descend.errors import InputError


def _features(path: Path, X: np.ndarray, key: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """(n, d) features; image stacks (n, h, w) and (n, h, w, channels) are flattened row-major, channels last."""
    if X.ndim == 3:
        n, h, w = X.shape
        X, shape = X.reshape(n, h * w), (h, w)
    elif X.ndim == 4:
        n, h, w, c = X.shape
        X, shape = X.reshape(n, h * w * c), ((h, w) if c == 1 else (h, w, c))
    elif X.ndim == 2:
        shape = None
    else:
        raise InputError(f"{path}: {key} must be 2-D (rows, features), 3-D (rows, height, width) or 4-D "
                         f"(rows, height, width, channels), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: {key} must hold numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        bad = X[row][~np.isfinite(X[row])][0]
        raise InputError(f"{path}: {key} row {row + 1}: {nonfinite(bad)} value")
    return np.ascontiguousarray(X), shape


def _labels(path: Path, y: np.ndarray, key: str, n: int) -> np.ndarray:
    if y.ndim != 1 and not (y.ndim == 2 and y.dtype.kind in "biuf"):
        raise InputError(f"{path}: {key} must be 1-D (one label per row) or 2-D numbers (regression targets, "
                         f"one column per output), got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"{path}: {key} has {y.shape[0]} labels but X has {n} rows")
    if y.dtype.kind not in "biufU":
        raise InputError(f"{path}: {key} must hold numbers or text, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        row = int(np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))[0])
        bad = y.reshape(len(y), -1)[row][~np.isfinite(y.reshape(len(y), -1)[row])][0]
        raise InputError(f"{path}: {key} row {row + 1}: label {nonfinite(bad)} is not a "
                         f"finite number")
    return y


def read_npz(path: Path) -> tuple[Table, Table | None]:
    """The training table and, when the archive has ``X_test``, the test table."""
    check_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single .npy array; expected an .npz archive with X and y")
    with archive:
        keys = set(archive.files)
        for key in ("X", "y"):
            if key not in keys:
                raise InputError(f"{path}: missing array {key!r} (found: "
                                 f"{', '.join(sorted(keys)) or 'none'})")
        try:
            arrays = {k: archive[k] for k in ("X", "y", "X_test", "y_test", "classes") if k in keys}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{path}: unreadable array ({exc})") from None
    classes = None
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "U":
            raise InputError(f"{path}: classes must be a 1-D array of strings")
        classes = tuple(str(c) for c in names)
    X, shape = _features(path, arrays["X"], "X")
    train = Table(X, _labels(path, arrays["y"], "y", len(X)), classes, shape)
    if "X_test" not in arrays:
        return train, None
    X_test, test_shape = _features(path, arrays["X_test"], "X_test")
    if X_test.shape[1] != X.shape[1]:
        raise InputError(f"{path}: X_test has {X_test.shape[1]} features but X has {X.shape[1]}")
    y_test = (_labels(path, arrays["y_test"], "y_test", len(X_test))
              if "y_test" in arrays else None)
    return train, Table(X_test, y_test, classes, test_shape)
