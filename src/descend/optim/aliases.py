"""Named optimizers as chains of building blocks, with their update rules.

Defaults follow the curriculum's conventions: the learning rate
sits inside the velocity (``v = mu*v - lr*g; w += v``), so a schedule changes
the step, not the accumulated momentum.  ``lr_inside=False`` gives PyTorch's
form (``v = mu*v + g; w -= lr*v``); with a constant rate both are the same.
"""

from __future__ import annotations

import inspect

from descend.errors import ConfigError, require
from descend.optim.base import GradientTransformation, chain, is_finite_number
from descend.optim.transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    trace,
)


def _check_lr(lr):
    require(callable(lr) or lr > 0, "learning_rate", "> 0", lr)


def _with_momentum(core, lr, momentum, nesterov, lr_inside):
    """``core`` then lr and (Nesterov) momentum, the lr inside or outside the velocity."""
    require(0.0 <= momentum < 1.0, "momentum", "in [0, 1)", momentum)
    blocks = list(core)
    if momentum == 0.0:
        return chain(*blocks, scale_by_learning_rate(lr))
    if lr_inside:
        return chain(*blocks, scale_by_learning_rate(lr), trace(momentum, nesterov=nesterov))
    return chain(*blocks, trace(momentum, nesterov=nesterov), scale_by_learning_rate(lr))


def sgd(learning_rate=0.1) -> GradientTransformation:
    """``w -= lr * g``."""
    _check_lr(learning_rate)
    return chain(scale_by_learning_rate(learning_rate))


def momentum(learning_rate=0.01, momentum=0.9, *, lr_inside=True) -> GradientTransformation:
    """Classic momentum: ``v = mu*v - lr*g; w += v``."""
    _check_lr(learning_rate)
    return _with_momentum([], learning_rate, momentum, False, lr_inside)


def nesterov(learning_rate=0.01, momentum=0.9, *, lr_inside=True) -> GradientTransformation:
    """Nesterov momentum: ``v' = mu*v - lr*g; w += mu*v' - lr*g``."""
    _check_lr(learning_rate)
    return _with_momentum([], learning_rate, momentum, True, lr_inside)


def adagrad(learning_rate=0.01, *, eps=1e-10, initial_accumulator=0.0, eps_in_sqrt=False,
            momentum=0.0, nesterov=False, lr_inside=True) -> GradientTransformation:
    """AdaGrad: ``c += g**2; w -= lr * g / (sqrt(c) + eps)``."""
    _check_lr(learning_rate)
    require(eps >= 0, "eps", ">= 0", eps)
    require(initial_accumulator >= 0, "initial_accumulator", ">= 0", initial_accumulator)
    core = [scale_by_rss(initial_accumulator=initial_accumulator, eps=eps, eps_in_sqrt=eps_in_sqrt)]
    return _with_momentum(core, learning_rate, momentum, nesterov, lr_inside)


def rmsprop(learning_rate=0.001, *, rho=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False,
            momentum=0.0, nesterov=False, lr_inside=True) -> GradientTransformation:
    """RMSprop: ``c = rho*c + (1-rho)*g**2; w -= lr * g / (sqrt(c) + eps)``.

    With ``momentum`` the scaled gradient feeds a (Nesterov) velocity:
    ``rmsprop+nesterov`` is ``v' = mu*v - lr*g/(sqrt(c)+eps); w += mu*v' - lr*g/(sqrt(c)+eps)``.
    PyTorch's ``RMSprop(momentum=mu)`` is ``lr_inside=False``.
    """
    _check_lr(learning_rate)
    require(0.0 <= rho < 1.0, "rho", "in [0, 1)", rho)
    require(eps >= 0, "eps", ">= 0", eps)
    core = [scale_by_rms(decay=rho, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt)]
    return _with_momentum(core, learning_rate, momentum, nesterov, lr_inside)


def _adam_moments(b1, b2, eps, eps_in_sqrt, bias_correction):
    require(0.0 <= b1 < 1.0, "b1", "in [0, 1)", b1)
    require(0.0 <= b2 < 1.0, "b2", "in [0, 1)", b2)
    require(eps >= 0, "eps", ">= 0", eps)
    return scale_by_adam(b1=b1, b2=b2, eps=eps, eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction)


def adam(learning_rate=0.001, *, b1=0.9, b2=0.999, eps=1e-8, eps_in_sqrt=False,
         bias_correction="standard") -> GradientTransformation:
    """Adam: ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g**2;
    w -= lr * m_hat / (sqrt(v_hat) + eps)`` with bias-corrected ``m_hat, v_hat``."""
    _check_lr(learning_rate)
    return chain(_adam_moments(b1, b2, eps, eps_in_sqrt, bias_correction), scale_by_learning_rate(learning_rate))


def adamw(learning_rate=0.001, *, b1=0.9, b2=0.999, eps=1e-8, eps_in_sqrt=False, bias_correction="standard",
          weight_decay=0.01, mask="weights") -> GradientTransformation:
    """AdamW (Loshchilov & Hutter), as ``torch.optim.AdamW``: decoupled weight decay, then Adam.

    ``w -= lr(t) * weight_decay * w; w -= lr(t) * m_hat / (sqrt(v_hat) + eps)``:
    the decay uses the scheduled rate (and the plateau multiplier) and bypasses
    the adaptive scaling.  ``mask`` picks the decayed parameters: ``"weights"``
    (the default: dense and conv kernels, as descend's L1/L2), ``"all"``
    (PyTorch, which decays every tensor it is given), a collection of names or a
    function of the name.
    """
    _check_lr(learning_rate)
    return chain(_adam_moments(b1, b2, eps, eps_in_sqrt, bias_correction),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))


BASE = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam,
        "adamw": adamw}
OPTIMIZERS = (*BASE, "adagrad+momentum", "adagrad+nesterov", "rmsprop+momentum", "rmsprop+nesterov")
MOMENTUM_DEFAULT = 0.9


def make_optimizer(name: str, learning_rate, *, clip_norm=None, **options) -> GradientTransformation:
    """Build an optimizer by name: a base name or ``adaptive+momentum|nesterov``.

    ``options`` are the keyword options of the named function; ``momentum`` is
    accepted (and ignored when zero) by every name so that a single config
    can describe any of them.  ``clip_norm=C`` clips the gradient to global L2
    norm ``C`` before the rule sees it (``None``: no clipping).
    """
    require(name in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", name)
    if clip_norm is not None:
        require(is_finite_number(clip_norm) and clip_norm > 0, "clip_norm",
                "a finite number > 0 (None for no clipping)", clip_norm)
        return chain(clip_by_global_norm(clip_norm), make_optimizer(name, learning_rate, **options))
    base, _, extra = name.partition("+")
    accepted = set(inspect.signature(BASE[base]).parameters) - {"learning_rate"}
    unknown = sorted(set(options) - accepted - {"momentum"})
    if unknown:
        takes = sorted(accepted | ({"momentum"} if extra or base in ("momentum", "nesterov") else set()))
        raise ConfigError(f"optimizer {name!r} takes no option {unknown[0]!r} "
                          f"({'it takes ' + ', '.join(takes) if takes else 'it takes no options'})")
    mu = options.pop("momentum", None)
    if base in ("momentum", "nesterov"):
        return BASE[base](learning_rate, MOMENTUM_DEFAULT if mu is None else mu, **options)
    if extra:
        return BASE[base](learning_rate, momentum=MOMENTUM_DEFAULT if mu is None else mu,
                          nesterov=extra == "nesterov", **options)
    if base in ("sgd", "adam", "adamw") and mu:
        raise ConfigError(f"`momentum` does not apply to optimizer={name!r} (use 'momentum' or 'nesterov'). "
                          f"Received: momentum={mu!r}")
    if mu and base in ("adagrad", "rmsprop"):
        options["momentum"] = mu
    return BASE[base](learning_rate, **options)
