"""The ``--layers`` text: a comma-separated list of tokens that builds a :class:`Network`.

Tokens::

    conv:F:K[:S][:valid]   F filters of K x K, stride S (default 1), "same" padding unless "valid"
    pool:K[:S]             max pooling over K x K windows every S pixels (default K)
    avgpool:K[:S]          average pooling, the same windows
    gap                    global average pooling (one value per channel)
    bn                     batch normalisation
    drop:KEEP              dropout keeping units with probability KEEP
    dense:N                a dense layer of N units (images are flattened before it)
    relu | tanh | sigmoid  an activation

Every conv and dense layer is followed by an activation: the default one,
or the activation token that follows it (after its ``bn``, if it has one).
A ``bn`` right after a conv or dense layer sits between it and its
activation and replaces its bias.  The output layer (as many units as the
data has classes) is added at the end.  Initialisation follows each layer's
activation: He for ReLU, Glorot for tanh and sigmoid.
"""

from __future__ import annotations

from descend.errors import ConfigError
from descend.model.layers import (
    ACTIVATIONS,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxPool2D,
    init_for,
)
from descend.model.network import Network

GRAMMAR = ("conv:F:K[:S][:valid], pool:K[:S], avgpool:K[:S], gap, bn, drop:KEEP, dense:N, "
           + " | ".join(ACTIVATIONS))
_FORMS = {"conv": "conv:F:K[:S][:valid]", "pool": "pool:K[:S]", "avgpool": "avgpool:K[:S]", "gap": "gap",
          "bn": "bn", "drop": "drop:KEEP", "dense": "dense:N"}


SPATIAL = (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool)  # the layers that need an image


class _BadToken(ValueError):
    pass


def _int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise _BadToken
    return value


def _token_layer(kind: str, args: list[str]) -> Layer:
    """The layer one token names (activation and init are settled afterwards)."""
    if kind == "conv" and 2 <= len(args) <= 4:
        padding = "same"
        if args[-1] == "valid":
            padding, args = "valid", args[:-1]
        if len(args) in (2, 3):
            return Conv2D(_int(args[0]), _int(args[1]), _int(args[2]) if len(args) == 3 else 1, padding)
    if kind in ("pool", "avgpool") and len(args) in (1, 2):
        size = _int(args[0])
        stride = _int(args[1]) if len(args) == 2 else size
        return (MaxPool2D if kind == "pool" else AvgPool2D)(size, stride)
    if kind == "gap" and not args:
        return GlobalAvgPool()
    if kind == "bn" and not args:
        return BatchNorm()
    if kind == "drop" and len(args) == 1:
        keep = float(args[0])
        if not 0.0 < keep <= 1.0:
            raise _BadToken
        return Dropout(keep)
    if kind == "dense" and len(args) == 1:
        return Dense(_int(args[0]))
    if kind in ACTIVATIONS and not args:
        return Activation(kind)
    raise _BadToken


def _tokens(text: str) -> list[tuple[str, Layer]]:
    out = []
    for i, token in enumerate(str(text).split(",")):
        token = token.strip()
        kind, *args = token.lower().split(":")
        try:
            out.append((token, _token_layer(kind, args)))
        except (_BadToken, ValueError):
            form = _FORMS.get(kind)
            hint = f"expected {form}" if form else f"tokens are {GRAMMAR}"
            raise ConfigError(f"`layers` token {i + 1} {token!r} is malformed ({hint}). Received: layers={text!r}") \
                from None
    if not out:
        raise ConfigError(f"`layers` must name at least one layer ({GRAMMAR}). Received: layers={text!r}")
    return out


def _settle(tokens: list[tuple[str, Layer]], activation: str) -> list[tuple[str, Layer]]:
    """Give every conv and dense layer its batch norm, activation and init; returns (token, layer) pairs."""
    out: list[tuple[str, Layer]] = []
    i = 0
    while i < len(tokens):
        token, layer = tokens[i]
        i += 1
        if not isinstance(layer, (Conv2D, Dense)):
            out.append((token, layer))
            continue
        bn = i < len(tokens) and isinstance(tokens[i][1], BatchNorm)
        if bn:
            bn_token = tokens[i][0]
            i += 1
        act = activation
        if i < len(tokens) and isinstance(tokens[i][1], Activation):
            act = tokens[i][1].name
            i += 1
        if isinstance(layer, Conv2D):
            layer = Conv2D(layer.filters, layer.kernel, layer.stride, layer.padding, bias=not bn,
                           init_name=init_for(act))
        else:
            layer = Dense(layer.units, bias=not bn, init_name=init_for(act))
        out.append((token, layer))
        if bn:
            out.append((bn_token, BatchNorm()))
        out.append((act, Activation(act)))
    return out


def spatial_layers(text: str) -> bool:
    """Whether ``text`` has a layer that needs an image (convolution or pooling); a malformed token is a ConfigError."""
    return any(isinstance(layer, SPATIAL) for _, layer in _tokens(text))


def parse_layers(text: str, input_shape, *, activation: str = "relu") -> Network:
    """The network ``text`` describes for rows of ``input_shape`` ((d,) or (height, width, channels)).

    A malformed token, or a layer its input cannot take (a kernel or pool
    larger than its input map, a convolution on data without an image shape),
    is a ConfigError naming the token.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"`activation` must be one of {ACTIVATIONS}. Received: activation={activation!r}")
    shape = in_shape = tuple(int(s) for s in input_shape)
    layers: list[Layer] = []
    last_act = activation
    for token, layer in _settle(_tokens(text), activation):
        if isinstance(layer, Dense) and len(shape) != 1:
            layers.append(Flatten())
            shape = Flatten().out_shape(shape)
        try:
            shape = layer.out_shape(shape)
        except ConfigError as e:
            raise ConfigError(f"`layers` token {token!r}: {e}. Received: layers={text!r}") from None
        if isinstance(layer, Activation):
            last_act = layer.name
        layers.append(layer)
    if len(shape) != 1:
        layers.append(Flatten())
    layers.append(Dense(None, init_name=init_for(last_act)))
    return Network(in_shape, tuple(layers))
