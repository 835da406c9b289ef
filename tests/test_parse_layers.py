"""The ``--layers`` grammar: tokens to a Network, and one-line errors naming the bad token."""

import pytest

from descend.errors import ConfigError
from descend.model import (
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
    parse_layers,
)

MNIST = (28, 28, 1)


def test_lenet_style_text():
    net = parse_layers("conv:32:5,pool:2,conv:64:5,pool:2,dense:512", MNIST)
    assert net == Network(MNIST, (Conv2D(32, 5), Activation("relu"), MaxPool2D(2), Conv2D(64, 5), Activation("relu"),
                                  MaxPool2D(2), Flatten(), Dense(512), Activation("relu"), Dense(None)))
    assert net.resolve(784, 10).shapes()[-1] == (10,)
    assert net.resolve(784, 10).shapes()[6] == (7, 7, 64)


def test_every_token():
    net = parse_layers("conv:8:3:2:valid,bn,tanh,avgpool:2:1,drop:0.75,conv:4:1,sigmoid,pool:2,gap,dense:16,bn,"
                       "dense:8", (16, 16, 3))
    assert net.layers == (
        Conv2D(8, 3, 2, "valid", bias=False, init_name="glorot"), BatchNorm(), Activation("tanh"), AvgPool2D(2, 1),
        Dropout(0.75), Conv2D(4, 1, init_name="glorot"), Activation("sigmoid"), MaxPool2D(2), GlobalAvgPool(),
        Dense(16, bias=False), BatchNorm(), Activation("relu"), Dense(8), Activation("relu"), Dense(None))
    assert net.resolve(768, 3).shapes()[1] == (7, 7, 8)


def test_output_init_follows_the_last_activation_and_the_default_activation_applies():
    net = parse_layers("dense:10", (5,), activation="tanh")
    assert net.layers == (Dense(10, init_name="glorot"), Activation("tanh"), Dense(None, init_name="glorot"))
    assert parse_layers("conv:2:3", (4, 4, 1)).layers[-2:] == (Flatten(), Dense(None))


def test_round_trip_through_the_model_file_description():
    net = parse_layers("conv:6:5,bn,pool:2,drop:0.5,dense:32", MNIST)
    assert Network.from_dict(net.to_dict()) == net


@pytest.mark.parametrize("text, bad", [
    ("conv:32", "token 1 'conv:32' is malformed (expected conv:F:K[:S][:valid])"),
    ("conv:32:5,pool:0", "token 2 'pool:0' is malformed (expected pool:K[:S])"),
    ("dense:512,drop:1.5", "token 2 'drop:1.5' is malformed (expected drop:KEEP)"),
    ("dense:12,softmax", "token 2 'softmax' is malformed (tokens are conv:F:K"),
    ("dense:x", "token 1 'dense:x' is malformed"),
    ("conv:8:3:same", "token 1 'conv:8:3:same' is malformed"),
    ("gap:2", "token 1 'gap:2' is malformed"),
    ("", "token 1 '' is malformed"),
])
def test_malformed_text_names_the_token(text, bad):
    with pytest.raises(ConfigError) as info:
        parse_layers(text, MNIST)
    message = str(info.value)
    assert bad in message and "\n" not in message and f"Received: layers={text!r}" in message


def test_kernel_or_pool_larger_than_its_map_names_the_layer():
    with pytest.raises(ConfigError, match=r"`layers` token 'conv:16:9': Conv2D\(16, 9x9, same\): kernel 9x9 is "
                                          r"larger than its 7x7 input map"):
        parse_layers("conv:8:5,pool:2,pool:2,conv:16:9", MNIST)
    with pytest.raises(ConfigError, match=r"token 'pool:4': MaxPool2D\(4x4\): pool 4x4 is larger than its 3x3"):
        parse_layers("conv:4:3:valid,pool:4", (5, 5, 1))


def test_conv_on_data_without_an_image_shape():
    with pytest.raises(ConfigError, match=r"token 'conv:8:3': Conv2D\(8, 3x3, same\): a convolution needs an image "
                                          r"input \(height, width, channels\); it receives shape 784"):
        parse_layers("conv:8:3,dense:10", (784,))


def test_unknown_default_activation():
    with pytest.raises(ConfigError, match="`activation` must be one of"):
        parse_layers("dense:4", (3,), activation="gelu")
