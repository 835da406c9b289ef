"""Input normalization, fitted on training rows only and stored with the model."""

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
    """

    def __init__(self, method: str = "scale") -> None:
        if method not in METHODS:
            raise ConfigError(f"`method` must be one of {', '.join(METHODS)}. "
                              f"Received: method={method!r}")
        self.method = method
        self.n_features: int | None = None
        self.offset: float | np.ndarray = 0.0
        self.scale: float | np.ndarray = 1.0

    def __repr__(self) -> str:
        return f"Normalizer(method={self.method!r})"

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
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """A new float32 array; ``X`` is left untouched."""
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        X = _check_2d(X)
        if X.shape[1] != self.n_features:
            raise InputError(f"X has {X.shape[1]} features, but the Normalizer was fitted "
                             f"on {self.n_features}")
        out = X.astype(np.float32, copy=True)
        if self.method != "none":
            out -= np.asarray(self.offset, np.float32)
            out /= np.asarray(self.scale, np.float32)
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays), for a safetensors model file."""
        if not self.fitted:
            raise ConfigError(NOT_FITTED)
        meta: dict[str, Any] = {"method": self.method, "n_features": self.n_features}
        if self.method == "standardize":
            return meta, {"normalizer.mean": np.asarray(self.offset, np.float32),
                          "normalizer.std": np.asarray(self.scale, np.float32)}
        meta.update(offset=float(self.offset), scale=float(self.scale))
        return meta, {}

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any],
                  arrays: Mapping[str, np.ndarray] | None = None) -> "Normalizer":
        """Rebuild from :meth:`to_dict` output; ``arrays`` may hold unrelated tensors too."""
        norm = cls(meta.get("method", "scale"))
        norm.n_features = int(meta["n_features"])
        if norm.method == "standardize":
            arrays = arrays or {}
            try:
                norm.offset = np.asarray(arrays["normalizer.mean"], np.float32)
                norm.scale = np.asarray(arrays["normalizer.std"], np.float32)
            except KeyError as exc:
                raise InputError(f"normalizer: missing array {exc.args[0]!r}") from None
        else:
            norm.offset, norm.scale = float(meta["offset"]), float(meta["scale"])
        return norm


def _check_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D array (rows, features), got shape {X.shape}")
    return X
