"""NumPy engine overhead: descend's epoch vs a bare hand-written NumPy loop.

Same math on both sides: 784-300-10 ReLU, mean softmax cross-entropy, momentum
SGD (v = mu*v - lr*g; w += v), batch 500, float32, the same batches in the
same order.  The two are timed alternately, repeated, and the medians and
their ratio are printed (and appended to docs/benchmarks.md with --write).

    OMP_NUM_THREADS=2 python benchmarks/numpy_overhead.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def bare_epoch(params, velocity, X, y, order, batch, lr=0.05, mu=0.9):
    """The reference: everything inlined, no abstractions."""
    W0, b0, W1, b1 = params
    V = velocity
    for j in range(len(order) // batch):
        idx = order[j * batch:(j + 1) * batch]
        x, t = X[idx], y[idx]
        h = x @ W0
        h += b0
        np.maximum(h, 0, out=h)
        z = h @ W1
        z += b1
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(len(t))
        loss = np.mean(np.log(s[:, 0]) - z[rows, t])
        d = e / s
        d[rows, t] -= 1.0
        d /= len(t)
        gW1 = h.T @ d
        gb1 = d.sum(axis=0)
        dh = d @ W1.T
        dh *= h > 0
        gW0 = x.T @ dh
        gb0 = dh.sum(axis=0)
        for k, g in enumerate((gW0, gb0, gW1, gb1)):
            V[k] = mu * V[k] - lr * g
        W0, b0, W1, b1 = W0 + V[0], b0 + V[1], W1 + V[2], b1 + V[3]
    return (W0, b0, W1, b1), V, loss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--write", action="store_true", help="append the result to docs/benchmarks.md")
    args = ap.parse_args()

    from descend.data import Normalizer, load
    from descend.engines import get_engine
    from descend.model import MLP, init_params
    from descend.optim import momentum

    ds = load("mnist")
    X = Normalizer("scale").fit(ds.train.X).transform(ds.train.X)
    y = ds.train.y
    engine = get_engine("numpy", threads=args.threads)
    spec = MLP(hidden=(300,))
    params0 = init_params(spec, 784, 10, key=0)
    trainer = engine.trainer(spec, momentum(0.05, 0.9))
    order = np.random.default_rng(0).permutation(len(y))
    steps = len(y) // args.batch

    def descend_epoch():
        ts = trainer.init(params0, {})
        return trainer.run(ts, X, y, order, args.batch, 0, steps, 0, 0)

    def reference_epoch():
        p = tuple(params0[k] for k in ("dense0.W", "dense0.b", "dense1.W", "dense1.b"))
        return bare_epoch(p, [np.zeros_like(a) for a in p], X, y, order, args.batch)

    # Same math: both must land on the same weights.
    ts, _ = descend_epoch()
    ref, _, _ = reference_epoch()
    for a, b in zip((ts.params[k] for k in ("dense0.W", "dense0.b", "dense1.W", "dense1.b")), ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)

    times = {"descend": [], "bare": []}
    for _ in range(args.repeats):
        for name, fn in (("descend", descend_epoch), ("bare", reference_epoch)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["descend"] / med["bare"]
    line = (f"| numpy engine overhead | 784-300-10 ReLU, momentum, batch {args.batch}, {steps} steps, "
            f"{args.threads} threads | descend {med['descend']:.3f} s | bare NumPy {med['bare']:.3f} s | "
            f"ratio {ratio:.3f} | medians of {args.repeats} | {platform.processor() or platform.machine()}, "
            f"numpy {np.__version__} |")
    print(line)
    print("all descend:", " ".join(f"{t:.3f}" for t in times["descend"]))
    print("all bare:   ", " ".join(f"{t:.3f}" for t in times["bare"]))
    if args.write:
        from pathlib import Path

        from docsection import write_section

        body = (f"Latest `make bench` measurement:\n\n{line}\n\nRaw (s): descend "
                + " ".join(f"{t:.3f}" for t in times["descend"]) + "; bare "
                + " ".join(f"{t:.3f}" for t in times["bare"]))
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", "numpy-overhead", body)
    return 0 if ratio <= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
