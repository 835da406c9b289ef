"""A network is a frozen, hashable sequence of layers; its math loops over them.

Parameters are one flat ``dict[str, array]`` named ``"<layer name>.<local
name>"``, where a layer's name is its type's prefix and its rank among the
layers of that type (``conv0.W``, ``bn1.gamma``, ``dense2.b``); batch-norm
running statistics live in a separate state dict under the same scheme.  The
dropout layers' rank is also their random stream: dropout layer ``k`` draws
``ops.keep_mask(key, k, ...)``.

Data rows arrive as 2-D ``(n, features)`` arrays on every engine (batches are
slices of the dataset on the device).  A network whose input is an image
reshapes them to NHWC ``(n, height, width, channels)`` at the start of its
forward pass.

``MLP(...)`` builds the multilayer perceptron as a network with the names
and initial values (the same random draws) it had before networks were made
of layers, so every model file written since loads and predicts as it did.

``input_shape=None`` leaves the input size to :meth:`Network.resolve` (a
vector of the data's width), and a last ``Dense(None)`` takes the number of
outputs from it: the shorthand ``MLP(hidden=(300,))`` needs neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from descend.errors import ConfigError, require
from descend.model.layers import (
    ACTIVATIONS,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    LayerKey,
    init_for,
    layer_from_dict,
)

TASKS = ("classification", "regression")  # regression: a linear output of the target's width, mean squared error


@dataclass(frozen=True)
class Network:
    """``input_shape`` (per row: ``(d,)`` or ``(height, width, channels)``), ``layers``, ``task``."""

    input_shape: tuple[int, ...] | None
    layers: tuple[Layer, ...]
    task: str = "classification"

    def __post_init__(self):
        if self.input_shape is not None:
            shape = tuple(int(s) for s in self.input_shape)
            require(len(shape) in (1, 3) and all(s > 0 for s in shape), "input_shape",
                    "(features,) or (height, width, channels) of positive sizes", self.input_shape)
            object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "layers", tuple(self.layers))
        require(all(isinstance(layer, Layer) for layer in self.layers), "layers", "a sequence of layers",
                self.layers)
        require(self.task in TASKS, "task", f"one of {TASKS}", self.task)
        for layer in self.layers[:-1]:
            if isinstance(layer, Dense) and layer.units is None:
                raise ConfigError(f"{layer.describe()}: only the last layer may take the number of outputs")
        if self.input_shape is not None:  # a kernel larger than its map, a dense layer on an image...
            layers = self.layers
            if layers and isinstance(layers[-1], Dense) and layers[-1].units is None:
                layers = (*layers[:-1], Dense(1))
            _shapes(self.input_shape, layers)

    # Names and shapes ---------------------------------------------------------
    @cached_property
    def names(self) -> tuple[str, ...]:
        """``conv0``, ``bn0``, ``dense1``...: each layer's prefix and its rank among layers of its type."""
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            k = counts.get(layer.prefix, 0)
            counts[layer.prefix] = k + 1
            names.append(f"{layer.prefix}{k}")
        return tuple(names)

    @cached_property
    def _plan(self) -> tuple:
        """Per layer: (name, layer, its rank among its type, param names, state names)."""
        return tuple((name, layer, int(name[len(layer.prefix):]), layer.param_names, layer.state_names)
                     for name, layer in zip(self.names, self.layers))

    @property
    def image_input(self) -> bool:
        return self.input_shape is not None and len(self.input_shape) == 3

    def resolve(self, n_in: int, n_out: int) -> Network:
        """This network for data of ``n_in`` features and ``n_out`` outputs (lazy sizes filled in)."""
        n_in, n_out = int(n_in), int(n_out)
        shape = self.input_shape
        if shape is None:
            shape = (n_in,)
        elif math.prod(shape) != n_in:
            raise ConfigError(f"the network expects rows of {math.prod(shape)} features "
                              f"({'x'.join(map(str, shape))}); the data has {n_in}")
        layers = self.layers
        if layers and isinstance(layers[-1], Dense) and layers[-1].units is None:
            last = layers[-1]
            layers = (*layers[:-1], Dense(n_out, bias=last.bias, init_name=last.init_name))
        return Network(shape, layers, self.task)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-row shape after each layer (the input shape first)."""
        if self.input_shape is None:
            raise ConfigError("the network's input shape is not known yet")
        return _shapes(self.input_shape, self.layers)

    def macs(self) -> int:
        """Multiply-adds of one row's forward pass."""
        shapes = self.shapes()
        return sum(layer.macs(s) for layer, s in zip(self.layers, shapes))

    def summary(self) -> list[dict]:
        """One row per layer: name, description, output shape, parameters, multiply-adds."""
        shapes = self.shapes()
        rows = []
        rng = np.random.default_rng(0)
        for name, layer, in_shape, out_shape in zip(self.names, self.layers, shapes, shapes[1:]):
            params, _, _ = layer.init(rng, in_shape, "float32")
            rows.append({"name": name, "layer": layer.describe(), "output": out_shape,
                         "params": int(sum(p.size for p in params.values())), "macs": layer.macs(in_shape)})
        return rows

    # Parameters ----------------------------------------------------------------
    def init(self, key, dtype="float32") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(params, state)`` as NumPy arrays; ``key`` is an int seed or a ``numpy.random.Generator``."""
        rng = key if isinstance(key, np.random.Generator) else np.random.default_rng(key)
        params, state = {}, {}
        shape = self.input_shape
        if shape is None:
            raise ConfigError("the network's input shape is not known yet")
        for name, layer in zip(self.names, self.layers):
            p, s, shape = layer.init(rng, shape, dtype)
            params.update({f"{name}.{k}": v for k, v in p.items()})
            state.update({f"{name}.{k}": v for k, v in s.items()})
        return params, state

    def init_params(self, key, dtype="float32") -> dict[str, np.ndarray]:
        return self.init(key, dtype)[0]

    def init_state(self, dtype="float32") -> dict[str, np.ndarray]:
        return self.init(0, dtype)[1]

    @cached_property
    def weight_names(self) -> tuple[str, ...]:
        """The parameters L1/L2 apply to: dense and conv kernels, never biases or batch norm."""
        return tuple(f"{name}.{k}" for name, layer in zip(self.names, self.layers) for k in layer.penalized)

    # Math ----------------------------------------------------------------------
    def forward(self, ops, params, state, x, *, train: bool = False, key=None, dropout: bool | None = None):
        """``(outputs, new_state)`` for a batch of rows ``x`` (n, features).

        ``train`` selects batch statistics for batch norm (and updates the
        running averages in ``new_state``).  ``dropout`` (default: ``train``)
        applies dropout masks drawn from ``key``; Monte-Carlo dropout
        prediction is ``train=False, dropout=True``.
        """
        dropout = train if dropout is None else dropout
        if self.image_input:
            x = ops.reshape(x, (-1, *self.input_shape))
        new_state = dict(state)
        for name, layer, rank, param_names, state_names in self._plan:
            p = {k: params[f"{name}.{k}"] for k in param_names}
            s = {k: state[f"{name}.{k}"] for k in state_names}
            layer_key = LayerKey(key, rank) if dropout and isinstance(layer, Dropout) else None
            x, s = layer.apply(ops, p, s, x, train=train, key=layer_key)
            if state_names:
                new_state.update({f"{name}.{k}": v for k, v in s.items()})
        return x, new_state

    # The shorthand's view --------------------------------------------------------
    @cached_property
    def mlp_fields(self) -> dict | None:
        """``MLP(**fields)`` builds exactly this network (for lazy sizes), or None when it is no MLP."""
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        acts = [layer.name for layer in self.layers if isinstance(layer, Activation)]
        if not dense:
            return None
        candidate = {"hidden": [d.units for d in dense[:-1]], "activation": acts[0] if acts else activation_of(dense[0]),
                     "dropout_keep": [d.keep for d in self.layers if isinstance(d, Dropout)],
                     "batchnorm": any(isinstance(layer, BatchNorm) for layer in self.layers)}
        if dense[0].init_name != init_for(candidate["activation"]):
            candidate["init"] = dense[0].init_name
        try:
            same = MLP(**candidate, input_shape=self.input_shape, task=self.task) == self
        except (ConfigError, TypeError):
            return None
        return candidate if same else None

    @property
    def hidden(self) -> tuple[int, ...]:
        """Widths of the dense layers before the output layer."""
        return tuple(layer.units for layer in self.layers if isinstance(layer, Dense))[:-1]

    @property
    def activation(self) -> str:
        acts = [layer.name for layer in self.layers if isinstance(layer, Activation)]
        return acts[0] if acts else "relu"

    @property
    def dropout_keep(self) -> tuple[float, ...]:
        return tuple(layer.keep for layer in self.layers if isinstance(layer, Dropout))

    @property
    def uses_dropout(self) -> bool:
        return any(p < 1.0 for p in self.dropout_keep)

    @property
    def batchnorm(self) -> bool:
        return any(isinstance(layer, BatchNorm) for layer in self.layers)

    # Files ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able description; a network the MLP shorthand builds is written as that shorthand."""
        mlp = self.mlp_fields
        if mlp is not None:
            d = {"type": "MLP", **mlp}
            if self.task != "classification":  # classification files stay as they were written
                d["task"] = self.task
            if self.input_shape is not None:
                d["input_shape"] = list(self.input_shape)
            return d
        return {"type": "Network", "input_shape": None if self.input_shape is None else list(self.input_shape),
                "task": self.task, "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        kind = d.get("type", "MLP")
        if kind == "MLP":
            return MLP(hidden=tuple(d.get("hidden", ())), activation=d.get("activation", "relu"),
                       dropout_keep=tuple(d.get("dropout_keep", ())), batchnorm=bool(d.get("batchnorm", False)),
                       init=d.get("init"), input_shape=d.get("input_shape"), task=d.get("task", "classification"))
        if kind != "Network":
            raise ConfigError(f"`spec type` must be 'MLP' or 'Network'. Received: spec type={kind!r}")
        return cls(d.get("input_shape"), tuple(layer_from_dict(x) for x in d.get("layers", ())),
                   d.get("task", "classification"))



def activation_of(dense: Dense) -> str:
    """The activation an MLP without hidden layers is recorded with: the one its initialisation follows."""
    return "relu" if dense.init_name == "he" else "tanh"


def MLP(hidden=(300,), activation: str = "relu", dropout_keep=(), batchnorm: bool = False, *,
        init: str | None = None, input_shape=None, task: str = "classification") -> Network:  # noqa: N802 - reads as the class it was
    """A fully connected network: ``n_in -> hidden... -> n_outputs`` logits.

    Layer ``i`` is ``dropout(keep[i]) -> dense_i -> [batch norm] -> activation``
    for hidden layers and ``dropout(keep[-1]) -> dense_last`` for the output;
    ``dropout_keep`` holds the keep probability of the input and of each hidden
    layer's output (empty: no dropout).  Batch norm replaces the hidden dense
    layers' biases.  Initialisation follows ``activation`` in every layer,
    the output layer included (He for ReLU, Glorot for tanh and sigmoid);
    ``init="normal"`` draws every weight and bias from N(0, 0.1^2) instead.
    ``hidden=()`` is multinomial logistic regression.  With
    ``task="regression"`` the output layer is linear, one unit per target,
    trained on the mean squared error.  Parameter names are
    ``dense{i}.W``, ``dense{i}.b`` and ``bn{i}.gamma`` / ``bn{i}.beta``.
    """
    hidden = tuple(int(h) for h in hidden)
    dropout_keep = tuple(float(p) for p in dropout_keep)
    require(all(h > 0 for h in hidden), "hidden", "positive layer sizes", hidden)
    require(activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", activation)
    require(len(dropout_keep) in (0, len(hidden) + 1), "dropout_keep",
            f"{len(hidden) + 1} keep probabilities (input, then each hidden layer)", dropout_keep)
    require(all(0.0 < p <= 1.0 for p in dropout_keep), "dropout_keep", "probabilities in (0, 1]", dropout_keep)
    init_name = init_for(activation) if init is None else init
    layers: list[Layer] = []
    for i, units in enumerate((*hidden, None)):
        if dropout_keep:
            layers.append(Dropout(dropout_keep[i]))
        last = i == len(hidden)
        layers.append(Dense(units, bias=last or not batchnorm, init_name=init_name))
        if not last:
            if batchnorm:
                layers.append(BatchNorm())
            layers.append(Activation(activation))
    return Network(input_shape, tuple(layers), task)


MLP.from_dict = Network.from_dict  # model files name their spec "MLP"; callers load them as ``MLP.from_dict``

def _shapes(input_shape, layers) -> tuple[tuple[int, ...], ...]:
    shapes = [input_shape]
    for layer in layers:
        shapes.append(layer.out_shape(shapes[-1]))
    return tuple(shapes)
