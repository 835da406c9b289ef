"""CNN epoch time: descend on every engine against PyTorch and Keras, measured in one run.

The network, the same everywhere: conv 5x5x32 "same" + ReLU -> max-pool 2 ->
conv 5x5x64 "same" + ReLU -> max-pool 2 -> dense 512 ReLU -> dense 10, mean
softmax cross-entropy, Adam (lr 1e-3), batch 128, float32, on all 60,000 MNIST
training rows (the training and validation splits together), pixels scaled to
[0, 1].  Peers, written as their users would:

* PyTorch: ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.Linear`` in an
  ``nn.Sequential``, a shuffling ``DataLoader`` over a ``TensorDataset``,
  ``torch.optim.Adam``;
* Keras 3 on its JAX backend: a ``keras.Sequential`` trained by ``model.fit``
  (one call over all the epochs; a callback reads the epoch times).

Each framework runs in its own subprocess, started with every thread variable
set to ``--threads`` (OpenMP, OpenBLAS, MKL, XLA's intra-op pool, TensorFlow's
intra- and inter-op pools; PyTorch also gets ``torch.set_num_threads``).
Inside it the first epoch is timed apart (compilation and warm-up; its excess
over a warm epoch is the reported overhead) and ``--epochs`` warm epochs
follow; ``--repeats`` runs every framework that many times, one round after
another, and the median over all warm epochs is reported.  descend drops the
last partial batch (468 steps of 128), the peers train on it; every epoch time
is scaled to a full epoch of all the rows so the figures compare equal work.

The FLOP bound: one row's forward multiply-adds (the network's own count) x 3
(forward, input gradient, weight gradient) x rows x 2 FLOPs, at this
machine's measured float32 GEMM rate (NumPy, ``--threads`` threads, 2048^3).

    python benchmarks/cnn.py --quick              # smoke test: 5,000 rows, 2 epochs
    python benchmarks/cnn.py                      # everything, prints a Markdown table
    python benchmarks/cnn.py --write              # and replaces the section in docs/benchmarks.md
    python benchmarks/cnn.py --only descend-jax,torch --epochs 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import docsection  # noqa: E402
from peers import available, gemm_gflops, versions  # noqa: E402

LR, BATCH, ROWS = 1e-3, 128, 60000
ENGINES = ("jax", "torch", "tensorflow", "numpy", "pytensor")
FRAMEWORKS = tuple(f"descend-{e}" for e in ENGINES) + ("torch", "keras")


def child_env(threads: int) -> dict:
    """The environment of one framework's process: every library held to ``threads`` threads."""
    from descend.placement.threads import thread_environment

    env = thread_environment(threads)
    # Current jaxlib sizes XLA's CPU pool from PJRT_NPROC (the XLA_FLAGS thread count no longer bounds it):
    # Keras on JAX gets it from the environment, descend's JAX engine sets it itself.
    env.update({"KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1", "PJRT_NPROC": str(threads),
                "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
    return env


# --------------------------------------------------------------------------- data and network


def mnist_rows(samples: int):
    """The first ``samples`` of MNIST's 60,000 training rows (train + validation), scaled to [0, 1]."""
    import numpy as np

    from descend.data import load

    ds = load("mnist")
    parts = [ds.train] + ([ds.validation] if ds.validation is not None else [])
    X = np.concatenate([p.X for p in parts])[:samples]
    y = np.concatenate([p.y for p in parts])[:samples]
    return (X.astype(np.float32) / np.float32(255.0)), y.astype(np.int64)


def network():
    from descend.model import Activation, Conv2D, Dense, Flatten, MaxPool2D, Network

    return Network((28, 28, 1), (
        Conv2D(32, 5, padding="same"), Activation("relu"), MaxPool2D(2),
        Conv2D(64, 5, padding="same"), Activation("relu"), MaxPool2D(2),
        Flatten(), Dense(512), Activation("relu"), Dense(10, init_name="glorot")))


def epoch_flops(rows: int, first_input_grad: bool = True) -> float:
    """FLOPs of one training epoch's multiply-adds (2 FLOPs each): forward, input and weight gradients.

    Nothing needs the gradient with respect to the images, so the minimal
    count leaves out the first convolution's input gradient.
    """
    net = network()
    macs = 3 * net.macs()
    if not first_input_grad:
        macs -= net.layers[0].macs(net.input_shape)
    return 2.0 * macs * rows


# --------------------------------------------------------------------------- workers


def epochs_descend(engine_name, X, y, epochs, threads):
    """(seconds to build the trainer, per-epoch seconds, samples per epoch)."""
    import numpy as np

    from descend.engines import get_engine
    from descend.optim import adam

    engine = get_engine(engine_name, device="cpu", dtype="float32", threads=threads)
    spec = network()
    params, state = spec.init(0)
    # PyTensor compiles when the trainer is built, JAX and TensorFlow on the first run: both are overhead.
    t0 = time.perf_counter()
    trainer = engine.trainer(spec, adam(LR))
    ts = trainer.init(params, state)
    build_s = time.perf_counter() - t0
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    steps = len(y) // BATCH
    times = []
    for epoch in range(epochs + 1):
        order = np.random.default_rng([0, epoch]).permutation(len(y))
        t0 = time.perf_counter()
        ts, losses = trainer.run(ts, Xd, yd, order, BATCH, 0, steps, epoch * steps, 0)
        last = float(losses[-1])  # the losses are on the host: the work is done
        times.append(time.perf_counter() - t0)
    return build_s, times, steps * BATCH, last


def epochs_torch(X, y, epochs, threads):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.from_numpy(X.reshape(-1, 1, 28, 28))
    loader = DataLoader(TensorDataset(images, torch.from_numpy(y)), batch_size=BATCH, shuffle=True)
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return build_s, times, len(y), float(loss)


def epochs_keras(X, y, epochs, threads):
    import keras

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t0)

    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    build_s = time.perf_counter() - t0
    timer = EpochTimes()
    history = model.fit(X.reshape(-1, 28, 28, 1), y, batch_size=BATCH, epochs=epochs + 1, shuffle=True,
                        verbose=0, callbacks=[timer])
    return build_s, timer.times, len(y), float(history.history["loss"][-1])


def worker(framework: str, samples: int, epochs: int, threads: int) -> dict:
    X, y = mnist_rows(samples)
    if framework.startswith("descend-"):
        build_s, times, done, loss = epochs_descend(framework.split("-", 1)[1], X, y, epochs, threads)
    else:
        build_s, times, done, loss = {"torch": epochs_torch, "keras": epochs_keras}[framework](
            X, y, epochs, threads)
    return {"build_s": build_s, "first_s": times[0], "warm": times[1:], "samples": done, "rows": len(y),
            "last_loss": loss}


# --------------------------------------------------------------------------- parent


def run_child(framework: str, samples: int, epochs: int, threads: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", framework, "--samples", str(samples), "--epochs", str(epochs),
           "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()] or ["failed"]
        return {"error": lines[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def combine(runs: list[dict]) -> dict:
    """One framework's repeats: median warm epoch and median first-epoch overhead, scaled to all the rows."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"]}
    scale = ok[0]["rows"] / ok[0]["samples"]
    epoch = statistics.median([t for r in ok for t in r["warm"]]) * scale
    overhead = statistics.median([r["build_s"] + max(r["first_s"] * scale - epoch, 0.0) for r in ok])
    return {"epoch_s": epoch, "overhead_s": overhead, "samples_per_s": ok[0]["rows"] / epoch, "runs": len(ok),
            "epochs": sum(len(r["warm"]) for r in ok), "last_loss": ok[-1]["last_loss"],
            "spread": (min(t for r in ok for t in r["warm"]) * scale, max(t for r in ok for t in r["warm"]) * scale)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ratio_lines(results: dict) -> list[str]:
    torch = results.get("torch", {})
    if "epoch_s" not in torch:
        return []
    out = []
    for fw, goal in (("descend-jax", 0.8), ("descend-numpy", 3.0)):
        r = results.get(fw, {})
        if "epoch_s" in r:
            ratio = r["epoch_s"] / torch["epoch_s"]
            verdict = "met" if ratio <= goal else "not met"
            out.append(f"- {fw} / PyTorch epoch time: **{ratio:.2f}x** (goal <= {goal:g}x: {verdict})")
    return out


def run_count(results: dict, repeats: int) -> str:
    """Runs per framework: a framework named twice in --only ran twice as often as the others."""
    counts = sorted({r["runs"] for r in results.values() if "runs" in r}) or [repeats]
    return f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0])


def markdown(results: dict, frameworks: list[str], gflops: float, missing: list[str], args) -> str:
    import numpy as np

    rows = min(args.samples, ROWS)
    full, minimal = epoch_flops(rows), epoch_flops(rows, first_input_grad=False)
    lines = [
        "## CNN epoch time", "",
        "conv 5x5x32 same + ReLU -> max-pool 2 -> conv 5x5x64 same + ReLU -> max-pool 2 -> dense 512 ReLU -> "
        f"dense 10; Adam 1e-3, batch {BATCH}, float32, {rows:,} MNIST training rows, "
        f"{args.threads} thread(s) for every framework, each in its own process.", "",
        f"Command: `{command_text(args)}` ({run_count(results, args.repeats)} run(s) of one first epoch + "
        f"{args.epochs} warm epochs per framework; the median warm epoch, scaled to a full epoch of all the rows; "
        "overhead = "
        "building the model/trainer + the first epoch's excess over a warm one).",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, NumPy {np.__version__}, {versions()}. "
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    ]
    if args.note:
        lines.append(f"Note: {args.note}")
    lines += ["", "| framework | overhead s | epoch s (median) | min-max s | samples/s | x PyTorch |",
              "|---|---|---|---|---|---|"]
    torch_s = results.get("torch", {}).get("epoch_s")
    for fw in frameworks:
        r = results.get(fw, {})
        if "error" in r:
            lines.append(f"| {fw} | error: {r['error']} | | | | |")
            continue
        ratio = f"{r['epoch_s'] / torch_s:.2f}" if torch_s else ""
        lines.append(f"| {fw} | {r['overhead_s']:.1f} | {r['epoch_s']:.2f} | {r['spread'][0]:.2f}-"
                     f"{r['spread'][1]:.2f} | {r['samples_per_s']:,.0f} | {ratio} |")
    lines += [""] + ratio_lines(results)
    lines += ["", f"FLOP bound: {full / 2e12:.2f} T multiply-adds per epoch of {rows:,} rows (forward x 3) = "
              f"{full / 1e12:.2f} TFLOP; at the measured float32 GEMM rate of {gflops:.0f} GFLOP/s (NumPy, "
              f"{args.threads} threads, 2048^3) **{full / (gflops * 1e9):.1f} s** an epoch "
              f"({minimal / (gflops * 1e9):.1f} s without the first convolution's unneeded input gradient)."]
    if missing:
        lines += ["", "Not installed here: " + ", ".join(missing) + "."]
    return "\n".join(lines).rstrip()


def command_text(args) -> str:
    parts = ["python benchmarks/cnn.py"]
    if args.quick:
        parts.append("--quick")
    else:
        if args.samples != ROWS:
            parts.append(f"--samples {args.samples}")
        parts.append(f"--epochs {args.epochs}")
    if args.repeats != 1:
        parts.append(f"--repeats {args.repeats}")
    if args.only != ",".join(FRAMEWORKS):
        parts.append(f"--only {args.only}")
    if args.threads != 2:
        parts.append(f"--threads {args.threads}")
    if args.timeout != (600 if args.quick else 3600):
        parts.append(f"--timeout {args.timeout}")
    return " ".join(parts + (["--write"] if args.write else []))


def write_section(table: str) -> None:
    docsection.write_section(ROOT / "docs" / "benchmarks.md", "cnn", table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="warm epochs timed per run, after the first (default 3)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every framework, one round after another")
    ap.add_argument("--samples", type=int, default=ROWS, help=f"training rows (default all {ROWS:,})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(FRAMEWORKS), help=f"comma-separated subset of {FRAMEWORKS}")
    ap.add_argument("--quick", action="store_true", help="smoke test: 5,000 rows, 1 warm epoch")
    ap.add_argument("--timeout", type=int, default=None,
                    help="seconds per framework run (default 3600; 600 with --quick)")
    ap.add_argument("--note", default="", help="a line added to the written section (e.g. the machine's load)")
    ap.add_argument("--write", action="store_true", help="replace the CNN section of docs/benchmarks.md")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.samples, args.epochs = 5000, 1
    if args.timeout is None:
        args.timeout = 600 if args.quick else 3600
    for name in ("epochs", "repeats", "samples", "threads", "timeout"):
        if getattr(args, name) < 1:
            ap.error(f"`--{name}` must be >= 1. Received: --{name}={getattr(args, name)}")
    if args.samples < BATCH:
        ap.error(f"`--samples` must be >= the batch size {BATCH}. Received: --samples={args.samples}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.samples, args.epochs, args.threads)))
        return 0

    frameworks = [f for f in args.only.split(",") if f]
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown or not frameworks:
        ap.error(f"`--only` must be a comma-separated subset of {', '.join(FRAMEWORKS)}. Received: "
                 f"--only={args.only}")
    missing = [f for f in frameworks if not available(f)]
    frameworks = [f for f in frameworks if f not in missing]
    runs: dict[str, list[dict]] = {fw: [] for fw in frameworks}
    for _ in range(args.repeats):
        for fw in frameworks:
            r = run_child(fw, args.samples, args.epochs, args.threads, args.timeout)
            runs[fw].append(r)
            done = (f"error: {r['error']}" if "error" in r else
                    f"first {r['first_s']:.2f} s, warm {', '.join(f'{t:.2f}' for t in r['warm'])} s "
                    f"({r['samples']:,} samples, loss {r['last_loss']:.3f})")
            print(f"{fw:20s} {done}", file=sys.stderr, flush=True)
    results = {fw: combine(rs) for fw, rs in runs.items()}
    gflops = gemm_gflops(args.threads, 5)
    # A framework named twice in --only runs twice, interleaved with the others, and gets one row.
    table = markdown(results, list(runs), gflops, missing, args)
    print(table)
    if args.write:
        write_section(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
