"""Gradient transformations: pure ``(init, update)`` pairs over params dicts.

In the style of optax: ``init(params) -> state`` and
``update(grads, state, params) -> (updates, new_state)``; ``apply_updates``
adds the updates to the parameters.  Nothing is mutated in place, so the same
code runs eagerly, under ``jax.jit`` / ``tf.function``, or symbolically in
PyTensor.  States are tuples / NamedTuples / dicts of arrays (pytrees).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

from descend.backend import namespace_of

Params = dict
State = Any


class GradientTransformation(NamedTuple):
    init: Callable[[Params], State]
    update: Callable[..., tuple[Params, State]]


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Params) -> Params:
    return {k: p + updates[k] for k, p in params.items()}


def zeros_like_tree(params: Params) -> Params:
    ops = namespace_of(*params.values())
    return {k: ops.zeros_like(p) for k, p in params.items()}


def step_counter(params: Params):
    """A 0-d int32 step count on the params' own library."""
    ops = namespace_of(*params.values())
    return ops.zeros((), dtype="int32")


def float_like(count, like):
    """``count`` as a float of ``like``'s library and dtype (for powers and schedules)."""
    ops = namespace_of(like, count)
    return ops.cast(count, like.dtype)


def is_finite_number(x) -> bool:
    """A finite real Python or NumPy scalar, not a bool (for option checks)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
