"""``descend bench``: one configuration on several engines and devices, side by side.

All engines run in this one process (engines are chosen per call, nothing is
fixed at import), on the same data, initial weights and batch order.  For each
(engine, device): the first epoch's extra time over a warm epoch (compilation
and warm-up), the median seconds per epoch, samples per second, the final test
error, and the ratio to the fastest.  Engines that are not installed, or a
device that is absent, are reported as such, never crashed on.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from descend.engines import ENGINES
from descend.errors import ConfigError, DescendError, DivergenceError
from descend.io.atomic import atomic_write_csv
from descend.train.config import TrainConfig
from descend.train.loop import Callback, batch_plan, fit, fit_options, make_trainer
from descend.train.inference import inference_rows
from descend.train.setup import setup_run

COLUMNS = ("engine", "device", "status", "compile_s", "epoch_s", "samples_per_s", "test_error", "ratio")


@dataclass
class BenchRow:
    engine: str
    device: str
    status: str = "ok"
    compile_s: float | None = None
    epoch_s: float | None = None
    samples_per_s: float | None = None
    test_error: float | None = None
    ratio: float | None = None


def parse_list(text: str, allowed: tuple[str, ...], name: str) -> list[str]:
    items = list(allowed) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ConfigError(f"`{name}` must be 'all' or a comma-separated subset of {allowed}. Received: {name}={text!r}")
    return items


class _EpochTimes(Callback):
    """Seconds of each epoch's steps (the fit loop times them, host copy of the losses included)."""

    def __init__(self):
        self.times: list[float] = []
        self._elapsed = 0.0

    def on_evaluation(self, row):
        self.times.append(row["time"] - self._elapsed)
        self._elapsed = row["time"]
        return False


def bench_one(engine_name: str, device: str, cfg: TrainConfig, data, n_classes: int, image_shape=None) -> BenchRow:
    """One (engine, device): the network ``cfg`` describes (dropout and batch norm included), timed per epoch."""
    X, y, Xt, yt = data
    row = BenchRow(engine_name, device)
    cfg = cfg.replace(engine=engine_name, device=device)
    try:
        run = setup_run(cfg, X.shape[1], n_classes, len(y), image_shape=image_shape)
    except DescendError as exc:
        row.status = str(exc)
        return row
    engine, spec = run.engine, run.spec
    if device != "auto" and engine.device != device:
        row.status = f"device {device!r} not available for {engine_name}"
        return row
    # One evaluation per epoch and no validation rows: the history rows time the epochs.
    options = fit_options(cfg, eval_every=0, early_stopping="none", restore_best=False)
    batch, steps = batch_plan(options, len(y))
    # Engines compile at different moments (PyTensor when the trainer is built, JAX and TensorFlow on
    # the first run): compile time counts both, less one warm epoch.
    built = time.perf_counter()
    trainer = make_trainer(engine, spec, options, steps, image_shape)
    build_s = time.perf_counter() - built
    Xd, yd, Xtd = engine.asarray(X), engine.put_labels(y), engine.asarray(Xt)
    epochs = _EpochTimes()
    try:
        result = fit(engine, spec, options, Xd, yd, params=run.params, model_state=run.model_state,
                     trainer=trainer, callbacks=[epochs])
    except DivergenceError as exc:
        row.status = f"diverged in epoch {exc.result.final.epoch + 1}"
        return row
    times = epochs.times
    warm = times[1:] or times
    row.epoch_s = statistics.median(warm)
    row.compile_s = build_s + max(times[0] - row.epoch_s, 0.0)
    row.samples_per_s = steps * batch / row.epoch_s
    logits = engine.logits(spec, engine.put_tree(result.params), engine.put_tree(result.model_state), Xtd,
                           batch_size=inference_rows(spec))
    row.test_error = float(np.mean(np.argmax(logits, axis=1) != yt))
    return row


# Left alone, JAX takes 75% of a GPU's memory when it starts and TensorFlow all that remains, so the
# engine after them fails to allocate; these make each take what it uses.  A user's own setting wins.
SHARED_GPU_MEMORY = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def share_gpu_memory() -> None:
    """Let several engines use one GPU in this process (effective for engines not started yet)."""
    for name, value in SHARED_GPU_MEMORY.items():
        os.environ.setdefault(name, value)


def run_bench(cfg: TrainConfig, engines: list[str], devices: list[str], out: Path | None = None,
              log=print) -> list[BenchRow]:
    """Benchmark ``cfg`` on every (engine, device); write bench.csv and bench.png into ``out``."""
    from descend.train.setup import prepare_data

    if "gpu" in devices:
        share_gpu_memory()

    if cfg.epochs < 2:
        raise ConfigError(f"`epochs` must be >= 2 for bench (the first one includes compilation). "
                          f"Received: epochs={cfg.epochs}")
    prepared = prepare_data(cfg)
    if prepared.y_test is None:
        raise ConfigError(f"bench needs a labelled test set; dataset {cfg.dataset!r} has none")
    data = (prepared.X_train, prepared.y_train, prepared.X_test, prepared.y_test)
    rows = []
    for engine in engines:
        for device in devices:
            row = bench_one(engine, device, cfg, data, prepared.n_out, prepared.image_shape)
            log(format_row(row))
            rows.append(row)
    fastest = min((r.epoch_s for r in rows if r.epoch_s), default=None)
    for r in rows:
        if r.epoch_s and fastest:
            r.ratio = r.epoch_s / fastest
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "bench.csv", rows)
        plot(out / "bench.png", rows, cfg)
    return rows


def format_row(r: BenchRow) -> str:
    if r.status != "ok":
        return f"{r.engine:>10} {r.device:>4}  {r.status}"
    return (f"{r.engine:>10} {r.device:>4}  compile {r.compile_s:6.2f} s  {r.epoch_s:7.3f} s/epoch  "
            f"{r.samples_per_s:>10,.0f} samples/s  test error {100 * r.test_error:5.2f}%")


def table(rows: list[BenchRow]) -> str:
    lines = ["| engine | device | compile (s) | s/epoch | samples/s | test error | x fastest |", "|---" * 7 + "|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.engine} | {r.device} | {r.status} | | | | |")
        else:
            lines.append(f"| {r.engine} | {r.device} | {r.compile_s:.2f} | {r.epoch_s:.3f} | "
                         f"{r.samples_per_s:,.0f} | {100 * r.test_error:.2f}% | {r.ratio:.2f} |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[BenchRow]) -> None:
    atomic_write_csv(path, COLUMNS, [asdict(r) for r in rows])


def plot(path: Path, rows: list[BenchRow], cfg: TrainConfig) -> None:
    from descend.reports.plots import blank_figure, save_figure

    done = [r for r in rows if r.status == "ok"]
    fig = blank_figure(7, 0.6 * max(len(done), 1) + 1.6)
    ax = fig.add_subplot()
    labels = [f"{r.engine} ({r.device})" for r in done]
    values = [r.epoch_s for r in done]
    bars = ax.barh(labels, values, color="#4c72b0")
    for bar, r in zip(bars, done):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r.epoch_s:.3f} s  ({r.ratio:.2f}x)",
                va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per epoch (median of warm epochs)")
    hidden = "-".join(map(str, cfg.hidden)) or "none"
    ax.set_title(f"{cfg.dataset}: hidden {hidden}, {cfg.optimizer}, batch {cfg.batch_size}")
    ax.set_xlim(0, max(values, default=1) * 1.35)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)


ALL_ENGINES = ENGINES
