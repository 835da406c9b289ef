"""Search throughput with 1 and 2 workers: the acceptance figure of ``descend search`` (issue 7).

The issue's grid -- 3 learning rates x 3 momenta x 2 L2 values = 18 cells --
with 3-fold cross-validation on real MNIST (60,000 training rows, the test set
untouched), run as a user runs it: one ``descend search`` process per
measurement, its workers one thread each.  The figure is trials per minute of
the search phase (first worker started to last trial finished, as
``summary.json`` records it).  Issue 7 asks for a ratio 2 workers / 1 worker
of at least 1.7 on an otherwise idle 2-core machine; the script reports what
it measures, including the load average, and does not judge it.  Compare it
with ``--control``: the same ratio for a plain single-threaded NumPy matmul
loop run alone and twice at once, which says what the machine itself can
give two processes at that moment.

The network is kept small so that one measurement takes a few minutes
(default 784-100-10, 1 epoch, batch 100, NumPy engine); the grid and the folds
are the issue's.  The machine may be shared: the load average before and after
each run is recorded next to the figures, and repeats alternate 1 and 2
workers so that a load change affects both.  MNIST comes from ``$DESCEND_MIRROR``
when it names a local copy, else it is downloaded once.

    python benchmarks/search_workers.py --repeats 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = "lr=0.01,0.03,0.1 momentum=0.5,0.9,0.99 l2=0,1e-4"


def load() -> float:
    return os.getloadavg()[0]


def run_once(workers: int, args, out_dir: Path) -> dict:
    run_dir = out_dir / f"w{workers}-{time.strftime('%H%M%S')}"
    cmd = [sys.executable, "-m", "descend", "search", args.dataset, "--method", "grid", "--space", SPACE,
           "--folds", "3", "--workers", str(workers), "--hidden", args.hidden, "--epochs", str(args.epochs),
           "--batch-size", "100", "--engine", args.engine, "--pruner", "none", "--no-retrain", "--quiet",
           "--out", str(run_dir)]
    before = load()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    summary = json.loads((run_dir / "summary.json").read_text())
    seconds = summary["search seconds (this session)"]
    with open(run_dir / "trials.csv") as f:
        per_trial = [float(r["seconds"]) for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    return {"workers": workers, "trials": summary["done"], "search_seconds": seconds,
            "trials_per_minute": summary["trials per minute (this session)"], "command_seconds": round(wall, 2),
            "mean_trial_seconds": round(statistics.mean(per_trial), 2),
            "load_before": round(before, 2), "load_after": round(load(), 2), "command": " ".join(cmd[1:])}


def control_ratio(seconds_per_run: int = 20_000) -> dict:
    """Throughput of 2 concurrent single-threaded matmul loops / 1 alone: the machine's own ceiling now."""
    code = ("import numpy as np, time\n"
            "a = np.random.rand(100, 784).astype(np.float32); w = np.random.rand(784, 100).astype(np.float32)\n"
            "t = time.perf_counter()\n"
            f"for _ in range({seconds_per_run}): a @ w\n"
            "print(time.perf_counter() - t)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start():
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)

    one = float(start().communicate()[0])
    pair = [start(), start()]
    two = [float(p.communicate()[0]) for p in pair]
    return {"one_seconds": round(one, 3), "two_seconds": [round(t, 3) for t in two],
            "ratio": round(2 * one / max(two), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--hidden", default="100")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--engine", default="numpy")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "search_workers.json"))
    p.add_argument("--control", action="store_true",
                   help="also measure 2 concurrent single-threaded matmul loops / 1 (before and after)")
    args = p.parse_args()
    rows = []
    controls = []
    if args.control:
        controls.append(control_ratio())
        print(f"control (machine now): 2 matmul processes / 1 = {controls[-1]['ratio']:.2f}x", flush=True)
    with tempfile.TemporaryDirectory(prefix="descend-search-bench-") as tmp:
        for r in range(args.repeats):
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                row = run_once(workers, args, Path(tmp))
                rows.append(row)
                print(f"workers {workers}: {row['trials']} trials in {row['search_seconds']:.1f} s = "
                      f"{row['trials_per_minute']:.2f} trials/min, {row['mean_trial_seconds']:.1f} s per trial (command {row['command_seconds']:.1f} s; load "
                      f"{row['load_before']} -> {row['load_after']})", flush=True)
    if args.control:
        controls.append(control_ratio())
        print(f"control (machine now): 2 matmul processes / 1 = {controls[-1]['ratio']:.2f}x", flush=True)
    best = {w: max(r["trials_per_minute"] for r in rows if r["workers"] == w) for w in (1, 2)}
    median = {w: statistics.median(r["trials_per_minute"] for r in rows if r["workers"] == w) for w in (1, 2)}
    pairs = []
    for a, b in zip(rows[::2], rows[1::2]):
        one, two = sorted((a, b), key=lambda x: x["workers"])
        pairs.append(two["trials_per_minute"] / one["trials_per_minute"])
    result = {"rows": rows, "best_ratio": best[2] / best[1], "median_ratio": median[2] / median[1],
              "paired_ratios": pairs, "control": controls, "cpus": os.cpu_count(), "python": platform.python_version(),
              "network": f"784-{args.hidden}-10", "epochs": args.epochs, "engine": args.engine}
    print(f"2 workers / 1 worker: {result['median_ratio']:.2f}x (median), paired {', '.join(f'{x:.2f}' for x in pairs)}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
