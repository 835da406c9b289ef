"""Input normalization, fitted on training rows only and stored with the model.

Optionally followed by a PCA projection (``descend train --pca K``, the
curriculum's "transformed data"): the normalized rows are projected onto their
first ``K`` principal components and each coordinate is standardized by its
training standard deviation.  The projection is found elsewhere
(:func:`descend.pca.fit_projection`, which never forms the covariance matrix)
and handed to :meth:`Normalizer.set_projection`; this module only applies it.
The fitted projection (mean, components, variances) is stored with the
normalization in the model file and applied at prediction.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from descend.errors import ConfigError, InputError

METHODS = ("scale", "standardize", "none")
NOT_FITTED = "This Normalizer is not fitted yet. Call `fit` with training data first."


class Normalizer:
    """Maps raw features to float32 the same way at training and prediction time.

    ``scale`` divides uint8 images by 255 (the known pixel range, so a batch
    with no white pixel is scaled like any other) and min-max scales anything
    else with the training array's global min and max.  ``standardize`` uses
    per-feature training mean and std; a constant feature gets std 1 instead
    of a division by zero.  Statistics are float64 while fitting, float32 when
    applied.

    After :meth:`set_projection` with ``K`` principal components, the
    normalized rows are projected and each coordinate standardized (divided by
    the training standard deviation, N-1): ``z = (x - mean) @ components.T /
    std``, computed in float64, returned as float32.  ``transform`` then gives
    ``K`` columns (:attr:`n_outputs`).
    """

    def __init__(self, method: str = "scale") -> None:
        if method not in METHODS:
            raise ConfigError(f"`method` must be one of {', '.join(METHODS)}. "
                              f"Received: method={method!r}")
        self.method = method
        self.pca: int | None = None                      # number of principal components once projected
        self.n_features: int | None = None
        self.offset: float | np.ndarray = 0.0
        self.scale: float | np.ndarray = 1.0
        self.pca_mean: np.ndarray | None = None         # (D,) float64, in normalized units
        self.pca_components: np.ndarray | None = None   # (K, D) float64, orthonormal rows
        self.pca_variance: np.ndarray | None = None     # (K,) float64, training variance of each coordinate
        self.pca_info: dict[str, Any] = {}               # how the components were found (descend.pca metadata)

    def __repr__(self) -> str:
        return f"Normalizer(method={self.method!r}" + (f", pca={self.pca})" if self.pca else ")")

    @property
    def n_outputs(self) -> int | None:
        """Columns of :meth:`transform`'s output: ``pca`` when set, else the number of features."""
        return self.pca if self.pca else self.n_features

    @property
    def fitted(self) -> bool:
        return self.n_features is not None

    def fit(self, X: np.ndarray) -> "Normalizer":
        """Learn the statistics from training rows ``X`` (n, d); returns self."""
        X = _check_2d(X)
        if X.shape[0] == 0:
            raise InputError("X: cannot fit a Normalizer on 0 rows")
        self.n_features = X.shape[1]
        if self.method == "scale":
            if X.dtype == np.uint8:
                self.offset, self.scale = 0.0, 255.0
            else:
                lo, hi = float(np.min(X)), float(np.max(X))
                self.offset, self.scale = lo, (hi - lo) or 1.0
        elif self.method == "standardize":
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            std[std == 0] = 1.0
            self.offset, self.scale = mean.astype(np.float32), std.astype(np.float32)
        else:
            self.offset, self.scale = 0.0, 1.0
        self.pca = self.pca_mean = self.pca_components = self.pca_variance = None
        self.pca_info = {}
        return self

    def set_projection(self, mean: np.ndarray, components: np.ndarray, variance: np.ndarray,
                       info: Mapping[str, Any] | None = None) -> "Normalizer":
        """Follow normalization by a fitted projection onto ``components`` (K, D); returns self.

        ``mean`` (D,) is in normalized units, ``variance`` (K,) the training
        variance of each coordinate, ``info`` how the components were found.
        """
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        components = np.asarray(components, np.float64)
        k, d = components.shape
        if d != self.n_features or np.shape(mean) != (d,) or np.shape(variance) != (k,):
            raise ConfigError(f"a projection for {self.n_features} features needs mean ({self.n_features},), "
                              f"components (K, {self.n_features}) and variance (K,); received "
                              f"{np.shape(mean)}, {components.shape}, {np.shape(variance)}")
        self.pca = int(k)
        self.pca_mean = np.asarray(mean, np.float64)
        self.pca_components = components
        self.pca_variance = np.asarray(variance, np.float64)
        self.pca_info = dict(info or {})
        return self

    def normalize(self, X: np.ndarray) -> np.ndarray:
        """Normalized float32 rows, before any projection (what a projection is fitted on)."""
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        return self._normalize(_check_2d(X))

    def _normalize(self, X: np.ndarray) -> np.ndarray:
        out = X.astype(np.float32, copy=True)
        if self.method != "none":
            out -= np.asarray(self.offset, np.float32)
            out /= np.asarray(self.scale, np.float32)
        return out

    def _project(self, X: np.ndarray, chunk_rows: int = 8192) -> np.ndarray:
        std = np.sqrt(np.maximum(self.pca_variance, 0.0))
        std[std == 0] = 1.0
        W = self.pca_components.T / std
        out = np.empty((X.shape[0], W.shape[1]), dtype=np.float32)
        for a in range(0, X.shape[0], chunk_rows):
            out[a:a + chunk_rows] = (X[a:a + chunk_rows].astype(np.float64) - self.pca_mean) @ W
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        """A new float32 array (``pca`` columns when set); ``X`` is left untouched."""
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        X = _check_2d(X)
        if X.shape[1] != self.n_features:
            raise InputError(f"X has {X.shape[1]} features, but the Normalizer was fitted "
                             f"on {self.n_features}")
        out = self._normalize(X)
        return out if self.pca is None else self._project(out)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays), for a safetensors model file."""
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        meta: dict[str, Any] = {"method": self.method, "n_features": self.n_features}
        arrays: dict[str, np.ndarray] = {}
        if self.method == "standardize":
            arrays = {"normalizer.mean": np.asarray(self.offset, np.float32),
                      "normalizer.std": np.asarray(self.scale, np.float32)}
        else:
            meta.update(offset=float(self.offset), scale=float(self.scale))
        if self.pca is not None:
            meta["pca"] = {"n_components": self.pca, **self.pca_info}
            arrays.update({"pca.mean": self.pca_mean, "pca.components": self.pca_components,
                           "pca.explained_variance": self.pca_variance})
        return meta, arrays

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any],
                  arrays: Mapping[str, np.ndarray] | None = None) -> "Normalizer":
        """Rebuild from :meth:`to_dict` output; ``arrays`` may hold unrelated tensors too."""
        pca = meta.get("pca")
        norm = cls(meta.get("method", "scale"))
        norm.n_features = int(meta["n_features"])
        norm.pca = None if pca is None else int(pca["n_components"])
        arrays = arrays or {}
        if norm.method == "standardize":
            try:
                norm.offset = np.asarray(arrays["normalizer.mean"], np.float32)
                norm.scale = np.asarray(arrays["normalizer.std"], np.float32)
            except KeyError as exc:
                raise InputError(f"normalizer: missing array {exc.args[0]!r}") from None
        else:
            norm.offset, norm.scale = float(meta["offset"]), float(meta["scale"])
        if norm.pca is not None:
            k, d = norm.pca, norm.n_features
            shapes = {"pca.mean": (d,), "pca.components": (k, d), "pca.explained_variance": (k,)}
            got = {}
            for name, shape in shapes.items():
                if name not in arrays:
                    raise InputError(f"normalizer: missing array {name!r}")
                got[name] = np.asarray(arrays[name], np.float64)
                if got[name].shape != shape:
                    raise InputError(f"normalizer: array {name!r} has shape {got[name].shape}, expected {shape}")
            norm.pca_mean, norm.pca_components = got["pca.mean"], got["pca.components"]
            norm.pca_variance = got["pca.explained_variance"]
            norm.pca_info = {key: value for key, value in pca.items() if key != "n_components"}
        return norm


def _check_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D array (rows, features), got shape {X.shape}")
    return X
