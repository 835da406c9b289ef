"""The one operation every PCA solver needs, chunk by chunk, on NumPy, PyTorch or JAX.

``CovarianceOperator(V)`` returns ``C V`` for the covariance ``C = Xc^T Xc / (n-1)``
of the centered, scaled data ``Xc = scale * X - mean`` *without forming C*:
each chunk of rows is centered (a chunk-sized temporary), then
``P = chunk @ V`` (rows x m) and ``chunk^T P`` (D x m) are added to a float64
accumulator.  Memory is O(chunk x D + D x m) whatever the number of rows, and
the D x D matrix exists only in :meth:`CovarianceOperator.covariance`, which the
``exact`` reference method calls on purpose.

The products run in the compute dtype (float32 by default: two to three times
the float64 rate on a CPU, far more on most GPUs); the per-chunk results are
summed in float64, and everything of size D x m or m x m (orthonormalization,
Rayleigh-Ritz, deflation) is float64 NumPy on the host.

Caching: when the data is already in memory (not a memmap or a file) and its
compute-dtype copy fits in ``cache_bytes``, the centered chunks are prepared
once and kept (on the device for GPU engines: "put the dataset on the device
once"), so later passes are pure matrix products.  Files and memmaps are never
cached unless asked (``cache=True``): that is what keeps out-of-core runs
within a chunk's memory.
"""

from __future__ import annotations

import contextlib

import numpy as np

from descend.errors import ConfigError
from descend.pca.data import RowSource, Stats, default_chunk_rows

__all__ = ["CovarianceOperator", "PCA_ENGINES", "CACHE_BYTES"]

PCA_ENGINES = ("numpy", "torch", "jax", "auto")
#: Largest compute-dtype copy of in-memory data kept between passes when ``cache`` is left to decide.
CACHE_BYTES = 2 << 30
#: Products with at most this many columns are memory-bound: rows go in blocks of _BLOCK_BYTES.
_NARROW, _BLOCK_BYTES = 4, 1 << 19


def _resolve_engine(engine: str, device: str) -> str:
    """``auto``: a GPU engine (PyTorch, then JAX) when one sees a GPU, else NumPy."""
    if engine != "auto":
        return engine
    if device == "cpu":
        return "numpy"
    from descend.engines import is_available

    if is_available("torch"):
        import torch

        if torch.cuda.is_available():
            return "torch"
    if is_available("jax"):
        import jax

        try:
            if jax.devices("gpu"):
                return "jax"
        except RuntimeError:
            pass
    if device == "gpu":
        raise ConfigError("`device` 'gpu' is not available: neither PyTorch nor JAX sees a GPU here. "
                          "Received: device='gpu'")
    return "numpy"


class _NumpyBackend:
    name = "numpy"

    def __init__(self, dtype: str, device: str, threads: int | None):
        if device == "gpu":
            raise ConfigError("engine 'numpy' has no GPU support. Received: device='gpu'")
        self.device = "cpu"
        self.dtype = np.dtype(dtype)
        self.threads = threads
        self._buf = None

    def scope(self):
        from descend.engines.base import blas_threads

        return blas_threads(self.threads)

    def prepare(self, raw: np.ndarray, scale: float, mean, keep: bool):
        """Centered, scaled compute-dtype copy of a raw chunk (a reused buffer unless ``keep``)."""
        rows = raw.shape[0]
        if keep:
            out = np.empty(raw.shape, dtype=self.dtype)
        else:
            if self._buf is None or self._buf.shape[0] < rows or self._buf.shape[1] != raw.shape[1]:
                self._buf = np.empty(raw.shape, dtype=self.dtype)
            out = self._buf[:rows]
        if scale != 1.0:
            np.multiply(raw, self.dtype.type(scale) if raw.dtype.itemsize <= self.dtype.itemsize else scale,
                        out=out, casting="same_kind")
            out -= mean
        else:
            np.subtract(raw, mean if raw.dtype.kind == "f" and raw.dtype.itemsize > self.dtype.itemsize
                        else mean.astype(self.dtype), out=out, casting="same_kind")
        return out

    def mean(self, mean64: np.ndarray):
        return mean64  # cast by prepare as needed

    def put(self, V: np.ndarray):
        return np.ascontiguousarray(V, dtype=self.dtype)

    def new_acc(self, shape):
        return np.zeros(shape)

    def add_product(self, acc, C, Vd):
        if Vd.shape[1] > _NARROW:
            acc += C.T @ (C @ Vd)
            return acc
        # Few columns (gd's single vector): matrix-vector products are memory-bound, so rows
        # are taken in cache-sized blocks and read from memory once, not once per product.
        step = max(1, _BLOCK_BYTES // max(1, C.shape[1] * C.itemsize))
        for a in range(0, C.shape[0], step):
            c = C[a:a + step]
            acc += c.T @ (c @ Vd)
        return acc

    def add_gram(self, acc, C):
        acc += C.T @ C
        return acc

    def to_numpy(self, acc) -> np.ndarray:
        return np.asarray(acc, dtype=np.float64)


class _TorchBackend:
    name = "torch"

    def __init__(self, dtype: str, device: str, threads: int | None):
        from descend.engines import get_engine

        engine = get_engine("torch", device=device, dtype=dtype, threads=threads)
        import torch

        self.torch = torch
        self.device = engine.device
        self.tdev = engine.torch_device
        self.tdtype = engine.torch_dtype
        self.threads = threads

    def scope(self):
        from descend.engines.torch_engine import torch_threads

        stack = contextlib.ExitStack()
        stack.enter_context(torch_threads(self.threads))
        stack.enter_context(self.torch.no_grad())
        if self.device == "gpu":  # full float32 products even where the process allowed TF32
            matmul = self.torch.backends.cuda.matmul
            before = matmul.allow_tf32
            matmul.allow_tf32 = False
            stack.callback(setattr, matmul, "allow_tf32", before)
        return stack

    def mean(self, mean64):
        return self.torch.from_numpy(np.asarray(mean64, dtype=np.float64)).to(self.tdev)

    def prepare(self, raw, scale, mean, keep):
        torch = self.torch
        raw = np.ascontiguousarray(raw)
        if not raw.flags.writeable or raw.dtype.byteorder not in "=|":
            raw = raw.astype(raw.dtype.newbyteorder("="), copy=True)
        if raw.dtype == np.uint16 or raw.dtype == np.uint32 or raw.dtype == np.uint64:
            raw = raw.astype(np.float64)
        host = torch.from_numpy(raw)
        if host.dtype == torch.float64 and self.tdtype == torch.float32:
            return (host.to(self.tdev) * scale - mean).to(self.tdtype)
        t = host.to(device=self.tdev, dtype=self.tdtype)
        if t.data_ptr() == host.data_ptr():  # same memory as the caller's array: never modify it
            t = t.clone()
        if scale != 1.0:
            t.mul_(scale)
        t.sub_(mean.to(self.tdtype))
        return t

    def put(self, V):
        return self.torch.from_numpy(np.ascontiguousarray(V, dtype=np.float64)).to(self.tdev).to(self.tdtype)

    def new_acc(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.tdev)

    def add_product(self, acc, C, Vd):
        acc += (C.T @ (C @ Vd)).to(self.torch.float64)
        return acc

    def add_gram(self, acc, C):
        acc += (C.T @ C).to(self.torch.float64)
        return acc

    def to_numpy(self, acc):
        return acc.cpu().numpy().astype(np.float64, copy=False)


class _JaxBackend:
    name = "jax"

    def __init__(self, dtype: str, device: str, threads: int | None):
        from descend.engines import get_engine

        engine = get_engine("jax", device=device, dtype=dtype, threads=threads)
        jax = engine.jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.device = engine.device
        self.jdev = engine.jax_device
        self.dtype = np.dtype(dtype)
        dt = self.dtype

        def prep(raw, scale, mean):
            return (raw.astype(dt) * scale - mean).astype(dt)

        self._prep = jax.jit(prep)
        # Full float32 precision: on GPUs JAX's default would round products to TF32 (10-bit mantissa).
        hi = jax.lax.Precision.HIGHEST
        self._product = jax.jit(lambda C, V: jnp.matmul(C.T, jnp.matmul(C, V, precision=hi), precision=hi))
        self._gram = jax.jit(lambda C: jnp.matmul(C.T, C, precision=hi))

    def scope(self):
        return contextlib.nullcontext()

    def mean(self, mean64):
        return self.jax.device_put(np.asarray(mean64, dtype=self.dtype), self.jdev)

    def prepare(self, raw, scale, mean, keep):
        raw = np.asarray(raw)
        if raw.dtype.kind == "f" and raw.dtype != self.dtype:
            raw = raw.astype(self.dtype)  # float64 arrays need x64 mode on the device
        elif raw.dtype.kind in "iub" and raw.dtype.itemsize > 2:
            raw = raw.astype(self.dtype)
        return self._prep(self.jax.device_put(raw, self.jdev), self.dtype.type(scale), mean)

    def put(self, V):
        return self.jax.device_put(np.asarray(V, dtype=self.dtype), self.jdev)

    def new_acc(self, shape):
        return np.zeros(shape)

    def add_product(self, acc, C, Vd):
        acc += np.asarray(self._product(C, Vd), dtype=np.float64)
        return acc

    def add_gram(self, acc, C):
        acc += np.asarray(self._gram(C), dtype=np.float64)
        return acc

    def to_numpy(self, acc):
        return acc


_BACKENDS = {"numpy": _NumpyBackend, "torch": _TorchBackend, "jax": _JaxBackend}


class CovarianceOperator:
    """``op(V) = C V`` (C the covariance, N-1 denominator) by passes over the data; counts its passes."""

    def __init__(self, source: RowSource, stats: Stats, *, scale: float = 1.0, engine: str = "numpy",
                 device: str = "auto", dtype: str = "float32", chunk_rows: int | None = None,
                 cache: bool | None = None, threads: int | None = None, cache_bytes: int = CACHE_BYTES):
        if engine not in PCA_ENGINES:
            raise ConfigError(f"`engine` must be one of {', '.join(PCA_ENGINES)}. Received: engine={engine!r}")
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"`dtype` must be 'float32' or 'float64'. Received: dtype={dtype!r}")
        if chunk_rows is not None and (not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1):
            raise ConfigError(f"`chunk_rows` must be a positive integer. Received: chunk_rows={chunk_rows!r}")
        self.source, self.stats, self.scale = source, stats, float(scale)
        self.engine = _resolve_engine(engine, device)
        self.backend = _BACKENDS[self.engine](dtype, device, threads)
        self.device = self.backend.device
        self.dtype = dtype
        itemsize = np.dtype(dtype).itemsize
        self.chunk_rows = int(chunk_rows or default_chunk_rows(source.d, itemsize))
        nbytes = source.n * source.d * itemsize
        self.cache = bool(cache) if cache is not None else (source.in_memory and nbytes <= cache_bytes)
        self._cached: list | None = None
        self._mean = None
        self.n_passes = 0

    @property
    def n(self) -> int:
        return self.source.n

    @property
    def d(self) -> int:
        return self.source.d

    def _chunks(self):
        """Centered compute-dtype chunks on the device (cached after the first pass when caching)."""
        if self._mean is None:
            self._mean = self.backend.mean(self.stats.mean)
        if self._cached is not None:
            yield from self._cached
            return
        kept = [] if self.cache else None
        for _, raw in self.source.chunks(self.chunk_rows):
            C = self.backend.prepare(raw, self.scale, self._mean, keep=self.cache)
            if kept is not None:
                kept.append(C)
            yield C
        if kept is not None:
            self._cached = kept

    def __call__(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        vector = V.ndim == 1
        V2 = V[:, None] if vector else V
        with self.backend.scope():
            Vd = self.backend.put(V2)
            acc = self.backend.new_acc((self.d, V2.shape[1]))
            for C in self._chunks():
                acc = self.backend.add_product(acc, C, Vd)
            out = self.backend.to_numpy(acc) / (self.n - 1)
        self.n_passes += 1
        return out[:, 0] if vector else out

    def covariance(self) -> np.ndarray:
        """The D x D covariance matrix itself (for the ``exact`` reference method only)."""
        with self.backend.scope():
            acc = self.backend.new_acc((self.d, self.d))
            for C in self._chunks():
                acc = self.backend.add_gram(acc, C)
            out = self.backend.to_numpy(acc) / (self.n - 1)
        self.n_passes += 1
        return (out + out.T) / 2

    def release(self) -> None:
        """Drop cached chunks (device memory)."""
        self._cached = None
