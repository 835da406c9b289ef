"""PCA by gradient descent without the covariance matrix: the public entry point.

>>> from descend import pca
>>> result = pca.fit(X, 50, method="block")            # doctest: +SKIP
>>> Z = result.transform(X, whiten=True)                # doctest: +SKIP
>>> result = pca.fit("big.npy", 10)                     # out-of-core, read in row chunks  # doctest: +SKIP

See :mod:`descend.experiments.pca` for the methods (``block``, ``gd``, ``exact``).
"""

from descend.experiments.pca import (
    EXACT_MAX_FEATURES,
    METHODS,
    PCA_ENGINES,
    PCAResult,
    fit,
    load,
    principal_angles,
    relative_gaps,
)
from descend.experiments.pca_run import run_pca

__all__ = ["EXACT_MAX_FEATURES", "METHODS", "PCA_ENGINES", "PCAResult", "fit", "load", "principal_angles",
           "relative_gaps", "run_pca"]
