"""Optimizer building blocks.  Each returns a GradientTransformation.

Compose them with ``chain``; the aliases in ``descend.optim.aliases`` are such
chains.  Where libraries disagree (eps inside or outside the square root, the
initial accumulator, Keras' folded Adam bias correction, the learning rate
inside or outside the velocity) the block takes an explicit option, so a
PyTorch or Keras result can be reproduced exactly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from descend.backend import namespace_of
from descend.errors import ConfigError, require
from descend.optim.base import GradientTransformation, float_like, is_finite_number, step_counter, zeros_like_tree

Schedule = Callable[[Any], Any]


def _ops(grads):
    return namespace_of(*grads.values())


def _denominator(ops, acc, eps, eps_in_sqrt):
    return ops.sqrt(acc + eps) if eps_in_sqrt else ops.sqrt(acc) + eps


class ScaleByLearningRateState(NamedTuple):
    count: Any
    scale: Any  # multiplier set from outside (reduce-on-plateau); 1.0 otherwise


def scale_by_learning_rate(learning_rate: float | Schedule, *, flip_sign: bool = True):
    """``u = -lr(t) * s * g`` with ``t`` the step count and ``s`` the plateau multiplier.

    ``learning_rate`` is a float or a schedule ``step -> lr``.  Put it first in a
    chain with ``trace`` for the learning rate *inside* the velocity
    (``v = mu*v - lr*g``), last for the learning rate *outside* (PyTorch's
    ``v = mu*v + g; w -= lr*v``).
    """
    sign = -1.0 if flip_sign else 1.0

    def init(params):
        some = next(iter(params.values()))
        ops = namespace_of(some)
        return ScaleByLearningRateState(step_counter(params), ops.full((), 1.0, dtype=some.dtype))

    def update(grads, state, params=None):
        some = next(iter(grads.values()))
        if callable(learning_rate):
            lr = learning_rate(float_like(state.count, some))
        else:
            lr = learning_rate
        factor = sign * lr * state.scale
        updates = {k: factor * g for k, g in grads.items()}
        return updates, ScaleByLearningRateState(state.count + 1, state.scale)

    return GradientTransformation(init, update)


def scale(factor: float):
    """``u = factor * g`` (stateless)."""

    def init(params):
        return ()

    def update(grads, state, params=None):
        return {k: factor * g for k, g in grads.items()}, state

    return GradientTransformation(init, update)


class TraceState(NamedTuple):
    trace: dict


def trace(decay: float, *, nesterov: bool = False):
    """Momentum: ``v = decay*v + g``; update ``v``, or ``g + decay*v`` with Nesterov.

    After ``scale_by_learning_rate`` this is the curriculum's rule
    ``v = mu*v - lr*g; w += v`` and, with Nesterov, ``w += mu*v' - lr*g``
    (equal to ``-mu*v + (1+mu)*v'``).  Before it, it is PyTorch's SGD momentum.
    """

    def init(params):
        return TraceState(zeros_like_tree(params))

    def update(grads, state, params=None):
        new_trace = {k: decay * state.trace[k] + g for k, g in grads.items()}
        if nesterov:
            updates = {k: g + decay * new_trace[k] for k, g in grads.items()}
        else:
            updates = new_trace
        return updates, TraceState(new_trace)

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    sum_of_squares: dict


def scale_by_rss(*, initial_accumulator: float = 0.0, eps: float = 1e-10, eps_in_sqrt: bool = False):
    """AdaGrad: ``c += g**2; u = g / (sqrt(c) + eps)``.

    PyTorch: ``initial_accumulator=0, eps=1e-10``.  Keras: ``initial_accumulator=0.1,
    eps=1e-7``.  ``eps_in_sqrt`` gives ``g / sqrt(c + eps)``.
    """

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByRssState({k: z + initial_accumulator for k, z in zeros.items()})

    def update(grads, state, params=None):
        ops = _ops(grads)
        acc = {k: state.sum_of_squares[k] + g * g for k, g in grads.items()}
        updates = {k: g / _denominator(ops, acc[k], eps, eps_in_sqrt) for k, g in grads.items()}
        return updates, ScaleByRssState(acc)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    nu: dict


def scale_by_rms(*, decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0, eps_in_sqrt: bool = False):
    """RMSprop: ``c = decay*c + (1-decay)*g**2; u = g / (sqrt(c) + eps)``.

    PyTorch: ``decay=0.99`` (its alpha), eps outside the root.  Keras:
    ``decay=0.9, eps=1e-7``.  ``initial_scale`` is the accumulator's start (optax
    and TensorFlow 1 used 1.0 at times).
    """

    def init(params):
        zeros = zeros_like_tree(params)
        return ScaleByRmsState({k: z + initial_scale for k, z in zeros.items()})

    def update(grads, state, params=None):
        ops = _ops(grads)
        nu = {k: decay * state.nu[k] + (1.0 - decay) * (g * g) for k, g in grads.items()}
        updates = {k: g / _denominator(ops, nu[k], eps, eps_in_sqrt) for k, g in grads.items()}
        return updates, ScaleByRmsState(nu)

    return GradientTransformation(init, update)


class ScaleByAdamState(NamedTuple):
    count: Any
    mu: dict
    nu: dict


BIAS_CORRECTIONS = ("standard", "folded", "none")


def scale_by_adam(
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_in_sqrt: bool = False,
    bias_correction: str = "standard",
):
    """Adam: ``m, v`` EMAs of ``g`` and ``g**2``; ``u = m_hat / (sqrt(v_hat) + eps)``.

    ``bias_correction="standard"``: ``m_hat = m/(1-b1**t)``, ``v_hat = v/(1-b2**t)``
    (PyTorch, optax).  ``"folded"``: Keras' form
    ``u = sqrt(1-b2**t)/(1-b1**t) * m / (sqrt(v) + eps)``, which differs in
    where eps sits.  ``"none"``: ``m / (sqrt(v) + eps)``.
    """
    require(bias_correction in BIAS_CORRECTIONS, "bias_correction", f"one of {BIAS_CORRECTIONS}", bias_correction)

    def init(params):
        return ScaleByAdamState(step_counter(params), zeros_like_tree(params), zeros_like_tree(params))

    def update(grads, state, params=None):
        ops = _ops(grads)
        count = state.count + 1
        mu = {k: b1 * state.mu[k] + (1.0 - b1) * g for k, g in grads.items()}
        nu = {k: b2 * state.nu[k] + (1.0 - b2) * (g * g) for k, g in grads.items()}
        t = float_like(count, next(iter(grads.values())))
        if bias_correction == "standard":
            c1, c2 = 1.0 - b1**t, 1.0 - b2**t
            updates = {k: (mu[k] / c1) / _denominator(ops, nu[k] / c2, eps, eps_in_sqrt) for k in grads}
        elif bias_correction == "folded":
            factor = ops.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            updates = {k: factor * mu[k] / _denominator(ops, nu[k], eps, eps_in_sqrt) for k in grads}
        else:
            updates = {k: mu[k] / _denominator(ops, nu[k], eps, eps_in_sqrt) for k in grads}
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


DECAY_MASKS = ("weights", "all")


def is_weight(name: str) -> bool:
    """Whether ``name`` is a weight tensor (local name ``W``: dense and conv kernels).

    The parameters descend's L1/L2 penalties touch; biases and batch-norm
    parameters are not weights.
    """
    return name == "W" or name.endswith(".W")


def decay_mask(mask):
    """``mask`` as a predicate ``name -> bool``.

    ``None`` or ``"weights"``: the weight tensors (:func:`is_weight`); ``"all"``:
    every parameter (PyTorch's ``weight_decay``, which decays every tensor given
    to the optimizer); a callable is used as is; any other iterable is a
    collection of parameter names.
    """
    if mask is None or (isinstance(mask, str) and mask == "weights"):
        return is_weight
    if isinstance(mask, str) and mask == "all":
        return lambda name: True
    if callable(mask):
        return mask
    if isinstance(mask, str) or not hasattr(mask, "__iter__"):
        raise ConfigError(f"`mask` must be one of {DECAY_MASKS}, a function of the parameter name or a collection "
                          f"of parameter names. Received: mask={mask!r}")
    names = frozenset(mask)
    return names.__contains__


def add_decayed_weights(weight_decay: float, mask=None):
    """``u = g + weight_decay * w`` for the parameters ``mask`` selects (default: the weights).

    Before ``scale_by_learning_rate`` this is decoupled weight decay: the step
    gains ``-lr(t) * weight_decay * w`` with the scheduled rate, outside any
    adaptive scaling (AdamW).  Before an adaptive block it is an L2 gradient term
    instead (PyTorch's ``Adam(weight_decay)``).  ``mask`` is read by
    :func:`decay_mask`.
    """
    require(is_finite_number(weight_decay) and weight_decay >= 0, "weight_decay", "a finite number >= 0", weight_decay)
    return _add_scaled_params("add_decayed_weights", weight_decay, decay_mask(mask))


def _add_scaled_params(who, weight, chosen):
    def init(params):
        return ()

    def update(grads, state, params=None):
        if params is None:
            raise ValueError(f"{who} needs the current params")
        return {k: g + weight * params[k] if chosen(k) else g for k, g in grads.items()}, state

    return GradientTransformation(init, update)


def add_l2(weight: float, *, names=None):
    """``u = g + weight * w`` for the parameters in ``names`` (default: all).

    Weight decay as a transform (PyTorch's ``weight_decay``).  descend's own
    ``l2`` option is part of the loss instead and touches weight matrices only.
    """
    return _add_scaled_params("add_l2", weight, decay_mask("all" if names is None else names))


def clip_by_global_norm(max_norm: float, *, eps: float = 0.0):
    """``u = g * min(1, max_norm / (||g|| + eps))``, ``||g||`` the L2 norm over all parameters.

    Written as ``max_norm / max(||g|| + eps, max_norm)``: a gradient under the
    limit is multiplied by exactly 1, and a zero gradient stays zero without a
    division by zero.  ``eps=1e-6`` is ``torch.nn.utils.clip_grad_norm_``; the
    default 0 is optax's ``clip_by_global_norm``.  Put it first in a chain, so
    that the rule sees the clipped gradient.
    """
    require(is_finite_number(max_norm) and max_norm > 0, "max_norm", "a finite number > 0", max_norm)
    require(is_finite_number(eps) and eps >= 0, "eps", "a finite number >= 0", eps)

    def init(params):
        return ()

    def update(grads, state, params=None):
        ops = _ops(grads)
        norm = ops.sqrt(sum(ops.sum(g * g) for g in grads.values()))
        factor = max_norm / ops.maximum(norm + eps, max_norm)
        return {k: factor * g for k, g in grads.items()}, state

    return GradientTransformation(init, update)


def max_norm(max_value: float, *, names=None):
    """Max-norm constraint (Srivastava et al. 2014): after the step, every unit's
    incoming weight vector (a column of ``W``) has L2 norm at most ``max_value``.

    A projection written as an update, ``u' = proj(w + u) - w``, so it is the
    last element of a chain and runs on every engine.  ``names`` defaults to
    every weight matrix (``*.W``); biases and batch-norm parameters are free.
    """

    def init(params):
        return ()

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("max_norm needs the current params")
        ops = _ops(grads)
        out = {}
        for k, u in grads.items():
            if (k.endswith(".W") if names is None else k in names):
                w = params[k] + u
                norms = ops.sqrt(ops.sum(w * w, axis=0, keepdims=True))
                factor = ops.minimum(max_value / ops.maximum(norms, 1e-12), 1.0)
                out[k] = w * factor - params[k]
            else:
                out[k] = u
        return out, state

    return GradientTransformation(init, update)
