"""One place that turns a training configuration and its data into a run's starting point."""

from __future__ import annotations

import numpy as np

from descend.data.preprocess import Normalizer


def fit_normalizer(method: str, pca: int | None, X: np.ndarray) -> Normalizer:
    """The normalization fitted on training rows ``X``, followed by a ``pca``-component projection when asked."""
    normalizer = Normalizer(method).fit(X)
    if pca:
        from descend.pca.projection import fit_projection

        fit_projection(normalizer, X, pca)
    return normalizer
