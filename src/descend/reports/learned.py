"""What a model learned, as pictures: its first layer's weights as images, and its most confident mistakes.

The selection is plain NumPy (:func:`first_layer_tiles`, :func:`confident_mistakes`) so it can be checked
without drawing; the two ``plot_*`` functions draw it (see :mod:`descend.reports.plots` for why never pyplot).
Weights are drawn on one diverging scale symmetric around 0 (red positive, blue negative, white 0), so that
units and kernels compare with each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.model.layers import Conv2D, Dense, Dropout, Flatten

__all__ = ["MAX_MISTAKES", "MAX_TILES", "Tiles", "confident_mistakes", "first_layer_figure", "first_layer_tiles",
           "grid_shape", "mistakes_figure", "plot_first_layer", "plot_mistakes"]

MAX_TILES = 64     # units or kernels drawn from the first layer
MAX_MISTAKES = 24  # images in the gallery of confident mistakes
_COLUMNS = 8       # gallery columns


@dataclass(frozen=True)
class Tiles:
    """2-D weight images ``(count, h, w)``, their labels, how many the layer has, what they are and show."""

    images: np.ndarray
    labels: tuple[str, ...]
    total: int
    layer: str
    noun: str  # "kernels", "units" or "classes"
    what: str


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` tiles: about square, or ``columns`` wide."""
    cols = columns or max(1, math.ceil(math.sqrt(count)))
    cols = min(cols, max(count, 1))
    return max(1, math.ceil(count / cols)), cols


def _first_layer(spec):
    """(name, layer) of the first dense or conv layer, when only dropout and flatten come before it."""
    for name, layer in zip(spec.names, spec.layers):
        if isinstance(layer, (Dense, Conv2D)):
            return name, layer
        if not isinstance(layer, (Dropout, Flatten)):
            return None
    return None


def first_layer_tiles(spec, params: Mapping[str, np.ndarray], image_shape, *, normalizer=None,
                      classes: Sequence[str] | None = None, limit: int = MAX_TILES) -> Tiles | None:
    """The first layer's weights as images, or None when the data has no image shape.

    A dense first layer gives one image per unit: its weights in the input's image shape (with ``--pca``,
    projected back from the components onto the pixels through ``normalizer``); a convolution gives its
    kernels.  Colour images are shown as the mean over their channels.  When the first layer is the output
    layer (logistic regression), each unit is a class and is labelled with ``classes``.
    """
    found = _first_layer(spec)
    if found is None or not image_shape:
        return None
    name, layer = found
    W = np.asarray(params[f"{name}.W"], np.float64)
    if isinstance(layer, Conv2D):
        c_in, total = W.shape[2], W.shape[3]
        images = W[:, :, :, :limit].mean(axis=2).transpose(2, 0, 1)
        size = f"{W.shape[0]}x{W.shape[1]}"
        what = f"{size} kernels" + (f", the mean over the {c_in} input channels" if c_in > 1 else "")
        return Tiles(images, tuple(f"{j}" for j in range(len(images))), total, name, "kernels", what)
    shape = tuple(int(s) for s in image_shape)
    pixels = math.prod(shape)
    projected = normalizer is not None and getattr(normalizer, "pca", None)
    if projected:  # the dense layer reads the standardized components: x_pixels @ (C.T / std) @ W
        std = np.sqrt(np.maximum(normalizer.pca_variance, 0.0))
        std[std == 0] = 1.0
        W = (normalizer.pca_components.T / std) @ W
    if W.shape[0] != pixels:
        return None
    total = W.shape[1]
    images = W[:, :limit].T.reshape(-1, *shape)
    if images.ndim == 4:
        images = images.mean(axis=3)
    output_layer = layer is spec.layers[-1]
    labels = tuple(str(c) for c in classes[:len(images)]) if output_layer and classes is not None else \
        tuple(f"{j}" for j in range(len(images)))
    what = (f"each {'class' if output_layer else 'unit'}'s weights on the normalized pixels"
            + (" (projected back from the principal components)" if projected else "")
            + f" as a {shape[0]}x{shape[1]} image" + (f", the mean over the {shape[2]} channels"
                                                       if len(shape) == 3 and shape[2] > 1 else ""))
    return Tiles(images, labels, total, name, "classes" if output_layer else "units", what)


def plot_first_layer(tiles: Tiles, path) -> Path:
    """``first_layer_figure(tiles)`` written as a PNG at ``path`` (atomically)."""
    from .plots import save_figure

    return save_figure(first_layer_figure(tiles), path)


def first_layer_figure(tiles: Tiles):
    """A grid of ``tiles`` on one colour scale symmetric around 0, with a colour bar."""
    from .plots import blank_figure

    n = len(tiles.images)
    rows, cols = grid_shape(n)
    side = 1.0 if tiles.images.shape[1] > 8 else 0.8
    fig = blank_figure(cols * side + 1.2, rows * side + 0.8)
    limit = float(np.max(np.abs(tiles.images))) or 1.0
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        im = ax.imshow(tiles.images[k], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(tiles.labels[k], fontsize=7, pad=2)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    shown = f"{n} of {tiles.total}" if n < tiles.total else f"all {n}"
    fig.suptitle(f"First layer {tiles.layer}: {shown} {tiles.noun}", fontsize=10)
    return fig


def confident_mistakes(proba: np.ndarray, y_true: np.ndarray, limit: int = MAX_MISTAKES) -> np.ndarray:
    """Rows predicted wrong, the most confident first (ties: lower row first), at most ``limit`` of them."""
    proba = np.asarray(proba)
    y_true = np.asarray(y_true)
    predicted = np.argmax(proba, axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = proba[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def plot_mistakes(images: np.ndarray, y_true: np.ndarray, proba: np.ndarray, rows: np.ndarray,
                  classes: Sequence[str], split: str, path) -> Path:
    """``mistakes_figure(...)`` written as a PNG at ``path`` (atomically)."""
    from .plots import save_figure

    return save_figure(mistakes_figure(images, y_true, proba, rows, classes, split), path)


def mistakes_figure(images: np.ndarray, y_true: np.ndarray, proba: np.ndarray, rows: np.ndarray,
                    classes: Sequence[str], split: str):
    """The gallery of ``rows`` (from :func:`confident_mistakes`): each image with its true label, the
    predicted label and that prediction's probability under it.  ``images`` are the raw ``(n, h, w[, c])``."""
    from .plots import blank_figure

    n = len(rows)
    grid_rows, cols = grid_shape(n, _COLUMNS)
    fig = blank_figure(cols * 1.25 + 0.2, grid_rows * 1.6 + 0.5)
    axes = fig.subplots(grid_rows, cols, squeeze=False)
    shown = np.asarray(images)[rows].astype(np.float64)
    lo, hi = (float(shown.min()), float(shown.max())) if n else (0.0, 1.0)
    names = [str(c) for c in classes]
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        i = rows[k]
        image = shown[k]
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 3:  # colour: scaled to 0..1 for imshow
            ax.imshow((image - lo) / ((hi - lo) or 1.0), interpolation="nearest")
        else:
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        pred = int(np.argmax(proba[i]))
        ax.set_xlabel(f"true {names[int(y_true[i])]}\npred {names[pred]}, p={proba[i, pred]:.3f}", fontsize=7,
                      labelpad=2)
    fig.suptitle(f"Most confident wrong predictions ({split} set)", fontsize=10)
    return fig
