"""The CNN benchmark step's matrix products, timed alone: XLA:CPU (what the JAX engine runs) against NumPy's BLAS.

One training step of ``benchmarks/cnn.py``'s network (batch 128) multiplies
these matrices, with every convolution written as the GEMM of its patches
(the FLOPs a convolution kernel does, whatever its algorithm):

* the second convolution: forward (25,088 x 800) @ (800 x 64), input gradient
  (25,088 x 64) @ (64 x 800), and the kernel gradient as the JAX engine forms it,
  five (160 x 25,088) @ (25,088 x 64) products, one per kernel row;
* the first convolution: forward (100,352 x 25) @ (25 x 32) and its kernel
  gradient, five (5 x 100,352) @ (100,352 x 32) products;
* the dense 3,136 -> 512 layer: forward, input gradient and weight gradient.

Each product runs ``REPS`` times inside a jitted ``lax.scan`` (as in the
engine's compiled span; the JAX engine's compiler options, so XLA's Eigen
kernels) and as a plain ``numpy.matmul``; the median of 5 timings each.  The
sum over a step is a floor for that library's step: the JAX engine's step also
forms the patches, pools, activates and updates.  Run with the thread count
under test, e.g.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 PJRT_NPROC=2 JAX_PLATFORMS=cpu python benchmarks/cnn_products.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

REPS, ROUNDS = 10, 5
K2 = 128 * 14 * 14  # pixels of the second convolution's maps, batch 128
K1 = 128 * 28 * 28
# (what, m, k, n, times per step)
PRODUCTS = [
    ("conv 2 forward", K2, 800, 64, 1),
    ("conv 2 input gradient", K2, 64, 800, 1),
    ("conv 2 kernel gradient, per kernel row", 160, K2, 64, 5),
    ("conv 1 forward", K1, 25, 32, 1),
    ("conv 1 kernel gradient, per kernel row", 5, K1, 32, 5),
    ("dense forward", 128, 3136, 512, 1),
    ("dense input gradient", 128, 512, 3136, 1),
    ("dense weight gradient", 3136, 128, 512, 1),
]


def xla_ms(m, k, n):
    import jax
    import jax.numpy as jnp

    from descend.engines.jax_engine import CPU_COMPILER_OPTIONS

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), np.float32))
    b = jnp.asarray(rng.standard_normal((k, n), np.float32))

    def body(carry, _):
        # The carry makes each product depend on the previous one, so XLA cannot hoist it out of the loop.
        c = (a + carry) @ b
        return carry + c[0, 0] * 0, None

    run = jax.jit(lambda: jax.lax.scan(body, jnp.float32(0), None, length=REPS)[0],
                  compiler_options=CPU_COMPILER_OPTIONS)
    run().block_until_ready()
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run().block_until_ready()
        times.append((time.perf_counter() - t0) / REPS * 1e3)
    return statistics.median(times)


def numpy_ms(m, k, n):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(REPS):
            np.matmul(a, b, out=out)
        times.append((time.perf_counter() - t0) / REPS * 1e3)
    return statistics.median(times)


def main() -> None:
    print("| product | (m, k, n) | per step | XLA ms | XLA GFLOP/s | NumPy ms | NumPy GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    flops_step = 0.0
    for what, m, k, n, times in PRODUCTS:
        flops = 2.0 * m * k * n
        x, p = xla_ms(m, k, n), numpy_ms(m, k, n)
        totals[0] += times * x
        totals[1] += times * p
        flops_step += times * flops
        print(f"| {what} | ({m:,}, {k:,}, {n:,}) | {times} | {x:.2f} | {flops / x / 1e6:.0f} | {p:.2f} | "
              f"{flops / p / 1e6:.0f} |")
    print(f"| **a step's products** | | | **{totals[0]:.1f}** | {flops_step / totals[0] / 1e6:.0f} | "
          f"**{totals[1]:.1f}** | {flops_step / totals[1] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
