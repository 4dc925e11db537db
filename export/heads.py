"""The head, one declared option validated here alone (torch-free): ``softmax`` (multiclass:
``probabilities`` ``(batch, classes)``, ``label`` the argmax, ties to the lowest index),
``sigmoid`` (binary: ``probabilities`` ``(batch, 1)`` of the positive class, ``label =
probabilities >= threshold``) or ``auto`` (one logit: sigmoid, else softmax); ``label`` is int64
``(batch,)``. Built by :class:`~onnxedge.export.onnx_export.ClassifierWithHead` and ``wrap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnxedge.runtime.errors import ExportError

if TYPE_CHECKING:
    from onnxedge.export.onnx_export import ClassifierWithHead
    from onnxedge.models.checkpoint import TrainedRun
    from onnxedge.models.nets import NetConfig

HEAD_AUTO = "auto"
HEAD_CHOICES: tuple[str, ...] = (HEAD_AUTO, "softmax", "sigmoid")
DEFAULT_THRESHOLD = 0.5
#: max over inputs of ||d probabilities / d logits||, infinity norm: softmax's Jacobian
#: diag(p) - p p^T moves p_i by at most 2 p_i (1 - p_i) max|dz| <= max|dz| / 2; sigmoid's
#: derivative p (1 - p) is at most 1/4.
HEAD_LIPSCHITZ: dict[str, float] = {"softmax": 0.5, "sigmoid": 0.25}


@dataclass(frozen=True)
class HeadSpec:
    """A validated head (``softmax`` / ``sigmoid``) and the sigmoid head's threshold."""

    head: str
    threshold: float

    @property
    def task(self) -> str:
        """``multiclass`` (softmax) or ``binary`` (sigmoid)."""
        return "multiclass" if self.head == "softmax" else "binary"


def resolve_head(
    logits: int | NetConfig, head: str = HEAD_AUTO, threshold: float | None = None
) -> HeadSpec:
    """The head ``head`` (``auto``, ``softmax``, ``sigmoid``) and ``threshold`` (sigmoid
    only, in ``(0, 1)``; None: ``DEFAULT_THRESHOLD``) checked against ``logits``, the logits
    per row (1: binary) or a net config.

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


def class_names_for(logits: int, names: Sequence[object] | None) -> list[str]:
    """The class names for ``logits`` logits (1 logit: 2 classes); default ``"0"``, ``"1"``, ...

    Raises:
        ExportError: not one distinct name per class.
    """
    classes = max(logits, 2)
    found = [str(c) for c in names] if names is not None else [str(i) for i in range(classes)]
    if len(found) != classes:
        raise ExportError(
            f"class_names has {len(found)} names; {logits} logit{'s' if logits != 1 else ''} "
            f"make{'' if logits != 1 else 's'} {classes} classes"
        )
    if len(set(found)) != len(found):
        raise ExportError(f"class names must be distinct: {found}")
    return found


def build_head_module(
    run: TrainedRun, head: str = HEAD_AUTO, threshold: float | None = None
) -> ClassifierWithHead:
    """Wrap a loaded run's net in its preprocessing and head, in eval mode (imports torch).

    Raises:
        ExportError: the head or threshold does not fit the run's net.
    """
    from onnxedge.export.onnx_export import ClassifierWithHead

    spec = resolve_head(run.config.output_size, head, threshold)
    return ClassifierWithHead(run.net, run.preprocess, spec).eval()
