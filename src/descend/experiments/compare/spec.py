"""What ``descend compare`` runs: run specs, presets, TOML study files.

A *run spec* is one configuration written as ``"NAME key=value ..."``: the
optimizer name first, then TrainConfig fields (``lr``, ``momentum``,
``batch_size``, ``schedule``, ``hidden``, ``layers``, ``l2``, ``dropout_keep``,
``batchnorm``, ``augment``, ``clip_norm``, ``label_smoothing``, ``init``, ``sampling``,
``target``...), optimizer options (``eps``, ``rho``, ``b1``, ``b2``,
``initial_accumulator``, ``eps_in_sqrt``, ``lr_inside``, ``bias_correction``)
and three compare keys: ``label``, ``convention`` and ``budget`` (seconds).
A bare word is a true flag (``"nesterov batchnorm"``).  Values may be quoted
(``label='plain SGD'``).  Every run is one :class:`RunDef`; a :class:`Study`
is runs x seeds plus the target error and the wall-clock budget.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from descend.errors import ConfigError, DescendError, InputError
from descend.optim import OPTIMIZERS
from descend.optim.conventions import CONVENTIONS, OPTION_KEYS, applies, family, resolve
from descend.train.config import TrainConfig

STUDY_VERSION = 1

FLOAT_KEYS = ("lr", "momentum", "l1", "l2", "max_norm", "clip_norm", "label_smoothing", "validation")
INT_KEYS = ("epochs", "eval_every", "patience", "threads")
CHOICE_KEYS = ("schedule", "schedule_unit", "activation", "engine", "device", "dtype", "early_stopping", "monitor",
               "normalize", "balance", "format", "init", "sampling", "task")
CONFIG_KEYS = ("optimizer", *FLOAT_KEYS, *INT_KEYS, "batch_size", "hidden", "layers", "dropout_keep", "batchnorm", "pca",
               "augment", "target", *CHOICE_KEYS)
OPTION_FLOATS = ("eps", "rho", "b1", "b2", "initial_accumulator")
OPTION_BOOLS = ("eps_in_sqrt", "lr_inside")
COMPARE_KEYS = ("label", "convention", "budget")
KEYS = (*CONFIG_KEYS, *OPTION_KEYS, *COMPARE_KEYS)
ALIASES = {"batch": "batch_size", "mu": "momentum", "initial_scale": "initial_accumulator", "keep": "dropout_keep",
           "bn": "batchnorm", "optim": "optimizer"}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")

#: What ``descend compare`` starts from before a preset, a file or the options change it:
#: a 784-300-10 ReLU network, constant learning rate, no early stopping (every run gets
#: its full epochs, so the curves are comparable to the end).
COMPARE_DEFAULTS = {"hidden": (300,), "activation": "relu", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                    "batch_size": 100, "epochs": 10, "schedule": "constant", "early_stopping": "none"}


def _key(name: str) -> str:
    key = name.strip().replace("-", "_").lower()
    return ALIASES.get(key, key)


def _bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"`{key}` must be true or false. Received: {key}={value!r}")


def _float(key: str, value) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"`{key}` must be a number. Received: {key}={value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{key}` must be a number. Received: {key}={value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"`{key}` must be a finite number. Received: {key}={value!r}")
    return out


def _int(key: str, value) -> int:
    out = _float(key, value)
    if out != int(out):
        raise ConfigError(f"`{key}` must be an integer. Received: {key}={value!r}")
    return int(out)


def _sizes(key: str, value, cast) -> tuple:
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        text = str(value).strip().lower()
        if text in ("", "none", "0", "()"):
            return ()
        items = text.split(",")
    try:
        return tuple(cast(key, v) for v in items)
    except ConfigError:
        raise ConfigError(f"`{key}` must be a comma-separated list like "
                          f"{'500,300' if cast is _int else '0.8,0.5'} (or 'none'). Received: {key}={value!r}") from None


def coerce(key: str, value):
    """One ``key=value`` with its type checked; ``key`` already canonical."""
    if key in FLOAT_KEYS or key in OPTION_FLOATS or key == "budget":
        return _float(key, value)
    if key in INT_KEYS:
        return _int(key, value)
    if key == "batch_size":
        if isinstance(value, str) and value.strip().lower() == "full":
            return 0
        out = _int(key, value)
        if out < 0:
            raise ConfigError(f"`batch_size` must be a positive integer or 'full'. Received: batch_size={value!r}")
        return out
    if key == "pca":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        out = _int(key, value)
        if out < 1:
            raise ConfigError(f"`pca` must be a positive number of components or 'none'. Received: pca={value!r}")
        return out
    if key == "hidden":
        return _sizes(key, value, _int)
    if key == "layers":
        text = str(value).strip()
        if text.lower() in ("", "none"):
            return None
        from descend.model.parse import spatial_layers

        spatial_layers(text)  # a malformed token is named here, before any run starts
        return text
    if key == "dropout_keep":
        return _sizes(key, value, _float)
    if key == "target":
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        return tuple(str(v).strip() for v in items if str(v).strip())
    if key == "augment":
        from descend.model.augment import Augmentation

        augmentation = Augmentation.parse(None if value is None else str(value))  # names a malformed token
        return augmentation.text if augmentation else None
    if key in ("batchnorm", *OPTION_BOOLS):
        return _bool(key, value)
    if key == "optimizer":
        text = str(value).strip().lower()
        if text not in OPTIMIZERS:
            raise ConfigError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}. Received: optimizer={value!r}")
        return text
    if key == "convention":
        text = str(value).strip().lower()
        if text not in CONVENTIONS:
            raise ConfigError(f"`convention` must be one of {', '.join(CONVENTIONS)}. Received: convention={value!r}")
        return text
    return str(value)


def typed_values(mapping: dict, where: str) -> dict:
    """Canonical keys and checked values; a bad key or value names ``where``."""
    out = {}
    for raw, value in mapping.items():
        key = _key(raw)
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key `{raw}` (known keys: {', '.join(KEYS)})")
        if key in out:
            raise ConfigError(f"{where}: key `{key}` given twice")
        try:
            out[key] = coerce(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


def parse_run_spec(text: str) -> dict:
    """``"nesterov lr=0.01 momentum=0.9 label='Nesterov'"`` -> typed values (with ``optimizer``)."""
    where = f"run {text!r}"
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not tokens:
        raise ConfigError("a run spec is empty; write e.g. 'sgd lr=0.1' or 'nesterov lr=0.01 momentum=0.9'")
    raw = {}
    first = tokens[0]
    if "=" not in first:
        if first.lower() not in OPTIMIZERS:
            raise ConfigError(f"{where}: the first word must be an optimizer, one of {', '.join(OPTIMIZERS)}. "
                              f"Received: {first!r}")
        raw["optimizer"] = first
        tokens = tokens[1:]
    for token in tokens:
        name, eq, value = token.partition("=")
        if not eq:
            value = "true"  # a bare word is a flag
        if not name.strip():
            raise ConfigError(f"{where}: {token!r} is not key=value")
        if _key(name) in {_key(k) for k in raw}:
            raise ConfigError(f"{where}: key `{_key(name)}` given twice")
        raw[name] = value
    return typed_values(raw, where)


def format_run_spec(values: dict) -> str:
    """The inverse of :func:`parse_run_spec` (for labels and the report)."""
    parts = [str(values.get("optimizer", ""))]
    for k, v in values.items():
        if k in ("optimizer", "label"):
            continue
        if isinstance(v, tuple):
            v = ",".join(map(str, v)) or "none"
        if isinstance(v, bool):
            if v and k == "batchnorm":
                parts.append(k)
                continue
            v = str(v).lower()
        if isinstance(v, float):
            v = f"{v:g}"
        if k == "batch_size" and v == 0:
            v = "full"
        parts.append(f"{k}={shlex.quote(str(v))}")
    return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class RunDef:
    """One configuration of the study (the seed is set per run instance)."""

    label: str
    spec: str
    config: TrainConfig
    convention: str = "descend"
    budget: float | None = None

    def to_dict(self) -> dict:
        return {"label": self.label, "spec": self.spec, "convention": self.convention, "budget": self.budget,
                "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> RunDef:
        return cls(d["label"], d["spec"], TrainConfig.from_dict(d["config"]), d.get("convention", "descend"),
                   d.get("budget"))


def build_run(values: dict, base: dict, *, dataset: str, convention: str, budget: float | None,
              where: str, label: str | None = None) -> RunDef:
    """A RunDef from a run's typed values over the study's typed base values."""
    values = dict(values)
    shown = {k: v for k, v in values.items() if k != "label"}
    label = values.pop("label", None) or label
    conv = values.pop("convention", None) or base.get("convention") or convention
    run_budget = values.pop("budget", None)
    if run_budget is None:
        run_budget = base.get("budget", budget)
    optimizer = values.get("optimizer") or base.get("optimizer") or COMPARE_DEFAULTS["optimizer"]
    fields = {**COMPARE_DEFAULTS, **{k: v for k, v in base.items() if k in CONFIG_KEYS}}
    fields.update({k: v for k, v in values.items() if k in CONFIG_KEYS})
    fields["optimizer"] = optimizer
    fam = family(optimizer)
    if "momentum" in values and fam not in ("momentum",) and "+" not in optimizer:
        raise ConfigError(f"{where}: `momentum` does not apply to optimizer={optimizer!r} (use momentum, nesterov "
                          f"or {fam}+nesterov). Received: momentum={values['momentum']!r}")
    # Options from the base apply where they mean something; a run's own must apply.
    options = {k: v for k, v in base.items() if k in OPTION_KEYS and applies(k, optimizer)}
    options.update({k: v for k, v in values.items() if k in OPTION_KEYS})
    if run_budget is not None and run_budget <= 0:
        raise ConfigError(f"{where}: `budget` must be > 0 seconds. Received: budget={run_budget!r}")
    try:
        kwargs = resolve(conv, optimizer, options)
        cfg = TrainConfig(dataset=dataset, optimizer_options=kwargs,
                          **{k: v for k, v in fields.items() if k != "optimizer"}, optimizer=optimizer)
        from descend.train.loop import build_optimizer

        build_optimizer(cfg, 10)  # the optimizer's own checks (ranges, combinations)
        if cfg.validation == 0 and cfg.early_stopping != "none":
            raise ConfigError(f"`early_stopping` chooses on validation rows, and validation=0 leaves none "
                              f"(use early_stopping=none). Received: early_stopping={cfg.early_stopping!r}")
    except DescendError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # an option the optimizer function does not take
        raise ConfigError(f"{where}: {exc}") from None
    spec = format_run_spec({"optimizer": optimizer, **{k: v for k, v in shown.items() if k != "optimizer"}})
    return RunDef(label or spec, spec, cfg, conv, run_budget)


@dataclass(frozen=True)
class Preset:
    description: str
    base: dict
    runs: tuple[tuple[str, str], ...]  # (label, run spec)
    target_error: float | None = None
    budget: float | None = None
    timing_sensitive: bool = False  # run one at a time by default: the wall clock is the measure
    notes: str = ""
    tune: dict[str, str] = field(default_factory=dict)  # label -> that run's tuning space (tuned presets)
    tune_trials: int = 8
    dataset: str | None = None  # the data it is about, when not the command line's (default mnist)


#: The overfitting demonstration: ten points, a 1-30-100-100-30-1 sigmoid network with N(0, 0.1^2) weights and
#: biases, Adam 1e-3 on batches of 50 rows drawn with replacement, 10,000 steps.  Raw x goes in; the targets are
#: standardized like every regression's (the MSE and the curves are reported back in y's units).
OVERFIT_BASE = {"hidden": (30, 100, 100, 30), "activation": "sigmoid", "init": "normal", "optimizer": "adam",
                "lr": 1e-3, "batch_size": 50, "sampling": "replacement", "epochs": 10_000, "eval_every": 100,
                "schedule": "constant", "validation": 0.0, "normalize": "none"}

PRESETS: dict[str, Preset] = {
    "gd-variants": Preset(
        "Full-batch vs mini-batch vs stochastic gradient descent on logistic regression (784-10), each at "
        "its own good learning rate, compared at an equal wall-clock budget and per epoch.",
        {"hidden": (), "optimizer": "sgd", "epochs": 100_000},
        (("full batch", "sgd batch_size=full lr=0.5 eval_every=1"),
         ("mini-batch (100)", "sgd batch_size=100 lr=0.5 eval_every=100"),
         ("stochastic (1)", "sgd batch_size=1 lr=0.005 eval_every=5000")),
        target_error=0.09, budget=20.0, timing_sensitive=True,
        notes="Every variant stops at the first evaluation past the budget; evaluation time counts."),
    "momentum": Preset(
        "No momentum vs classic vs Nesterov momentum, 784-300-10 ReLU, mini-batches of 100, the same "
        "learning rate 0.01 (the curriculum's comparison).",
        {"hidden": (300,), "batch_size": 100, "epochs": 8, "lr": 0.01, "eval_every": 250},
        (("mini-batch SGD", "sgd lr=0.01"),
         ("momentum 0.9", "momentum lr=0.01 momentum=0.9"),
         ("Nesterov 0.9", "nesterov lr=0.01 momentum=0.9")),
        target_error=0.04),
    "adaptive": Preset(
        "Constant learning rate vs AdaGrad vs RMSprop vs Adam vs RMSprop with Nesterov momentum, "
        "784-300-10 ReLU, mini-batches of 100.",
        {"hidden": (300,), "batch_size": 100, "epochs": 8, "eval_every": 250},
        (("constant (SGD)", "sgd lr=0.05"),
         ("AdaGrad", "adagrad lr=0.01"),
         ("RMSprop", "rmsprop lr=0.001"),
         ("Adam", "adam lr=0.001"),
         ("RMSprop+Nesterov", "rmsprop+nesterov lr=0.0001 momentum=0.9")),
        target_error=0.03),
    "schedules": Preset(
        "Learning-rate schedules with Nesterov momentum (lr 0.1, momentum 0.9): constant, step decay, "
        "exponential, inverse time (per epoch), 784-300-10 ReLU.",
        {"hidden": (300,), "batch_size": 100, "epochs": 10, "optimizer": "nesterov", "lr": 0.1,
         "momentum": 0.9, "eval_every": 250},
        (("constant", "nesterov schedule=constant"),
         ("step 0.5 every 3", "nesterov schedule=step:0.5:3"),
         ("exponential 0.15", "nesterov schedule=exponential:0.15"),
         ("inverse time 0.3", "nesterov schedule=inverse:0.3")),
        target_error=0.025),
    "regularization": Preset(
        "No regularization vs L2 vs dropout vs batch normalization, 784-500-300-10 ReLU, Nesterov momentum.",
        {"hidden": (500, 300), "batch_size": 100, "epochs": 10, "optimizer": "nesterov", "lr": 0.02,
         "momentum": 0.9},
        (("none", "nesterov"),
         ("L2 1e-4", "nesterov l2=1e-4"),
         ("dropout 0.8/0.5/0.5", "nesterov dropout_keep=0.8,0.5,0.5"),
         ("batch norm", "nesterov batchnorm")),
        target_error=0.025),
    "engines": Preset(
        "One configuration (784-300-10 ReLU, momentum 0.9, lr 0.01, batch 100) on every installed engine: "
        "the same weights and batches, so the curves should overlap; the seconds differ.",
        {"hidden": (300,), "batch_size": 100, "epochs": 3, "optimizer": "momentum", "lr": 0.01, "momentum": 0.9},
        (), target_error=0.05, timing_sensitive=True),
    "tuned-optimizers": Preset(
        "SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam and AdamW, each tuned with the same budget of trials "
        "on its learning rate and its own main hyperparameter, then compared over seeds; 784-300-10 ReLU, "
        "mini-batches of 100.",
        {"hidden": (300,), "batch_size": 100, "epochs": 4, "eval_every": 250},
        (("SGD", "sgd"), ("momentum", "momentum"), ("Nesterov", "nesterov"), ("AdaGrad", "adagrad"),
         ("RMSprop", "rmsprop"), ("Adam", "adam"), ("AdamW", "adamw")),
        target_error=0.03,
        notes="Every optimizer gets the same number of tuning trials, scored on validation data only.",
        tune={"SGD": "lr=log(1e-3,1)",
              "momentum": "lr=log(1e-4,1) momentum=0.8,0.9,0.95,0.99",
              "Nesterov": "lr=log(1e-4,1) momentum=0.8,0.9,0.95,0.99",
              "AdaGrad": "lr=log(1e-4,1) eps=1e-10,1e-8,1e-6,1e-4",
              "RMSprop": "lr=log(1e-5,1e-1) rho=0.9,0.95,0.99,0.999",
              "Adam": "lr=log(1e-5,1e-1) b1=0.8,0.9,0.95,0.99",
              "AdamW": "lr=log(1e-5,1e-1) weight_decay=1e-4,1e-3,1e-2,1e-1"}),
    "tuned-schedules": Preset(
        "Learning-rate schedules with Nesterov momentum 0.9 -- constant, step decay, exponential, inverse time "
        "(per epoch) -- each tuned with the same budget on its learning rate and its decay, 784-300-10 ReLU.",
        {"hidden": (300,), "batch_size": 100, "epochs": 6, "optimizer": "nesterov", "momentum": 0.9,
         "eval_every": 250},
        (("constant", "nesterov schedule=constant"), ("step decay", "nesterov"), ("exponential", "nesterov"),
         ("inverse time", "nesterov")),
        target_error=0.025,
        notes="Every schedule gets the same number of tuning trials, scored on validation data only.",
        tune={"constant": "lr=log(1e-3,1)",
              "step decay": "lr=log(1e-3,1) schedule=step:0.5:2,step:0.5:3,step:0.2:3",
              "exponential": "lr=log(1e-3,1) schedule=exponential:0.05,exponential:0.15,exponential:0.3",
              "inverse time": "lr=log(1e-3,1) schedule=inverse:0.1,inverse:0.3,inverse:1"}),
    "overfit": Preset(
        "Overfitting ten points (the lecture notes' demonstration): a 1-30-100-100-30-1 sigmoid network, weights "
        "and biases from N(0, 0.1^2), Adam lr 1e-3, batches of 50 rows drawn with replacement, 10,000 steps; "
        "plain vs dropout 0.2 after every hidden layer vs batch normalization before every hidden activation.",
        OVERFIT_BASE,
        (("plain", "adam"),
         ("dropout 0.2", "adam dropout_keep=1,0.8,0.8,0.8,0.8"),
         ("batch norm", "adam batchnorm")),
        notes="No validation rows: the curves and the table measure the ten training points in inference mode, "
              "and the fitted curves show each network's prediction between them.",
        dataset="overfit-points"),
}


def preset_runs(name: str) -> tuple[tuple[str, str], ...]:
    if name == "engines":
        from descend.engines import available_engines

        return tuple((engine, f"momentum engine={engine}") for engine in available_engines())
    return PRESETS[name].runs


@dataclass(frozen=True)
class Study:
    """Runs x seeds: every configuration of one seed starts from the same weights and batch order."""

    dataset: str
    runs: tuple[RunDef, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    target_error: float | None = None
    budget: float | None = None
    convention: str = "descend"
    preset: str | None = None
    title: str = ""
    timing_sensitive: bool = False
    notes: str = ""
    base: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)  # a Tuning's dict (see compare.tune); {} = the runs as written

    def to_dict(self) -> dict:
        return {"version": STUDY_VERSION, "dataset": self.dataset, "title": self.title, "preset": self.preset,
                "seeds": list(self.seeds), "target_error": self.target_error, "budget": self.budget,
                "convention": self.convention, "timing_sensitive": self.timing_sensitive, "notes": self.notes,
                "base": {k: list(v) if isinstance(v, tuple) else v for k, v in self.base.items()},
                "runs": [r.to_dict() for r in self.runs], "tune": self.tune}

    @classmethod
    def from_dict(cls, d: dict) -> Study:
        if d.get("version", 0) > STUDY_VERSION:
            raise InputError(f"compare.json has version {d.get('version')}, newer than this descend supports")
        return cls(d["dataset"], tuple(RunDef.from_dict(r) for r in d["runs"]), tuple(d["seeds"]),
                   d.get("target_error"), d.get("budget"), d.get("convention", "descend"), d.get("preset"),
                   d.get("title", ""), d.get("timing_sensitive", False), d.get("notes", ""), d.get("base", {}),
                   d.get("tune") or {})

    def same_plan(self, other: Study) -> bool:
        """Whether ``other`` would run exactly these configurations and seeds."""
        return ([r.to_dict() for r in self.runs] == [r.to_dict() for r in other.runs]
                and tuple(self.seeds) == tuple(other.seeds) and self.dataset == other.dataset
                and self.tune == other.tune)


def load_toml(path: str | Path) -> dict:
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    known = {"dataset", "title", "preset", "seeds", "seed", "convention", "target_error", "budget", "workers",
             "engine", "base", "run", "notes", "tune"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {unknown} (known: {', '.join(sorted(known))})")
    runs = data.get("run", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{path}: runs are [[run]] tables")
    if not isinstance(data.get("base", {}), dict):
        raise ConfigError(f"{path}: [base] must be a table")
    tune = data.get("tune", {})
    if not isinstance(tune, dict):
        raise ConfigError(f"{path}: [tune] must be a table with space, budget, method and folds")
    unknown = sorted(set(tune) - {"space", "budget", "method", "folds"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown} in [tune] (known: budget, folds, method, space)")
    return data


def assemble_study(dataset: str | None = None, *, preset: str | None = None, runs=(), config_file=None,
                   seeds: int | None = None, first_seed: int | None = None, convention: str | None = None,
                   target_error: float | None = None, budget: float | None = None, base: dict | None = None,
                   title: str | None = None) -> tuple[Study, dict, dict, int]:
    """A study from a preset, a TOML file, run specs and base overrides, before any tuning.

    Precedence, lowest first: compare defaults, the preset's base, the file's
    ``[base]``, ``base`` (options typed on the command line), each run's keys.
    ``runs`` are run-spec strings, added after the preset's and the file's runs.
    Also returned, for :func:`descend.experiments.compare.build.build_study`:
    the runs' own tuning spaces (label -> space: a tuned preset's or a file
    run's), the file's ``[tune]`` table and the preset's default trial count.
    """
    data = load_toml(config_file) if config_file else {}
    where_file = str(config_file) if config_file else ""
    preset = preset or data.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"`preset` must be one of {', '.join(PRESETS)}. Received: preset={preset!r}")
    p = PRESETS.get(preset) if preset else None
    dataset = dataset or data.get("dataset") or (p.dataset if p else None) or "mnist"
    convention = convention or data.get("convention") or "descend"
    coerce("convention", convention)
    merged = dict(p.base) if p else {}
    if data.get("base"):
        merged.update(typed_values(data["base"], f"{where_file} [base]"))
    if data.get("engine"):
        merged["engine"] = str(data["engine"])
    merged.update(typed_values(base or {}, "options"))
    if "label" in merged:
        raise ConfigError("`label` is a per-run key, not a base option")
    study_budget = budget if budget is not None else data.get("budget", p.budget if p else None)
    if study_budget is not None:
        study_budget = _float("budget", study_budget)
        if study_budget <= 0:
            raise ConfigError(f"`budget` must be > 0 seconds. Received: budget={study_budget!r}")
    target = target_error if target_error is not None else data.get("target_error", p.target_error if p else None)
    if target is not None:
        target = _float("target_error", target)
        if not 0 < target < 1:
            raise ConfigError(f"`target_error` must be a fraction in (0, 1), e.g. 0.03 for 3%. "
                              f"Received: target_error={target!r}")
    n_seeds = seeds if seeds is not None else data.get("seeds", 3)
    start = first_seed if first_seed is not None else data.get("seed", 0)
    n_seeds, start = _int("seeds", n_seeds), _int("seed", start)
    if n_seeds < 1:
        raise ConfigError(f"`seeds` must be >= 1. Received: seeds={n_seeds}")

    defs: list[RunDef] = []
    run_spaces = dict(p.tune) if p else {}
    common = {"dataset": dataset, "convention": convention, "budget": study_budget}
    if p:
        for label, spec in preset_runs(preset):
            defs.append(build_run(parse_run_spec(spec), merged, label=label, where=f"preset {preset!r} run {spec!r}",
                                  **common))
    for i, table in enumerate(data.get("run", [])):
        table = dict(table)
        spec = table.pop("spec", None)
        own_space = table.pop("tune", None)
        where = f"{where_file} [[run]] #{i + 1}"
        values = parse_run_spec(spec) if spec else {}
        extra = typed_values(table, where)
        clash = sorted(set(values) & set(extra))
        if clash:
            raise ConfigError(f"{where}: {clash} given both in `spec` and as keys")
        defs.append(build_run({**values, **extra}, merged, where=where, **common))
        if own_space:
            run_spaces[defs[-1].label] = str(own_space)
    for spec in runs:
        defs.append(build_run(parse_run_spec(spec), merged, where=f"run {spec!r}", **common))
    if not defs:
        raise ConfigError("nothing to compare: give --preset NAME, --run SPEC (twice or more) or --config FILE.toml "
                          f"(presets: {', '.join(PRESETS)})")
    labels = [d.label for d in defs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"run labels must be unique; {dup} appear more than once (add label=...)")
    study = Study(dataset, tuple(defs), tuple(range(start, start + n_seeds)), target, study_budget, convention,
                  preset, title or data.get("title") or (f"{preset} on {Path(dataset).name}" if preset else
                                                         f"compare on {Path(dataset).name}"),
                  bool(p and p.timing_sensitive), data.get("notes", p.notes if p else ""),
                  {k: v for k, v in merged.items()})
    return study, run_spaces, data.get("tune", {}), p.tune_trials if p else 8
