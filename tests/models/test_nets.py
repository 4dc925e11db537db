"""The notebook's nets, with the hidden-layer bug fixed, and their config round trip."""

from __future__ import annotations

import pytest
import torch
from onnxedge.models.nets import BinclassNN, MulticlassNN, NetConfig, build_net
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
