"""The ``--space`` of ``descend search``: which TrainConfig fields vary, and how.

A space is whitespace-separated ``name=values`` items::

    lr=log(1e-4,1e-1) momentum=0.8,0.9,0.99 hidden=300|500,300 l2=log(1e-6,1e-2)

- ``log(a,b)``: a range sampled uniformly in log space (``0 < a < b``);
  ``lin(a,b)`` (also ``range(a,b)``): a range sampled uniformly.  Integer
  fields (``batch_size``, ``epochs``, ``patience``) give integer ranges.
- ``a,b,c`` or ``a|b|c``: a list of choices.  For the tuple-valued fields
  (``hidden``, ``dropout_keep``) a comma belongs to the value and ``|``
  separates choices: ``hidden=300|500,300|none``.  So it does for ``layers``
  (``layers=conv:32:3,pool:2,dense:128|conv:64:5,pool:2,dense:256``; ``none``
  is the ``hidden`` shorthand's network), and for ``augment``
  (``augment=none|shift:2|shift:2,rotate:10``).
- A single value fixes the field for every trial.

Names are TrainConfig fields (``batch-size`` is accepted for ``batch_size``).
Every value is checked against TrainConfig's own validation when the space is
parsed, so a bad value fails before any worker starts, with a message that
names the parameter and quotes what was received.

Grid search takes lists only; random search, hill-climbing and TPE take ranges
and lists.  Choices are stored in Optuna as numbers, strings or booleans
(tuples as their text, ``"500,300"``), so they read back as typed.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from descend.errors import ConfigError, DescendError
from descend.train.config import TrainConfig

# field -> value type: "float", "int", "str", "bool", "ints" (tuple of int), "floats" (tuple of float),
# "layers" (the layer grammar's text, whose commas belong to the value)
SEARCHABLE: dict[str, str] = {
    "lr": "float", "momentum": "float", "l1": "float", "l2": "float", "max_norm": "float", "clip_norm": "float",
    "label_smoothing": "float",
    "patience_increase": "float", "improvement_threshold": "float",
    "batch_size": "int", "epochs": "int", "patience": "int", "eval_every": "int", "pca": "int",
    "optimizer": "str", "activation": "str", "schedule": "str", "schedule_unit": "str",
    "balance": "str", "normalize": "str", "early_stopping": "str", "monitor": "str",
    "batchnorm": "bool",
    "hidden": "ints", "dropout_keep": "floats",
    "layers": "layers", "augment": "augment",
}
NUMERIC = ("float", "int")
TUPLES = ("ints", "floats")
_RANGE = re.compile(r"^(log|lin|linear|range|uniform)\((.*)\)$", re.IGNORECASE)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
MAX_COMBINATIONS_CHECKED = 20_000


def _space_error(item: str, problem: str) -> ConfigError:
    return ConfigError(f"`space` {problem}. Received: {item}")


@dataclass(frozen=True)
class Param:
    """One searched field: a list of ``choices`` or a ``low``..``high`` range."""

    name: str
    kind: str  # "choice" or "range"
    type: str  # a SEARCHABLE type
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    text: str = ""

    @property
    def item(self) -> str:
        return f"{self.name}={self.text}"

    @property
    def is_range(self) -> bool:
        return self.kind == "range"

    @property
    def integer(self) -> bool:
        return self.type == "int"

    # Optuna -----------------------------------------------------------------
    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if not self.is_range:
            return CategoricalDistribution(list(self.choices))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def suggest(self, trial):
        if not self.is_range:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    # Values -----------------------------------------------------------------
    def decode(self, value):
        """The TrainConfig value for a stored value (tuples from their text)."""
        if self.type in TUPLES:
            return _parse_tuple(str(value), self.type)
        if self.type == "int":
            return None if value is None else int(value)  # None: pca=none
        if self.type == "float":
            return float(value)
        if self.type == "bool":
            return bool(value)
        if self.type in ("layers", "augment"):
            return None if value is None else str(value)
        return str(value)

    def contains(self, value) -> bool:
        if not self.is_range:
            return value in self.choices
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        return self.low <= v <= self.high and (not self.integer or float(v).is_integer())

    def to_unit(self, value) -> float:
        """A range value's position in [0, 1] (in log space for log ranges)."""
        lo, hi, v = float(self.low), float(self.high), float(value)
        if self.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        return 0.0 if hi == lo else (v - lo) / (hi - lo)

    def from_unit(self, u: float):
        lo, hi = float(self.low), float(self.high)
        u = min(max(float(u), 0.0), 1.0)
        v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if self.log else lo + u * (hi - lo)
        v = min(max(v, lo), hi)
        return int(min(max(round(v), self.low), self.high)) if self.integer else float(v)

    def sample(self, rng: np.random.Generator):
        """A uniform draw (log-uniform for log ranges)."""
        if not self.is_range:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.integer and not self.log:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return self.from_unit(rng.uniform())

    def start(self, base_value):
        """The hill-climbing start: the base config's value when the space holds it, else the middle."""
        if not self.is_range:
            encoded = _encode(base_value, self.type)
            return encoded if encoded in self.choices else self.choices[0]
        if isinstance(base_value, (int, float)) and not isinstance(base_value, bool) and self.contains(base_value):
            return int(base_value) if self.integer else float(base_value)
        return self.from_unit(0.5)


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    text: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def has_ranges(self) -> bool:
        return any(p.is_range for p in self.params)

    def grid(self) -> list[dict]:
        """Every cell of the grid, in a fixed order (the last parameter varies fastest)."""
        ranges = [p for p in self.params if p.is_range]
        if ranges:
            raise ConfigError(f"`space` grid search takes lists of values, not ranges "
                              f"(use --method random, hillclimb or tpe for ranges). Received: {ranges[0].item}")
        return [dict(zip(self.names, cell)) for cell in itertools.product(*(p.choices for p in self.params))]

    def sample(self, rng: np.random.Generator) -> dict:
        return {p.name: p.sample(rng) for p in self.params}

    def start(self, base: TrainConfig) -> dict:
        return {p.name: p.start(getattr(base, p.name)) for p in self.params}

    def config(self, base: TrainConfig, values: dict) -> TrainConfig:
        """``base`` with the searched fields set to ``values`` (stored values, decoded)."""
        return base.replace(**{p.name: p.decode(values[p.name]) for p in self.params if p.name in values})

    def describe(self) -> str:
        return " ".join(p.item for p in self.params)

    def to_dict(self) -> dict:
        return {p.name: ({"choices": list(p.choices)} if not p.is_range else
                         {"low": p.low, "high": p.high, "log": p.log, "integer": p.integer})
                for p in self.params}


def _encode(value, type_: str):
    """A TrainConfig value as it is stored in a study (tuples as text)."""
    if type_ in TUPLES:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if value else "none"
    return value


def _parse_tuple(text: str, type_: str) -> tuple:
    text = text.strip()
    if text.lower() in ("none", ""):
        return ()
    parts = [t.strip() for t in text.split(",")]
    return tuple(int(t) for t in parts) if type_ == "ints" else tuple(float(t) for t in parts)


def _parse_value(name: str, text: str, type_: str, item: str):
    text = text.strip()
    try:
        if type_ == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if type_ == "int":
            if name == "batch_size" and text.lower() == "full":
                return 0
            if name == "pca" and text.lower() == "none":
                return None  # the raw (normalised) inputs
            return int(text)
        if type_ == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if type_ in ("layers", "augment"):
            if not text:
                raise ValueError
            return None if text.lower() == "none" else text
        if type_ in TUPLES:
            # canonical text: "500,300", "0.8,0.5", "none"
            return _encode(_parse_tuple(text, type_), type_)
        if not text:
            raise ValueError
        return text
    except ValueError:
        kind = {"float": "a number", "int": "an integer" + (" or 'full'" if name == "batch_size" else ""),
                "bool": "true or false", "ints": "layer sizes like 500,300 or none",
                "floats": "keep probabilities like 0.8,0.5,0.5 or none", "str": "a value",
                "layers": "layer tokens like conv:32:3,pool:2,dense:128 or none",
                "augment": "augmentation tokens like shift:2,rotate:10 or none"}[type_]
        raise _space_error(item, f"{name}: {text!r} is not {kind}") from None


def _check_value(base: TrainConfig, name: str, value, type_: str, item: str) -> None:
    """TrainConfig's own validation of one value; tuple lengths are checked per combination."""
    try:
        decoded = _parse_tuple(value, type_) if type_ in TUPLES else value
        if name == "dropout_keep":
            if not all(0.0 < p <= 1.0 for p in decoded):
                raise ConfigError(f"`dropout_keep` must be probabilities in (0, 1]. Received: dropout_keep={decoded!r}")
            return
        if name == "hidden":
            if any(h <= 0 for h in decoded):
                raise ConfigError(f"`hidden` must be positive layer sizes. Received: hidden={decoded!r}")
            return
        base.replace(**{name: decoded})
    except ConfigError as exc:
        raise ConfigError(f"`space` {item}: {exc}") from None


def _parse_item(item: str, base: TrainConfig, extra: dict[str, str]) -> Param:
    if "=" not in item:
        raise _space_error(item, "items must look like name=values (e.g. lr=log(1e-4,1e-1) or momentum=0.8,0.9)")
    raw_name, _, text = item.partition("=")
    name = raw_name.strip().replace("-", "_")
    types = {**SEARCHABLE, **extra}
    if name not in types:
        raise _space_error(item, f"{raw_name!r} is not a searchable parameter; one of {', '.join(types)}")
    type_ = types[name]
    check = _check_value if name not in extra else (lambda *args: None)  # the caller checks its own names
    text = text.strip()
    if not text:
        raise _space_error(item, f"{name} has no values")
    m = _RANGE.match(text)
    if m:
        if type_ not in NUMERIC:
            raise _space_error(item, f"{name} takes a list of values, not a range")
        bounds = [t.strip() for t in m.group(2).split(",")]
        if len(bounds) != 2:
            raise _space_error(item, f"{name}: a range needs two bounds, like {m.group(1)}(low,high)")
        low, high = (_parse_value(name, b, type_, item) for b in bounds)
        log = m.group(1).lower() == "log"
        if name == "batch_size" and (low == 0 or high == 0):
            raise _space_error(item, "batch_size: 'full' cannot be a range bound")
        if not low < high:
            raise _space_error(item, f"{name}: a range needs low < high")
        if log and low <= 0:
            raise _space_error(item, f"{name}: a log range needs 0 < low < high")
        for bound in (low, high):
            check(base, name, bound, type_, item)
        return Param(name, "range", type_, low=low, high=high, log=log, text=text)
    separators = "|" if type_ in (*TUPLES, "layers", "augment") or "|" in text else ",|"
    parts = re.split("[" + re.escape(separators) + "]", text)
    if any(not p.strip() for p in parts):
        raise _space_error(item, f"{name} has an empty value")
    choices = []
    for part in parts:
        value = _parse_value(name, part, type_, item)
        check(base, name, value, type_, item)
        if value in choices:
            raise _space_error(item, f"{name} lists {part.strip()!r} twice")
        choices.append(value)
    return Param(name, "choice", type_, choices=tuple(choices), text=text)


def parse_space(text: str, base: TrainConfig | None = None, *, extra: dict[str, str] | None = None) -> Space:
    """Parse and validate ``--space``; a bad item raises ConfigError naming it.

    ``extra``: more names (name -> SEARCHABLE type) that are not TrainConfig
    fields, such as optimizer options; their values are checked by the caller.
    """
    base = base or TrainConfig()
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"`space` must name at least one parameter, e.g. \"lr=log(1e-4,1e-1) "
                          f"momentum=0.8,0.9,0.99\". Received: space={text!r}")
    params: list[Param] = []
    for item in text.split():
        param = _parse_item(item, base, extra or {})
        if param.name in (p.name for p in params):
            raise _space_error(item, f"{param.name} is given twice")
        params.append(param)
    space = Space(tuple(params), " ".join(text.split()))
    _check_combinations(space, base)
    return space


def _check_combinations(space: Space, base: TrainConfig) -> None:
    """Fields that constrain each other (hidden and dropout_keep) are checked together."""
    linked = [p for p in space.params if p.name in ("hidden", "dropout_keep")]
    if not linked:
        return
    options = [p.choices for p in linked]
    if math.prod(len(o) for o in options) > MAX_COMBINATIONS_CHECKED:
        return
    for combo in itertools.product(*options):
        values = dict(zip((p.name for p in linked), combo))
        try:
            space.config(base, values)
        except DescendError as exc:
            shown = " ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(f"`space` combination {shown}: {exc}") from None
