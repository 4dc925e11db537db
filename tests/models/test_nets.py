"""The notebook's nets (hidden-layer bug fixed), the CNN, and their config round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from onnxedge.models.nets import CNN, BinclassNN, MulticlassNN, NetConfig, build_net
from onnxedge.runtime.errors import CheckpointError


def test_multiclass_net_returns_one_logit_per_class() -> None:
    net = MulticlassNN(input_size=28 * 28, hidden_size=5, num_classes=3)
    assert net(torch.randn(4, 28 * 28)).shape == (4, 3)


def test_binary_net_returns_one_logit() -> None:
    net = BinclassNN(input_size=28 * 28, hidden_size=5)
    assert net(torch.randn(4, 28 * 28)).shape == (4, 1)


@pytest.mark.parametrize("make", [lambda: MulticlassNN(8, 5, 3), lambda: BinclassNN(8, 5)])
def test_hidden_layer_changes_the_output(make) -> None:
    # The notebook fed x to linear2 and skipped the hidden layer; ours must depend on it.
    torch.manual_seed(0)
    net = make()
    x = torch.randn(16, 8)
    before = net(x).detach().clone()
    with torch.no_grad():
        net.hidden[0].weight.mul_(-2.0).add_(0.5)
    after = net(x).detach()
    assert not torch.allclose(before, after)


def test_forward_is_linear_relu_linear() -> None:
    torch.manual_seed(0)
    net = MulticlassNN(6, (7, 5), 4)
    x = torch.randn(3, 6)
    h = torch.relu(net.hidden[0](x))
    h = torch.relu(net.hidden[1](h))
    torch.testing.assert_close(net(x), net.output(h), rtol=0, atol=0)


def test_config_round_trip_rebuilds_the_same_architecture() -> None:
    config = NetConfig("multiclass", 64, (32, 16), 10)
    net = build_net(config)
    again = NetConfig.from_dict(config.to_dict())
    assert again == config
    shapes = {k: tuple(v.shape) for k, v in build_net(again).state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert set(shapes) == {
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
        "output.weight",
        "output.bias",
    }


def test_nets_are_importable_from_the_package() -> None:
    import onnxedge.models as models

    assert (models.CNN, models.MulticlassNN, models.BinclassNN) == (CNN, MulticlassNN, BinclassNN)
    assert models.build_net is build_net and models.NetConfig is NetConfig
    with pytest.raises(AttributeError, match="has no attribute 'MLPX'"):
        models.MLPX  # noqa: B018


def test_config_without_arch_is_an_mlp() -> None:
    data = {"task": "binary", "input_size": 30, "hidden_sizes": [8], "num_classes": 2}
    config = NetConfig.from_dict(data)
    assert (config.arch, config.input_shape, config.channels) == ("mlp", (30,), ())
    assert isinstance(build_net(config), BinclassNN)


@pytest.mark.parametrize(
    ("input_shape", "channels", "hidden", "flat"),
    [
        ((1, 8, 8), (16, 32), (128,), 32 * 2 * 2),
        ((1, 28, 28), (16, 32), (), 32 * 7 * 7),
        ((3, 9, 7), (5,), (4, 3), 5 * 4 * 3),
    ],
)
def test_cnn_is_conv_relu_pool_blocks_then_dense_layers(
    input_shape: tuple[int, ...], channels: tuple[int, ...], hidden: tuple[int, ...], flat: int
) -> None:
    torch.manual_seed(0)
    config = NetConfig(
        "multiclass", math.prod(input_shape), hidden, 10, "cnn", input_shape, channels
    )
    net = build_net(config)
    assert isinstance(net, CNN) and config.flat_size == flat
    x = torch.randn(3, *input_shape)
    h = x
    for conv in net.conv:
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        h = F.max_pool2d(torch.relu(conv(h)), 2)
    h = h.flatten(1)
    assert h.shape == (3, flat)
    for layer in net.hidden:
        h = torch.relu(layer(h))
    torch.testing.assert_close(net(x), net.output(h), rtol=0, atol=0)
    assert NetConfig.from_dict(config.to_dict()) == config
    names = {f"conv.{i}.{p}" for i in range(len(channels)) for p in ("weight", "bias")}
    names |= {f"hidden.{i}.{p}" for i in range(len(hidden)) for p in ("weight", "bias")}
    assert set(net.state_dict()) == names | {"output.weight", "output.bias"}


def test_binary_cnn_returns_one_logit() -> None:
    net = build_net(NetConfig("binary", 64, (), 2, "cnn", (1, 8, 8), (4,)))
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "rnn"}, "unknown arch 'rnn'; expected one of ('mlp', 'cnn')"),
        ({"input_shape": (1, 2, 2)}, "input_shape (1, 2, 2) does not hold input_size 64 values"),
        (
            {"arch": "mlp", "hidden_sizes": (3,), "channels": ()},
            "an mlp reads flat rows, got input_shape (1, 8, 8)",
        ),
        ({"input_shape": (64,)}, "a cnn reads images (C, H, W), got input_shape (64,)"),
        ({"channels": ()}, "a cnn needs one or more positive conv widths, got ()"),
        (
            {"channels": (4, 4, 4, 4)},
            "input_shape (1, 8, 8) is smaller than the 16x16 that 4 pooling blocks need",
        ),
    ],
)
def test_bad_cnn_config_is_refused(kwargs, message) -> None:
    base = {
        "task": "multiclass",
        "input_size": 64,
        "hidden_sizes": (),
        "num_classes": 10,
        "arch": "cnn",
        "input_shape": (1, 8, 8),
        "channels": (4,),
    }
    with pytest.raises(CheckpointError) as excinfo:
        NetConfig(**{**base, **kwargs})
    assert str(excinfo.value) == message


def test_mlp_has_no_channels() -> None:
    with pytest.raises(CheckpointError, match=r"an mlp has no conv channels, got \(4,\)"):
        NetConfig("multiclass", 4, (3,), 3, channels=(4,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "regression"}, "unknown task 'regression'"),
        ({"hidden_sizes": ()}, "hidden_sizes must be one or more positive widths"),
        ({"task": "binary", "num_classes": 3}, "a binary net has 2 classes, got 3"),
        ({"num_classes": 1}, "a multiclass net needs >= 2 classes, got 1"),
        ({"input_size": 0}, "input_size must be >= 1, got 0"),
    ],
)
def test_bad_config_is_refused(kwargs, message) -> None:
    base = {"task": "multiclass", "input_size": 4, "hidden_sizes": (3,), "num_classes": 3}
    with pytest.raises(CheckpointError, match=message):
        NetConfig(**{**base, **kwargs})
