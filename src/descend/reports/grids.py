"""Rows of image data as one PNG grid (the augmented training batch of a run report)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .plots import blank_figure, save_figure

__all__ = ["plot_image_grid"]


def plot_image_grid(images: np.ndarray, path: str | os.PathLike, *, columns: int = 8, title: str = "") -> Path:
    """``images`` ``(n, h, w, c)`` (c = 1 grey, 3 colour) as a grid ``columns`` wide, one shared grey scale.

    The rows are shown as the network sees them (normalized), scaled together
    to the batch's own range, so a zero-filled border is as dark as the darkest
    pixel and one image is not brightened against another.
    """
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    rows = max(1, math.ceil(n / columns))
    lo, hi = (float(images.min()), float(images.max())) if n else (0.0, 1.0)
    scaled = (images - lo) / (hi - lo) if hi > lo else np.zeros_like(images)
    fig = blank_figure(columns * 0.9, rows * 0.9 + (0.3 if title else 0))
    if title:
        fig.suptitle(title, fontsize=9)
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.set_axis_off()
        if i < n:
            img = scaled[i]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(np.clip(img[..., :3], 0, 1), interpolation="nearest")
    return save_figure(fig, path)
