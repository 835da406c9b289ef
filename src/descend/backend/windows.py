"""Sliding-window geometry (convolution and pooling) and its NumPy building blocks.

"same" padding adds ``(k-1)//2`` zeros before and ``k//2`` after each spatial
axis (TensorFlow's rule at stride 1, kept at every stride); "valid" adds none.
An axis of ``n`` pixels then gives ``floor((n + pads - k) / stride) + 1``
outputs.  Images are NHWC; kernels HWIO ``(k, k, c_in, c_out)``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view


def conv_pads(kernel: int, padding: str) -> tuple[int, int]:
    """Zeros added before and after one spatial axis."""
    return ((kernel - 1) // 2, kernel // 2) if padding == "same" else (0, 0)


def conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    lo, hi = conv_pads(kernel, padding)
    return (size + lo + hi - kernel) // stride + 1


def pad_image(x: np.ndarray, kernel: int, padding: str) -> np.ndarray:
    lo, hi = conv_pads(kernel, padding)
    return np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0))) if lo or hi else x


def windows(x: np.ndarray, size: int, stride: int, oh: int, ow: int) -> np.ndarray:
    """``(n, oh, ow, c, size, size)``: the valid windows of ``x`` every ``stride`` pixels (a view)."""
    return sliding_window_view(x, (size, size), axis=(1, 2))[:, :stride * (oh - 1) + 1:stride,
                                                               :stride * (ow - 1) + 1:stride]


def im2col(x: np.ndarray, kernel: int, stride: int, padding: str,
           out: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """``(patches, oh, ow)``: one row of ``kernel*kernel*c`` pixels (in HWIO order) per output pixel.

    ``out``: a C-contiguous array of ``n*oh*ow*kernel*kernel*c`` elements of ``x``'s dtype to
    write the patches into (see :func:`im2col_size`); by default a new one.
    """
    n, h, w, c = x.shape
    oh, ow = conv_out(h, kernel, stride, padding), conv_out(w, kernel, stride, padding)
    xp = np.ascontiguousarray(pad_image(x, kernel, padding))
    sn, sh, sw, sc = xp.strides
    # In a C-contiguous NHWC image a window's kernel row, ``kernel`` pixels of ``c`` channels, is one run
    # of ``kernel*c`` adjacent elements: the copy moves whole runs rather than ``c`` elements at a time.
    rows = as_strided(xp, (n, oh, ow, kernel, kernel * c), (sn, sh * stride, sw * stride, sh, sc), writeable=False)
    if out is None:
        patches = rows.reshape(n * oh * ow, kernel * kernel * c)
    else:
        patches = out.reshape(n * oh * ow, kernel * kernel * c)
        np.copyto(patches.reshape(rows.shape), rows)
    return patches, oh, ow


def im2col_size(shape: tuple[int, ...], kernel: int, stride: int, padding: str) -> int:
    """The number of elements of :func:`im2col`'s patches for NHWC images of ``shape``."""
    n, h, w, c = shape
    return n * conv_out(h, kernel, stride, padding) * conv_out(w, kernel, stride, padding) * kernel * kernel * c


_PATCH_BLOCK_FLOATS = 1 << 20  # a few MB: the block's patch gradients stay in cache for the scatter


def conv_input_grad(dy: np.ndarray, w: np.ndarray, shape: tuple[int, ...], stride: int, padding: str) -> np.ndarray:
    """dL/dx of :func:`im2col`'s convolution: the patch gradients ``dy @ W^T`` added back onto the pixels they read.

    ``dy``: the output gradient, NHWC; ``w``: the HWIO kernel; ``shape``: the input's NHWC shape.
    """
    n, h, wd, c = shape
    k, f = w.shape[0], w.shape[3]
    oh, ow = dy.shape[1:3]
    lo, hi = conv_pads(k, padding)
    dxp = np.zeros((n, h + lo + hi, wd + lo + hi, c), dtype=dy.dtype)
    # The patch gradients are formed and scattered a block of images at a time, into one reused
    # buffer: for the whole batch they are the step's largest array, and allocating and filling it
    # afresh every step costs more than the product itself.  Same products, same sums.
    per_image = oh * ow * k * k * c
    block = max(1, _PATCH_BLOCK_FLOATS // per_image)
    dy2 = dy.reshape(-1, f)
    wt = w.reshape(-1, f).T
    dcols = np.empty((min(block, n) * oh * ow, k * k * c), dtype=dy.dtype)
    for start in range(0, n, block):
        rows = min(block, n - start)
        part = dcols[:rows * oh * ow]
        np.matmul(dy2[start * oh * ow:(start + rows) * oh * ow], wt, out=part)
        scatter_windows(dxp[start:start + rows], part.reshape(rows, oh, ow, k, k, c), k, stride)
    return dxp[:, lo:lo + h, lo:lo + wd]


def pool_windows(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """``(n, oh, ow, c, size*size)``: the valid pooling windows of ``x``."""
    oh, ow = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    win = windows(x, size, stride, oh, ow)
    return win.reshape(*win.shape[:4], size * size)


def window_offsets(x: np.ndarray, size: int, stride: int):
    """The pooling windows of ``x`` as ``size*size`` strided views ``(n, oh, ow, c)``, one per offset
    ``(i, j)`` in row-major order (the order of :func:`pool_windows`' last axis): reductions over windows
    become elementwise operations on whole maps, with no copy of the windows."""
    oh, ow = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    for i in range(size):
        for j in range(size):
            yield x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]


def max_pool_with_argmax(x: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Each window's maximum and the row-major offset of its first maximum (``pool_windows(...).argmax(-1)``)."""
    views = window_offsets(x, size, stride)
    best = np.array(next(views))
    index = np.uint8 if size * size <= 256 else np.int32
    arg = np.zeros(best.shape, dtype=index)
    # Plain elementwise arithmetic throughout: NumPy's masked copies are several times slower.
    for t, view in enumerate(views, start=1):
        larger = view > best  # strictly: the first of equal maxima keeps the window
        np.maximum(best, view, out=best)
        np.maximum(arg, np.multiply(larger, t, dtype=index), out=arg)  # t exceeds every earlier offset
    return best, arg


def max_pool_grad(dy: np.ndarray, arg: np.ndarray, shape: tuple[int, ...], size: int, stride: int) -> np.ndarray:
    """dL/dx of a max pool: each window's gradient goes to the maximum :func:`max_pool_with_argmax` chose."""
    dx = np.zeros(shape, dtype=dy.dtype)
    for t, pixels in enumerate(window_offsets(dx, size, stride)):
        pixels += (arg == t) * dy
    return dx


def avg_pool_grad(dy: np.ndarray, shape: tuple[int, ...], size: int, stride: int) -> np.ndarray:
    """dL/dx of an average pool: each window's gradient shared equally among its pixels."""
    share = dy * (1.0 / (size * size))
    dwin = np.broadcast_to(share[:, :, :, None, None, :], (*dy.shape[:3], size, size, dy.shape[3]))
    return scatter_windows(np.zeros(shape, dtype=dy.dtype), dwin, size, stride)


def scatter_windows(dx: np.ndarray, dwin: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Adds each window position's gradient ``dwin[:, :, :, i, j, :]`` onto the pixels it came from, in place."""
    oh, ow = dwin.shape[1:3]
    for i in range(size):
        for j in range(size):
            dx[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :] += dwin[:, :, :, i, j, :]
    return dx
