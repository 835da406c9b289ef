"""The projection ``descend train --pca K`` feeds the network: fitted here, applied by the Normalizer."""

from __future__ import annotations

import numpy as np

from descend.errors import ConfigError
from descend.pca.solver import fit

#: How ``--pca K`` finds the components (the fast path; the covariance is never formed).
PCA_METHOD = "block"
_INFO_KEYS = ("method", "dtype", "tol", "converged", "n_passes", "total_variance", "n_samples")


def fit_projection(normalizer, X: np.ndarray, k: int):
    """Fit the first ``k`` principal components of ``normalizer``'s output on ``X``; set them on it, return it."""
    n, d = np.shape(X)
    limit = min(n, d)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
        raise ConfigError(f"`pca` must be an integer in [1, {limit}] (at most the number of features "
                          f"{d} and of training rows {n}). Received: pca={k!r}")
    result = fit(normalizer.normalize(X), int(k), PCA_METHOD, seed=0)
    meta, _ = result.to_dict()
    info = {key: meta[key] for key in _INFO_KEYS}
    info["explained_variance_ratio"] = float(result.explained_variance_ratio.sum())
    return normalizer.set_projection(result.mean, result.components, result.explained_variance, info)
