"""Layers as data: small frozen dataclasses that know their shapes, parameters and math.

Shapes here are per-row shapes, without the batch axis: ``(d,)`` for a vector,
``(height, width, channels)`` for an image (NHWC, channels last).  Each layer
offers

- ``init(rng, in_shape, dtype) -> (params, state, out_shape)``: its trained
  parameters and non-trained state as NumPy arrays, under local names
  (``"W"``, ``"b"``, ``"gamma"``, ``"mean"``...); the network prefixes them;
- ``apply(ops, params, state, x, *, train, key) -> (y, state)``: the forward
  pass over an engine's ``ops`` namespace (eager, traced or symbolic alike);
- ``macs(in_shape)``: multiply-adds of one row's forward pass;
- ``penalized``: the local names L1/L2 apply to (weights, never biases or
  batch-norm parameters).

Randomness is explicit: ``key`` is ``None`` (no dropout) or a
:class:`LayerKey` holding the step's key and the layer's stream index.
Initialisation draws from one NumPy Generator, layer by layer in order, so
the same seed gives every engine the same starting point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np

from descend.backend.windows import conv_out
from descend.errors import ConfigError, require

ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("he", "glorot", "normal")
NORMAL_STD = 0.1  # the lecture notes' N(0, 0.1^2) for weights and biases alike
PADDINGS = ("same", "valid")
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


class LayerKey(NamedTuple):
    """What a layer draws its randomness from: the step's key and the layer's own stream."""

    key: Any
    index: int


def init_for(activation: str) -> str:
    """He-normal for ReLU, Glorot-uniform for tanh and sigmoid."""
    return "he" if activation == "relu" else "glorot"


def _weights(rng, init: str, shape, fan_in: int, fan_out: int, dtype):
    if init == "he":
        w = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    elif init == "normal":
        w = rng.standard_normal(shape) * NORMAL_STD
    else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    return w.astype(dtype)


def _positive(name: str, value) -> int:
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0, name,
            "a positive integer", value)
    return int(value)


class Layer:
    """Base class: a layer without parameters that leaves the shape unchanged."""

    prefix: ClassVar[str] = "layer"
    param_names: ClassVar[tuple[str, ...]] = ()
    state_names: ClassVar[tuple[str, ...]] = ()
    penalized: ClassVar[tuple[str, ...]] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def init(self, rng, in_shape, dtype="float32"):
        return {}, {}, self.out_shape(tuple(in_shape))

    def macs(self, in_shape) -> int:
        return 0

    def apply(self, ops, params, state, x, *, train: bool, key=None):
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **asdict(self)}

    def describe(self) -> str:
        """A short label for tables: ``Conv2D(32, 5, same)``."""
        values = ", ".join(str(getattr(self, f.name)) for f in fields(self))
        return f"{type(self).__name__}({values})"

    def _check_image(self, in_shape, what: str):
        if len(in_shape) != 3:
            raise ConfigError(f"{self.describe()}: {what} needs an image input (height, width, channels); "
                              f"it receives shape {_shape_text(in_shape)}")

    def _map_size(self, in_shape, what: str, window: str, size: int, stride: int, padding: str):
        """Output height and width of ``size`` x ``size`` windows over an image input (checked)."""
        self._check_image(in_shape, what)
        h, w, _ = in_shape
        if size > h or size > w:
            raise ConfigError(f"{self.describe()}: {window} {size}x{size} is larger than its {h}x{w} input map")
        return conv_out(h, size, stride, padding), conv_out(w, size, stride, padding)


def _shape_text(shape) -> str:
    return "x".join(str(s) for s in shape) if shape else "()"


@dataclass(frozen=True)
class Dense(Layer):
    """``x @ W + b`` on vectors; ``units=None`` is the network's output size, given at init."""

    units: int | None
    bias: bool = True
    init_name: str = "he"
    prefix: ClassVar[str] = "dense"
    penalized: ClassVar[tuple[str, ...]] = ("W",)

    def __post_init__(self):
        if self.units is not None:
            object.__setattr__(self, "units", _positive("units", self.units))
        require(self.init_name in INITS, "init", f"one of {INITS}", self.init_name)

    @property
    def param_names(self):
        return ("W", "b") if self.bias else ("W",)

    def describe(self):
        return f"Dense({'outputs' if self.units is None else self.units})"

    def out_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ConfigError(f"{self.describe()}: a dense layer needs vector input; it receives shape "
                              f"{_shape_text(in_shape)} (flatten it first)")
        if self.units is None:
            raise ConfigError(f"{self.describe()}: the output size is not known yet")
        return (self.units,)

    def init(self, rng, in_shape, dtype="float32"):
        (fan_in,), (fan_out,) = in_shape, self.out_shape(tuple(in_shape))
        params = {"W": _weights(rng, self.init_name, (fan_in, fan_out), fan_in, fan_out, dtype)}
        if self.init_name == "normal":
            # drawn even without a bias (batch norm replaces it), so the next layers' weights are the same
            # with and without batch norm: a comparison of the two starts from the same weights
            b = _weights(rng, "normal", (fan_out,), fan_in, fan_out, dtype)
            if self.bias:
                params["b"] = b
        elif self.bias:
            params["b"] = np.zeros(fan_out, dtype=dtype)
        return params, {}, (fan_out,)

    def macs(self, in_shape):
        return int(in_shape[0]) * int(self.units)

    def apply(self, ops, params, state, x, *, train, key=None):
        z = ops.matmul(x, params["W"])
        return (z + params["b"] if self.bias else z), state


@dataclass(frozen=True)
class Conv2D(Layer):
    """2-D convolution (cross-correlation) of NHWC images with an HWIO kernel, plus a bias per filter."""

    filters: int
    kernel: int
    stride: int = 1
    padding: str = "same"
    bias: bool = True
    init_name: str = "he"
    prefix: ClassVar[str] = "conv"
    penalized: ClassVar[tuple[str, ...]] = ("W",)

    def __post_init__(self):
        for name in ("filters", "kernel", "stride"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        require(self.padding in PADDINGS, "padding", f"one of {PADDINGS}", self.padding)
        require(self.init_name in INITS, "init", f"one of {INITS}", self.init_name)

    @property
    def param_names(self):
        return ("W", "b") if self.bias else ("W",)

    def describe(self):
        stride = f", stride {self.stride}" if self.stride != 1 else ""
        return f"Conv2D({self.filters}, {self.kernel}x{self.kernel}{stride}, {self.padding})"

    def out_shape(self, in_shape):
        return (*self._map_size(in_shape, "a convolution", "kernel", self.kernel, self.stride, self.padding),
                self.filters)

    def init(self, rng, in_shape, dtype="float32"):
        out = self.out_shape(tuple(in_shape))
        k, c_in = self.kernel, in_shape[2]
        shape = (k, k, c_in, self.filters)
        params = {"W": _weights(rng, self.init_name, shape, k * k * c_in, k * k * self.filters, dtype)}
        if self.bias:
            params["b"] = (_weights(rng, "normal", (self.filters,), 1, 1, dtype) if self.init_name == "normal"
                           else np.zeros(self.filters, dtype=dtype))
        return params, {}, out

    def macs(self, in_shape):
        oh, ow, f = self.out_shape(tuple(in_shape))
        return oh * ow * f * self.kernel * self.kernel * int(in_shape[2])

    def apply(self, ops, params, state, x, *, train, key=None):
        z = ops.conv2d(x, params["W"], self.stride, self.padding)
        return (ops.add_bias(z, params["b"]) if self.bias else z), state


@dataclass(frozen=True)
class _Pool(Layer):
    """Valid windows of ``size`` x ``size`` every ``stride`` pixels (default: ``size``, not overlapping)."""

    size: int = 2
    stride: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "size", _positive("size", self.size))
        object.__setattr__(self, "stride", self.size if self.stride is None else _positive("stride", self.stride))

    def describe(self):
        stride = f", stride {self.stride}" if self.stride != self.size else ""
        return f"{type(self).__name__}({self.size}x{self.size}{stride})"

    def out_shape(self, in_shape):
        return (*self._map_size(in_shape, "pooling", "pool", self.size, self.stride, "valid"), in_shape[2])


@dataclass(frozen=True)
class MaxPool2D(_Pool):
    prefix: ClassVar[str] = "maxpool"

    def apply(self, ops, params, state, x, *, train, key=None):
        return ops.max_pool2d(x, self.size, self.stride), state


@dataclass(frozen=True)
class AvgPool2D(_Pool):
    prefix: ClassVar[str] = "avgpool"

    def apply(self, ops, params, state, x, *, train, key=None):
        return ops.avg_pool2d(x, self.size, self.stride), state


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """The mean of each channel over the image: (h, w, c) -> (c,)."""

    prefix: ClassVar[str] = "gap"

    def out_shape(self, in_shape):
        self._check_image(in_shape, "global average pooling")
        return (in_shape[2],)

    def apply(self, ops, params, state, x, *, train, key=None):
        return ops.mean(x, axis=(1, 2)), state


@dataclass(frozen=True)
class Flatten(Layer):
    """(h, w, c) -> (h*w*c,), row-major (the order of the pixels in a data row)."""

    prefix: ClassVar[str] = "flatten"

    def out_shape(self, in_shape):
        return (math.prod(in_shape),)

    def apply(self, ops, params, state, x, *, train, key=None):
        return ops.flatten(x), state


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: in training, units are kept with probability ``keep`` and scaled by 1/keep.

    Active only when the network hands it a key (training, or Monte-Carlo
    dropout prediction); identity otherwise.
    """

    keep: float
    prefix: ClassVar[str] = "drop"

    def describe(self):
        return f"Dropout(keep {self.keep:g})"

    def __post_init__(self):
        keep = self.keep
        require(isinstance(keep, (int, float, np.floating)) and 0.0 < float(keep) <= 1.0, "keep",
                "a probability in (0, 1]", keep)
        object.__setattr__(self, "keep", float(keep))

    def apply(self, ops, params, state, x, *, train, key=None):
        if key is None or self.keep >= 1.0:
            return x, state
        return x * ops.keep_mask(key.key, key.index, self.keep, x.shape, x.dtype) * (1.0 / self.keep), state


def batchnorm(ops, z, gamma, beta, mean, var, *, train: bool):
    """``(gamma * (z - m) / sqrt(v + eps) + beta, new_mean, new_var)`` per feature (last axis).

    Statistics are over every axis but the last: the batch for vectors, the
    batch and both image axes for feature maps (one statistic per channel).
    Training uses the batch's mean and (biased) variance and moves the running
    averages towards them; inference uses the running averages unchanged.
    """
    if train:
        axes = 0 if z.ndim == 2 else tuple(range(z.ndim - 1))
        m = ops.mean(z, axis=axes)
        centered = z - m
        v = ops.mean(centered * centered, axis=axes)
        new_mean = BN_MOMENTUM * mean + (1.0 - BN_MOMENTUM) * m
        new_var = BN_MOMENTUM * var + (1.0 - BN_MOMENTUM) * v
        return gamma * centered / ops.sqrt(v + BN_EPS) + beta, new_mean, new_var
    return gamma * (z - mean) / ops.sqrt(var + BN_EPS) + beta, mean, var


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation per feature (after a dense layer) or per channel (after a convolution).

    Running averages move with momentum 0.9; eps is 1e-5.
    """

    prefix: ClassVar[str] = "bn"
    param_names: ClassVar[tuple[str, ...]] = ("gamma", "beta")
    state_names: ClassVar[tuple[str, ...]] = ("mean", "var")

    def init(self, rng, in_shape, dtype="float32"):
        width = in_shape[-1]
        params = {"gamma": np.ones(width, dtype=dtype), "beta": np.zeros(width, dtype=dtype)}
        return params, {"mean": np.zeros(width, dtype=dtype), "var": np.ones(width, dtype=dtype)}, tuple(in_shape)

    def apply(self, ops, params, state, x, *, train, key=None):
        y, mean, var = batchnorm(ops, x, params["gamma"], params["beta"], state["mean"], state["var"], train=train)
        return y, {"mean": mean, "var": var}


@dataclass(frozen=True)
class Activation(Layer):
    """An element-wise nonlinearity: relu, tanh or sigmoid."""

    name: str
    prefix: ClassVar[str] = "act"

    def __post_init__(self):
        require(self.name in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", self.name)

    def describe(self):
        return self.name

    def apply(self, ops, params, state, x, *, train, key=None):
        if self.name == "relu":
            return ops.relu(x), state
        if self.name == "tanh":
            return ops.tanh(x), state
        return ops.sigmoid(x), state


LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool, Flatten,
                                             Dropout, BatchNorm, Activation)}


def layer_from_dict(d: dict) -> Layer:
    """The layer a :meth:`Layer.to_dict` dictionary describes."""
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ConfigError(f"`layer type` must be one of {tuple(LAYER_TYPES)}. Received: layer type={kind!r}")
    try:
        return LAYER_TYPES[kind](**d)
    except TypeError as e:
        raise ConfigError(f"layer {kind}: {e}") from None
