"""Progress display: a rich bar on a terminal, plain lines otherwise.

Each evaluation prints one line (epoch, step, costs, error, samples/s, ETA),
so a log file or CI output shows the same facts as the terminal.
"""

from __future__ import annotations

import sys
import time


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_row(row: dict, epochs: int, total_steps: int, samples_per_s: float, eta_s: float) -> str:
    parts = [f"epoch {row['epoch']:.2f}/{epochs}", f"step {row['step']:,}/{total_steps:,}",
             f"train_cost {row['train_cost']:.4f}"]
    if row.get("valid_rmse") is not None:
        parts += [f"valid_cost {row['valid_cost']:.4f}", f"valid_rmse {row['valid_rmse']:.4g}",
                  f"valid_r2 {row['valid_r2']:.4f}"]
    elif row.get("valid_cost") is not None:
        parts += [f"valid_cost {row['valid_cost']:.4f}", f"valid_error {100 * row['valid_error']:.2f}%"]
    parts += [f"lr {row['lr']:.3g}", f"{samples_per_s:,.0f} samples/s", f"ETA {_eta(eta_s)}"]
    return "  ".join(parts)


class Progress:
    """``start`` once, ``advance`` after each run of steps, ``evaluation`` per row, ``close``."""

    def __init__(self, *, epochs: int, total_steps: int, batch_size: int, stream=None, enabled: bool = True):
        self.epochs, self.total_steps, self.batch_size = epochs, total_steps, batch_size
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bar = None
        self._started = time.perf_counter()
        self._first_step = 0
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
                from rich.progress import TextColumn, TimeRemainingColumn
                from rich.console import Console
            except ImportError:  # pragma: no cover - rich is a dependency
                return
            self._bar = RichProgress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("steps"), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=False)

    def start(self, step: int):
        self._first_step = step
        self._started = time.perf_counter()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.total_steps, completed=step)

    def advance(self, step: int):
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def evaluation(self, row: dict):
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started
        done = row["step"] - self._first_step
        rate = done * self.batch_size / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - row["step"]) * elapsed / done if done else 0.0
        line = format_row(row, self.epochs, self.total_steps, rate, eta)
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def message(self, text: str):
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
