"""Image preprocessing for the prediction service, the same algorithm as the web page's.

The page (``static/preprocess.js``) and this module implement the same steps
with the same arithmetic, so a digit drawn on the page and the same pixels
uploaded as a PNG reach the network as the same 28x28 input (a test compares
the two).  MNIST's own preprocessing (LeCun et al.): the digit is cropped to
its bounding box, scaled (anti-aliased, aspect ratio kept) to fit a 20x20 box,
and placed in a 28x28 field so that its centre of mass is at the centre;
white ink on a black background, values 0..255.

Everything here works on float64 arrays of 0..255 values; only
:func:`decode_image` touches Pillow.
"""

from __future__ import annotations

import io
import math

import numpy as np

from descend.errors import InputError

__all__ = ["MODES", "area_resize", "center_crop", "decode_image", "image_to_input", "mnist_preprocess", "to_ink"]

MODES = ("auto", "mnist", "resize", "none")
MAX_IMAGE_PIXELS = 4096 * 4096


def _round(x: float) -> int:
    """Round half up, as JavaScript's ``Math.round`` (Python's ``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: output pixel j averages the input interval [j f, (j+1) f), f = n_in / n_out."""
    f = n_in / n_out
    w = np.zeros((n_out, n_in))
    for j in range(n_out):
        lo, hi = j * f, (j + 1) * f
        for k in range(int(math.floor(lo)), min(int(math.ceil(hi)), n_in)):
            w[j, k] = (min(hi, k + 1) - max(lo, k)) / f
    return w


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resample ``img`` (h, w) to (out_h, out_w) by exact area averaging (a box filter).

    Each output pixel is the mean of the input area it covers, fractional
    pixels weighted by their overlap: anti-aliased when shrinking, blocky
    (with blended seams) when enlarging.  Separable: rows first, then columns.
    """
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    tmp = img @ _area_weights(w, out_w).T          # (h, out_w)
    return _area_weights(h, out_h) @ tmp            # (out_h, out_w)


def to_ink(gray: np.ndarray) -> np.ndarray:
    """Ink bright on a dark background: inverts a dark-on-light image (paper, a canvas).

    The background is judged by the median of the border pixels: above 127
    means light paper, so the image is inverted (``255 - gray``).
    """
    g = np.asarray(gray, dtype=np.float64)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    return 255.0 - g if np.median(border) > 127.5 else g


def mnist_preprocess(ink: np.ndarray, *, box: int = 20, size: int = 28, threshold: float = 0.1) -> np.ndarray:
    """MNIST-style (size, size) input from an ink image (ink bright, 0..255, any size).

    1. crop to the bounding box of the pixels brighter than ``threshold`` x the brightest;
    2. scale the crop by area averaging so its longer side is ``box`` pixels (aspect kept);
    3. paste it into a ``size`` x ``size`` black field so that its centre of mass
       (pixel centres at integer indices) lands on the field's centre ``(size-1)/2``,
       shifted by whole pixels, anything falling outside clipped.

    An image with no ink gives all zeros.  Returns float64 values in [0, 255].
    """
    ink = np.clip(np.asarray(ink, dtype=np.float64), 0.0, 255.0)
    out = np.zeros((size, size))
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0.0:
        return out
    rows = np.flatnonzero((ink > threshold * peak).any(axis=1))
    cols = np.flatnonzero((ink > threshold * peak).any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = ink[top:bottom, left:right]
    bh, bw = crop.shape
    s = box / max(bh, bw)
    oh, ow = max(1, _round(bh * s)), max(1, _round(bw * s))
    small = area_resize(crop, oh, ow)
    mass = small.sum()
    cy = float((small.sum(axis=1) * np.arange(oh)).sum() / mass)
    cx = float((small.sum(axis=0) * np.arange(ow)).sum() / mass)
    oy, ox = _round((size - 1) / 2 - cy), _round((size - 1) / 2 - cx)
    y0, y1 = max(0, oy), min(size, oy + oh)
    x0, x1 = max(0, ox), min(size, ox + ow)
    if y0 < y1 and x0 < x1:
        out[y0:y1, x0:x1] = small[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return np.clip(out, 0.0, 255.0)  # area weights sum to 1 only up to rounding


def center_crop(img: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred crop of ``img`` whose width / height is ``aspect``."""
    h, w = img.shape
    if w / h > aspect:
        cw = max(1, _round(h * aspect))
        x = (w - cw) // 2
        return img[:, x:x + cw]
    ch = max(1, _round(w / aspect))
    y = (h - ch) // 2
    return img[y:y + ch, :]


def image_to_input(gray: np.ndarray, image_shape: tuple[int, int], mode: str = "auto") -> tuple[np.ndarray, str]:
    """The model input (image_shape, 0..255 floats) for a grayscale image, and the mode used.

    ``mnist``: :func:`to_ink` then :func:`mnist_preprocess` (digits drawn dark
    on light, or light on dark); ``resize``: centre-crop to the model's aspect
    ratio and area-resize, no inversion (photos, e.g. FER2013 faces);
    ``none``: the image must already have the model's shape.  ``auto`` picks
    ``none`` when the image already has the model's shape, ``mnist`` for 28x28
    models, ``resize`` otherwise.
    """
    h, w = (int(v) for v in image_shape)
    if mode not in MODES:
        raise InputError(f"preprocess must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "auto":
        mode = "none" if gray.shape == (h, w) else "mnist" if (h, w) == (28, 28) else "resize"
    if mode == "none":
        if gray.shape != (h, w):
            raise InputError(f"image is {gray.shape[1]}x{gray.shape[0]} pixels; with preprocess=none "
                             f"it must be {w}x{h} (width x height)")
        return np.asarray(gray, dtype=np.float64), mode
    if mode == "mnist":
        if h != w:
            raise InputError(f"preprocess=mnist needs a square model input; this model takes {w}x{h} images")
        return mnist_preprocess(to_ink(gray), box=_round(h * 20 / 28), size=h), mode
    return area_resize(center_crop(np.asarray(gray, dtype=np.float64), w / h), h, w), mode


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Grayscale float64 (h, w) of an uploaded PNG (or JPEG, GIF, BMP, WebP); transparent = white paper.

    Every failure is an :class:`InputError` naming ``name``.
    """
    from PIL import Image

    if not data:
        raise InputError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(f"{name}: image is {w}x{h} pixels; at most {max_pixels:,} pixels are accepted")
            if w == 0 or h == 0:
                raise InputError(f"{name}: image has no pixels")
            im.seek(0)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                paper.alpha_composite(rgba)
                gray = paper.convert("L")
            elif im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
                return np.clip(a * (255.0 / top), 0.0, 255.0)
            else:
                gray = im.convert("L")
            return np.asarray(gray, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types for bad bytes: all are the upload's fault
        raise InputError(f"{name}: not a readable PNG/JPEG image ({type(exc).__name__}: {exc})") from None
