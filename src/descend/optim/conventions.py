"""Library conventions: which documented variant of each update rule to use.

Optimizers disagree in small ways that change results: the learning rate inside
or outside the velocity, eps inside or outside the square root, the starting
value of an accumulator, Keras' folded Adam bias correction, RMSprop's decay.
``--convention NAME`` picks one library's choices for every rule, so that a
PyTorch or Keras result can be reproduced exactly; explicit options (``eps=1e-6``)
still override the convention.  docs/optimizers.md tabulates the formulas.

- ``descend``: this library's own (lr inside the velocity, eps outside the root,
  accumulators from 0, RMSprop rho 0.9 / eps 1e-8, AdaGrad eps 1e-10, Adam standard,
  AdamW decaying the weight tensors only).
- ``torch``: ``torch.optim`` defaults (SGD/RMSprop/AdaGrad momentum with the lr
  outside the velocity, RMSprop alpha 0.99, eps 1e-8 outside, AdaGrad eps 1e-10
  from 0, Adam standard with eps 1e-8, AdamW decaying every parameter).
- ``keras``: Keras 3 (``keras.optimizers``): lr inside the velocity,
  RMSprop rho 0.9 with ``g / sqrt(v + eps)``, eps 1e-7; AdaGrad accumulator from
  0.1 with ``g / sqrt(c + eps)``, eps 1e-7; Adam with the folded bias correction,
  eps 1e-7 outside the root; AdamW decaying every variable.
- ``curriculum``: the Theano-era course code (NumPy / Theano scripts of the
  practical deep-learning course): momentum ``v = mu*v - lr*g``, RMSprop with the
  cache starting at 1, decay 0.999, eps 1e-10 outside the root, Adam bias-corrected
  with eps inside the root ``m_hat / sqrt(v_hat + eps)``.

AdamW is Adam plus decoupled weight decay: the Adam options apply to it, and
``decay_mask`` (AdamW's ``mask``) is set by the conventions; ``weight_decay``
itself, like the learning rate, never is.
"""

from __future__ import annotations

from descend.errors import ConfigError

CONVENTIONS = ("descend", "torch", "keras", "curriculum")

#: option name -> the optimizer families it applies to.
OPTION_FAMILIES = {
    "lr_inside": ("momentum", "nesterov", "adagrad", "rmsprop"),
    "eps": ("adagrad", "rmsprop", "adam"),
    "eps_in_sqrt": ("adagrad", "rmsprop", "adam"),
    "initial_accumulator": ("adagrad", "rmsprop"),  # rmsprop's keyword is ``initial_scale``
    "rho": ("rmsprop",),
    "b1": ("adam",),
    "b2": ("adam",),
    "bias_correction": ("adam",),
    "weight_decay": ("adamw",),
    "decay_mask": ("adamw",),  # adamw's keyword is ``mask``
}
OPTION_KEYS = tuple(OPTION_FAMILIES)

_FAMILY_DEFAULTS = {
    "descend": {
        "momentum": {"lr_inside": True},
        "adagrad": {"eps": 1e-10, "initial_accumulator": 0.0, "eps_in_sqrt": False, "lr_inside": True},
        "rmsprop": {"rho": 0.9, "eps": 1e-8, "initial_accumulator": 0.0, "eps_in_sqrt": False, "lr_inside": True},
        "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_in_sqrt": False, "bias_correction": "standard"},
    },
    "torch": {
        "momentum": {"lr_inside": False},
        "adagrad": {"eps": 1e-10, "initial_accumulator": 0.0, "eps_in_sqrt": False, "lr_inside": False},
        "rmsprop": {"rho": 0.99, "eps": 1e-8, "initial_accumulator": 0.0, "eps_in_sqrt": False, "lr_inside": False},
        "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_in_sqrt": False, "bias_correction": "standard"},
    },
    "keras": {
        "momentum": {"lr_inside": True},
        "adagrad": {"eps": 1e-7, "initial_accumulator": 0.1, "eps_in_sqrt": True, "lr_inside": True},
        "rmsprop": {"rho": 0.9, "eps": 1e-7, "initial_accumulator": 0.0, "eps_in_sqrt": True, "lr_inside": True},
        "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-7, "eps_in_sqrt": False, "bias_correction": "folded"},
    },
    "curriculum": {
        "momentum": {"lr_inside": True},
        "adagrad": {"eps": 1e-10, "initial_accumulator": 0.0, "eps_in_sqrt": False, "lr_inside": True},
        "rmsprop": {"rho": 0.999, "eps": 1e-10, "initial_accumulator": 1.0, "eps_in_sqrt": False, "lr_inside": True},
        "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_in_sqrt": True, "bias_correction": "standard"},
    },
}

#: which parameters AdamW decays, per convention (the curriculum predates AdamW).
_ADAMW_MASK = {"descend": "weights", "torch": "all", "keras": "all", "curriculum": "weights"}

DESCRIPTIONS = {
    "descend": "lr inside the velocity, eps outside the root, accumulators from 0, RMSprop rho 0.9",
    "torch": "torch.optim defaults: lr outside the velocity, RMSprop alpha 0.99, eps outside the root",
    "keras": "Keras 3: lr inside the velocity, eps 1e-7 inside the root (RMSprop, AdaGrad from 0.1), "
             "Adam's folded bias correction",
    "curriculum": "the course's NumPy/Theano code: RMSprop cache from 1, decay 0.999, eps 1e-10; "
                  "Adam eps inside the root",
}


def family(optimizer: str) -> str:
    """``rmsprop+nesterov`` -> ``rmsprop``; ``nesterov`` -> ``momentum``; ``adamw`` -> ``adam``; ``sgd`` -> ``sgd``."""
    base = optimizer.partition("+")[0]
    return {"nesterov": "momentum", "adamw": "adam"}.get(base, base)


def applies(key: str, optimizer: str) -> bool:
    """Whether option ``key`` means something for ``optimizer``."""
    fam = family(optimizer)
    if key == "lr_inside" and fam in ("adagrad", "rmsprop"):
        return "+" in optimizer  # the velocity exists only with +momentum / +nesterov
    return fam in OPTION_FAMILIES[key] or optimizer.partition("+")[0] in OPTION_FAMILIES[key]


def convention_options(convention: str, optimizer: str) -> dict:
    """The convention's options for ``optimizer``, in the generic names of OPTION_KEYS."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"`convention` must be one of {CONVENTIONS}. Received: convention={convention!r}")
    values = dict(_FAMILY_DEFAULTS[convention].get(family(optimizer), {}))
    if optimizer == "adamw":
        values["decay_mask"] = _ADAMW_MASK[convention]
    return {k: v for k, v in values.items() if applies(k, optimizer)}


def to_optimizer_kwargs(optimizer: str, options: dict) -> dict:
    """Generic option names -> the keyword names of ``make_optimizer(optimizer, ...)``."""
    out = dict(options)
    if family(optimizer) == "rmsprop" and "initial_accumulator" in out:
        out["initial_scale"] = out.pop("initial_accumulator")
    if "decay_mask" in out:
        out["mask"] = out.pop("decay_mask")
    return out


def resolve(convention: str, optimizer: str, explicit: dict | None = None) -> dict:
    """``make_optimizer`` keyword options: the convention's, overridden by ``explicit``."""
    explicit = dict(explicit or {})
    if "initial_scale" in explicit:
        explicit["initial_accumulator"] = explicit.pop("initial_scale")
    if "mask" in explicit:
        explicit["decay_mask"] = explicit.pop("mask")
    for key in explicit:
        if key not in OPTION_FAMILIES:
            raise ConfigError(f"optimizer option `{key}` is unknown; known: {', '.join(OPTION_KEYS)}")
        if not applies(key, optimizer):
            where = ", ".join(f for f in OPTION_FAMILIES[key])
            raise ConfigError(f"optimizer option `{key}` does not apply to optimizer={optimizer!r} "
                              f"(it is an option of {where}{' with +momentum/+nesterov' if key == 'lr_inside' else ''})"
                              f". Received: {key}={explicit[key]!r}")
    return to_optimizer_kwargs(optimizer, {**convention_options(convention, optimizer), **explicit})
