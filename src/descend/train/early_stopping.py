"""Early stopping: the geometric-patience rule and "N evaluations without improvement".

Both watch a validation metric (lower is better) and remember when it was
best so the loop can restore those parameters.

Geometric rule (Theano tutorials): an evaluation that beats the best by the
``improvement_threshold`` factor extends the horizon to
``max(horizon, evaluation * patience_increase)``; training stops when the
evaluation count reaches the horizon.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    rule: str = "patience"  # "none" | "patience" | "geometric"
    patience: int = 10
    patience_increase: float = 2.0
    improvement_threshold: float = 0.995
    best: float = math.inf
    best_evaluation: int = 0
    evaluations: int = 0
    horizon: float = 0.0

    def __post_init__(self):
        if self.horizon == 0.0:
            self.horizon = float(self.patience)

    def observe(self, metric: float) -> tuple[bool, bool]:
        """Record one evaluation; return ``(improved, stop)``."""
        self.evaluations += 1
        improved = metric < self.best
        if improved:
            if metric < self.best * self.improvement_threshold:
                self.horizon = max(self.horizon, self.evaluations * self.patience_increase)
            self.best = metric
            self.best_evaluation = self.evaluations
        if self.rule == "geometric":
            stop = self.horizon <= self.evaluations
        elif self.rule == "patience":
            stop = self.evaluations - self.best_evaluation >= self.patience
        else:
            stop = False
        return improved, stop

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EarlyStopping:
        return cls(**d)
