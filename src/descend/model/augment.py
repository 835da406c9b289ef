"""Data augmentation of training batches, written once over the ops vocabulary.

``--augment shift:S,flip,rotate:D`` transforms every training row of every
step (never validation or test rows): a random rotation by up to ``D``
degrees about the image centre, a random shift of up to ``S`` pixels along
each axis, and (with ``flip``) a mirror image left to right half of the time.
Pixels that come from outside the image are zero.  Each output pixel takes
its nearest source pixel (inverse mapping), so no pixel value is ever blended.

The draws are a pure function of ``(seed, global step, row within the
batch)`` (``ops.random_bits``, the same integers on every backend), computed
inside the engine's step on its device; the geometry is integer arithmetic
(fixed-point sines and cosines), so every engine produces exactly the NumPy
engine's batch, and a resumed run sees exactly what an uninterrupted one
would.

Per row, four draws (``counter = 4 * row + k``): the vertical and horizontal
shift (uniform integers in ``[-S, S]``), the flip (one bit) and the angle
(a uniform multiple of ``1/Q`` radians in ``[-D, D]`` degrees).  An output
pixel ``(i, j)`` reads the source pixel reached by undoing, in order, the
flip, the shift and the rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from descend.errors import ConfigError

#: Fixed-point scale of the rotation's sine and cosine (and of the angle, in radians).
Q = 4096
MAX_ROTATE = 45.0
TOKENS = {
    "shift:S": "shift by up to S pixels (an integer >= 1) along each axis, independently per row, zero fill",
    "flip": "mirror left to right, half of the rows (leave it off for digits and text)",
    "rotate:D": f"rotate by up to D degrees (0 < D <= {MAX_ROTATE:g}) either way about the centre",
}
HELP = ("augment each training row (never validation or test rows) as comma-separated tokens, e.g. "
        "shift:2,rotate:10 or shift:4,flip; " + "; ".join(f"{k}: {v}" for k, v in TOKENS.items())
        + ". Needs image rows; 'none' = off")


@dataclass(frozen=True)
class Augmentation:
    """What to draw per row; ``image_shape`` (height, width, channels) is bound before it runs."""

    shift: int = 0
    flip: bool = False
    rotate: float = 0.0
    image_shape: tuple[int, int, int] | None = None

    @classmethod
    def parse(cls, text: str | None) -> Augmentation | None:
        """``"shift:2,flip,rotate:10"`` -> an Augmentation; None or ``"none"`` -> None."""
        if text is None or str(text).strip().lower() in ("", "none"):
            return None
        values: dict = {}
        for raw in str(text).split(","):
            token = raw.strip().lower()
            name, _, arg = token.partition(":")
            if name in values:
                raise ConfigError(f"`augment` token {raw.strip()!r} appears twice. Received: augment={text!r}")
            if name == "flip" and not arg:
                values["flip"] = True
            elif name == "shift" and arg.isdigit() and int(arg) >= 1:
                values["shift"] = int(arg)
            elif name == "rotate" and _number(arg) is not None and 0 < _number(arg) <= MAX_ROTATE:
                values["rotate"] = _number(arg)
            else:
                raise ConfigError(f"`augment` token {raw.strip()!r} is not one of {', '.join(TOKENS)} "
                                  f"(S an integer >= 1, 0 < D <= {MAX_ROTATE:g}). Received: augment={text!r}")
        return cls(**values)

    @property
    def text(self) -> str:
        parts = ([f"shift:{self.shift}"] if self.shift else []) + (["flip"] if self.flip else []) + \
            ([f"rotate:{self.rotate:g}"] if self.rotate else [])
        return ",".join(parts)

    def bind(self, image_shape) -> Augmentation:
        """This augmentation for rows that are ``image_shape`` images ((h, w) or (h, w, c))."""
        if not image_shape:
            raise ConfigError(f"`augment` {self.text!r} needs image rows, but the data has no image shape "
                              "(plain feature vectors, or principal components); drop --augment")
        shape = tuple(int(s) for s in image_shape)
        return Augmentation(self.shift, self.flip, self.rotate, (*shape, 1) if len(shape) == 2 else shape)

    @property
    def angle_steps(self) -> int:
        """The largest angle, in units of ``1/Q`` radians."""
        return int(round(math.radians(self.rotate) * Q))


#: Test-time augmentation (``descend predict --tta``): ``flip`` averages each image's class probabilities
#: with those of its left-right mirror image, for networks trained with ``--augment ...,flip``.
TTA = ("none", "flip")


def mirror_rows(x, image_shape):
    """Host rows ``x`` ``(n, h*w*c)`` (row-major HWC) mirrored left to right: exactly what ``flip`` makes of a
    row whose flip bit is set, so a network trained with ``flip`` sees these as training-like images."""
    import numpy as np

    h, w, c = (*image_shape, 1) if len(image_shape) == 2 else image_shape
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(len(x), h, w, c)[:, :, ::-1, :].reshape(x.shape))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sin_cos(a):
    """Fixed-point ``(Q sin(a/Q), Q cos(a/Q))`` of integer angles ``0 <= a <= Q*pi/4``, by Taylor series
    (error below 1/Q); every division has a non-negative numerator, so every backend rounds alike."""
    a2 = a * a // Q
    a3 = a2 * a // Q
    a4 = a2 * a2 // Q
    a5 = a4 * a // Q
    a6 = a4 * a2 // Q
    return a - a3 // 6 + a5 // 120, Q - a2 // 2 + a4 // 24 - a6 // 720


def draws(ops, aug: Augmentation, x, seed, step):
    """Per row of the batch ``x``: ``(dy, dx, flip, angle)``, each ``(n, 1)`` int32 (angle in ``1/Q`` radians)."""
    row = ops.reshape(ops.arange(x.shape[0], like=x), (-1, 1))
    bits = ops.random_bits(seed, step, row * 4 + ops.reshape(ops.arange(4, like=x), (1, 4)))
    span, steps = 2 * aug.shift + 1, aug.angle_steps
    return (bits[:, 0:1] % span - aug.shift, bits[:, 1:2] % span - aug.shift,
            bits[:, 2:3] % 2 if aug.flip else bits[:, 2:3] * 0, bits[:, 3:4] % (2 * steps + 1) - steps)


def augment_rows(ops, aug: Augmentation, x, seed, step):
    """The augmented batch: ``x`` is ``(n, h*w*c)`` rows (row-major HWC), ``seed``/``step`` ints or scalars."""
    h, w, c = aug.image_shape
    dy, dx, flip, angle = draws(ops, aug, x, seed, step)
    pixel = ops.reshape(ops.arange(h * w, like=x), (1, h * w))
    # Doubled coordinates about the centre, so that the centre of an even-sized image is an integer.
    u = (pixel // w) * 2 - (h - 1)
    v = (pixel % w) * 2 - (w - 1)
    if aug.flip:
        v = v * (1 - 2 * flip)
    if aug.shift:
        u, v = u - 2 * dy, v - 2 * dx
    if aug.rotate:
        sin, cos = _sin_cos(ops.abs(angle))
        sin = ops.where(angle < 0, 0 - sin, sin)
        su, sv = cos * u - sin * v, sin * u + cos * v
        # Nearest source pixel: floor((s / Q + size - 1) / 2 + 1/2), shifted by a multiple of 2Q that keeps
        # every numerator non-negative (floor division of negatives is not everywhere the same).
        lift = h + w + 2 * aug.shift + 2
        rows = (su + Q * (h - 1) + Q + 2 * Q * lift) // (2 * Q) - lift
        cols = (sv + Q * (w - 1) + Q + 2 * Q * lift) // (2 * Q) - lift
    else:
        rows, cols = (u + (h - 1)) // 2, (v + (w - 1)) // 2
    inside = ops.minimum(ops.minimum(rows, (h - 1) - rows), ops.minimum(cols, (w - 1) - cols)) >= 0
    source = ops.where(inside, rows * w + cols, -1)
    if c > 1:
        channel = ops.reshape(ops.arange(c, like=x), (1, 1, c))
        source = ops.reshape(source, (-1, h * w, 1))
        source = ops.reshape(ops.where(source < 0, -1, source * c + channel), (-1, h * w * c))
    return ops.take_along_rows(x, source)
