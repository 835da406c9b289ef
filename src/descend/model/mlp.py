"""The multilayer perceptron, written once over an engine's ``ops`` namespace.

Parameters are a flat ``dict[str, array]`` (``"dense0.W"``, ``"dense0.b"``, ...);
non-trained state (none yet for a plain MLP) lives in a separate dict.  The same
functions run eagerly on NumPy and PyTorch, traced on JAX and TensorFlow and
symbolically on PyTensor, so every engine computes exactly this math.

Loss: mean softmax cross-entropy over the batch, computed with
log-sum-exp, plus ``l2/2 * sum(W**2) + l1 * sum(|W|)`` over weight matrices only.

Layer ``i`` is ``dropout(keep[i]) -> dense_i -> [batch norm] -> activation``
for hidden layers, and ``dropout(keep[-1]) -> dense_last`` for the output:
``dropout_keep`` holds the keep probability of the input and of each hidden
layer's output.  Dropout is inverted (kept units scaled by 1/keep in training,
identity at inference).  Batch norm sits before the activation, replaces the
dense bias, uses batch statistics in training and running averages
(momentum 0.9, eps 1e-5) at inference.
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
    dropout_keep: tuple[float, ...] = ()
    batchnorm: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "dropout_keep", tuple(float(p) for p in self.dropout_keep))
        require(all(h > 0 for h in self.hidden), "hidden", "positive layer sizes", self.hidden)
        require(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", self.activation)
        require(len(self.dropout_keep) in (0, len(self.hidden) + 1), "dropout_keep",
                f"{len(self.hidden) + 1} keep probabilities (input, then each hidden layer)", self.dropout_keep)
        require(all(0.0 < p <= 1.0 for p in self.dropout_keep), "dropout_keep", "probabilities in (0, 1]",
                self.dropout_keep)

    @property
    def uses_dropout(self) -> bool:
        return any(p < 1.0 for p in self.dropout_keep)

    def keep(self, layer: int) -> float:
        """Keep probability of the input of dense layer ``layer``."""
        return self.dropout_keep[layer] if self.dropout_keep else 1.0

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def to_dict(self) -> dict:
        return {"type": "MLP", "hidden": list(self.hidden), "activation": self.activation,
                "dropout_keep": list(self.dropout_keep), "batchnorm": self.batchnorm}

    @classmethod
    def from_dict(cls, d: dict) -> MLP:
        return cls(hidden=tuple(d.get("hidden", ())), activation=d.get("activation", "relu"),
                   dropout_keep=tuple(d.get("dropout_keep", ())), batchnorm=bool(d.get("batchnorm", False)))


BN_MOMENTUM = 0.9
BN_EPS = 1e-5


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
        if spec.batchnorm and i < len(spec.hidden):
            params[f"bn{i}.gamma"] = np.ones(fan_out, dtype=dtype)
            params[f"bn{i}.beta"] = np.zeros(fan_out, dtype=dtype)
        else:
            params[f"dense{i}.b"] = np.zeros(fan_out, dtype=dtype)
    return params


def init_state(spec: MLP, n_in: int, n_out: int, dtype="float32") -> dict[str, np.ndarray]:
    """Non-trained state: batch-norm running mean and variance (empty without batch norm)."""
    state = {}
    if spec.batchnorm:
        for i, width in enumerate(spec.hidden):
            state[f"bn{i}.mean"] = np.zeros(width, dtype=dtype)
            state[f"bn{i}.var"] = np.ones(width, dtype=dtype)
    return state


def _activate(ops, name: str, z):
    if name == "relu":
        return ops.relu(z)
    if name == "tanh":
        return ops.tanh(z)
    return ops.sigmoid(z)


def batchnorm(ops, z, gamma, beta, mean, var, *, train: bool):
    """``(gamma * (z - m) / sqrt(v + eps) + beta, new_mean, new_var)``.

    Training uses the batch's mean and (biased) variance and moves the running
    averages towards them; inference uses the running averages unchanged.
    """
    if train:
        m = ops.mean(z, axis=0)
        centered = z - m
        v = ops.mean(centered * centered, axis=0)
        new_mean = BN_MOMENTUM * mean + (1.0 - BN_MOMENTUM) * m
        new_var = BN_MOMENTUM * var + (1.0 - BN_MOMENTUM) * v
        return gamma * centered / ops.sqrt(v + BN_EPS) + beta, new_mean, new_var
    return gamma * (z - mean) / ops.sqrt(var + BN_EPS) + beta, mean, var


def forward(ops, spec: MLP, params, state, x, *, train: bool = False, key=None, dropout: bool | None = None):
    """Logits for a batch ``x`` of shape (n, n_in).  Returns ``(logits, new_state)``.

    ``train`` selects batch statistics for batch norm (and updates the running
    averages in ``new_state``).  ``dropout`` (default: ``train``) applies
    dropout masks drawn from ``key`` via ``ops.keep_mask(key, layer, keep,
    shape, dtype)``; Monte-Carlo dropout prediction is ``train=False,
    dropout=True``.
    """
    dropout = train if dropout is None else dropout
    h = x
    last = spec.n_layers - 1
    new_state = dict(state)
    for i in range(spec.n_layers):
        keep = spec.keep(i)
        if dropout and keep < 1.0:
            h = h * ops.keep_mask(key, i, keep, h.shape, h.dtype) * (1.0 / keep)
        z = ops.matmul(h, params[f"dense{i}.W"])
        if i < last and spec.batchnorm:
            z, new_state[f"bn{i}.mean"], new_state[f"bn{i}.var"] = batchnorm(
                ops, z, params[f"bn{i}.gamma"], params[f"bn{i}.beta"], state[f"bn{i}.mean"],
                state[f"bn{i}.var"], train=train)
        else:
            z = z + params[f"dense{i}.b"]
        h = _activate(ops, spec.activation, z) if i < last else z
    return h, new_state


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


def predict_logits(ops, spec: MLP, params, state, x, *, key=None, mc_dropout: bool = False):
    """Inference-mode logits (with ``mc_dropout``, one Monte-Carlo dropout sample drawn from ``key``)."""
    logits, _ = forward(ops, spec, params, state, x, train=False, key=key, dropout=mc_dropout)
    return logits
