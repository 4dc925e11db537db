"""The module that is exported: preprocess -> net -> logits -> probabilities -> label.

A device feeds raw rows; the preprocessing (:class:`~onnxedge.models.preprocess.Standardize`
or :class:`~onnxedge.models.preprocess.Rescale`) is constants in the graph, so nothing
outside the ``.onnx`` file has to know it. The net is any module that maps
``(batch, *input_shape)`` to logits ``(batch, classes)`` or ``(batch, 1)``: the seam.
The head is one declared option, validated here and nowhere else:

- ``softmax`` (multiclass): ``probabilities = softmax(logits, dim=1)``, ``(batch, classes)``;
  ``label = argmax(probabilities, dim=1)``, ties to the lowest index.
- ``sigmoid`` (binary): ``probabilities = sigmoid(logits)``, ``(batch, 1)``, the
  positive class's probability; ``label = probabilities.squeeze(1) >= threshold``.
- ``auto``: one logit -> sigmoid, more -> softmax.

``label`` is int64 ``(batch,)`` in both cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from onnxedge.models.preprocess import Preprocess, Rescale
from onnxedge.runtime.errors import ExportError
from torch import nn

if TYPE_CHECKING:
    from onnxedge.models.checkpoint import TrainedRun
    from onnxedge.models.nets import NetConfig

HEAD_AUTO = "auto"
#: The heads export offers (the contract's ``none`` has no probabilities output).
EXPORT_HEADS: tuple[str, ...] = ("softmax", "sigmoid")
HEAD_CHOICES: tuple[str, ...] = (HEAD_AUTO, *EXPORT_HEADS)
DEFAULT_THRESHOLD = 0.5
#: max over inputs of ||d probabilities / d logits||, infinity norm: softmax's Jacobian
#: diag(p) - p p^T moves p_i by at most 2 p_i (1 - p_i) max|dz| <= max|dz| / 2; sigmoid's
#: derivative p (1 - p) is at most 1/4.
HEAD_LIPSCHITZ: dict[str, float] = {"softmax": 0.5, "sigmoid": 0.25}


@dataclass(frozen=True)
class HeadSpec:
    """A validated head choice.

    Attributes:
        head: ``softmax`` or ``sigmoid``.
        threshold: decision threshold on the positive-class probability; used by the
            sigmoid head, recorded as ``DEFAULT_THRESHOLD`` for softmax.
    """

    head: str
    threshold: float

    @property
    def task(self) -> str:
        """``multiclass`` (softmax) or ``binary`` (sigmoid)."""
        return "multiclass" if self.head == "softmax" else "binary"


def resolve_head(
    logits: int | NetConfig, head: str = HEAD_AUTO, threshold: float | None = None
) -> HeadSpec:
    """Check a head (and threshold) against the number of logits and return the head.

    Args:
        logits: logits per row the net puts out (1: binary), or a net config.
        head: ``auto`` (1 logit -> sigmoid, else softmax), ``softmax`` or ``sigmoid``.
        threshold: the sigmoid head's decision threshold in ``(0, 1)``; None means
            ``DEFAULT_THRESHOLD``. Passing one with a softmax head is an error.

    Raises:
        ExportError: unknown head, a head that does not fit the output width, or a
            threshold outside ``(0, 1)`` or given to a softmax head.
    """
    if head not in HEAD_CHOICES:
        raise ExportError(f"unknown head {head!r}; expected one of {', '.join(HEAD_CHOICES)}")
    logits = logits if isinstance(logits, int) else logits.output_size
    implied = "sigmoid" if logits == 1 else "softmax"
    chosen = implied if head == HEAD_AUTO else head
    if chosen != implied:
        task = "binary" if logits == 1 else "multiclass"
        raise ExportError(
            f"head {chosen} does not fit this {task} net ({logits} logit"
            f"{'s' if logits != 1 else ''}, {max(logits, 2)} classes); "
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


class PreprocessModule(nn.Module):
    """A :data:`~onnxedge.models.preprocess.Preprocess` step as graph arithmetic.

    The constants are buffers, so the graph's initializers are named ``preprocess.mean``
    / ``preprocess.std`` (standardize) or ``preprocess.factor`` (rescale), and verify
    can read them back.
    """

    def __init__(self, step: Preprocess) -> None:
        super().__init__()
        self.kind = "rescale" if isinstance(step, Rescale) else "standardize"
        if isinstance(step, Rescale):
            self.register_buffer("factor", torch.tensor(step.factor, dtype=torch.float32))
        else:
            self.register_buffer("mean", torch.from_numpy(np.array(step.mean, np.float32)))
            self.register_buffer("std", torch.from_numpy(np.array(step.std, np.float32)))

    factor: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rescale":
            return x * self.factor
        return (x - self.mean) / self.std


class ClassifierWithHead(nn.Module):
    """Raw rows in; ``(logits, probabilities, label)`` out.

    Initializer names in the exported graph follow the attribute paths: ``preprocess.*``
    and ``net.<the net's own parameter names>``.

    Args:
        net: maps ``(batch, *input_shape)`` float32 to logits.
        preprocess: the step in front of the net, or None.
        spec: the head, from :func:`resolve_head`.
    """

    def __init__(self, net: nn.Module, preprocess: Preprocess | None, spec: HeadSpec) -> None:
        super().__init__()
        self.preprocess = PreprocessModule(preprocess) if preprocess is not None else None
        self.net = net
        self.head = spec.head
        self.threshold = float(spec.threshold)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.preprocess is not None:
            x = self.preprocess(x)
        logits = self.net(x)  # (batch, classes) or (batch, 1)
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
    """Wrap a loaded run's net in its preprocessing and head, in eval mode.

    Raises:
        ExportError: the head or threshold does not fit the run's net.
    """
    spec = resolve_head(run.config.output_size, head, threshold)
    return ClassifierWithHead(run.net, run.preprocess, spec).eval()
