"""The learning-rate finder against a grid: MNIST's default network, Adam and momentum, 2 epochs per rate.

For each optimizer, ``descend train mnist --optimizer OPT --lr LR --epochs 2`` (every other option at its
default) for LR in 1e-4, 3e-4, ..., 1, and ``descend lr-find mnist --optimizer OPT`` (its defaults: 1e-6 to 1
over 200 steps).  The table (best validation error per rate, the suggestion, its ratio to the grid's best
rate) is written into docs/results.md between the markers below.  Runs already in OUT are reused.

    python benchmarks/lr_grid.py [--engine numpy] [--threads 1] [--out /tmp/lr-grid]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from descend.train import TrainConfig
from descend.train.lr_find import RULE, run_lr_find
from descend.train.run import run_training

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
OPTIMIZERS = ("adam", "momentum")
BEGIN, END = "<!-- lr-grid:begin -->", "<!-- lr-grid:end -->"
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def grid_run(opt: str, lr: float, engine: str, threads: int, out: Path) -> float | None:
    run_dir = out / f"{opt}-{lr:g}"
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cfg = TrainConfig(dataset="mnist", optimizer=opt, lr=lr, epochs=2, engine=engine, threads=threads)
        try:
            run_training(cfg, out=run_dir, progress=False)
        except Exception as exc:  # a diverged rate is a grid cell too
            print(f"{opt} lr={lr:g}: {exc}")
            return None
    return json.loads(metrics.read_text()).get("valid_error")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="numpy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/lr-grid")
    args = ap.parse_args()
    out = Path(args.out)
    rows, started = {}, time.time()
    for opt in OPTIMIZERS:
        errors = {lr: grid_run(opt, lr, args.engine, args.threads, out) for lr in GRID}
        cfg = TrainConfig(dataset="mnist", optimizer=opt, engine=args.engine, threads=args.threads)
        found, _ = run_lr_find(cfg, out=out / f"{opt}-lr-find", progress=False)
        best = min((lr for lr in GRID if errors[lr] is not None), key=lambda lr: errors[lr])
        rows[opt] = (errors, best, found)
        print(opt, {f"{k:g}": v for k, v in errors.items()}, "best", best, "suggestion", found.suggestion)
    write_table(rows, args, time.time() - started)


def write_table(rows, args, seconds) -> None:
    lines = [BEGIN, "", f"Commands (engine {args.engine}, {args.threads} thread, seed 0, every other option at "
             "`descend train mnist`'s default: 784-500-300-10 ReLU, batch 100, schedule exponential:0.1, "
             "50,000 / 10,000 rows): "
             f"`descend train mnist --optimizer OPT --lr LR --epochs 2 --engine {args.engine} --threads "
             f"{args.threads}` for each LR, and `descend lr-find mnist --optimizer OPT --engine {args.engine} "
             f"--threads {args.threads}` (1e-6 to 1 over 200 steps). Script: `python benchmarks/lr_grid.py "
             f"--engine {args.engine} --threads {args.threads}` ({seconds / 60:.1f} min in all on the shared "
             "2-core machine).", "", "Best validation error after 2 epochs:", "",
             "| optimizer | " + " | ".join(f"{lr:g}" for lr in GRID) + " | best lr | lr-find suggestion | "
             "suggestion / best |", "| --- " * (len(GRID) + 4) + "|"]
    for opt, (errors, best, found) in rows.items():
        cells = ["diverged" if errors[lr] is None else
                 (f"**{100 * errors[lr]:.2f}%**" if lr == best else f"{100 * errors[lr]:.2f}%") for lr in GRID]
        lines.append(f"| {opt} | " + " | ".join(cells) + f" | {best:g} | {found.suggestion:.3g} | "
                     f"{found.suggestion / best:.2f} |")
    lines += ["", f"The suggestion is {RULE} (the sweep's minimum for Adam at "
              f"{rows['adam'][2].min_loss_lr:.3g}, for momentum at {rows['momentum'][2].min_loss_lr:.3g}); "
              "acceptance: within a factor of 3 of the grid's best rate.", "", END]
    from docsection import write_section

    write_section(RESULTS, "lr-grid", "\n".join(lines[1:-1]),
                  heading="## Learning-rate finder against a grid (MNIST default MLP, 2 epochs)")


if __name__ == "__main__":
    main()
