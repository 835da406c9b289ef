"""PCA by gradient descent without the covariance matrix: the public entry point.

>>> from descend import pca
>>> result = pca.fit(X, 50, method="block")            # doctest: +SKIP
>>> Z = result.transform(X, whiten=True)                # doctest: +SKIP
>>> result = pca.fit("big.npy", 10)                     # out-of-core, read in row chunks  # doctest: +SKIP

See :mod:`descend.pca.solver` for the methods (``block``, ``gd``, ``exact``).
"""

from descend.pca.solver import (
    EXACT_MAX_FEATURES,
    METHODS,
    PCA_ENGINES,
    PCAResult,
    fit,
    load,
    principal_angles,
    relative_gaps,
)
from descend.pca.projection import PCA_METHOD, fit_projection
from descend.pca.run import run_pca

__all__ = ["EXACT_MAX_FEATURES", "METHODS", "PCA_ENGINES", "PCA_METHOD", "PCAResult", "fit", "fit_projection", "load",
           "principal_angles", "relative_gaps", "run_pca"]
