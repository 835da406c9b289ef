"""Counter-based random bits: the same numbers on every backend, from ``(seed, step, counter)``.

Augmentation draws its per-row parameters inside each engine's training step,
on the engine's device, and every engine must draw the same ones as the NumPy
reference.  Backends' own generators (NumPy's, JAX's threefry, PyTorch's,
TensorFlow's stateless pairs) give different streams, so the draws come from
an integer hash instead: ``lowbias32`` (C. Wellons' hash prospector, a
bijection on 32-bit words), applied as

    key  = mix(mix(seed + GOLDEN) ^ step)       (words mod 2**32)
    bits = mix(key ^ counter) >> 1               (31 bits: int32 everywhere)

NumPy and JAX compute in ``uint32`` with wrap-around; PyTorch, TensorFlow and
PyTensor in ``int64`` holding 32-bit words, with each product split in 16-bit
halves so that no intermediate exceeds 2**48 (signed overflow is undefined in
their kernels).  Integer arithmetic is exact, so the results agree bit for bit.
"""

from __future__ import annotations

GOLDEN = 0x9E3779B9
C1 = 0x21F0AAAD
C2 = 0x735A2D97
MASK = 0xFFFFFFFF


def mix_int(x: int) -> int:
    """``lowbias32`` of a Python int's low 32 bits."""
    x &= MASK
    x ^= x >> 16
    x = (x * C1) & MASK
    x ^= x >> 15
    x = (x * C2) & MASK
    return x ^ (x >> 15)


def key_int(seed: int, step: int) -> int:
    """The per-step key, for Python-int seeds and steps."""
    return mix_int(mix_int(int(seed) + GOLDEN) ^ (int(step) & MASK))


def _mul32(x, c: int):
    """``x * c mod 2**32`` for int64 words ``x`` in [0, 2**32), with products below 2**48."""
    hi, lo = x // 65536, x % 65536
    return ((hi * c) % 65536 * 65536 + lo * c) % (MASK + 1)


def mix_int64(x, xor):
    """``lowbias32`` of int64 words in [0, 2**32) with the backend's ``xor``, in operators every backend overloads."""
    x = xor(x, x // 65536)
    x = _mul32(x, C1)
    x = xor(x, x // 32768)
    x = _mul32(x, C2)
    return xor(x, x // 32768)


def key_int64(seed, step, xor):
    """The per-step key from int64 scalars (tensors, symbolic or not)."""
    return mix_int64(xor(mix_int64((seed + GOLDEN) % (MASK + 1), xor), step % (MASK + 1)), xor)
