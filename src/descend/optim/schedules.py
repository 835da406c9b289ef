"""Learning-rate schedules: plain functions ``step -> learning rate``.

``step`` is the optimizer step (an int, or a 0-d array of any engine: the
functions use only arithmetic and the ``ops`` of the step's own library, so
they trace under ``jax.jit``).  ``per_epoch`` turns a schedule of epochs into
one of steps.  Reduce-on-plateau depends on the validation metric, so it is a
small host-side controller instead, whose multiplier the training loop hands to
the optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from descend.backend import namespace_of
from descend.errors import ConfigError, require


def constant(lr0: float):
    """``lr(t) = lr0``."""
    return lambda t: lr0 + 0.0 * t


def step_decay(lr0: float, factor: float, every: float):
    """``lr(t) = lr0 * factor ** floor(t / every)``."""
    return lambda t: lr0 * factor ** namespace_of(t).floor(t / every)


def exponential(lr0: float, k: float):
    """``lr(t) = lr0 * exp(-k * t)``."""
    return lambda t: lr0 * namespace_of(t).exp(-k * t)


def inverse_time(lr0: float, k: float):
    """``lr(t) = lr0 / (1 + k * t)``."""
    return lambda t: lr0 / (1.0 + k * t)


def warmup_cosine(lr0: float, warmup: float, total: float, lr_min: float = 0.0):
    """Linear warmup, then cosine decay to ``lr_min`` at step ``total``.

    ``lr(t) = lr0 * t / warmup`` for ``t < warmup``, then
    ``lr_min + (lr0 - lr_min) * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2``,
    held at ``lr_min`` after ``total``.  ``t`` counts from 0, so the first step
    has rate 0 and step ``warmup`` the peak ``lr0``: optax's
    ``warmup_cosine_decay_schedule(0, lr0, warmup, total, lr_min)``.
    """
    require(0 <= warmup < total, "warmup", f"in [0, total) with total={total!r}", warmup)
    span = total - warmup

    def schedule(t):
        ops = namespace_of(t)
        progress = ops.minimum(ops.maximum(t - warmup, 0.0) / span, 1.0)
        decayed = lr_min + (lr0 - lr_min) * (0.5 * (1.0 + ops.cos(math.pi * progress)))
        return ops.where(t < warmup, lr0 * t / warmup, decayed) if warmup > 0 else decayed

    return schedule


def per_epoch(schedule, steps_per_epoch: int):
    """Evaluate ``schedule`` at the epoch number ``floor(step / steps_per_epoch)``."""
    return lambda t: schedule(namespace_of(t).floor(t / steps_per_epoch))


@dataclass
class ReduceOnPlateau:
    """Multiply the learning rate by ``factor`` after ``patience`` evaluations
    without a relative improvement of ``threshold`` in the monitored metric
    (lower is better), then wait ``cooldown`` evaluations.  ``scale`` is the
    current multiplier; the loop copies it into the optimizer state.
    """

    factor: float = 0.5
    patience: int = 5
    threshold: float = 1e-4
    cooldown: int = 0
    min_scale: float = 1e-6
    scale: float = 1.0
    best: float = math.inf
    bad_evaluations: int = 0
    cooldown_left: int = 0
    history: list = field(default_factory=list)

    def __post_init__(self):
        require(0.0 < self.factor < 1.0, "factor", "in (0, 1)", self.factor)
        require(self.patience >= 0, "patience", ">= 0", self.patience)
        require(self.threshold >= 0, "threshold", ">= 0", self.threshold)
        require(self.cooldown >= 0, "cooldown", ">= 0", self.cooldown)
        require(self.min_scale >= 0, "min_scale", ">= 0", self.min_scale)

    def observe(self, metric: float) -> float:
        """Record one evaluation; return the (possibly reduced) multiplier.

        The same rule as ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode
        "min", threshold_mode "rel"): every evaluation, improving or not, counts
        towards the cooldown, and bad evaluations inside the cooldown are ignored.
        """
        metric = float(metric)
        if metric < self.best * (1.0 - self.threshold):
            self.best = metric
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_evaluations = 0
        if self.bad_evaluations > self.patience:
            self.scale = max(self.scale * self.factor, self.min_scale)
            self.bad_evaluations = 0
            self.cooldown_left = self.cooldown
        self.history.append(self.scale)
        return self.scale

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("factor", "patience", "threshold", "cooldown", "min_scale",
                                               "scale", "best", "bad_evaluations", "cooldown_left")}

    @classmethod
    def from_dict(cls, d: dict) -> ReduceOnPlateau:
        return cls(**d)


SCHEDULES = ("constant", "step", "exponential", "inverse", "cosine", "plateau")


@dataclass(frozen=True)
class ScheduleSpec:
    """A parsed ``--schedule`` option, e.g. ``exponential:0.05`` or ``step:0.5:10``.

    ``unit`` says whether ``t`` counts epochs (the default: the curriculum's
    rates are per epoch) or optimizer steps.  ``cosine[:WARMUP[:LR_MIN]]``
    (warmup 0, lr_min 0 by default) counts its WARMUP in that unit but changes
    the rate every step in either: floored to whole epochs, a warmup from rate 0
    would spend its whole first epoch standing still.
    """

    kind: str = "constant"
    args: tuple[float, ...] = ()
    unit: str = "epoch"

    @classmethod
    def parse(cls, text: str, unit: str = "epoch") -> ScheduleSpec:
        kind, *rest = (text or "constant").split(":")
        require(kind in SCHEDULES, "schedule", f"one of {SCHEDULES} (e.g. exponential:0.05)", text)
        require(unit in ("epoch", "step"), "schedule_unit", "'epoch' or 'step'", unit)
        try:
            args = tuple(float(a) for a in rest)
        except ValueError:
            raise ConfigError(f"`schedule` arguments must be numbers. Received: schedule={text!r}") from None
        require(all(math.isfinite(a) for a in args), "schedule", "given finite numbers as arguments", text)
        arity = {"constant": (0,), "step": (2,), "exponential": (1,), "inverse": (1,), "cosine": (0, 1, 2),
                 "plateau": (0, 1, 2)}[kind]
        require(len(args) in arity, "schedule",
                {"constant": "'constant'", "step": "'step:FACTOR:EVERY'", "exponential": "'exponential:K'",
                 "inverse": "'inverse:K'", "cosine": "'cosine[:WARMUP[:LR_MIN]]'",
                 "plateau": "'plateau[:FACTOR[:PATIENCE]]'"}[kind], text)
        if kind == "step":
            require(0 < args[0] <= 1 and args[1] > 0, "schedule", "step:FACTOR:EVERY with 0<FACTOR<=1, EVERY>0", text)
        if kind in ("exponential", "inverse"):
            require(args[0] >= 0, "schedule", f"{kind}:K with K >= 0", text)
        if kind == "cosine":
            require(all(a >= 0 for a in args), "schedule", "cosine[:WARMUP[:LR_MIN]] with WARMUP >= 0, LR_MIN >= 0",
                    text)
        if kind == "plateau" and args:
            require(0 < args[0] < 1, "schedule", "plateau:FACTOR[:PATIENCE] with 0<FACTOR<1", text)
            require(len(args) < 2 or (args[1] >= 0 and args[1] == int(args[1])), "schedule",
                    "plateau:FACTOR:PATIENCE with PATIENCE an integer >= 0", text)
        return cls(kind, args, unit)

    def __str__(self):
        return ":".join([self.kind, *(f"{a:g}" for a in self.args)])

    def build(self, lr0: float, steps_per_epoch: int, total_steps: int | None = None):
        """The ``step -> lr`` function (plateau: constant; its controller is separate).

        ``total_steps`` (the optimizer steps of the whole run) is where
        ``cosine`` reaches its LR_MIN; the other schedules ignore it.
        """
        if self.kind == "cosine":
            return self._cosine(lr0, steps_per_epoch, total_steps)
        if self.kind == "step":
            fn = step_decay(lr0, self.args[0], self.args[1])
        elif self.kind == "exponential":
            fn = exponential(lr0, self.args[0])
        elif self.kind == "inverse":
            fn = inverse_time(lr0, self.args[0])
        else:
            return lr0
        return per_epoch(fn, steps_per_epoch) if self.unit == "epoch" else fn

    def _cosine(self, lr0, steps_per_epoch, total_steps):
        if total_steps is None:
            raise ConfigError(f"schedule {str(self)!r} needs the run's total number of steps "
                              "(ScheduleSpec.build(..., total_steps=N))")
        require(total_steps >= 1, "total_steps", ">= 1", total_steps)
        warmup_arg = self.args[0] if self.args else 0.0
        lr_min = self.args[1] if len(self.args) > 1 else 0.0
        warmup = warmup_arg * steps_per_epoch if self.unit == "epoch" else warmup_arg
        if warmup >= total_steps:
            unit = f"{self.unit}s" + (f" = {warmup:g} steps" if self.unit == "epoch" else "")
            raise ConfigError(f"`schedule` warmup must be shorter than the run: {warmup_arg:g} {unit} >= "
                              f"{total_steps} total steps. Received: schedule={str(self)!r}")
        if lr_min > lr0:
            raise ConfigError(f"`schedule` LR_MIN must be <= the learning rate {lr0!r}. "
                              f"Received: schedule={str(self)!r}")
        return warmup_cosine(lr0, warmup, total_steps, lr_min)

    def plateau(self) -> ReduceOnPlateau | None:
        if self.kind != "plateau":
            return None
        factor = self.args[0] if self.args else 0.5
        patience = int(self.args[1]) if len(self.args) > 1 else 5
        return ReduceOnPlateau(factor=factor, patience=patience)
