"""What augmentation adds to a training step: a LeNet-style network on MNIST rows, with and without.

The network and optimizer are the first ``lenet`` recipe's (conv 5x5x32, pool 2,
conv 5x5x64, pool 2, dense 512, dropout 0.5, Adam 1e-3, batch 128, float32; the
recipe has since added dropout after each pool);
the rows are the first ``--rows`` MNIST training rows, scaled to [0, 1].  For
each engine one trainer is built without augmentation and one with
``--augment``; after a warm-up run (compilation), runs of ``--steps`` steps
alternate between the two ``--repeats`` times, and the median seconds per
step of each are reported with their ratio, and the transform's own time on
one batch (less noisy on a shared machine than the difference of two steps).  Each engine runs in its own
subprocess with every thread variable set to ``--threads``.

    python benchmarks/augment_step.py                       # jax and torch, 512 rows, shift:2,rotate:10
    python benchmarks/augment_step.py --engines jax --augment shift:2,flip,rotate:10 --rows 1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LAYERS = "conv:32:5,pool:2,conv:64:5,pool:2,dense:512,drop:0.5"
BATCH = 128


def measure(engine_name: str, augment: str, rows: int, steps: int, repeats: int, threads: int) -> dict:
    import numpy as np

    from descend.data import load
    from descend.engines import get_engine
    from descend.model import init_params
    from descend.model.augment import Augmentation
    from descend.model.parse import parse_layers
    from descend.optim import make_optimizer

    ds = load("mnist", seed=0)
    X = (ds.train.X[:rows] / 255.0).astype(np.float32)
    y = ds.train.y[:rows]
    spec = parse_layers(LAYERS, (28, 28, 1))
    engine = get_engine(engine_name, threads=threads)
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    params = init_params(spec, 784, 10, key=0)
    aug = Augmentation.parse(augment).bind((28, 28))
    trainers = {}
    for label, a in (("plain", None), ("augmented", aug)):
        trainer = engine.trainer(spec, make_optimizer("adam", 1e-3), augment=a)
        ts = trainer.init(params, {})
        order = np.random.default_rng(0).permutation(rows)
        ts, _ = trainer.run(ts, Xd, yd, order, BATCH, 0, steps, 0, 0)  # compile / warm up
        trainers[label] = [trainer, ts, order]
    times = {"plain": [], "augmented": []}
    for r in range(repeats):
        for label, entry in trainers.items():
            trainer, ts, order = entry
            started = time.perf_counter()
            ts, losses = trainer.run(ts, Xd, yd, order, BATCH, 0, steps, (r + 1) * steps, 0)
            float(np.sum(losses))  # the run is done when its losses are on the host
            times[label].append((time.perf_counter() - started) / steps)
            entry[1] = ts
    plain, augmented = statistics.median(times["plain"]), statistics.median(times["augmented"])
    return {"engine": engine_name, "plain_ms": 1e3 * plain, "augmented_ms": 1e3 * augmented,
            "added": augmented / plain - 1, "alone_ms": 1e3 * _alone(engine, aug, Xd[:BATCH])}


def _alone(engine, aug, xb) -> float:
    """Median seconds of the transform by itself on one batch (JAX: jitted, as inside the step)."""
    from descend.model.augment import augment_rows

    if engine.name == "jax":
        import jax

        fn = jax.jit(lambda x, t: augment_rows(engine.ops, aug, x, 0, t))
        def call(t):
            return fn(xb, t).block_until_ready()
    else:
        def call(t):
            return engine.to_numpy(augment_rows(engine.ops, aug, xb, 0, t))
    call(0)
    times = []
    for t in range(1, 51):
        started = time.perf_counter()
        call(t)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default="jax,torch")
    p.add_argument("--augment", default="shift:2,rotate:10")
    p.add_argument("--rows", type=int, default=512, help="MNIST training rows (a multiple of the batch, 128)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    steps = args.rows // BATCH
    if args.child:
        print(json.dumps(measure(args.child, args.augment, args.rows, steps, args.repeats, args.threads)))
        return 0
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}}
    print(f"| engine | ms/step plain | ms/step --augment {args.augment} | added | the transform alone, ms/batch |")
    print("|---|---|---|---|---|")
    for engine in args.engines.split(","):
        out = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--child", engine],
                             env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['engine']} | {r['plain_ms']:.1f} | {r['augmented_ms']:.1f} | {100 * r['added']:+.1f}% "
              f"| {r['alone_ms']:.2f} ({100 * r['alone_ms'] / r['plain_ms']:.1f}% of a step) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
