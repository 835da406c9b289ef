"""Layers as data and the network that loops over them; the MLP shorthand keeps the perceptron's names."""

import json
import math

import numpy as np
import pytest

from descend.backend import numpy_ops
from descend.errors import ConfigError
from descend.model import (
    MLP,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool2D,
    Network,
    init_params,
    init_state,
    predict_logits,
    weight_names,
)
from descend.model.layers import layer_from_dict

SMALL_CNN = Network((8, 8, 2), (Conv2D(4, 3), BatchNorm(), Activation("relu"), MaxPool2D(2), Dropout(0.8),
                                 Conv2D(3, 3, stride=2, padding="valid"), AvgPool2D(1), Flatten(), Dense(None)))


def test_mlp_builds_the_perceptron_parameter_names_and_draws():
    spec = MLP(hidden=(6, 4), batchnorm=True, dropout_keep=(0.9, 0.8, 0.7))
    params = init_params(spec, 5, 3, key=1, dtype="float64")
    assert list(params) == ["dense0.W", "bn0.gamma", "bn0.beta", "dense1.W", "bn1.gamma", "bn1.beta",
                            "dense2.W", "dense2.b"]
    assert sorted(init_state(spec, 5, 3)) == ["bn0.mean", "bn0.var", "bn1.mean", "bn1.var"]
    # He-normal draws of the perceptron: one standard normal matrix per dense layer, in order.
    rng = np.random.default_rng(1)
    for name, (fan_in, fan_out) in zip(["dense0.W", "dense1.W", "dense2.W"], [(5, 6), (6, 4), (4, 3)]):
        expected = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        assert np.array_equal(params[name], expected)
    assert weight_names(spec) == ("dense0.W", "dense1.W", "dense2.W")
    assert spec.hidden == (6, 4) and spec.batchnorm and spec.uses_dropout and spec.dropout_keep == (0.9, 0.8, 0.7)


def test_glorot_for_tanh_including_the_output_layer():
    params = init_params(MLP(hidden=(4,), activation="tanh"), 3, 2, key=0, dtype="float64")
    rng = np.random.default_rng(0)
    for name, (fan_in, fan_out) in zip(["dense0.W", "dense1.W"], [(3, 4), (4, 2)]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert np.array_equal(params[name], rng.uniform(-limit, limit, size=(fan_in, fan_out)))


@pytest.mark.parametrize("spec", [MLP(hidden=(5,)), MLP(hidden=(), activation="tanh"),
                                  MLP(hidden=(4, 3), activation="sigmoid", dropout_keep=(1.0, 0.5, 0.5),
                                      batchnorm=True)])
def test_mlp_is_written_as_the_shorthand_and_read_back(spec):
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["type"] == "MLP" and d["hidden"] == list(spec.hidden)
    assert set(d) == {"type", "hidden", "activation", "dropout_keep", "batchnorm"}
    again = MLP.from_dict(d)
    assert again == spec and hash(again) == hash(spec)


def test_network_round_trips_through_json_and_is_hashable():
    d = json.loads(json.dumps(SMALL_CNN.to_dict()))
    assert d["type"] == "Network" and d["input_shape"] == [8, 8, 2]
    again = Network.from_dict(d)
    assert again == SMALL_CNN and hash(again) == hash(SMALL_CNN)
    assert {again: 1}[SMALL_CNN] == 1
    assert layer_from_dict(Conv2D(3, 5, 2, "valid").to_dict()) == Conv2D(3, 5, 2, "valid")


def test_names_shapes_params_and_multiply_adds():
    net = SMALL_CNN.resolve(128, 5)
    assert net.names == ("conv0", "bn0", "act0", "maxpool0", "drop0", "conv1", "avgpool0", "flatten0", "dense0")
    shapes = net.shapes()
    assert shapes[1] == (8, 8, 4) and shapes[4] == (4, 4, 4) and shapes[6] == (1, 1, 3) and shapes[-1] == (5,)
    params, state = net.init(0)
    assert params["conv0.W"].shape == (3, 3, 2, 4) and params["conv1.W"].shape == (3, 3, 4, 3)
    assert params["dense0.W"].shape == (3, 5) and set(state) == {"bn0.mean", "bn0.var"}
    assert net.weight_names == ("conv0.W", "conv1.W", "dense0.W")
    rows = net.summary()
    assert [r["params"] for r in rows] == [3 * 3 * 2 * 4 + 4, 8, 0, 0, 0, 3 * 3 * 4 * 3 + 3, 0, 0, 3 * 5 + 5]
    assert rows[0]["macs"] == 8 * 8 * 4 * 9 * 2 and rows[5]["macs"] == 1 * 1 * 3 * 9 * 4
    assert net.macs() == sum(r["macs"] for r in rows)


def test_conv_output_sizes_follow_same_and_valid_rules():
    assert Conv2D(1, 4, stride=1).out_shape((7, 7, 1)) == (7, 7, 1)
    assert Conv2D(1, 4, stride=2).out_shape((7, 7, 1)) == (4, 4, 1)
    assert Conv2D(1, 3, stride=2, padding="valid").out_shape((7, 6, 1)) == (3, 2, 1)
    assert MaxPool2D(3, 2).out_shape((7, 7, 1)) == (3, 3, 1)
    assert GlobalAvgPool().out_shape((5, 5, 6)) == (6,)


@pytest.mark.parametrize("layers, message", [
    ((Conv2D(2, 9),), "Conv2D(2, 9x9, same): kernel 9x9 is larger than its 8x8 input map"),
    ((MaxPool2D(2), MaxPool2D(2), MaxPool2D(2), MaxPool2D(2)), "MaxPool2D(2x2): pool 2x2 is larger than its 1x1"),
    ((Dense(4),), "needs vector input; it receives shape 8x8x2 (flatten it first)"),
    ((Dense(None), Dense(3)), "only the last layer may take the number of outputs"),
])
def test_impossible_networks_name_the_layer(layers, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Network((8, 8, 2), layers)


def test_conv_on_vector_input_is_an_error():
    with pytest.raises(ConfigError, match="needs an image input"):
        Network((64,), (Conv2D(2, 3), Flatten(), Dense(None)))


def test_resolve_checks_the_data_width():
    with pytest.raises(ConfigError, match="expects rows of 128 features"):
        SMALL_CNN.resolve(100, 3)


def test_mlp_forward_runs_the_perceptron_math():
    spec = MLP(hidden=(4,), batchnorm=True)
    params = init_params(spec, 3, 2, key=0, dtype="float64")
    state = init_state(spec, 3, 2, dtype="float64")
    x = np.random.default_rng(1).standard_normal((5, 3))
    z = x @ params["dense0.W"]
    h = np.maximum(params["bn0.gamma"] * (z - state["bn0.mean"]) / np.sqrt(state["bn0.var"] + 1e-5)
                   + params["bn0.beta"], 0)
    expected = h @ params["dense1.W"] + params["dense1.b"]
    assert np.allclose(predict_logits(numpy_ops, spec, params, state, x), expected, rtol=1e-12, atol=0)


def test_bad_layer_arguments_are_one_line_errors():
    with pytest.raises(ConfigError, match="`kernel` must be a positive integer. Received: kernel=0"):
        Conv2D(3, 0)
    with pytest.raises(ConfigError, match="`padding` must be one of"):
        Conv2D(3, 3, padding="full")
    with pytest.raises(ConfigError, match=r"`keep` must be a probability in \(0, 1\]"):
        Dropout(1.5)
    with pytest.raises(ConfigError, match="`activation` must be one of"):
        Activation("gelu")


def test_regression_mlp_round_trips_and_classification_files_are_unchanged():
    from descend.model import MLP, Network

    reg = MLP(hidden=(30, 100), activation="sigmoid", batchnorm=True, init="normal", task="regression")
    d = reg.to_dict()
    assert d["task"] == "regression" and d["init"] == "normal"
    assert Network.from_dict(d) == reg
    assert "task" not in MLP(hidden=(5,)).to_dict() and "init" not in MLP(hidden=(5,)).to_dict()
    resolved = reg.resolve(1, 1)
    params = resolved.init_params(0, "float64")
    assert resolved.layers[-1].units == 1
    # N(0, 0.1^2) for weights and biases alike (batch norm replaces the hidden biases)
    assert 0.08 < params["dense1.W"].std() < 0.12 and params["dense2.b"].shape == (1,)
    assert params["dense2.b"][0] != 0.0
