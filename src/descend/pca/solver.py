"""PCA by gradient ascent that never forms the covariance matrix: exact, streaming, on every engine.

The curriculum derives PCA as maximizing ``v^T C v`` over unit vectors ``v``
(``C = Xc^T Xc / (N-1)``, ``Xc`` the centered data) by gradient ascent with
renormalization, the later components by *deflation* (subtracting the
components already found), computing ``Xc v`` first so that the D x D matrix
``C`` never exists.  Three methods share one operator, ``V -> C V``,
accumulated chunk by chunk (:mod:`descend.pca.ops`):

``gd``
    The curriculum's method, one component after the other.  With ``g = C v -
    sum_j lambda_j u_j (u_j^T v)`` (the gradient of ``v^T C v / 2`` minus the
    contributions of the components already found), ``v <- (v + eta g) /
    ||v + eta g||`` with ``eta = lr / lambda_hat``, ``lambda_hat = v^T g`` the
    current Rayleigh quotient: the learning rate is relative to the variance
    being maximized, so one ``lr`` is stable on any data scale.  A component is
    done when ``||v_new - v|| < tol``.  One pass over the data per step; slow
    where neighbouring eigenvalues are close (the error shrinks like
    ``(lambda_{i+1}/lambda_i)^t``).
``block``
    All ``k`` components at once, the fast path: subspace iteration (block
    power iteration = block gradient ascent with orthonormalization) on
    ``k + oversample`` vectors, with a Rayleigh-Ritz step every pass and a
    shift: the next block is ``orth((C - sigma I) V)``, ``sigma`` half the
    smallest Ritz value, which damps the unwanted part of the spectrum
    ``[0, lambda_{m+1}]`` faster than plain ``C V`` (fewer passes).  It stops
    when every wanted Ritz pair has a relative residual
    ``||C v - theta v|| / theta <= tol``; by the Davis-Kahan bound the angle
    to the true component is then at most about ``tol / gap`` (``gap`` the
    relative eigengap).  One pass per iteration, with products of width
    ``k + oversample`` (matrix-matrix, so the BLAS / GPU runs at full speed).
``exact``
    The reference: the covariance accumulated in float64 and ``numpy.linalg.eigh``.
    It *does* form the D x D matrix, so it is refused above ``EXACT_MAX_FEATURES``.

Eigenvalues are variances with the N-1 denominator (scikit-learn's
``explained_variance_``); ratios are over the total variance (the trace of
``C``, from the same pass that computes the mean).  Components are unit rows,
signed so that the entry of largest magnitude is positive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from descend.errors import ConfigError, InputError
from descend.pca.data import RowSource, as_source, column_stats
from descend.pca.ops import PCA_ENGINES, CovarianceOperator

__all__ = ["METHODS", "PCA_ENGINES", "EXACT_MAX_FEATURES", "PCAResult", "fit", "principal_angles",
           "relative_gaps", "load"]

METHODS = ("block", "gd", "exact")
#: ``exact`` forms the D x D float64 covariance: refused above this many features (2 GiB).
EXACT_MAX_FEATURES = 16384
FORMAT = "descend-pca"
FORMAT_VERSION = 1
DEFAULT_TOL = {"block": 1e-5, "gd": 1e-6, "exact": 0.0}
DEFAULT_MAX_ITER = {"block": 300, "gd": 10000, "exact": 1}
SHIFT = 0.5
_ARRAYS = ("components", "mean", "explained_variance", "explained_variance_ratio", "residuals")


@dataclass(frozen=True, eq=False)
class PCAResult:
    """A fitted PCA: ``k`` components of ``n_features``-dimensional data, and how they were found.

    ``mean`` is in the units of ``scale * X`` (the data as the solver saw it);
    :meth:`transform` applies ``scale`` itself, so it takes raw rows.
    """

    components: np.ndarray                 # (k, D), orthonormal rows
    explained_variance: np.ndarray         # (k,), eigenvalues of the covariance (N-1 denominator)
    explained_variance_ratio: np.ndarray   # (k,), over the total variance
    mean: np.ndarray                       # (D,)
    total_variance: float
    n_samples: int
    scale: float = 1.0
    method: str = "block"
    engine: str = "numpy"
    device: str = "cpu"
    dtype: str = "float32"
    tol: float = 0.0
    converged: bool = True
    n_passes: int = 0                      # passes over the data, the mean/variance pass included
    n_iter: int | tuple[int, ...] = 0      # block: iterations; gd: steps per component; exact: 1
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ||C v - lambda v|| / lambda
    seconds: float = 0.0

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.components.shape[1])

    @property
    def eigenvalues(self) -> np.ndarray:
        """Alias of :attr:`explained_variance`."""
        return self.explained_variance

    def _check_features(self, X: np.ndarray, what: str = "X") -> None:
        if X.ndim != 2:
            raise InputError(f"{what}: must be a 2-D array (rows, features), got shape {X.shape}")
        if X.shape[1] != self.n_features:
            raise InputError(f"{what}: has {X.shape[1]} features, but the PCA was fitted on {self.n_features}")

    def transform(self, X, *, whiten: bool = False, dtype=np.float64, chunk_rows: int = 8192) -> np.ndarray:
        """Project raw rows onto the components: ``(scale * X - mean) @ components.T``, chunk by chunk.

        ``whiten=True`` divides each coordinate by its standard deviation
        ``sqrt(explained_variance)``: the projected training data then has mean
        0 and variance 1 per component (the curriculum's "project, then
        standardize").  A component of zero variance is left unscaled.
        """
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        self._check_features(X)
        W = self.components.T
        if whiten:
            std = np.sqrt(np.maximum(self.explained_variance, 0.0))
            std[std == 0] = 1.0
            W = W / std
        out = np.empty((X.shape[0], self.n_components), dtype=dtype)
        for a in range(0, X.shape[0], chunk_rows):
            c = np.array(X[a:a + chunk_rows], dtype=np.float64)  # a copy: X itself is never modified
            if self.scale != 1.0:
                c *= self.scale
            c -= self.mean
            out[a:a + chunk_rows] = c @ W
        return out

    def inverse_transform(self, Z, *, whiten: bool = False) -> np.ndarray:
        """Rows back in the raw units of X from their projections (lossy unless k = D)."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_components:
            raise InputError(f"Z: expected shape (rows, {self.n_components}), got {Z.shape}")
        if whiten:
            Z = Z * np.sqrt(np.maximum(self.explained_variance, 0.0))
        return (Z @ self.components + self.mean) / self.scale

    # Files ------------------------------------------------------------------
    def to_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able metadata, named float64 arrays ``pca.<name>``), e.g. for a safetensors model file."""
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "n_components": self.n_components, "n_features": self.n_features, "n_samples": int(self.n_samples),
            "scale": float(self.scale), "total_variance": float(self.total_variance),
            "method": self.method, "engine": self.engine, "device": self.device, "dtype": self.dtype,
            "tol": float(self.tol), "converged": bool(self.converged), "n_passes": int(self.n_passes),
            "n_iter": list(self.n_iter) if isinstance(self.n_iter, tuple) else int(self.n_iter),
            "seconds": float(self.seconds),
        }
        arrays = {f"pca.{name}": np.ascontiguousarray(getattr(self, name), dtype=np.float64) for name in _ARRAYS}
        return meta, arrays

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "PCAResult":
        """Rebuild from :meth:`to_dict` output; ``arrays`` may hold unrelated tensors too."""
        if meta.get("format") != FORMAT:
            raise InputError(f"pca: metadata is not a descend PCA (format {meta.get('format')!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"pca: format_version {meta['format_version']} is newer than this descend supports "
                             f"({FORMAT_VERSION}); upgrade descend")
        got = {}
        for name in _ARRAYS:
            try:
                got[name] = np.asarray(arrays[f"pca.{name}"], dtype=np.float64)
            except KeyError:
                raise InputError(f"pca: missing array 'pca.{name}'") from None
        try:
            k, d = int(meta["n_components"]), int(meta["n_features"])
            n_iter = meta.get("n_iter", 0)
            result = cls(
                components=got["components"], explained_variance=got["explained_variance"],
                explained_variance_ratio=got["explained_variance_ratio"], mean=got["mean"],
                total_variance=float(meta["total_variance"]), n_samples=int(meta["n_samples"]),
                scale=float(meta.get("scale", 1.0)), method=str(meta.get("method", "block")),
                engine=str(meta.get("engine", "numpy")), device=str(meta.get("device", "cpu")),
                dtype=str(meta.get("dtype", "float32")), tol=float(meta.get("tol", 0.0)),
                converged=bool(meta.get("converged", True)), n_passes=int(meta.get("n_passes", 0)),
                n_iter=tuple(int(i) for i in n_iter) if isinstance(n_iter, list) else int(n_iter),
                residuals=got["residuals"], seconds=float(meta.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"pca: corrupt metadata ({e})") from None
        shapes = {"components": (k, d), "mean": (d,), "explained_variance": (k,),
                  "explained_variance_ratio": (k,), "residuals": (k,)}
        for name, shape in shapes.items():
            if got[name].shape != shape:
                raise InputError(f"pca: array 'pca.{name}' has shape {got[name].shape}, expected {shape}")
        return result

    def save(self, path) -> Path:
        """One ``.safetensors`` file (arrays + JSON metadata, no pickle), written atomically."""
        from descend.io.modelfile import save_model

        meta, arrays = self.to_dict()
        return save_model(path, {}, extra_arrays=arrays, metadata={"kind": "pca", "pca": meta})


def load(path) -> PCAResult:
    """Read a file written by :meth:`PCAResult.save`; bad files raise InputError naming them."""
    from descend.io.modelfile import load_model

    mf = load_model(path)
    meta = mf.metadata.get("pca")
    if not isinstance(meta, dict):
        raise InputError(f"{path}: not a descend PCA file (no 'pca' metadata)")
    try:
        return PCAResult.from_dict(meta, mf.extra)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


# Accuracy helpers ----------------------------------------------------------------------------------------

def principal_angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Angle (radians) between matching rows of ``A`` and ``B`` (unit vectors; the sign is ignored)."""
    A, B = np.atleast_2d(np.asarray(A, np.float64)), np.atleast_2d(np.asarray(B, np.float64))
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    cos = np.abs(np.sum(A * B, axis=1))
    # arcsin of the orthogonal part is accurate for tiny angles where arccos(cos) is not
    sin = np.linalg.norm(B - np.sign(np.sum(A * B, axis=1))[:, None] * A, axis=1)
    return np.where(cos > 0.9, 2 * np.arcsin(np.minimum(sin / 2, 1.0)), np.arccos(np.clip(cos, 0.0, 1.0)))


def relative_gaps(eigenvalues: np.ndarray, count: int | None = None) -> np.ndarray:
    """``g_i = min(l_{i-1} - l_i, l_i - l_{i+1}) / l_i`` of a descending spectrum (first ``count``).

    An eigenvector is only well determined when its eigenvalue stands apart
    from its neighbours: a perturbation of relative size ``eps`` turns it by
    up to about ``eps / g_i`` radians.  ``g_1`` uses only the gap below.
    """
    w = np.asarray(eigenvalues, dtype=np.float64)
    count = len(w) if count is None else count
    above = np.r_[np.inf, w[:-1] - w[1:]]
    below = np.r_[w[:-1] - w[1:], np.inf]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.minimum(above, below) / w
    return g[:count]


# Solvers -------------------------------------------------------------------------------------------------

def _null_floor(dtype: str) -> float:
    """Eigenvalues below this fraction of the largest are numerically zero for the compute dtype."""
    return 1e3 * float(np.finfo(dtype).eps)


def _residuals(V: np.ndarray, W: np.ndarray, theta: np.ndarray, top: float, floor: float) -> np.ndarray:
    """``||W_i - theta_i V_i|| / theta_i`` per column, the denominator kept above ``floor * top``."""
    R = W - V * theta
    return np.linalg.norm(R, axis=0) / np.maximum(np.abs(theta), floor * max(top, 1e-300))


def _block(op: CovarianceOperator, k: int, *, tol: float, max_iter: int, oversample: int, seed: int,
           log: Callable[[str], None]):
    d = op.d
    m = min(d, k + oversample)
    rng = np.random.default_rng(seed)
    V, _ = np.linalg.qr(rng.standard_normal((d, m)))
    floor = _null_floor(op.dtype)
    best, best_at, converged = math.inf, 0, False
    it = 0
    for it in range(1, max_iter + 1):
        W = op(V)
        H = V.T @ W
        theta, S = np.linalg.eigh((H + H.T) / 2)
        order = np.argsort(theta)[::-1]
        theta, S = theta[order], S[:, order]
        V, W = V @ S, W @ S
        res = _residuals(V[:, :k], W[:, :k], theta[:k], theta[0], floor)
        # Ritz values at the noise floor belong to directions of (numerically) zero variance,
        # where any unit vector orthogonal to the others is a component: they need no convergence.
        live = theta[:k] > floor * theta[0]
        worst = float(res[live].max()) if live.any() else 0.0
        log(f"block: iteration {it}: largest relative residual {worst:.2e} (tol {tol:g})")
        if worst <= tol or m == d:
            converged = True
            break
        if worst < 0.99 * best:
            best, best_at = worst, it
        elif it - best_at >= 10:
            log(f"block: the residual stopped decreasing at {best:.2e} ({op.dtype} precision); "
                f"use dtype='float64' for a smaller tol")
            break
        # Shifted power step: (C - sigma I) V.  Eigenvalues below theta_m lie in [0, lambda_{m+1}];
        # shifting by half of theta_m (<= lambda_m / 2) centres that interval near 0 and cuts the
        # convergence factor from lambda_{m+1} / lambda_i to about (lambda_{m+1}/2) / (lambda_i - lambda_{m+1}/2).
        sigma = SHIFT * max(float(theta[-1]), 0.0)
        V, _ = np.linalg.qr(W - sigma * V)
    return theta[:k], V[:, :k], res, it, converged


def _gd(op: CovarianceOperator, k: int, *, tol: float, max_iter: int, lr: float, seed: int,
        log: Callable[[str], None]):
    d = op.d
    rng = np.random.default_rng(seed)
    floor = _null_floor(op.dtype)
    U = np.zeros((d, 0))
    lams = np.zeros(0)
    steps, res, converged, top = [], [], True, None
    for i in range(k):
        v = rng.standard_normal(d)
        v -= U @ (U.T @ v)
        v /= np.linalg.norm(v)
        Cv = op(v)
        done, t = False, 0
        for t in range(1, max_iter + 1):
            g = Cv - U @ (lams * (U.T @ v))          # gradient (/2) of v^T C v, deflated
            rq = float(v @ g)                          # current variance estimate
            if top is not None and rq <= floor * top:  # nothing left to explain in this direction
                done = True
                break
            v_new = v + (lr / rq) * g
            v_new /= np.linalg.norm(v_new)
            delta = float(np.linalg.norm(v_new - v))
            v = v_new
            Cv = op(v)
            if delta < tol:
                done = True
                break
        g = Cv - U @ (lams * (U.T @ v))
        lam = max(float(v @ g), 0.0)
        top = lam if top is None else top
        r = float(np.linalg.norm(g - lam * v)) / max(lam, floor * top, 1e-300)
        converged &= done
        steps.append(t)
        res.append(r)
        log(f"gd: component {i + 1}/{k}: {t} steps, variance {lam:.6g}, relative residual {r:.1e}"
            + ("" if done else f" (max_iter {max_iter} reached)"))
        U = np.column_stack([U, v])
        lams = np.append(lams, lam)
    order = np.argsort(lams, kind="stable")[::-1]
    return lams[order], U[:, order], np.asarray(res)[order], tuple(steps), converged


def _exact(op: CovarianceOperator, k: int):
    C = op.covariance()
    w, U = np.linalg.eigh(C)
    w, U = w[::-1][:k], U[:, ::-1][:, :k]
    floor = _null_floor("float64")
    res = _residuals(U, C @ U, w, w[0], floor)
    return np.maximum(w, 0.0), U, res


def _sign_flip(components: np.ndarray) -> np.ndarray:
    """Each row signed so that its entry of largest magnitude is positive (deterministic output)."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def _check_int(name: str, value, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        bound = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
        raise ConfigError(f"`{name}` must be an integer {bound}. Received: {name}={value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    try:
        ok = value is not None and not isinstance(value, bool) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def fit(X, k: int, method: str = "block", *, scale: float = 1.0, engine: str = "numpy", device: str = "auto",
        dtype: str | None = None, tol: float | None = None, max_iter: int | None = None, lr: float = 10.0,
        oversample: int | None = None, chunk_rows: int | None = None, cache: bool | None = None,
        threads: int | None = None, seed: int = 0, log: Callable[[str], None] | None = None) -> PCAResult:
    """The first ``k`` principal components of the rows of ``X``, without forming the covariance.

    ``X``: an array, a NumPy memmap, or the path of a ``.npy`` file (opened
    memory-mapped, read in row chunks: nothing but one chunk of rows is in
    memory at a time).  ``scale`` multiplies the data first (``1/255`` for
    images stored as uint8).

    ``method``: ``"block"`` (default, fast), ``"gd"`` (the curriculum's
    gradient ascent with deflation) or ``"exact"`` (covariance + eigh, small D only).
    ``engine``: ``"numpy"``, ``"torch"``, ``"jax"`` or ``"auto"`` (a GPU
    engine when one sees a GPU, else NumPy); ``device``: ``auto``/``cpu``/``gpu``.
    ``dtype``: of the matrix products (default float32 for block/gd, float64
    for exact); sums over chunks and all small linear algebra are float64.

    ``tol``: block, largest relative residual ``||C v - theta v|| / theta``
    (default 1e-5); gd, change ``||v_new - v||`` of a component in one step
    (default 1e-6).  ``max_iter``: block, iterations (default 300); gd, steps
    per component (default 10000).  ``lr``: gd's learning rate relative to the
    current variance estimate (default 10).  ``oversample``: block's extra
    vectors (default ``max(k, 10)``).  ``chunk_rows``: rows per chunk
    (default: about 64 MiB of compute-dtype values).  ``cache``: keep the
    centered chunks between passes (default: only for in-memory data up to
    2 GiB).  ``log``: a callable receiving progress lines.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ConfigError(f"`method` must be one of {', '.join(METHODS)}. Received: method={method!r}")
    if engine not in PCA_ENGINES:
        raise ConfigError(f"`engine` must be one of {', '.join(PCA_ENGINES)}. Received: engine={engine!r}")
    if device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"`device` must be one of auto, cpu, gpu. Received: device={device!r}")
    dtype = dtype or ("float64" if method == "exact" else "float32")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"`dtype` must be 'float32' or 'float64'. Received: dtype={dtype!r}")
    scale = _check_positive("scale", scale)
    tol = DEFAULT_TOL[method] if tol is None else _check_positive("tol", tol)
    max_iter = DEFAULT_MAX_ITER[method] if max_iter is None else _check_int("max_iter", max_iter, 1)
    lr = _check_positive("lr", lr)
    chunk_rows = None if chunk_rows is None else _check_int("chunk_rows", chunk_rows, 1)
    seed = _check_int("seed", seed, 0)
    log = log or (lambda line: None)

    source: RowSource = as_source(X)
    n, d = source.n, source.d
    k = _check_int("k", k, 1, min(n, d))
    oversample = max(k, 10) if oversample is None else _check_int("oversample", oversample, 0)
    if method == "exact" and d > EXACT_MAX_FEATURES:
        gib = d * d * 8 / 2**30
        raise ConfigError(f"`method` 'exact' forms the {d} x {d} covariance ({gib:.1f} GiB); it is the reference "
                          f"for at most {EXACT_MAX_FEATURES} features: use method='block'. Received: method='exact'")

    stats = column_stats(source, scale, rows=chunk_rows)
    op = CovarianceOperator(source, stats, scale=scale, engine=engine, device=device, dtype=dtype,
                            chunk_rows=chunk_rows, cache=cache, threads=threads)
    log(f"pca: {n} rows x {d} features, k={k}, method {method}, engine {op.engine} ({op.device}, {dtype}), "
        f"chunks of {op.chunk_rows} rows{', cached' if op.cache else ''}")
    total = stats.total_variance
    try:
        if total <= 0:  # constant data: every direction has zero variance
            lam, U, res, n_iter, converged = np.zeros(k), np.eye(d)[:, :k], np.zeros(k), 0, True
        elif method == "block":
            lam, U, res, n_iter, converged = _block(op, k, tol=tol, max_iter=max_iter, oversample=oversample,
                                                    seed=seed, log=log)
        elif method == "gd":
            lam, U, res, n_iter, converged = _gd(op, k, tol=tol, max_iter=max_iter, lr=lr, seed=seed, log=log)
        else:
            lam, U, res = _exact(op, k)
            n_iter, converged = 1, True
    finally:
        op.release()
    lam = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)
    ratio = lam / total if total > 0 else np.zeros(k)
    return PCAResult(
        components=_sign_flip(np.ascontiguousarray(U.T)), explained_variance=lam, explained_variance_ratio=ratio,
        mean=stats.mean, total_variance=total, n_samples=n, scale=scale, method=method, engine=op.engine,
        device=op.device, dtype=dtype, tol=tol, converged=bool(converged), n_passes=op.n_passes + 1,
        n_iter=n_iter, residuals=np.asarray(res, dtype=np.float64), seconds=time.perf_counter() - t0,
    )
