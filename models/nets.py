"""The notebook's two classifiers (its ``forward`` skipped the hidden layer; here each
layer feeds the next) and a small CNN, all returning logits. Parameter names
(``conv.{i}``, ``hidden.{i}``, ``output``) are part of the checkpoint format."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from onnxedge.models.reference import POOL_SIZE
from onnxedge.runtime.contract import TASKS
from onnxedge.runtime.errors import CheckpointError
from torch import nn

#: The architectures onnxedge builds from a config.
ARCHS: tuple[str, ...] = ("mlp", "cnn")
#: One layer of 128 (the notebook's 5 is a toy) learns digits and breast-cancer to >= 0.95.
DEFAULT_HIDDEN: tuple[int, ...] = (128,)
#: Two conv blocks take 8x8 digits to 2x2 and 28x28 images to 7x7.
DEFAULT_CHANNELS: tuple[int, ...] = (16, 32)
KERNEL_SIZE = 3  # each conv block: conv(3x3, same padding) -> ReLU -> max-pool(POOL_SIZE)


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a net; saved with its weights.

    ``task`` ``multiclass`` gives ``num_classes`` logits, ``binary`` one; ``arch`` ``mlp``
    reads flat rows (at least one hidden width), ``cnn`` images ``(C, H, W)`` through one
    conv block per ``channels`` width; ``input_shape`` ``()`` means ``(input_size,)``.

    Raises:
        CheckpointError: any attribute out of range or inconsistent with the others.
    """

    task: str
    input_size: int
    hidden_sizes: tuple[int, ...]
    num_classes: int
    arch: str = "mlp"
    input_shape: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.input_shape) or (self.input_size,)
        object.__setattr__(self, "input_shape", shape)
        cnn, side = self.arch == "cnn", POOL_SIZE ** len(self.channels)
        problems = [
            (self.task not in TASKS, f"unknown task {self.task!r}; expected one of {TASKS}"),
            (self.arch not in ARCHS, f"unknown arch {self.arch!r}; expected one of {ARCHS}"),
            (self.input_size < 1, f"input_size must be >= 1, got {self.input_size}"),
            (
                math.prod(shape) != self.input_size or min(shape) < 1,
                f"input_shape {shape} does not hold input_size {self.input_size} values",
            ),
            (
                (not self.hidden_sizes and self.arch == "mlp")
                or any(h < 1 for h in self.hidden_sizes),
                f"hidden_sizes must be one or more positive widths, got {self.hidden_sizes}",
            ),
            (
                self.task == "binary" and self.num_classes != 2,
                f"a binary net has 2 classes, got {self.num_classes}",
            ),
            (
                self.task == "multiclass" and self.num_classes < 2,
                f"a multiclass net needs >= 2 classes, got {self.num_classes}",
            ),
            (not cnn and len(shape) != 1, f"an mlp reads flat rows, got input_shape {shape}"),
            (not cnn and bool(self.channels), f"an mlp has no conv channels, got {self.channels}"),
            (cnn and len(shape) != 3, f"a cnn reads images (C, H, W), got input_shape {shape}"),
            (
                cnn and (not self.channels or min(self.channels) < 1),
                f"a cnn needs one or more positive conv widths, got {self.channels}",
            ),
            (
                cnn and len(shape) == 3 and min(shape[1:]) < side,
                f"input_shape {shape} is smaller than the {side}x{side} that "
                f"{len(self.channels)} pooling blocks need",
            ),
        ]
        if failed := [message for bad, message in problems if bad]:
            raise CheckpointError(failed[0])

    @property
    def output_size(self) -> int:
        """Logits per row: one for binary, ``num_classes`` for multiclass."""
        return 1 if self.task == "binary" else self.num_classes

    @property
    def flat_size(self) -> int:
        """Values the first dense layer reads: the row (MLP), the last pooled map (CNN)."""
        if self.arch == "mlp":
            return self.input_size
        side = POOL_SIZE ** len(self.channels)
        return self.channels[-1] * math.prod(d // side for d in self.input_shape[1:])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_dict`` reverses it)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Rebuild a config from ``to_dict`` output (configs without ``arch`` are MLPs).

        Raises:
            CheckpointError: a key is missing or has the wrong type.
        """
        try:
            return cls(
                task=str(data["task"]),
                input_size=int(data["input_size"]),
                hidden_sizes=tuple(int(h) for h in data["hidden_sizes"]),
                num_classes=int(data["num_classes"]),
                arch=str(data.get("arch", "mlp")),
                input_shape=tuple(int(d) for d in data.get("input_shape", ())),
                channels=tuple(int(c) for c in data.get("channels", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid net config {data!r}: {exc}") from None


class MLP(nn.Module):
    """Linear -> ReLU (per hidden layer) -> Linear; returns logits ``(batch, output_size)``."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.flat_size, *config.hidden_sizes)
        self.hidden = nn.ModuleList(
            nn.Linear(w_in, w_out) for w_in, w_out in itertools.pairwise(widths)
        )
        self.output = nn.Linear(widths[-1], config.output_size)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.relu(layer(x))
        return self.output(x)


class MulticlassNN(MLP):
    """The notebook's multiclass net: ``num_classes`` logits out (softmax at export)."""

    def __init__(self, input_size: int, hidden_size: int | Sequence[int], num_classes: int) -> None:
        super().__init__(NetConfig("multiclass", input_size, _widths(hidden_size), num_classes))


class BinclassNN(MLP):
    """The notebook's binary net: one logit out (sigmoid at export)."""

    def __init__(self, input_size: int, hidden_size: int | Sequence[int]) -> None:
        super().__init__(NetConfig("binary", input_size, _widths(hidden_size), 2))


class CNN(MLP):
    """Conv blocks (``Conv2d(3x3, padding 1) -> ReLU -> MaxPool2d(2)``), then the MLP's
    dense layers on the flattened map; reads ``(batch, C, H, W)`` float32, logits out."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__(config)
        widths = (config.input_shape[0], *config.channels)
        self.conv = nn.ModuleList(
            nn.Conv2d(c_in, c_out, KERNEL_SIZE, padding=KERNEL_SIZE // 2)
            for c_in, c_out in itertools.pairwise(widths)
        )
        self.pool = nn.MaxPool2d(POOL_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.conv:
            x = self.pool(self.relu(conv(x)))
        return super().forward(torch.flatten(x, 1))  # (batch, C * H * W)


def build_net(config: NetConfig) -> MLP:
    """Build the net a config describes: ``CNN``, ``MulticlassNN`` or ``BinclassNN``."""
    if config.arch == "cnn":
        return CNN(config)
    if config.task == "binary":
        return BinclassNN(config.input_size, config.hidden_sizes)
    return MulticlassNN(config.input_size, config.hidden_sizes, config.num_classes)


def _widths(hidden_size: int | Sequence[int]) -> tuple[int, ...]:
    return (hidden_size,) if isinstance(hidden_size, int) else tuple(map(int, hidden_size))
