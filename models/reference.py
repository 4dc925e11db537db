"""The numpy oracle torch and onnxruntime are checked against: heads, losses, forwards.

Inputs are cast to ``dtype`` (float64 by default); losses follow torch's definitions.
Unknown options raise ValueError, bad data the typed errors of onnxedge.runtime.errors.
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

FloatArray = NDArray[np.floating[Any]]
_F64 = np.float64

PROBABILITY_EPS = 1e-15  # the notebook's clip on p before log: p == 0 costs ~34.5, not inf
BCE_LOG_CLAMP = -100.0  # nn.BCELoss clamps each log term to >= -100; so does the reference
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
#: The heads that turn logits into probabilities (``none`` in the model contract has none).
PROBABILITY_HEADS: tuple[str, ...] = ("softmax", "sigmoid")
#: The CNN's max-pool window and stride (``onnxedge.models.nets.CNN`` reads it from here).
POOL_SIZE = 2
_HIDDEN_KEY = re.compile(r"hidden\.(\d+)\.(weight|bias)")
_CONV_KEY = re.compile(r"conv\.(\d+)\.(weight|bias)")


def softmax(x: ArrayLike, axis: int = -1, *, dtype: DTypeLike = _F64) -> FloatArray:
    """Softmax along ``axis`` (each slice sums to 1); InputShapeError for no class axis."""
    z = _as_float(x, dtype, class_axis=axis)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))  # in (0, 1]
    return np.asarray(e / np.sum(e, axis=axis, keepdims=True))


def log_softmax(x: ArrayLike, axis: int = -1, *, dtype: DTypeLike = _F64) -> FloatArray:
    """Log-softmax along ``axis`` as logsumexp; InputShapeError for no class axis."""
    z = _as_float(x, dtype, class_axis=axis)
    shifted = z - np.max(z, axis=axis, keepdims=True)  # the max adds exp(0): log never sees 0
    return np.asarray(shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True)))


def sigmoid(x: ArrayLike, *, dtype: DTypeLike = _F64) -> FloatArray:
    """Logistic sigmoid, elementwise, from ``exp(-|x|)`` so it never overflows."""
    z = _as_float(x, dtype)
    e = np.exp(-np.abs(z))
    return np.asarray(np.where(z >= 0, 1 / (1 + e), e / (1 + e)))


def predict_proba(logits: ArrayLike, head: str, *, dtype: DTypeLike = _F64) -> FloatArray:
    """Apply a head to logits: ``softmax`` over the last axis, or elementwise ``sigmoid``.

    Raises:
        ValueError: an unknown ``head``. InputShapeError: softmax logits without classes.
    """
    if head == "softmax":
        return softmax(logits, axis=-1, dtype=dtype)
    if head == "sigmoid":
        return sigmoid(logits, dtype=dtype)
    raise ValueError(f"head must be one of {PROBABILITY_HEADS}, got {head!r}")


def predict_label(probabilities: ArrayLike, head: str, threshold: float = 0.5) -> NDArray[np.int64]:
    """Labels (int64) as the exported ``label`` output: ``softmax`` argmax over the last
    axis (ties to the lowest index), ``sigmoid`` ``p >= threshold`` (a trailing 1 dropped).

    Raises:
        ValueError: unknown ``head``, or ``threshold`` outside ``[0, 1]``.
        InputShapeError: softmax probabilities without classes.
    """
    p = np.asarray(probabilities)
    if head == "softmax":
        _check_class_axis(p, -1, "probabilities")
        return np.argmax(p, axis=-1).astype(np.int64)
    if head != "sigmoid":
        raise ValueError(f"head must be one of {PROBABILITY_HEADS}, got {head!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    labels = (p >= threshold).astype(np.int64)
    return labels[..., 0] if labels.ndim >= 2 and labels.shape[-1] == 1 else labels


def cross_entropy(
    logits: ArrayLike, target: ArrayLike, reduction: str = "mean", *, dtype: DTypeLike = _F64
) -> FloatArray:
    """Cross-entropy from logits ``(batch, classes)`` or ``(classes,)``, as torch's, for
    class-index targets (integers or whole floats) or one-hot / probability rows.

    Raises:
        ValueError: unknown ``reduction``. DataError: an index target not in ``0..classes-1``.
        InputShapeError: logits not 1-D / 2-D, a target of neither form, an empty mean.
    """
    _check_reduction(reduction)
    z = _as_float(logits, dtype, class_axis=-1, rank_name="logits")
    log_p = log_softmax(z, axis=-1, dtype=dtype)
    return _reduce(_nll(log_p, target, ("target", "logits"), dtype), reduction)


def cross_entropy_from_probabilities(
    y: ArrayLike,
    p: ArrayLike,
    reduction: str = "sum",
    *,
    eps: float = PROBABILITY_EPS,
    dtype: DTypeLike = _F64,
) -> FloatArray:
    """The notebook's ``-sum(y * log(p))`` (targets first: one-hot rows or class indices),
    with ``p`` (``(batch, classes)`` or ``(classes,)``) clipped below at ``eps``.

    Raises:
        ValueError: unknown ``reduction``, ``eps`` outside ``(0, 1)``. InputShapeError: as
            :func:`cross_entropy`. DataError: ``p`` outside ``[0, 1]``, a bad index target.
    """
    _check_reduction(reduction)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    probs = _as_float(p, dtype, class_axis=-1, rank_name="p")
    _check_unit_interval(probs, "p", hint=" (were logits passed where probabilities belong?)")
    return _reduce(_nll(np.log(np.maximum(probs, eps)), y, ("y", "p"), dtype), reduction)


def binary_cross_entropy(
    p: ArrayLike, y: ArrayLike, reduction: str = "mean", *, dtype: DTypeLike = _F64
) -> FloatArray:
    """BCE from probabilities, as ``torch.nn.BCELoss`` (each log clamped at -100).

    Raises:
        ValueError: unknown ``reduction``. DataError: ``p`` or ``y`` outside ``[0, 1]``.
        InputShapeError: ``p`` and ``y`` differ in shape, or ``mean`` of nothing.
    """
    _check_reduction(reduction)
    probs, targets = _as_float(p, dtype), _as_float(y, dtype)
    _check_same_shape(targets, probs, "y", "p")
    _check_unit_interval(probs, "p", hint=" (for logits use binary_cross_entropy_with_logits)")
    _check_unit_interval(targets, "y")
    with np.errstate(divide="ignore"):  # log(0) = -inf, clamped
        log_p = np.maximum(np.log(probs), BCE_LOG_CLAMP)
        log_q = np.maximum(np.log1p(-probs), BCE_LOG_CLAMP)  # log(1 - p), exact near p = 0
    return _reduce(-(targets * log_p + (1 - targets) * log_q), reduction)


def binary_cross_entropy_with_logits(
    logits: ArrayLike, y: ArrayLike, reduction: str = "mean", *, dtype: DTypeLike = _F64
) -> FloatArray:
    """BCE from logits, as ``torch.nn.BCEWithLogitsLoss``; ``max(x, 0) - x * y`` is taken as
    ``x * (1 - y)`` or ``-x * y`` (both >= 0: no cancellation for soft targets, unlike torch).

    Raises:
        ValueError: unknown ``reduction``. DataError: ``y`` outside ``[0, 1]``.
        InputShapeError: ``logits`` and ``y`` differ in shape, or ``mean`` of nothing.
    """
    _check_reduction(reduction)
    z, targets = _as_float(logits, dtype), _as_float(y, dtype)
    _check_same_shape(targets, z, "y", "logits")
    _check_unit_interval(targets, "y")
    linear = np.where(z >= 0, z * (1 - targets), -z * targets)
    return _reduce(linear + np.log1p(np.exp(-np.abs(z))), reduction)


def forward(
    weights: Mapping[str, ArrayLike],
    x: ArrayLike,
    *,
    normalization: Mapping[str, ArrayLike] | None = None,
    dtype: DTypeLike = _F64,
) -> FloatArray:
    """The MLP's logits from its weights: ``relu(h @ W.T + b)`` per ``hidden.{i}``, then
    ``output``; with ``normalization``, ``(x - mean) / std`` feeds the first layer.

    Raises:
        CheckpointError: weights that do not make an MLP, or a bad normalization.
        InputShapeError: ``x`` is not ``(batch, features)`` of the first layer's width.
    """
    layers = _layers(weights, dtype)
    h = _as_float(x, dtype)
    n_features = layers[0][0].shape[1]
    if h.ndim != 2:
        raise InputShapeError(
            f"x must be (batch, features) with {n_features} features, got shape {h.shape}"
        )
    if h.shape[1] != n_features:
        raise InputShapeError(
            f"model expects {n_features} features, input has {h.shape[1]} (x shape {h.shape})"
        )
    if normalization is not None:  # {"mean", "std"}, as tests/export pass it
        mean, std = (_as_float(normalization.get(k, np.nan), dtype) for k in ("mean", "std"))
        if not (mean.shape == std.shape == (n_features,) and np.isfinite(mean + std).all()):
            raise CheckpointError(f"normalization needs a finite mean and std of {n_features} each")
        if not (std > 0).all():
            raise CheckpointError(
                f"normalization std must be > 0; feature {np.argmin(std > 0)} is not"
            )
        h = (h - mean) / std
    for weight, bias in layers[:-1]:
        h = np.maximum(h @ weight.T + bias, 0)  # (batch, out)
    weight, bias = layers[-1]
    return np.asarray(h @ weight.T + bias)


def forward_from_weights(
    config: NetConfig, weights: Mapping[str, ArrayLike], x: ArrayLike, *, dtype: DTypeLike = _F64
) -> FloatArray:
    """Logits of any net onnxedge builds, from its weights (preprocessing not applied).

    ``cnn``: per ``conv.{i}`` a same-padded odd-kernel convolution, ReLU and a ``POOL_SIZE``
    max-pool (floor, as torch); the map, flattened channel-major, feeds :func:`forward`.

    Raises:
        CheckpointError: weights missing, unexpected or of shapes that do not chain.
        InputShapeError: ``x`` is not a batch of rows of ``config.input_shape``.
    """
    shape = tuple(config.input_shape)
    h = _as_float(x, dtype)
    if h.ndim != len(shape) + 1 or h.shape[1:] != shape:
        got = h.shape[1:] if h.ndim == len(shape) + 1 else h.shape
        raise InputShapeError(
            f"model expects rows of shape {shape}, input has {got} (x shape {h.shape})"
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
                f"{w_name} has shape {weight.shape}; expected (out, {h.shape[1]}, k, k) with an "
                "odd k"
            )
        if bias.shape != weight.shape[:1]:
            raise CheckpointError(
                f"{b_name} has shape {bias.shape}; {w_name} needs ({len(weight)},)"
            )
        padded = np.pad(h, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # (n, c, H, W, k, k)
        h = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
        h = np.maximum(h + bias[:, None, None], 0)
        pools = sliding_window_view(h, (POOL_SIZE, POOL_SIZE), axis=(2, 3))  # floor, as torch
        h = pools[:, :, ::POOL_SIZE, ::POOL_SIZE].max(axis=(4, 5))
    dense = {k: v for k, v in weights.items() if not _CONV_KEY.fullmatch(str(k))}
    reads, flat = _layers(dense, dtype)[0][0].shape[1], math.prod(h.shape[1:])
    if reads != flat:
        first = "hidden.0.weight" if "hidden.0.weight" in dense else "output.weight"
        raise CheckpointError(
            f"{first} reads {reads} features but the conv blocks give {flat} "
            f"({' x '.join(map(str, h.shape[1:]))})"
        )
    return forward(dense, h.reshape(len(h), -1), dtype=dtype)


def _as_float(
    x: ArrayLike, dtype: DTypeLike, *, class_axis: int | None = None, rank_name: str = ""
) -> FloatArray:
    """``x`` in ``dtype``; with ``rank_name`` 1-D or 2-D, with ``class_axis`` non-empty."""
    wanted = np.dtype(dtype)
    if wanted not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {wanted}")
    a = np.asarray(x, dtype=wanted)
    if rank_name and a.ndim not in (1, 2):
        raise InputShapeError(f"{rank_name} must be (batch, classes) or (classes,), not {a.shape}")
    if class_axis is not None:
        _check_class_axis(a, class_axis, rank_name or "x")
    return a


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_class_axis(a: np.ndarray, axis: int, name: str) -> None:
    if a.ndim == 0 or a.shape[axis] == 0:
        raise InputShapeError(f"{name} needs classes along axis {axis}, got shape {a.shape}")


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise InputShapeError(f"{a_name} has shape {a.shape}; {b_name} has shape {b.shape}")


def _first(bad: np.ndarray) -> tuple[tuple[int, ...], str]:
    """The first flagged index of ``bad`` and where it is, in words."""
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    at = index[0] if len(index) == 1 else list(index)
    return index, f" at index {at}" if index else ""  # a 0-d array has no index


def _check_unit_interval(a: np.ndarray, name: str, hint: str = "") -> None:
    outside = ~((a >= 0) & (a <= 1))  # NaN fails both comparisons
    if outside.any():
        index, where = _first(outside)
        raise DataError(
            f"{name} must hold values in [0, 1]; {int(outside.sum())} do not, the first is "
            f"{a[index].item()!r}{where}{hint}"
        )


def _class_indices(t: np.ndarray, scores: np.ndarray, name: str) -> NDArray[np.int64]:
    """Validate index targets against ``scores`` (``(batch, classes)`` or ``(classes,)``)."""
    if t.shape != scores.shape[:-1]:
        raise InputShapeError(
            f"{name} has shape {t.shape}; expected {scores.shape[:-1]} (one class index per "
            f"row) or {scores.shape} (one-hot / probabilities)"
        )
    if t.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold class indices (numbers), got dtype {t.dtype}")
    n = scores.shape[-1]
    bad = ~(np.isfinite(t) & (t == np.round(t)) & (t >= 0) & (t < n))  # NaN fails each
    if bad.any():
        index, where = _first(bad)
        raise DataError(
            f"{name} must hold whole-number class indices in 0..{n - 1} ({n} classes); "
            f"{t[index].item()!r}{where} is not one"
        )
    return t.astype(np.int64)


def _nll(
    log_p: FloatArray, target: ArrayLike, names: tuple[str, str], dtype: DTypeLike
) -> FloatArray:
    """Per row ``-sum(target * log_p)`` (one-hot / probability rows) or ``-log_p[target]``
    (class indices); ``names``: the target's and the scores' in messages."""
    t = np.asarray(target)
    if t.ndim == log_p.ndim:
        _check_same_shape(t, log_p, *names)
        return -np.sum(_as_float(t, dtype) * log_p, axis=-1)
    labels = _class_indices(t, log_p, names[0])
    return -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]


def _reduce(values: FloatArray, reduction: str) -> FloatArray:
    if reduction == "none":
        return np.asarray(values)
    if reduction == "mean" and values.size == 0:
        raise InputShapeError("the mean loss of an empty batch is undefined")
    return np.asarray(np.sum(values) if reduction == "sum" else np.mean(values))


def _layers(
    weights: Mapping[str, ArrayLike], dtype: DTypeLike
) -> list[tuple[FloatArray, FloatArray]]:
    """Validate an MLP's weights; its ``(weight, bias)`` pairs, input to output."""
    keys = {str(k) for k in weights}
    hidden = {int(m.group(1)) for k in keys if (m := _HIDDEN_KEY.fullmatch(k))}
    names = [(f"hidden.{i}.weight", f"hidden.{i}.bias") for i in range(max(hidden, default=-1) + 1)]
    names.append(("output.weight", "output.bias"))
    expected = [key for pair in names for key in pair]
    missing = [k for k in expected if k not in keys]
    wrong = {"missing": missing, "unexpected": sorted(keys - set(expected))}
    problems = [f"{what} {', '.join(ks)}" for what, ks in wrong.items() if ks]
    if problems:
        raise CheckpointError(
            "weights do not describe the MLP (hidden.{i}.weight / .bias for i = 0..k-1, "
            f"then output.weight / .bias): {'; '.join(problems)}; present: {sorted(keys)}"
        )
    layers = [(_as_float(weights[w], dtype), _as_float(weights[b], dtype)) for w, b in names]
    problems, gives = [], None  # gives: the width the layer before puts out
    for (w_name, b_name), (weight, bias) in zip(names, layers, strict=True):
        if weight.ndim != 2:
            problems.append(f"{w_name} must be 2-D (out, in), has shape {weight.shape}")
            gives = None
            continue
        if bias.shape != weight.shape[:1]:
            problems.append(f"{b_name} has shape {bias.shape}; {w_name} needs ({len(weight)},)")
        if gives is not None and (reads := weight.shape[1]) != gives:
            problems.append(f"{w_name} reads {reads} features but the layer before gives {gives}")
        gives = weight.shape[0]
    if problems:
        raise CheckpointError("inconsistent weight shapes: " + "; ".join(problems))
    return layers
