"""The numpy reference: the nets' forward pass, heads and losses, written once, stably.

This module is the oracle that torch and onnxruntime are checked against, so it imports
numpy and nothing else of ours but the error types. Every function casts its inputs to
``dtype`` (float64 unless float32 is asked for) and computes in that dtype, in a form that
stays finite for any finite input, however large:

- softmax subtracts the row max before ``exp`` (the naive ``exp(x) / sum(exp(x))``
  overflows to ``inf / inf = nan`` once a float32 logit passes ~88.7);
- log-softmax is ``(x - max) - log(sum(exp(x - max)))`` (logsumexp), never ``log(softmax)``;
- sigmoid only ever calls ``exp(-|x|)``, which lies in ``(0, 1]``;
- binary cross-entropy from logits is ``max(x, 0) - x * y + log1p(exp(-|x|))``, with
  ``max(x, 0) - x * y`` evaluated as ``x * (1 - y)`` or ``-x * y`` so nothing cancels.

The losses follow torch's definitions (``nn.CrossEntropyLoss``, ``nn.BCELoss``,
``nn.BCEWithLogitsLoss``, no class weights, no ``ignore_index``), so "torch and the
reference agree" is a meaningful test. ``cross_entropy_from_probabilities`` is the
original notebook's ``-sum(y * log(p))``, made safe for ``p == 0``.

Options a programmer passes (``reduction``, ``head``, ``threshold``, ``dtype``, ``eps``)
raise ``ValueError`` when unknown; data a user supplies (arrays, weights, labels) raises
the typed errors of :mod:`onnxedge.runtime.errors`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, DTypeLike, NDArray
from onnxedge.runtime.errors import CheckpointError, DataError, InputShapeError

if TYPE_CHECKING:
    from onnxedge.models.nets import NetConfig

__all__ = [
    "BCE_LOG_CLAMP",
    "PROBABILITY_EPS",
    "PROBABILITY_HEADS",
    "REDUCTIONS",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "cross_entropy_from_probabilities",
    "forward",
    "forward_from_weights",
    "log_softmax",
    "predict_label",
    "predict_proba",
    "sigmoid",
    "softmax",
]

FloatArray = NDArray[np.floating[Any]]

#: Lower clip on probabilities before ``log`` in ``cross_entropy_from_probabilities``:
#: ``p == 0`` then costs ``-log(1e-15) ~= 34.5`` instead of ``inf`` / ``nan``. It is the
#: clip the notebook's numpy version used; 1e-15 is a normal number in float32 too.
PROBABILITY_EPS = 1e-15
#: ``nn.BCELoss`` clamps each log term to ``>= -100`` so that ``p`` in ``{0, 1}`` gives a
#: finite loss (at most 100 per element); the reference does the same to match it.
BCE_LOG_CLAMP = -100.0

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
#: The heads that turn logits into probabilities (``none`` in the model contract has none).
PROBABILITY_HEADS: tuple[str, ...] = ("softmax", "sigmoid")

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_HIDDEN_KEY = re.compile(r"hidden\.(\d+)\.(weight|bias)")
_CONV_KEY = re.compile(r"conv\.(\d+)\.(weight|bias)")
#: The CNN's max-pool window and stride (``onnxedge.models.nets.CNN`` reads it from here).
POOL_SIZE = 2


# --- activations and heads -----------------------------------------------------------


def softmax(x: ArrayLike, axis: int = -1, *, dtype: DTypeLike = np.float64) -> FloatArray:
    """Softmax along ``axis``, stable for any finite input.

    Args:
        x: logits of any shape with at least one dimension.
        axis: the class axis.
        dtype: float64 (default) or float32; the dtype of the computation and result.

    Returns:
        Probabilities of ``x``'s shape; each slice along ``axis`` sums to 1.

    Raises:
        InputShapeError: ``x`` is a scalar or has no elements along ``axis``.
    """
    z = _as_float(x, dtype)
    _check_class_axis(z, axis, "x")
    shifted = z - np.max(z, axis=axis, keepdims=True)  # <= 0, so exp lies in (0, 1]
    e = np.exp(shifted)
    return np.asarray(e / np.sum(e, axis=axis, keepdims=True))


def log_softmax(x: ArrayLike, axis: int = -1, *, dtype: DTypeLike = np.float64) -> FloatArray:
    """Log-softmax along ``axis`` in the logsumexp form (never ``log(softmax(x))``).

    Args:
        x: logits of any shape with at least one dimension.
        axis: the class axis.
        dtype: float64 (default) or float32.

    Returns:
        Log-probabilities of ``x``'s shape (all ``<= 0``, finite for finite ``x``).

    Raises:
        InputShapeError: ``x`` is a scalar or has no elements along ``axis``.
    """
    z = _as_float(x, dtype)
    _check_class_axis(z, axis, "x")
    shifted = z - np.max(z, axis=axis, keepdims=True)
    # the max term contributes exp(0) = 1, so the sum is in [1, classes]: log never sees 0
    return np.asarray(shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True)))


def sigmoid(x: ArrayLike, *, dtype: DTypeLike = np.float64) -> FloatArray:
    """Logistic sigmoid, elementwise, computed from ``exp(-|x|)`` so it never overflows.

    Args:
        x: logits of any shape.
        dtype: float64 (default) or float32.

    Returns:
        Probabilities in ``[0, 1]`` of ``x``'s shape.
    """
    z = _as_float(x, dtype)
    e = np.exp(-np.abs(z))  # in (0, 1]
    return np.asarray(np.where(z >= 0, 1 / (1 + e), e / (1 + e)))


def predict_proba(logits: ArrayLike, head: str, *, dtype: DTypeLike = np.float64) -> FloatArray:
    """Apply a model's output head to its logits.

    Args:
        logits: ``(batch, classes)`` for ``softmax``; ``(batch, 1)`` (any shape) for
            ``sigmoid``, which is elementwise.
        head: ``"softmax"`` (multiclass, over the last axis) or ``"sigmoid"`` (binary).
        dtype: float64 (default) or float32.

    Returns:
        Probabilities of the logits' shape.

    Raises:
        ValueError: ``head`` is not one of :data:`PROBABILITY_HEADS`.
        InputShapeError: softmax logits have no class axis or no classes.
    """
    if head == "softmax":
        return softmax(logits, axis=-1, dtype=dtype)
    if head == "sigmoid":
        return sigmoid(logits, dtype=dtype)
    raise ValueError(f"head must be one of {PROBABILITY_HEADS}, got {head!r}")


def predict_label(probabilities: ArrayLike, head: str, threshold: float = 0.5) -> NDArray[np.int64]:
    """Turn probabilities into class labels (int64), as the exported ``label`` output does.

    Args:
        probabilities: ``(batch, classes)`` for ``softmax``; ``(batch, 1)`` or ``(batch,)``
            positive-class probabilities for ``sigmoid``.
        head: ``"softmax"`` (argmax over the last axis; ties go to the lowest index, as in
            torch and onnxruntime) or ``"sigmoid"`` (1 where ``p >= threshold``, else 0).
        threshold: decision threshold in ``[0, 1]``; used by ``sigmoid`` only.

    Returns:
        ``(batch,)`` labels: the probabilities' shape without its class axis (softmax) or
        without a trailing axis of size 1 (sigmoid).

    Raises:
        ValueError: unknown ``head``, or ``threshold`` outside ``[0, 1]``.
        InputShapeError: softmax probabilities have no class axis or no classes.
    """
    p = np.asarray(probabilities)
    if head == "softmax":
        _check_class_axis(p, -1, "probabilities")
        return np.argmax(p, axis=-1).astype(np.int64)
    if head == "sigmoid":
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
        labels = (p >= threshold).astype(np.int64)
        if labels.ndim >= 2 and labels.shape[-1] == 1:
            labels = labels[..., 0]  # (batch, 1) -> (batch,)
        return labels
    raise ValueError(f"head must be one of {PROBABILITY_HEADS}, got {head!r}")


# --- losses --------------------------------------------------------------------------


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    reduction: str = "mean",
    *,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """Cross-entropy from logits, as ``torch.nn.CrossEntropyLoss`` computes it.

    ``loss_i = -sum_c target_ic * log_softmax(logits_i)_c``; with index targets that is
    ``-log_softmax(logits_i)[target_i]``.

    Args:
        logits: ``(batch, classes)``, or ``(classes,)`` for one sample.
        target: class indices, one per row (``(batch,)``, or a scalar for one sample;
            integers, or floats holding whole numbers), or one-hot / probability targets
            of the logits' shape.
        reduction: ``"mean"`` (over rows), ``"sum"`` or ``"none"`` (one loss per row).
        dtype: float64 (default) or float32.

    Returns:
        A 0-d array for ``mean`` / ``sum``; ``(batch,)`` (0-d for one sample) for ``none``.

    Raises:
        ValueError: unknown ``reduction``.
        InputShapeError: logits are not 1-D / 2-D, the target's shape matches neither
            form, or ``mean`` is asked of an empty batch.
        DataError: an index target is not a whole number or is outside ``0..classes-1``.
    """
    _check_reduction(reduction)
    z = _as_float(logits, dtype)
    _check_rank(z, "logits")
    _check_class_axis(z, -1, "logits")
    log_p = log_softmax(z, axis=-1, dtype=dtype)
    t = np.asarray(target)
    if t.ndim == z.ndim:
        _check_same_shape(t, z, "target", "logits")
        per_row = -np.sum(_as_float(t, dtype) * log_p, axis=-1)
    else:
        labels = _class_indices(t, z, "target")
        per_row = -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    return _reduce(per_row, reduction)


def cross_entropy_from_probabilities(
    y: ArrayLike,
    p: ArrayLike,
    reduction: str = "sum",
    *,
    eps: float = PROBABILITY_EPS,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """The notebook's cross-entropy on probabilities: ``-sum(y * log(p))``.

    Note the notebook's argument order: targets first, then probabilities. ``p`` is
    clipped below at ``eps`` so that ``p == 0`` gives a large finite loss
    (``-log(eps)``), never ``inf`` or ``nan``.

    Args:
        y: one-hot (or probability) targets of ``p``'s shape, or class indices, one per
            row (``(batch,)``, or a scalar for one sample).
        p: probabilities, ``(batch, classes)`` or ``(classes,)`` for one sample, each in
            ``[0, 1]``.
        reduction: ``"sum"`` (the notebook's default, over rows), ``"mean"`` (over rows)
            or ``"none"``.
        eps: the lower clip on ``p``, in ``(0, 1)``.
        dtype: float64 (default) or float32.

    Returns:
        A 0-d array for ``sum`` / ``mean``; one loss per row for ``none``.

    Raises:
        ValueError: unknown ``reduction`` or ``eps`` outside ``(0, 1)``.
        InputShapeError: ``p`` is not 1-D / 2-D or ``y``'s shape matches neither form.
        DataError: ``p`` holds NaN or values outside ``[0, 1]`` (were logits passed?),
            or an index target is invalid.
    """
    _check_reduction(reduction)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    probs = _as_float(p, dtype)
    _check_rank(probs, "p")
    _check_class_axis(probs, -1, "p")
    _check_unit_interval(probs, "p", hint=" (were logits passed where probabilities belong?)")
    t = np.asarray(y)
    if t.ndim == probs.ndim:
        _check_same_shape(t, probs, "y", "p")
        log_p = np.log(np.maximum(probs, eps))
        per_row = -np.sum(_as_float(t, dtype) * log_p, axis=-1)
    else:
        labels = _class_indices(t, probs, "y")
        picked = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
        per_row = -np.log(np.maximum(picked, eps))
    return _reduce(per_row, reduction)


def binary_cross_entropy(
    p: ArrayLike,
    y: ArrayLike,
    reduction: str = "mean",
    *,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """Binary cross-entropy from probabilities, as ``torch.nn.BCELoss`` computes it.

    ``loss = -(y * log(p) + (1 - y) * log(1 - p))`` with each log clamped to
    ``>= BCE_LOG_CLAMP`` (-100), so ``p`` of exactly 0 or 1 gives a finite loss.

    Args:
        p: positive-class probabilities in ``[0, 1]``, any shape (``(batch,)`` or
            ``(batch, 1)``).
        y: targets in ``[0, 1]`` (0/1 labels or soft labels) of ``p``'s shape.
        reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.
        dtype: float64 (default) or float32.

    Returns:
        A 0-d array for ``mean`` / ``sum``; ``p``'s shape for ``none``.

    Raises:
        ValueError: unknown ``reduction``.
        InputShapeError: ``p`` and ``y`` differ in shape, or ``mean`` of nothing.
        DataError: ``p`` or ``y`` holds NaN or values outside ``[0, 1]``.
    """
    _check_reduction(reduction)
    probs = _as_float(p, dtype)
    targets = _as_float(y, dtype)
    _check_same_shape(targets, probs, "y", "p")
    _check_unit_interval(probs, "p", hint=" (for logits use binary_cross_entropy_with_logits)")
    _check_unit_interval(targets, "y")
    with np.errstate(divide="ignore"):  # log(0) = -inf, clamped next line
        log_p = np.maximum(np.log(probs), BCE_LOG_CLAMP)
        log_q = np.maximum(np.log1p(-probs), BCE_LOG_CLAMP)  # log(1 - p), exact near p = 0
    return _reduce(-(targets * log_p + (1 - targets) * log_q), reduction)


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    y: ArrayLike,
    reduction: str = "mean",
    *,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """Binary cross-entropy from logits, as ``torch.nn.BCEWithLogitsLoss`` computes it.

    Uses the stable form ``max(x, 0) - x * y + log1p(exp(-|x|))``, which equals
    ``-(y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`` without ever forming a
    probability that rounds to 0 or 1. ``max(x, 0) - x * y`` is evaluated as
    ``x * (1 - y)`` (``x >= 0``) or ``-x * y`` (``x < 0``): both terms are ``>= 0``, so a
    soft target and a large ``|x|`` lose nothing to cancellation (torch's float32 form
    does lose about ``eps * |x|`` there).

    Args:
        logits: any shape (``(batch,)`` or ``(batch, 1)``).
        y: targets in ``[0, 1]`` of the logits' shape.
        reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.
        dtype: float64 (default) or float32.

    Returns:
        A 0-d array for ``mean`` / ``sum``; the logits' shape for ``none``.

    Raises:
        ValueError: unknown ``reduction``.
        InputShapeError: ``logits`` and ``y`` differ in shape, or ``mean`` of nothing.
        DataError: ``y`` holds NaN or values outside ``[0, 1]``.
    """
    _check_reduction(reduction)
    z = _as_float(logits, dtype)
    targets = _as_float(y, dtype)
    _check_same_shape(targets, z, "y", "logits")
    _check_unit_interval(targets, "y")
    linear = np.where(z >= 0, z * (1 - targets), -z * targets)  # max(z, 0) - z * y, >= 0
    per_element = linear + np.log1p(np.exp(-np.abs(z)))
    return _reduce(per_element, reduction)


# --- the network ---------------------------------------------------------------------


def forward(
    weights: Mapping[str, ArrayLike],
    x: ArrayLike,
    *,
    normalization: Mapping[str, ArrayLike] | None = None,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """The MLP's forward pass from its weights: logits, no head.

    Computes ``h = relu(h @ W_i.T + b_i)`` for each hidden layer, then
    ``logits = h @ W_out.T + b_out``: the ``onnxedge.models.nets.MLP`` graph.

    Args:
        weights: the net's ``state_dict`` as arrays: ``hidden.{i}.weight``
            ``(out, in)`` and ``hidden.{i}.bias`` ``(out,)`` for ``i = 0..k-1`` (k may be
            0), then ``output.weight`` and ``output.bias``. No other keys.
        x: ``(batch, features)`` raw inputs.
        normalization: ``{"mean": (features,), "std": (features,)}``; when given,
            ``(x - mean) / std`` is fed to the first layer, as the exported graph does.
        dtype: float64 (default) or float32; weights and inputs are cast to it.

    Returns:
        Logits ``(batch, classes)``; ``(batch, 1)`` for the binary net.

    Raises:
        CheckpointError: a weight key is missing or unexpected, weight shapes do not
            chain, or the normalization is missing a key, has the wrong length, or has a
            ``std`` that is not positive and finite.
        InputShapeError: ``x`` is not 2-D or has a different feature count than the
            first layer reads.
    """
    layers = _layers(weights, dtype)
    inputs = _as_float(x, dtype)
    n_features = layers[0][0].shape[1]
    if inputs.ndim != 2:
        raise InputShapeError(
            f"x must be (batch, features) with {n_features} features, got shape {inputs.shape}"
        )
    if inputs.shape[1] != n_features:
        raise InputShapeError(
            f"model expects {n_features} features, input has {inputs.shape[1]} "
            f"(x shape {inputs.shape})"
        )
    h = inputs
    if normalization is not None:
        mean, std = _normalization(normalization, n_features, dtype)
        h = (h - mean) / std
    for weight, bias in layers[:-1]:
        h = np.maximum(h @ weight.T + bias, 0)  # (batch, out)
    weight, bias = layers[-1]
    return np.asarray(h @ weight.T + bias)  # (batch, classes)


def forward_from_weights(
    config: NetConfig,
    weights: Mapping[str, ArrayLike],
    x: ArrayLike,
    *,
    dtype: DTypeLike = np.float64,
) -> FloatArray:
    """The forward pass of any architecture onnxedge builds, from its weights: logits.

    ``mlp``: :func:`forward`. ``cnn``: for each ``conv.{i}``, a same-padded convolution
    (odd square kernel, stride 1), ReLU, then a ``POOL_SIZE`` max-pool (floor: a last odd
    row or column is dropped, as in torch); the map is flattened channel-major and read by
    the dense layers ``hidden.{i}`` / ``output``. Preprocessing is not applied: pass
    ``preprocess.apply(rows)``. With every weight and input replaced by its absolute value
    the same pass bounds the magnitude of the terms summed into each logit (the scale of
    float32 rounding), since ReLU and max-pool are monotone.

    Args:
        config: the net's config (``arch`` and ``input_shape`` are read).
        weights: the net's ``state_dict`` as arrays, by the torch names.
        x: ``(batch, *config.input_shape)`` rows, already preprocessed.
        dtype: float64 (default) or float32; weights and inputs are cast to it.

    Returns:
        Logits ``(batch, classes)``; ``(batch, 1)`` for a binary net.

    Raises:
        CheckpointError: weights are missing, unexpected or of shapes that do not chain.
        InputShapeError: ``x`` is not a batch of rows of ``config.input_shape``.
    """
    shape = tuple(config.input_shape)
    h = _as_float(x, dtype)
    if h.ndim != len(shape) + 1 or h.shape[1:] != shape:
        raise InputShapeError(
            f"model expects rows of shape {shape}, input has "
            f"{h.shape[1:] if h.ndim == len(shape) + 1 else h.shape} (x shape {h.shape})"
        )
    if config.arch == "mlp":
        return forward(weights, h, dtype=dtype)
    convs = {int(m.group(1)) for k in weights if (m := _CONV_KEY.fullmatch(str(k)))}
    names = [(f"conv.{i}.weight", f"conv.{i}.bias") for i in range(max(convs, default=-1) + 1)]
    missing = [key for pair in names for key in pair if key not in weights]
    if missing or not names:
        raise CheckpointError(
            "weights do not describe the CNN (conv.{i}.weight / .bias for i = 0..k-1, k >= 1): "
            f"missing {', '.join(missing) or 'conv.0.weight, conv.0.bias'}"
        )
    for w_name, b_name in names:
        weight, bias = _as_float(weights[w_name], dtype), _as_float(weights[b_name], dtype)
        k = weight.shape[-1] if weight.ndim == 4 else 0
        if k % 2 == 0 or weight.shape[1:] != (h.shape[1], k, k):
            raise CheckpointError(
                f"{w_name} has shape {weight.shape}; expected (out, {h.shape[1]}, k, k) "
                "with an odd k"
            )
        if bias.shape != weight.shape[:1]:
            raise CheckpointError(
                f"{b_name} has shape {bias.shape}; {w_name} needs ({len(weight)},)"
            )
        padded = np.pad(h, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # (n, c, H, W, k, k)
        h = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
        h = np.maximum(h + bias[:, None, None], 0)
        n, c, rows, cols = h.shape
        rows, cols = rows // POOL_SIZE, cols // POOL_SIZE
        h = h[:, :, : rows * POOL_SIZE, : cols * POOL_SIZE]
        h = h.reshape(n, c, rows, POOL_SIZE, cols, POOL_SIZE).max(axis=(3, 5))
    dense = {k: v for k, v in weights.items() if not _CONV_KEY.fullmatch(str(k))}
    reads = _layers(dense, dtype)[0][0].shape[1]
    if reads != math.prod(h.shape[1:]):
        first = "hidden.0.weight" if "hidden.0.weight" in dense else "output.weight"
        raise CheckpointError(
            f"{first} reads {reads} features but the conv blocks give "
            f"{math.prod(h.shape[1:])} ({' x '.join(map(str, h.shape[1:]))})"
        )
    return forward(dense, h.reshape(len(h), -1), dtype=dtype)  # (batch, C * H * W) in


# --- validation helpers --------------------------------------------------------------


def _as_float(x: ArrayLike, dtype: DTypeLike) -> FloatArray:
    wanted = np.dtype(dtype)
    if wanted not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {wanted}")
    return np.asarray(x, dtype=wanted)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_rank(a: np.ndarray, name: str) -> None:
    if a.ndim not in (1, 2):
        raise InputShapeError(
            f"{name} must be (batch, classes) or (classes,) for one sample, got shape {a.shape}"
        )


def _check_class_axis(a: np.ndarray, axis: int, name: str) -> None:
    if a.ndim == 0:
        raise InputShapeError(f"{name} needs a class axis, got a scalar")
    if not -a.ndim <= axis < a.ndim:
        raise InputShapeError(f"{name} has {a.ndim} dimension(s); axis {axis} does not exist")
    if a.shape[axis] == 0:
        raise InputShapeError(f"{name} has no classes (shape {a.shape}, axis {axis})")


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise InputShapeError(f"{a_name} has shape {a.shape}; {b_name} has shape {b.shape}")


def _position(index: tuple[int, ...]) -> str:
    if len(index) == 0:
        return ""
    if len(index) == 1:
        return f" at index {index[0]}"
    if len(index) == 2:
        return f" at row {index[0]}, column {index[1]}"
    return f" at index {list(index)}"


def _check_unit_interval(a: np.ndarray, name: str, hint: str = "") -> None:
    outside = ~((a >= 0) & (a <= 1))  # NaN fails both comparisons
    if outside.any():
        first = tuple(int(i) for i in np.argwhere(outside)[0])
        raise DataError(
            f"{name} must hold values in [0, 1]; {int(outside.sum())} do not, the first is "
            f"{a[first].item()!r}{_position(first)}{hint}"
        )


def _class_indices(t: np.ndarray, scores: np.ndarray, name: str) -> NDArray[np.int64]:
    """Validate index targets against ``scores`` (``(batch, classes)`` or ``(classes,)``)."""
    rows_shape = scores.shape[:-1]
    if t.shape != rows_shape:
        raise InputShapeError(
            f"{name} has shape {t.shape}; expected {rows_shape} (one class index per row) "
            f"or {scores.shape} (one-hot / probabilities)"
        )
    if t.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold class indices (numbers), got dtype {t.dtype}")
    if t.dtype.kind == "f":
        not_whole = ~(np.isfinite(t) & (t == np.round(t)))
        if not_whole.any():
            first = tuple(int(i) for i in np.argwhere(not_whole)[0])
            raise DataError(
                f"{name} must hold whole-number class indices; "
                f"{t[first].item()!r}{_position(first)} is not one"
            )
    labels = t.astype(np.int64)
    n_classes = scores.shape[-1]
    out_of_range = (labels < 0) | (labels >= n_classes)
    if out_of_range.any():
        first = tuple(int(i) for i in np.argwhere(out_of_range)[0])
        raise DataError(
            f"{name} holds class {t[first].item()!r}{_position(first)}, outside 0..{n_classes - 1} "
            f"({n_classes} classes)"
        )
    return labels


def _reduce(values: FloatArray, reduction: str) -> FloatArray:
    if reduction == "none":
        return np.asarray(values)
    if reduction == "sum":
        return np.asarray(np.sum(values))
    if values.size == 0:
        raise InputShapeError("the mean loss of an empty batch is undefined")
    return np.asarray(np.mean(values))


def _layers(
    weights: Mapping[str, ArrayLike], dtype: DTypeLike
) -> list[tuple[FloatArray, FloatArray]]:
    """Validate a weights dict and return its ``(weight, bias)`` pairs, input to output."""
    keys = {str(k) for k in weights}
    hidden = {int(m.group(1)) for k in keys if (m := _HIDDEN_KEY.fullmatch(k))}
    n_hidden = max(hidden) + 1 if hidden else 0
    names = [(f"hidden.{i}.weight", f"hidden.{i}.bias") for i in range(n_hidden)]
    names.append(("output.weight", "output.bias"))
    expected = [key for pair in names for key in pair]
    missing = [key for key in expected if key not in keys]
    unexpected = sorted(keys - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected " + ", ".join(unexpected))
        raise CheckpointError(
            "weights do not describe the MLP (hidden.{i}.weight / .bias for i = 0..k-1, "
            f"then output.weight / .bias): {'; '.join(problems)}; present: {sorted(keys)}"
        )

    layers = [(_as_float(weights[w], dtype), _as_float(weights[b], dtype)) for w, b in names]
    problems = []
    previous_out: int | None = None
    for (w_name, b_name), (weight, bias) in zip(names, layers, strict=True):
        if weight.ndim != 2:
            problems.append(f"{w_name} must be 2-D (out, in), has shape {weight.shape}")
            previous_out = None
            continue
        out_features, in_features = weight.shape
        if bias.shape != (out_features,):
            problems.append(f"{b_name} has shape {bias.shape}; {w_name} needs ({out_features},)")
        if previous_out is not None and in_features != previous_out:
            problems.append(
                f"{w_name} reads {in_features} features but the layer before gives {previous_out}"
            )
        previous_out = out_features
    if problems:
        raise CheckpointError("inconsistent weight shapes: " + "; ".join(problems))
    return layers


def _normalization(
    normalization: Mapping[str, ArrayLike], n_features: int, dtype: DTypeLike
) -> tuple[FloatArray, FloatArray]:
    missing = [key for key in ("mean", "std") if key not in normalization]
    if missing:
        raise CheckpointError(
            f"normalization needs 'mean' and 'std'; missing {missing}, "
            f"present: {sorted(map(str, normalization))}"
        )
    mean = _as_float(normalization["mean"], dtype)
    std = _as_float(normalization["std"], dtype)
    for name, stat in (("mean", mean), ("std", std)):
        if stat.shape != (n_features,):
            raise CheckpointError(
                f"normalization {name} has shape {stat.shape}; the model reads {n_features} "
                "features"
            )
    if not np.isfinite(mean).all():
        raise CheckpointError(
            f"normalization mean must be finite; feature {int(np.argmin(np.isfinite(mean)))} is not"
        )
    bad_std = ~(np.isfinite(std) & (std > 0))
    if bad_std.any():
        first = int(np.argmax(bad_std))
        raise CheckpointError(
            "normalization std must be positive and finite; "
            f"feature {first} has {std[first].item()!r} "
            f"({int(bad_std.sum())} such features; a constant feature needs std 1, not 0)"
        )
    return mean, std
