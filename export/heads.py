"""The module that is exported: standardize -> net -> logits -> probabilities -> label.

A device feeds raw features; the training split's mean and std are constants in the
graph, so nothing outside the ``.onnx`` file has to know them. The head is one declared
option, validated here and nowhere else:

- ``softmax`` (multiclass): ``probabilities = softmax(logits, dim=1)``, ``(batch, classes)``;
  ``label = argmax(probabilities, dim=1)``, ties to the lowest index.
- ``sigmoid`` (binary): ``probabilities = sigmoid(logits)``, ``(batch, 1)``, the
  positive class's probability; ``label = probabilities.squeeze(1) >= threshold``
  (exported as a Squeeze, cheaper than the Gather that ``[:, 0]`` becomes).
- ``auto`` picks the head the run's task implies.

``label`` is int64 ``(batch,)`` in both cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from onnxedge.models.checkpoint import Normalization, TrainedRun
from onnxedge.models.nets import MLP, NetConfig
from onnxedge.runtime.errors import ExportError
from torch import nn

HEAD_AUTO = "auto"
#: The heads export offers (the contract's ``none`` has no probabilities output).
EXPORT_HEADS: tuple[str, ...] = ("softmax", "sigmoid")
HEAD_CHOICES: tuple[str, ...] = (HEAD_AUTO, *EXPORT_HEADS)
#: The head each task implies.
TASK_HEADS: dict[str, str] = {"multiclass": "softmax", "binary": "sigmoid"}
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class HeadSpec:
    """A validated head choice for one net.

    Attributes:
        head: ``softmax`` or ``sigmoid``.
        threshold: decision threshold on the positive-class probability; used by the
            sigmoid head, recorded as ``DEFAULT_THRESHOLD`` for softmax.
    """

    head: str
    threshold: float


def resolve_head(
    config: NetConfig, head: str = HEAD_AUTO, threshold: float | None = None
) -> HeadSpec:
    """Check a head (and threshold) against a net and return the head to export.

    Args:
        config: the trained net's config (its task and number of logits).
        head: ``auto`` (the task's head), ``softmax`` or ``sigmoid``.
        threshold: the sigmoid head's decision threshold in ``(0, 1)``; None means
            ``DEFAULT_THRESHOLD``. Passing one with a softmax head is an error (argmax
            has no threshold).

    Raises:
        ExportError: unknown head, a head that does not fit the net (softmax over a
            binary net's single logit, sigmoid over a multiclass net's logits), or a
            threshold outside ``(0, 1)`` or given to a softmax head.
    """
    if head not in HEAD_CHOICES:
        raise ExportError(f"unknown head {head!r}; expected one of {', '.join(HEAD_CHOICES)}")
    implied = TASK_HEADS[config.task]
    chosen = implied if head == HEAD_AUTO else head
    if chosen != implied:
        logits = config.output_size
        raise ExportError(
            f"head {chosen} does not fit this {config.task} net ({logits} logit"
            f"{'s' if logits != 1 else ''}, {config.num_classes} classes); "
            f"use --head {implied} or --head auto"
        )
    if chosen == "softmax":
        if threshold is not None:
            raise ExportError(
                f"a threshold ({threshold}) applies to the sigmoid head only; the softmax "
                "head labels each row with its most probable class"
            )
        return HeadSpec(chosen, DEFAULT_THRESHOLD)
    value = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ExportError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return HeadSpec(chosen, value)


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training split's statistics as constant buffers.

    The same expression as :meth:`Normalization.apply`, so the graph computes what
    training fed the net.
    """

    mean: torch.Tensor  # (features,)
    std: torch.Tensor  # (features,)

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(normalization.mean, np.float32)))
        self.register_buffer("std", torch.from_numpy(np.asarray(normalization.std, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ClassifierWithHead(nn.Module):
    """Raw features in; ``(logits, probabilities, label)`` out.

    Initializer names in the exported graph follow the attribute paths:
    ``normalize.mean``, ``normalize.std``, ``net.hidden.{i}.weight`` / ``.bias``,
    ``net.output.weight`` / ``.bias``.

    Args:
        net: the trained net (logits out).
        normalization: the training split's per-feature mean and std.
        spec: the head, from :func:`resolve_head`.
    """

    def __init__(self, net: MLP, normalization: Normalization, spec: HeadSpec) -> None:
        super().__init__()
        self.normalize = Standardize(normalization)
        self.net = net
        self.head = spec.head
        self.threshold = float(spec.threshold)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.net(self.normalize(x))  # (batch, classes) or (batch, 1)
        if self.head == "softmax":
            probabilities = torch.softmax(logits, dim=1)
            label = torch.argmax(probabilities, dim=1)  # (batch,) int64
        else:
            probabilities = torch.sigmoid(logits)  # (batch, 1): P(positive class)
            label = (probabilities.squeeze(1) >= self.threshold).to(torch.int64)
        return logits, probabilities, label


def build_head_module(
    run: TrainedRun, head: str = HEAD_AUTO, threshold: float | None = None
) -> ClassifierWithHead:
    """Wrap a loaded run's net in its head, in eval mode.

    Args:
        run: a run folder loaded with :func:`onnxedge.models.checkpoint.load_run`.
        head: ``auto``, ``softmax`` or ``sigmoid`` (see :func:`resolve_head`).
        threshold: the sigmoid head's threshold (None: ``DEFAULT_THRESHOLD``).

    Raises:
        ExportError: the head or threshold does not fit the run's net.
    """
    spec = resolve_head(run.config, head, threshold)
    return ClassifierWithHead(run.net, run.normalization, spec).eval()
