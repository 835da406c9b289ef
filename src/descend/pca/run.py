"""``descend pca``'s one library function: data in, a directory of components, table and plots out."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from descend.errors import ConfigError, InputError
from descend.pca.solver import PCAResult, fit
from descend.pca.data import as_source, open_npy

__all__ = ["run_pca", "format_table", "NORMALIZATIONS"]

NORMALIZATIONS = ("scale", "none")
_NPY_MAGIC = b"\x93NUMPY"


def _is_npy(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == _NPY_MAGIC
    except OSError:
        return False


def _labels(path, n: int) -> np.ndarray:
    y = open_npy(path)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"{path}: labels must be a 1-D array of {n} values (one per row), got shape {y.shape}")
    if y.dtype.kind not in "biu":
        raise InputError(f"{path}: labels must be integers, got dtype {y.dtype}")
    return np.asarray(y)


def format_table(result: PCAResult) -> str:
    """Eigenvalues (variances, N-1), explained-variance ratios and their running total, one row per component."""
    lines = [f"{'component':>9}  {'variance':>12}  {'ratio':>8}  {'cumulative':>10}  {'residual':>8}"]
    cum = np.cumsum(result.explained_variance_ratio)
    for i, (v, r, c, res) in enumerate(zip(result.explained_variance, result.explained_variance_ratio, cum,
                                           result.residuals)):
        lines.append(f"{i + 1:>9}  {v:>12.6g}  {r:>8.4f}  {c:>10.4f}  {res:>8.1e}")
    return "\n".join(lines)


def _write_csv(path: Path, result: PCAResult) -> None:
    from descend.io.atomic import atomic_write_text

    cum = np.cumsum(result.explained_variance_ratio)
    rows = ["component,explained_variance,explained_variance_ratio,cumulative_ratio,relative_residual"]
    rows += [f"{i + 1},{v!r},{r!r},{c!r},{res!r}" for i, (v, r, c, res) in
             enumerate(zip(result.explained_variance.tolist(), result.explained_variance_ratio.tolist(),
                           cum.tolist(), result.residuals.tolist()))]
    atomic_write_text(path, "\n".join(rows) + "\n")


def run_pca(source: str | os.PathLike, k: int, *, method: str = "block", out: str | os.PathLike | None = None,
            normalize: str = "scale", labels: str | os.PathLike | None = None,
            image_shape: tuple[int, int] | None = None, plots: bool = True, sample: int = 5000,
            log: Callable[[str], None] | None = None, **fit_options) -> tuple[PCAResult, Path]:
    """Fit the first ``k`` components of a dataset or a ``.npy`` file and write a result directory.

    ``source``: a dataset name (``mnist``...) or a data file as ``descend
    train`` reads it (its *training rows* are used: the validation rows are
    carved off as for training), or a 2-D ``.npy`` file (memory-mapped, read in
    row chunks; ``labels`` is then an optional 1-D ``.npy`` of class ids for
    the projection plot).  ``normalize="scale"`` divides uint8 data by 255
    (as ``descend train`` does); other dtypes, and ``"none"``, are used as is.

    Writes to ``out`` (default ``runs/<date>-pca-<name>/``): ``pca.safetensors``
    (components, mean, variances; no pickle), ``eigenvalues.csv``,
    ``summary.json`` and, unless ``plots=False``, ``explained_variance.png``,
    ``projection.png`` and ``components.png``.  Returns ``(result, directory)``.
    """
    from descend.io.rundir import make_run_dir, write_json

    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"`normalize` must be one of {', '.join(NORMALIZATIONS)}. Received: normalize={normalize!r}")
    if not isinstance(sample, (int, np.integer)) or isinstance(sample, bool) or sample < 0:
        raise ConfigError(f"`sample` must be a non-negative integer. Received: sample={sample!r}")
    log = log or (lambda line: None)
    path = Path(source).expanduser()
    classes = None
    if path.is_file() and _is_npy(path):
        name = path.name.removesuffix(".npy") or "data"
        X = open_npy(path)
        y = _labels(labels, X.shape[0]) if labels is not None else None
        shape = image_shape
        described = {"source": str(path), "kind": "npy", "labels": str(labels) if labels is not None else None}
    else:
        if str(source).endswith(".npy") and not path.exists():
            raise InputError(f"{source}: file not found")
        if labels is not None:
            raise ConfigError("`labels` is only for .npy input (datasets carry their labels). "
                              f"Received: labels={str(labels)!r}")
        from descend.data import load

        ds = load(source, require_labels=False)  # unsupervised: a test file projects too
        name, X, y, classes = ds.name, ds.train.X, ds.train.y, ds.classes
        shape = image_shape or (ds.image_shape if ds.image_shape and len(ds.image_shape) == 2 else None)
        described = {"source": ds.source, "kind": "dataset", "dataset": ds.name, "split": "train"}
    src = as_source(X, name=str(path) if described["kind"] == "npy" else name)
    scale = 1 / 255 if normalize == "scale" and src.dtype == np.uint8 else 1.0
    if shape is not None and int(np.prod(shape)) != src.d:
        raise ConfigError(f"`image_shape` {shape[0]}x{shape[1]} does not hold {src.d} features. "
                          f"Received: image_shape={shape!r}")

    result = fit(src, k, method, scale=scale, log=log, **fit_options)
    log(f"pca: {result.n_passes} passes over the data in {result.seconds:.2f} s"
        + ("" if result.converged else " (NOT converged: see the residuals)"))

    out = make_run_dir("runs", f"pca-{name}") if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "pca.safetensors")
    _write_csv(out / "eigenvalues.csv", result)
    files = ["pca.safetensors", "eigenvalues.csv", "summary.json"]
    if plots:
        from descend.pca import plots as pca_plots

        shape = shape or pca_plots.guess_image_shape(src.d)
        pca_plots.plot_explained_variance(result.explained_variance_ratio, out / "explained_variance.png",
                                          title=f"{name}: explained variance")
        count = min(src.n, sample)
        if count:
            rng = np.random.default_rng(0)
            idx = np.sort(rng.choice(src.n, size=count, replace=False))
            Z = np.concatenate([result.transform(src.take(idx[a:a + 512]), chunk_rows=512)[:, :2]
                                for a in range(0, count, 512)])
            pca_plots.plot_projection(Z, None if y is None else np.asarray(y)[idx], out / "projection.png",
                                      classes=classes, ratio=result.explained_variance_ratio,
                                      title=f"{name}: first two components")
            files.append("projection.png")
        pca_plots.plot_components(result.components, out / "components.png", image_shape=shape,
                                  ratio=result.explained_variance_ratio)
        files += ["explained_variance.png", "components.png"]
    meta, _ = result.to_dict()
    write_json(out / "summary.json", {"data": {**described, "name": name, "rows": src.n, "features": src.d,
                                               "dtype": str(src.dtype), "normalize": normalize, "scale": scale},
                                      "pca": meta, "files": sorted(files)})
    return result, out
