"""K-fold cross-validation folds (stratified by class; shuffled for regression targets), the same for every
trial of a search.

The folds are a pure function of the labels, K and the seed: every trial (on
any worker, on any machine, after a resume) trains and scores on exactly the
same rows.  They cover the dataset's *training* rows only; the official test
set never takes part in a search.
"""

from __future__ import annotations

import hashlib

import numpy as np

from descend.errors import ConfigError


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of every row, each class spread evenly over the folds.

    Rows of each class are shuffled with the seed, the classes are laid end to
    end and the sequence is dealt round-robin: fold sizes differ by at most
    one row, and so do a class's counts in any two folds.
    """
    y = np.asarray(y)
    n = len(y)
    _check_k(n, k)
    rng = np.random.default_rng([int(seed), 0xF01D])
    classes = np.unique(y)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in classes])
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % k
    return folds


def _check_k(n: int, k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"`folds` must be an integer >= 2. Received: folds={k!r}")
    if n < 2 * k:
        raise ConfigError(f"`folds` must leave at least 2 rows per fold: {n} training rows allow at most "
                          f"{n // 2} folds. Received: folds={k}")


def shuffled_folds(n: int, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each of ``n`` rows, shuffled with the seed and dealt round-robin: the folds of
    regression targets, which have no classes to stratify by."""
    _check_k(n, k)
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng([int(seed), 0xF01D]).permutation(n)] = np.arange(n) % k
    return folds


def make_folds(y: np.ndarray, k: int, seed: int, task: str = "classification") -> np.ndarray:
    """Stratified folds of class labels; shuffled folds of regression targets."""
    return shuffled_folds(len(y), k, seed) if task == "regression" else stratified_folds(y, k, seed)


def fold_rows(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of ``fold``, as sorted indices."""
    held = folds == fold
    return np.flatnonzero(~held), np.flatnonzero(held)


def fold_digest(folds: np.ndarray) -> str:
    """A short fingerprint of a fold assignment, stored with every trial."""
    return hashlib.sha256(np.ascontiguousarray(folds, dtype=np.int64).tobytes()).hexdigest()[:16]
