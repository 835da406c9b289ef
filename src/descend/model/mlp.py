"""The multilayer perceptron, written once over an engine's ``ops`` namespace.

Parameters are a flat ``dict[str, array]`` (``"dense0.W"``, ``"dense0.b"``, ...);
non-trained state (none yet for a plain MLP) lives in a separate dict.  The same
functions run eagerly on NumPy and PyTorch, traced on JAX and TensorFlow and
symbolically on PyTensor, so every engine computes exactly this math.

Loss (DESIGN §3): mean softmax cross-entropy over the batch, computed with
log-sum-exp, plus ``l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight matrices only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from descend.errors import require

ACTIVATIONS = ("relu", "tanh", "sigmoid")


@dataclass(frozen=True)
class MLP:
    """A fully connected network: ``n_in -> hidden... -> n_out`` logits.

    ``hidden=()`` is multinomial logistic regression.  ``activation`` applies to
    every hidden layer; initialisation follows it (He for ReLU, Glorot for
    tanh and sigmoid).
    """

    hidden: tuple[int, ...] = (300,)
    activation: str = "relu"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        require(all(h > 0 for h in self.hidden), "hidden", "positive layer sizes", self.hidden)
        require(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", self.activation)

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def to_dict(self) -> dict:
        return {"type": "MLP", "hidden": list(self.hidden), "activation": self.activation}

    @classmethod
    def from_dict(cls, d: dict) -> MLP:
        return cls(hidden=tuple(d.get("hidden", ())), activation=d.get("activation", "relu"))


def weight_names(spec: MLP) -> tuple[str, ...]:
    """Names of the weight matrices: the only parameters L1/L2 apply to."""
    return tuple(f"dense{i}.W" for i in range(spec.n_layers))


def init_params(spec: MLP, n_in: int, n_out: int, key, dtype="float32") -> dict[str, np.ndarray]:
    """Initial parameters as NumPy arrays; engines convert them.

    ``key`` is an int seed or a ``numpy.random.Generator``: randomness is always
    explicit, so the same seed gives every engine the same starting point.
    He-normal (std sqrt(2/fan_in)) for ReLU, Glorot-uniform for tanh/sigmoid,
    zero biases.
    """
    rng = key if isinstance(key, np.random.Generator) else np.random.default_rng(key)
    sizes = (int(n_in), *spec.hidden, int(n_out))
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if spec.activation == "relu":
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, size=(fan_in, fan_out))
        params[f"dense{i}.W"] = w.astype(dtype)
        params[f"dense{i}.b"] = np.zeros(fan_out, dtype=dtype)
    return params


def init_state(spec: MLP, n_in: int, n_out: int, dtype="float32") -> dict[str, np.ndarray]:
    """Non-trained state (batch-norm running statistics); empty for a plain MLP."""
    return {}


def _activate(ops, name: str, z):
    if name == "relu":
        return ops.relu(z)
    if name == "tanh":
        return ops.tanh(z)
    return ops.sigmoid(z)


def forward(ops, spec: MLP, params, state, x, *, train: bool = False, key=None):
    """Logits for a batch ``x`` of shape (n, n_in).  Returns ``(logits, new_state)``.

    ``train`` and ``key`` select training behaviour (dropout, batch statistics)
    for the layers that have one; a plain MLP behaves the same either way.
    """
    h = x
    last = spec.n_layers - 1
    for i in range(spec.n_layers):
        h = ops.matmul(h, params[f"dense{i}.W"]) + params[f"dense{i}.b"]
        if i < last:
            h = _activate(ops, spec.activation, h)
    return h, state


def softmax_cross_entropy(ops, logits, y):
    """Mean of ``logsumexp(z) - z[y]`` over the batch, stable for large logits."""
    m = ops.max(logits, axis=1, keepdims=True)
    z = logits - m
    lse = ops.log(ops.sum(ops.exp(z), axis=1))
    return ops.mean(lse - ops.take_labels(z, y))


def penalty(ops, spec: MLP, params, *, l1: float = 0.0, l2: float = 0.0):
    """``l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight matrices (not biases)."""
    total = 0.0
    for name in weight_names(spec):
        w = params[name]
        if l2:
            total = total + 0.5 * l2 * ops.sum(w * w)
        if l1:
            total = total + l1 * ops.sum(ops.abs(w))
    return total


def loss_fn(ops, spec: MLP, params, state, x, y, *, l1=0.0, l2=0.0, train=True, key=None):
    """Training objective and what came with it: ``(loss, (new_state, logits))``."""
    logits, new_state = forward(ops, spec, params, state, x, train=train, key=key)
    loss = softmax_cross_entropy(ops, logits, y) + penalty(ops, spec, params, l1=l1, l2=l2)
    return loss, (new_state, logits)


def predict_logits(ops, spec: MLP, params, state, x):
    """Inference-mode logits."""
    logits, _ = forward(ops, spec, params, state, x, train=False)
    return logits
