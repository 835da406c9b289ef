"""Carving a validation set out of training rows, reproducibly and per class."""

from __future__ import annotations

import numbers

import numpy as np

from descend.errors import ConfigError


def validation_count(validation: int | float, n: int) -> int:
    """Rows to hold out: an int is a count, a float in [0, 1) a fraction of ``n``."""
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real):
        raise ConfigError(f"`validation` must be an int count or a float fraction in [0, 1). "
                          f"Received: validation={validation!r}")
    if isinstance(validation, numbers.Integral):
        if not 0 <= validation < n:
            raise ConfigError(f"`validation` must be a count in [0, {n}) for {n} training rows. "
                              f"Received: validation={validation!r}")
        return int(validation)
    count = int(round(validation * n))
    if not 0.0 <= validation < 1.0 or count >= n:
        raise ConfigError(f"`validation` must be a fraction in [0, 1) that leaves training "
                          f"rows ({n} in all). Received: validation={validation!r}")
    return count


def carve(y: np.ndarray | None, n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) row indices with ``count`` validation rows.

    Stratified: every class gives its share (largest remainders settle the
    rounding), so a rare class is neither lost from nor flooding validation.
    Unlabeled rows are drawn uniformly.  Same seed, same split.
    """
    rng = np.random.default_rng(seed)
    if count == 0:
        return np.arange(n), np.arange(0)
    if y is None:
        held = rng.choice(n, size=count, replace=False)
    else:
        _, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
        quota = sizes * (count / n)
        take = np.floor(quota).astype(np.int64)
        short = count - int(take.sum())
        take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        held = np.concatenate([rng.permutation(order[s:s + z])[:t]
                               for s, z, t in zip(starts, sizes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
