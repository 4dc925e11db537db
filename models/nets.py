"""The notebook's two classifiers, fixed and made configurable.

The original notebook's ``forward`` fed the *input* ``x`` to ``linear2``, skipping
the hidden layer entirely; here every hidden layer feeds the next, and the output
layer reads the last hidden activation. Both nets return logits; the softmax /
sigmoid head is added at export (``onnxedge.export.heads``).

Parameter names are part of the checkpoint format and of the numpy reference
(``onnxedge.models.reference.forward``): ``hidden.{i}.weight``, ``hidden.{i}.bias``
for each hidden layer, then ``output.weight`` and ``output.bias``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from onnxedge.runtime.contract import TASKS
from onnxedge.runtime.errors import CheckpointError
from torch import nn

#: Default hidden widths: the notebook's hidden_size=5 is a toy; one layer of 128 learns
#: digits and breast-cancer to >= 0.95 validation accuracy.
DEFAULT_HIDDEN: tuple[int, ...] = (128,)


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a net; saved with its weights.

    Attributes:
        task: ``multiclass`` (``num_classes`` logits) or ``binary`` (one logit).
        input_size: features per row.
        hidden_sizes: width of each hidden layer (ReLU after each); at least one.
        num_classes: number of classes (2 for binary).
    """

    task: str
    input_size: int
    hidden_sizes: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CheckpointError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.input_size < 1:
            raise CheckpointError(f"input_size must be >= 1, got {self.input_size}")
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise CheckpointError(
                f"hidden_sizes must be one or more positive widths, got {self.hidden_sizes}"
            )
        if self.task == "binary" and self.num_classes != 2:
            raise CheckpointError(f"a binary net has 2 classes, got {self.num_classes}")
        if self.task == "multiclass" and self.num_classes < 2:
            raise CheckpointError(f"a multiclass net needs >= 2 classes, got {self.num_classes}")

    @property
    def output_size(self) -> int:
        """Logits per row: one for binary, ``num_classes`` for multiclass."""
        return 1 if self.task == "binary" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_dict`` reverses it)."""
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Rebuild a config from ``to_dict`` output.

        Raises:
            CheckpointError: a key is missing or has the wrong type.
        """
        try:
            return cls(
                task=str(data["task"]),
                input_size=int(data["input_size"]),
                hidden_sizes=tuple(int(h) for h in data["hidden_sizes"]),
                num_classes=int(data["num_classes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid net config {data!r}: {exc}") from None


class MLP(nn.Module):
    """Linear -> ReLU (per hidden layer) -> Linear; returns logits ``(batch, output_size)``."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        widths = (config.input_size, *config.hidden_sizes)
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


def build_net(config: NetConfig) -> MLP:
    """Build the net a config describes (``MulticlassNN`` or ``BinclassNN``)."""
    if config.task == "binary":
        return BinclassNN(config.input_size, config.hidden_sizes)
    return MulticlassNN(config.input_size, config.hidden_sizes, config.num_classes)


def _widths(hidden_size: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden_size, int):
        return (hidden_size,)
    return tuple(int(h) for h in hidden_size)
