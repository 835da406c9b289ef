"""Small datasets built into descend, loaded by name like a file: no download, no file.

``overfit-points`` is the lecture notes' overfitting demonstration: ten points
of a noisy curve on x = linspace(-4.5, 4.5, 10), one feature and one
regression target ``y``.  It has no validation rows unless asked for.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from descend.data.dataset import Dataset, Split
from descend.data.splits import carve, validation_count

OVERFIT_X = tuple(float(v) for v in np.linspace(-4.5, 4.5, 10))
OVERFIT_Y = (0.9819, 0.7973, 1.9737, 0.1838, 1.3180, -0.8361, -0.6591, -2.4701, -2.8122, -6.2512)

#: name -> (x rows, y targets); every one is a regression problem with target ``y``.
BUILTIN = MappingProxyType({"overfit-points": (OVERFIT_X, OVERFIT_Y)})


def load_builtin(name: str, validation=None, seed: int = 0) -> Dataset:
    """The built-in dataset ``name``: every row trains unless ``validation`` (a count or fraction) carves some."""
    xs, ys = BUILTIN[name]
    X = np.asarray(xs, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(ys, dtype=np.float64).reshape(-1, 1)
    count = validation_count(validation or 0, len(X))
    tr, va = carve(None, len(X), count, seed)
    return Dataset(name, Split(X[tr], y[tr]), Split(X[va], y[va]) if count else None, None, (), None,
                   f"built in ({name})", targets=("y",))
