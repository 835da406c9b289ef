"""descend's JAX engine against a minimal hand-written JAX program of the same step, batch 32, one thread.

Both run 784-300-10 ReLU, softmax cross-entropy and momentum SGD (lr 0.05, mu
0.9) over MNIST's 50,000 training rows as one jitted ``lax.scan`` per epoch.
If the minimal program is no faster, the batch-32 epoch time is XLA's, not
descend's.  ``minimal`` compiles with XLA's defaults, ``minimal-eigen`` with
the JAX engine's CPU compiler options (matrix products on Eigen rather than
YNNPACK), so the second pair isolates descend's own overhead and the first
shows what the option is worth.  Run each in its own process with one thread:

    OMP_NUM_THREADS=1 PJRT_NPROC=1 JAX_PLATFORMS=cpu python benchmarks/jax_floor.py minimal
    OMP_NUM_THREADS=1 PJRT_NPROC=1 JAX_PLATFORMS=cpu python benchmarks/jax_floor.py minimal-eigen
    OMP_NUM_THREADS=1 PJRT_NPROC=1 JAX_PLATFORMS=cpu python benchmarks/jax_floor.py descend
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

BATCH, EPOCHS = 32, 6


def data():
    from descend.data import Normalizer, load

    ds = load("mnist")
    return Normalizer("scale").fit(ds.train.X).transform(ds.train.X), ds.train.y.astype(np.int32)


def minimal(X, y, compiler_options=None):
    import jax
    import jax.numpy as jnp

    steps = len(y) // BATCH
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    rng = np.random.default_rng(0)
    p = {"W0": jnp.asarray(rng.normal(0, 0.05, (784, 300)), jnp.float32), "b0": jnp.zeros(300),
         "W1": jnp.asarray(rng.normal(0, 0.05, (300, 10)), jnp.float32), "b1": jnp.zeros(10)}
    v = jax.tree.map(jnp.zeros_like, p)

    def loss(p, xb, yb):
        z = jax.nn.relu(xb @ p["W0"] + p["b0"]) @ p["W1"] + p["b1"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], 1))

    grad = jax.value_and_grad(loss)

    @partial(jax.jit, compiler_options=compiler_options)
    def epoch(p, v, idx):
        def step(carry, rows):
            p, v = carry
            value, g = grad(p, Xd[rows], yd[rows])
            v = jax.tree.map(lambda a, b: 0.9 * a - 0.05 * b, v, g)
            return (jax.tree.map(jnp.add, p, v), v), value

        (p, v), losses = jax.lax.scan(step, (p, v), idx)
        return p, v, losses

    times = []
    for _ in range(EPOCHS):
        idx = jnp.asarray(rng.permutation(len(y))[:steps * BATCH].reshape(steps, BATCH))
        started = time.perf_counter()
        p, v, losses = epoch(p, v, idx)
        losses.block_until_ready()
        times.append(time.perf_counter() - started)
    return times


def minimal_eigen(X, y):
    from descend.engines.jax_engine import CPU_COMPILER_OPTIONS

    return minimal(X, y, CPU_COMPILER_OPTIONS)


def descend(X, y):
    sys.path.insert(0, str(Path(__file__).parent))
    import peers  # the harness's own descend measurement, so both figures come from the same code

    return peers.epochs_descend("jax", X, y, BATCH, 1, EPOCHS - 1, len(y))


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "minimal"
    X, y = data()
    times = {"minimal": minimal, "minimal-eigen": minimal_eigen, "descend": descend}[which](X, y)
    scale = len(y) / (len(y) // BATCH * BATCH)
    print(f"{which}: batch {BATCH} epoch {statistics.median(times[1:]) * scale:.3f} s (median of {len(times) - 1})")


if __name__ == "__main__":
    main()
