"""The numpy reference against torch, and against itself computed two ways.

Every comparison is float64 reference vs torch float64 (REFERENCE_FLOAT64_*), or a
float32 computation (torch or the reference's float32 mode) vs the float64 reference on
the very same float32 values (REFERENCE_FLOAT32_*). Logits reach |x| = 1e4, where any
unstable form overflows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, TypedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnxedge.models import reference as ref
from onnxedge.models.nets import NetConfig, build_net
from onnxedge.runtime.errors import CheckpointError, DataError, InputShapeError
from onnxedge.runtime.tolerances import (
    BCE_UNSATURATED_MIN_PROBABILITY,
    LOGIT_ATOL,
    LOGIT_RTOL,
    PROBABILITY_SUM_ATOL,
    REFERENCE_FLOAT32_ATOL,
    REFERENCE_FLOAT32_RTOL,
    REFERENCE_FLOAT64_ATOL,
    REFERENCE_FLOAT64_RTOL,
    TORCH_BCE_WITH_LOGITS_FLOAT32_ERROR_PER_LOGIT,
    TORCH_BCE_WITH_LOGITS_FLOAT64_ERROR_PER_LOGIT,
)
from torch import nn

# No deadline: wall-clock limits do not belong in unit tests (a loaded CI box is slow).
PROPERTY = settings(max_examples=150, deadline=None)
FORWARD_PROPERTY = settings(max_examples=60, deadline=None)

MAX_BATCH = 16
MIN_CLASSES, MAX_CLASSES = 2, 12
#: Logit magnitudes drawn: soft distributions, saturating ones, and far past float32's
#: exp overflow (~88.7) up to the 1e4 the reference promises to survive.
LOGIT_SCALES = (3.0, 60.0, 1e4)
DTYPES = (np.float32, np.float64)


class Tolerance(TypedDict):
    rtol: float
    atol: float


def close(dtype: Any) -> Tolerance:
    """Tolerances for comparing a `dtype` computation with the float64 reference."""
    if np.dtype(dtype) == np.float64:
        return {"rtol": REFERENCE_FLOAT64_RTOL, "atol": REFERENCE_FLOAT64_ATOL}
    return {"rtol": REFERENCE_FLOAT32_RTOL, "atol": REFERENCE_FLOAT32_ATOL}


def as_torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def floats(dtype: Any, low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, width=32 if np.dtype(dtype) == np.float32 else 64)


@st.composite
def logits(draw: st.DrawFn, min_classes: int = MIN_CLASSES) -> np.ndarray:
    """(batch, classes) float32 or float64 logits at one of LOGIT_SCALES."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = (draw(st.integers(1, MAX_BATCH)), draw(st.integers(min_classes, MAX_CLASSES)))
    scale = draw(st.sampled_from(LOGIT_SCALES))
    return draw(hnp.arrays(dtype, shape, elements=floats(dtype, -scale, scale)))


@st.composite
def logits_and_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    x = draw(logits())
    labels = draw(hnp.arrays(np.int64, x.shape[:1], elements=st.integers(0, x.shape[1] - 1)))
    return x, labels


@st.composite
def binary_batches(draw: st.DrawFn, *, probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values, targets): probabilities in [0, 1] (0 and 1 included) or logits, shaped
    (batch,) or (batch, 1), with 0/1 or soft targets."""
    dtype = draw(st.sampled_from(DTYPES))
    batch = draw(st.integers(1, MAX_BATCH))
    shape = draw(st.sampled_from([(batch,), (batch, 1)]))
    if probabilities:
        elements = floats(dtype, 0.0, 1.0)
    else:
        scale = draw(st.sampled_from(LOGIT_SCALES))
        elements = floats(dtype, -scale, scale)
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    hard = st.sampled_from([0.0, 1.0])
    targets = draw(hnp.arrays(dtype, shape, elements=st.one_of(hard, floats(dtype, 0.0, 1.0))))
    return values, targets


def reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    """Apply a loss reduction to per-element values (as torch does)."""
    if reduction == "none":
        return values
    return np.asarray(values.sum() if reduction == "sum" else values.mean())


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float64)[labels]


# --- activations ---------------------------------------------------------------------


@PROPERTY
@given(logits())
@example(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32))
@example(np.array([[89.0, 88.0, -1e4]], dtype=np.float64))
def test_softmax_and_log_softmax_match_torch(x: np.ndarray) -> None:
    np.testing.assert_allclose(ref.softmax(x), torch.softmax(as_torch(x), -1), **close(x.dtype))
    np.testing.assert_allclose(
        ref.log_softmax(x), torch.log_softmax(as_torch(x), -1), **close(x.dtype)
    )
    if x.dtype == np.float32:
        np.testing.assert_allclose(
            ref.softmax(x, dtype=np.float32), ref.softmax(x), **close(x.dtype)
        )
        np.testing.assert_allclose(
            ref.log_softmax(x, dtype=np.float32), ref.log_softmax(x), **close(x.dtype)
        )


@PROPERTY
@given(logits(min_classes=1))
def test_sigmoid_matches_torch(x: np.ndarray) -> None:
    np.testing.assert_allclose(ref.sigmoid(x), torch.sigmoid(as_torch(x)), **close(x.dtype))
    if x.dtype == np.float32:
        np.testing.assert_allclose(
            ref.sigmoid(x, dtype=np.float32), ref.sigmoid(x), **close(x.dtype)
        )


@PROPERTY
@given(logits(), st.sampled_from(DTYPES))
def test_activations_stay_finite_and_in_range(x: np.ndarray, dtype: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would mean an unstable form
        p = ref.softmax(x, dtype=dtype)
        log_p = ref.log_softmax(x, dtype=dtype)
        s = ref.sigmoid(x, dtype=dtype)
    for out in (p, log_p, s):
        assert out.dtype == dtype
        assert np.isfinite(out).all()
    assert ((p >= 0) & (p <= 1)).all()
    assert (log_p <= 0).all()
    assert ((s >= 0) & (s <= 1)).all()
    sum_atol = REFERENCE_FLOAT64_ATOL if dtype == np.float64 else PROBABILITY_SUM_ATOL
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=sum_atol)


# --- cross-entropy -------------------------------------------------------------------


@PROPERTY
@given(logits_and_labels(), st.sampled_from(ref.REDUCTIONS))
def test_cross_entropy_matches_torch(batch: tuple[np.ndarray, np.ndarray], reduction: str) -> None:
    x, labels = batch
    expected = F.cross_entropy(as_torch(x), as_torch(labels), reduction=reduction)
    np.testing.assert_allclose(ref.cross_entropy(x, labels, reduction), expected, **close(x.dtype))
    if x.dtype == np.float32:
        np.testing.assert_allclose(
            ref.cross_entropy(x, labels, reduction, dtype=np.float32),
            ref.cross_entropy(x, labels, reduction),
            **close(x.dtype),
        )


@PROPERTY
@given(logits(), st.data(), st.sampled_from(ref.REDUCTIONS))
def test_cross_entropy_with_probability_targets_matches_torch(
    x: np.ndarray, data: st.DataObject, reduction: str
) -> None:
    weights = data.draw(hnp.arrays(x.dtype, x.shape, elements=floats(x.dtype, 0.0, 1.0)))
    weights[:, 0] += 1  # no all-zero row, so every row normalizes
    targets = (weights / weights.sum(axis=1, keepdims=True)).astype(x.dtype)
    expected = F.cross_entropy(as_torch(x), as_torch(targets), reduction=reduction)
    np.testing.assert_allclose(ref.cross_entropy(x, targets, reduction), expected, **close(x.dtype))


@PROPERTY
@given(logits_and_labels(), st.sampled_from(ref.REDUCTIONS))
def test_one_hot_and_index_targets_agree(
    batch: tuple[np.ndarray, np.ndarray], reduction: str
) -> None:
    x, labels = batch
    targets = one_hot(labels, x.shape[1])
    np.testing.assert_allclose(
        ref.cross_entropy(x, targets, reduction),
        ref.cross_entropy(x, labels, reduction),
        **close(np.float64),
    )
    p = ref.softmax(x)
    np.testing.assert_allclose(
        ref.cross_entropy_from_probabilities(targets, p, reduction),
        ref.cross_entropy_from_probabilities(labels, p, reduction),
        **close(np.float64),
    )


@PROPERTY
@given(logits_and_labels(), st.sampled_from(DTYPES))
def test_cross_entropy_from_logits_equals_notebook_form_on_softmax(
    batch: tuple[np.ndarray, np.ndarray], dtype: Any
) -> None:
    # Two computations of one quantity: -log_softmax[t] vs -log(softmax[t]) (the
    # notebook's form). They agree wherever the latter's clip at eps did not bite.
    x, labels = batch
    from_logits = ref.cross_entropy(x, labels, "none")
    p = ref.softmax(x, dtype=dtype)
    from_probabilities = ref.cross_entropy_from_probabilities(labels, p, "none", dtype=dtype)
    unclipped = p[np.arange(len(labels)), labels] > ref.PROBABILITY_EPS
    np.testing.assert_allclose(
        from_probabilities[unclipped], from_logits[unclipped], **close(dtype)
    )
    # Where it did bite, the loss is -log(eps): large and finite, never inf or nan.
    np.testing.assert_allclose(
        from_probabilities[~unclipped], -np.log(dtype(ref.PROBABILITY_EPS)), **close(dtype)
    )


def test_cross_entropy_from_probabilities_survives_zero_probability() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning from log(0)
        loss = ref.cross_entropy_from_probabilities([1, 0, 0], [0.0, 0.3, 0.7])
    np.testing.assert_allclose(loss, -np.log(ref.PROBABILITY_EPS), **close(np.float64))


def test_cross_entropy_from_probabilities_reductions() -> None:
    y = np.array([2, 0])
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    per_row = -np.log([0.7, 0.5])
    np.testing.assert_allclose(
        ref.cross_entropy_from_probabilities(y, p, "none"), per_row, **close(np.float64)
    )
    np.testing.assert_allclose(
        ref.cross_entropy_from_probabilities(y, p), per_row.sum(), **close(np.float64)
    )
    np.testing.assert_allclose(
        ref.cross_entropy_from_probabilities(y, p, "mean"), per_row.mean(), **close(np.float64)
    )


def test_whole_number_float_labels_equal_integer_labels() -> None:
    x = np.array([[0.3, 2.0, -1.0], [1.5, 0.2, 0.1]])
    np.testing.assert_allclose(
        ref.cross_entropy(x, np.array([1.0, 0.0])),
        ref.cross_entropy(x, np.array([1, 0])),
        **close(np.float64),
    )


def test_one_sample_forms_match_batched_forms() -> None:
    x = np.array([0.2, 2.0, 0.1])
    np.testing.assert_allclose(
        ref.cross_entropy(x, 1), ref.cross_entropy(x[None], [1]), **close(np.float64)
    )
    assert ref.cross_entropy(x, 1, "none").shape == ()
    np.testing.assert_allclose(
        ref.cross_entropy(x, [0.0, 1.0, 0.0]), ref.cross_entropy(x, 1), **close(np.float64)
    )


# --- binary cross-entropy ------------------------------------------------------------


@PROPERTY
@given(binary_batches(probabilities=True), st.sampled_from(ref.REDUCTIONS))
@example((np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])), "none")
def test_binary_cross_entropy_matches_torch(
    batch: tuple[np.ndarray, np.ndarray], reduction: str
) -> None:
    p, y = batch
    expected = F.binary_cross_entropy(as_torch(p), as_torch(y), reduction=reduction)
    loss = ref.binary_cross_entropy(p, y, reduction)
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss, expected, **close(p.dtype))
    if p.dtype == np.float32:
        np.testing.assert_allclose(
            ref.binary_cross_entropy(p, y, reduction, dtype=np.float32), loss, **close(p.dtype)
        )


@PROPERTY
@given(binary_batches(probabilities=False), st.sampled_from(ref.REDUCTIONS))
@example((np.array([-8208.75], np.float32), np.array([2**-9], np.float32)), "mean")
@example((np.array([-8208.75, 8208.75]), np.array([1e-300, 1 - 2**-40])), "none")
def test_binary_cross_entropy_with_logits_matches_torch(
    batch: tuple[np.ndarray, np.ndarray], reduction: str
) -> None:
    x, y = batch
    expected = F.binary_cross_entropy_with_logits(
        as_torch(x), as_torch(y), reduction=reduction
    ).numpy()
    loss = ref.binary_cross_entropy_with_logits(x, y, reduction)
    assert np.isfinite(loss).all()
    # torch's form cancels for soft labels at large |x|: its error grows with |x| (see
    # the tolerance's comment), so the bar is the usual one plus a share of |x|.
    per_logit = (
        TORCH_BCE_WITH_LOGITS_FLOAT32_ERROR_PER_LOGIT
        if x.dtype == np.float32
        else TORCH_BCE_WITH_LOGITS_FLOAT64_ERROR_PER_LOGIT
    )
    torch_slack = per_logit * reduce(np.abs(x.astype(np.float64)), reduction)
    tol = close(x.dtype)
    bound = tol["atol"] + tol["rtol"] * np.abs(expected) + torch_slack
    assert (np.abs(loss - expected) <= bound).all(), (loss, expected, bound)
    if x.dtype == np.float32:
        # The reference's own float32 form does not cancel: the plain float32 bar holds.
        np.testing.assert_allclose(
            ref.binary_cross_entropy_with_logits(x, y, reduction, dtype=np.float32),
            loss,
            **close(x.dtype),
        )


@PROPERTY
@given(binary_batches(probabilities=False))
def test_bce_from_logits_equals_bce_on_sigmoid_where_not_saturated(
    batch: tuple[np.ndarray, np.ndarray],
) -> None:
    # The probability form loses ~eps / min(p, 1 - p) to rounding as sigmoid saturates,
    # so the identity is checked only where min(p, 1 - p) stays above a named bound.
    x, y = batch
    p = ref.sigmoid(x)
    unsaturated = np.minimum(p, 1 - p) >= BCE_UNSATURATED_MIN_PROBABILITY
    np.testing.assert_allclose(
        ref.binary_cross_entropy(p, y, "none")[unsaturated],
        ref.binary_cross_entropy_with_logits(x, y, "none")[unsaturated],
        **close(np.float64),
    )


# --- heads ---------------------------------------------------------------------------


@PROPERTY
@given(logits())
def test_softmax_head_labels_match_torch_argmax(x: np.ndarray) -> None:
    p = ref.predict_proba(x, "softmax")
    np.testing.assert_allclose(p, ref.softmax(x), **close(np.float64))
    labels = ref.predict_label(p, "softmax")
    assert labels.dtype == np.int64
    # Saturated rows can tie at exactly 1.0 / 0.0 in probability space while the
    # logits still differ, so compare with torch's argmax of the same probabilities.
    np.testing.assert_array_equal(labels, torch.argmax(as_torch(p), dim=1).numpy())
    np.testing.assert_array_equal(ref.predict_label(x, "softmax"), torch.argmax(as_torch(x), dim=1))


@PROPERTY
@given(logits(min_classes=1).map(lambda x: x[:, :1]), floats(np.float64, 0.0, 1.0))
@example(np.array([[0.0], [-1e-3], [1e-3]]), 0.5)
def test_sigmoid_head_labels_match_torch_threshold(x: np.ndarray, threshold: float) -> None:
    p = ref.predict_proba(x, "sigmoid")  # (batch, 1)
    labels = ref.predict_label(p, "sigmoid", threshold)
    assert labels.shape == (x.shape[0],)
    torch_p = torch.sigmoid(as_torch(x.astype(np.float64))).numpy()[:, 0]
    # a probability within rounding of the threshold may fall either side of it
    decided = np.abs(torch_p - threshold) > REFERENCE_FLOAT64_ATOL
    np.testing.assert_array_equal(labels[decided], (torch_p >= threshold)[decided])


# --- the forward pass ----------------------------------------------------------------


@st.composite
def mlps(draw: st.DrawFn) -> dict[str, Any]:
    """A random MLP's weights (as numpy), its inputs and normalization statistics."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    features = draw(st.integers(1, 10))
    hidden = draw(st.lists(st.integers(1, 16), min_size=0, max_size=3))
    outputs = draw(st.integers(1, 6))
    widths = [features, *hidden, outputs]
    weights: dict[str, np.ndarray] = {}
    names = [f"hidden.{i}" for i in range(len(hidden))] + ["output"]
    for name, w_in, w_out in zip(names, widths[:-1], widths[1:], strict=True):
        weights[f"{name}.weight"] = rng.normal(0, 1 / np.sqrt(w_in), (w_out, w_in))
        weights[f"{name}.bias"] = rng.normal(0, 0.5, w_out)
    mean = rng.normal(0, 5, features)
    std = rng.uniform(0.1, 10, features)
    x = mean + std * rng.normal(0, 1, (draw(st.integers(1, MAX_BATCH)), features))
    return {"weights": weights, "x": x, "normalization": {"mean": mean, "std": std}}


def torch_forward(net: dict[str, Any], dtype: torch.dtype, normalize: bool) -> np.ndarray:
    """The same net built from torch layers, independent of the reference's code."""
    weights = net["weights"]
    layers: list[nn.Module] = []
    for i in range(sum(1 for k in weights if k.startswith("hidden.")) // 2):
        layers.append(_linear(weights[f"hidden.{i}.weight"], weights[f"hidden.{i}.bias"], dtype))
        layers.append(nn.ReLU())
    layers.append(_linear(weights["output.weight"], weights["output.bias"], dtype))
    x = torch.tensor(net["x"], dtype=dtype)
    if normalize:
        stats = net["normalization"]
        x = (x - torch.tensor(stats["mean"], dtype=dtype)) / torch.tensor(stats["std"], dtype=dtype)
    with torch.no_grad():
        return nn.Sequential(*layers)(x).numpy()


def _linear(weight: np.ndarray, bias: np.ndarray, dtype: torch.dtype) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=dtype))
        layer.bias.copy_(torch.tensor(bias, dtype=dtype))
    return layer


@FORWARD_PROPERTY
@given(mlps(), st.booleans())
def test_forward_matches_torch_layers(net: dict[str, Any], normalize: bool) -> None:
    normalization = net["normalization"] if normalize else None
    logits64 = ref.forward(net["weights"], net["x"], normalization=normalization)
    assert logits64.shape == (net["x"].shape[0], net["weights"]["output.bias"].shape[0])
    np.testing.assert_allclose(
        logits64, torch_forward(net, torch.float64, normalize), **close(np.float64)
    )
    # float32 torch (what gets exported) vs the float64 reference: the logit bar.
    np.testing.assert_allclose(
        logits64, torch_forward(net, torch.float32, normalize), rtol=LOGIT_RTOL, atol=LOGIT_ATOL
    )
    logits32 = ref.forward(net["weights"], net["x"], normalization=normalization, dtype=np.float32)
    assert logits32.dtype == np.float32
    np.testing.assert_allclose(logits32, logits64, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)


def _tiny_net() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "hidden.0.weight": rng.normal(size=(5, 4)),
        "hidden.0.bias": rng.normal(size=5),
        "output.weight": rng.normal(size=(3, 5)),
        "output.bias": rng.normal(size=3),
    }


def test_forward_names_a_missing_weight() -> None:
    weights = _tiny_net()
    del weights["hidden.0.bias"]
    with pytest.raises(CheckpointError, match=r"missing hidden\.0\.bias"):
        ref.forward(weights, np.zeros((2, 4)))


def test_forward_names_a_missing_middle_layer() -> None:
    weights = _tiny_net()
    weights["hidden.2.weight"] = np.zeros((5, 5))
    weights["hidden.2.bias"] = np.zeros(5)
    with pytest.raises(CheckpointError, match=r"missing hidden\.1\.weight, hidden\.1\.bias"):
        ref.forward(weights, np.zeros((2, 4)))


def test_forward_names_unexpected_keys() -> None:
    weights = _tiny_net()
    weights["linear2.weight"] = np.zeros((3, 5))
    with pytest.raises(CheckpointError, match=r"unexpected linear2\.weight"):
        ref.forward(weights, np.zeros((2, 4)))


def test_forward_reports_every_inconsistent_shape_at_once() -> None:
    weights = _tiny_net()
    weights["hidden.0.bias"] = np.zeros(6)
    weights["output.weight"] = np.zeros((3, 7))
    with pytest.raises(CheckpointError) as caught:
        ref.forward(weights, np.zeros((2, 4)))
    message = str(caught.value)
    assert r"hidden.0.bias has shape (6,); hidden.0.weight needs (5,)" in message
    assert "output.weight reads 7 features but the layer before gives 5" in message


def test_forward_rejects_a_wrong_feature_count() -> None:
    with pytest.raises(InputShapeError, match="model expects 4 features, input has 3"):
        ref.forward(_tiny_net(), np.zeros((2, 3)))


def test_forward_rejects_a_single_unbatched_row() -> None:
    with pytest.raises(InputShapeError, match=r"x must be \(batch, features\)"):
        ref.forward(_tiny_net(), np.zeros(4))


@pytest.mark.parametrize(
    ("normalization", "match"),
    [
        ({"mean": np.zeros(4)}, "needs a finite mean and std of 4 each"),
        ({"mean": np.zeros(3), "std": np.ones(4)}, "needs a finite mean and std of 4 each"),
        ({"mean": np.zeros(4), "std": np.array([1.0, 0.0, 1.0, 1.0])}, "feature 1 is not"),
    ],
)
def test_forward_rejects_bad_normalization(normalization: dict[str, Any], match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        ref.forward(_tiny_net(), np.zeros((2, 4)), normalization=normalization)


# --- forward_from_weights: the MLP and the CNN -----------------------------------------


@st.composite
def cnns(draw: st.DrawFn) -> tuple[NetConfig, dict[str, np.ndarray], np.ndarray]:
    """A random CNN config (channels, H, W, blocks, dense widths), its weights and a batch."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    blocks = draw(st.integers(1, 2))
    side = ref.POOL_SIZE**blocks  # the smallest H, W the blocks can pool
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(side, side + 7)),
        draw(st.integers(side, side + 7)),
    )
    channels = tuple(draw(st.lists(st.integers(1, 6), min_size=blocks, max_size=blocks)))
    hidden = tuple(draw(st.lists(st.integers(1, 8), max_size=2)))
    task = draw(st.sampled_from(["multiclass", "binary"]))
    classes = draw(st.integers(2, 5)) if task == "multiclass" else 2
    config = NetConfig(task, math.prod(shape), hidden, classes, "cnn", shape, channels)
    fan_in = {name: v.shape for name, v in build_net(config).state_dict().items()}
    weights = {
        name: rng.normal(0, 1 / np.sqrt(max(1, math.prod(dims[1:]))), dims)
        for name, dims in fan_in.items()
    }
    x = rng.normal(0, 1, (draw(st.integers(1, MAX_BATCH)), *shape))
    return config, weights, x


def torch_net(config: NetConfig, weights: dict[str, np.ndarray], dtype: torch.dtype) -> nn.Module:
    """onnxedge's torch net for ``config``, holding ``weights`` (cast to ``dtype``)."""
    net = build_net(config).to(dtype).eval()
    net.load_state_dict({k: torch.tensor(v, dtype=dtype) for k, v in weights.items()})
    return net


def assert_within_rounding(
    reference: np.ndarray, other: np.ndarray, magnitude: np.ndarray, dtype: Any
) -> None:
    """|reference - other| within the named dtype bar, relative to each logit's terms."""
    tol = close(dtype)
    bound = tol["rtol"] * magnitude + tol["atol"]
    assert reference.shape == other.shape
    assert np.all(np.abs(reference - other) <= bound), np.max(np.abs(reference - other) - bound)


@FORWARD_PROPERTY
@given(cnns())
def test_cnn_forward_matches_torch(
    net: tuple[NetConfig, dict[str, np.ndarray], np.ndarray],
) -> None:
    config, weights, x = net
    logits = ref.forward_from_weights(config, weights, x)
    assert logits.shape == (len(x), config.output_size) and logits.dtype == np.float64
    # the same pass on |weights| and |x| bounds the terms each logit sums (ReLU, max-pool
    # and the sums are monotone), so float rounding is measured against it
    magnitude = ref.forward_from_weights(
        config, {k: np.abs(v) for k, v in weights.items()}, np.abs(x)
    )
    with torch.no_grad():
        torch64 = torch_net(config, weights, torch.float64)(torch.from_numpy(x)).numpy()
        # float32 torch on the very same float32 values as the float64 reference
        w32 = {k: v.astype(np.float32) for k, v in weights.items()}
        x32 = x.astype(np.float32)
        torch32 = torch_net(config, w32, torch.float32)(torch.from_numpy(x32)).numpy()
    assert_within_rounding(logits, torch64, magnitude, np.float64)
    assert_within_rounding(
        ref.forward_from_weights(config, w32, x32), torch32, magnitude, np.float32
    )
    logits32 = ref.forward_from_weights(config, w32, x32, dtype=np.float32)
    assert logits32.dtype == np.float32
    assert_within_rounding(
        ref.forward_from_weights(config, w32, x32), logits32, magnitude, np.float32
    )


@FORWARD_PROPERTY
@given(mlps())
def test_forward_from_weights_of_an_mlp_is_the_mlp_forward(net: dict[str, Any]) -> None:
    weights, x = net["weights"], net["x"]
    hidden = tuple(len(weights[f"hidden.{i}.bias"]) for i in range(len(weights) // 2 - 1))
    outputs = len(weights["output.bias"])
    task, classes = ("binary", 2) if outputs == 1 else ("multiclass", outputs)
    assume(hidden)  # an onnxedge MLP has a hidden layer; ref.forward alone covers none
    config = NetConfig(task, x.shape[1], hidden, classes)
    logits = ref.forward_from_weights(config, weights, x)
    np.testing.assert_array_equal(logits, ref.forward(weights, x))
    with torch.no_grad():
        torch64 = torch_net(config, weights, torch.float64)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, torch64, **close(np.float64))


def _tiny_cnn() -> tuple[NetConfig, dict[str, np.ndarray]]:
    config = NetConfig("multiclass", 64, (), 3, "cnn", (1, 8, 8), (2,))
    rng = np.random.default_rng(0)
    return config, {k: rng.normal(size=v.shape) for k, v in build_net(config).state_dict().items()}


def test_cnn_forward_pools_the_conv_map_as_torch_does() -> None:
    # One 3x3 averaging kernel on an odd 5x7 image: the last row and column are dropped.
    config = NetConfig("binary", 35, (), 2, "cnn", (1, 5, 7), (1,))
    x = np.arange(35.0).reshape(1, 1, 5, 7) - 17
    weights = {
        "conv.0.weight": np.full((1, 1, 3, 3), 1 / 9),
        "conv.0.bias": np.zeros(1),
        "output.weight": np.eye(1, 6),  # reads the first pooled value only
        "output.bias": np.zeros(1),
    }
    conv = F.conv2d(torch.from_numpy(x), torch.from_numpy(weights["conv.0.weight"]), padding=1)
    expected = F.max_pool2d(torch.relu(conv), 2).flatten(1)[:, :1].numpy()
    np.testing.assert_allclose(
        ref.forward_from_weights(config, weights, x), expected, **close(np.float64)
    )


def test_forward_from_weights_names_the_expected_row_shape() -> None:
    config, weights = _tiny_cnn()
    with pytest.raises(InputShapeError) as caught:
        ref.forward_from_weights(config, weights, np.zeros((2, 1, 7, 8)))
    assert str(caught.value) == (
        "model expects rows of shape (1, 8, 8), input has (1, 7, 8) (x shape (2, 1, 7, 8))"
    )
    with pytest.raises(InputShapeError, match=r"input has \(2, 64\) \(x shape \(2, 64\)\)"):
        ref.forward_from_weights(config, weights, np.zeros((2, 64)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda w: w.pop("conv.0.bias"),
            "weights do not describe the CNN (conv.{i}.weight / .bias for i = 0..k-1, k >= 1): "
            "missing conv.0.bias",
        ),
        (
            lambda w: [w.pop("conv.0.weight"), w.pop("conv.0.bias")],
            "weights do not describe the CNN (conv.{i}.weight / .bias for i = 0..k-1, k >= 1): "
            "missing conv.0.weight, conv.0.bias",
        ),
        (
            lambda w: w.update({"conv.0.weight": np.zeros((2, 1, 2, 2))}),
            "conv.0.weight has shape (2, 1, 2, 2); expected (out, 1, k, k) with an odd k",
        ),
        (
            lambda w: w.update({"conv.0.bias": np.zeros(3)}),
            "conv.0.bias has shape (3,); conv.0.weight needs (2,)",
        ),
        (
            lambda w: w.update({"output.weight": np.zeros((3, 31))}),
            "output.weight reads 31 features but the conv blocks give 32 (2 x 4 x 4)",
        ),
    ],
)
def test_cnn_forward_names_bad_weights(change: Any, message: str) -> None:
    config, weights = _tiny_cnn()
    change(weights)
    with pytest.raises(CheckpointError) as caught:
        ref.forward_from_weights(config, weights, np.zeros((2, 1, 8, 8)))
    assert str(caught.value) == message


def test_cnn_pool_size_is_the_nets() -> None:
    from onnxedge.models import nets

    assert nets.CNN(_tiny_cnn()[0]).pool.kernel_size == ref.POOL_SIZE


# --- errors a caller can act on ------------------------------------------------------


def test_label_outside_the_classes_is_named() -> None:
    with pytest.raises(DataError, match=r"indices in 0\.\.2 \(3 classes\); 3 at index 1 is not"):
        ref.cross_entropy(np.zeros((2, 3)), [0, 3])


def test_fractional_label_is_refused() -> None:
    with pytest.raises(
        DataError, match=r"whole-number class indices in 0\.\.2 .*; 0\.5 at index 0"
    ):
        ref.cross_entropy(np.zeros((1, 3)), np.array([0.5]))


def test_target_of_neither_shape_is_refused() -> None:
    with pytest.raises(InputShapeError, match=r"expected \(2,\) .* or \(2, 3\)"):
        ref.cross_entropy(np.zeros((2, 3)), np.zeros(3, dtype=np.int64))


def test_logits_passed_as_probabilities_are_caught() -> None:
    with pytest.raises(DataError, match="were logits passed"):
        ref.cross_entropy_from_probabilities([1, 0, 0], [2.0, 1.0, 0.1])
    with pytest.raises(DataError, match="binary_cross_entropy_with_logits"):
        ref.binary_cross_entropy(np.array([3.0]), np.array([1.0]))


def test_binary_targets_outside_unit_interval_are_refused() -> None:
    with pytest.raises(DataError, match=r"y must hold values in \[0, 1\]"):
        ref.binary_cross_entropy_with_logits(np.zeros(2), np.array([0.0, 2.0]))


def test_a_scalar_outside_unit_interval_is_named_without_an_index() -> None:
    with pytest.raises(DataError) as caught:
        ref.binary_cross_entropy(1.5, 1.0)
    assert str(caught.value) == (
        "p must hold values in [0, 1]; 1 do not, the first is 1.5 (for logits use "
        "binary_cross_entropy_with_logits)"
    )
    with pytest.raises(DataError, match=r"the first is 2\.0 at index \[1, 0\]"):
        ref.binary_cross_entropy(np.array([[0.5], [2.0]]), np.ones((2, 1)))


def test_mismatched_binary_shapes_are_refused() -> None:
    with pytest.raises(InputShapeError, match=r"y has shape \(3,\); p has shape \(3, 1\)"):
        ref.binary_cross_entropy(np.full((3, 1), 0.5), np.zeros(3))


def test_mean_of_an_empty_batch_is_refused() -> None:
    with pytest.raises(InputShapeError, match="empty batch"):
        ref.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert ref.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), "sum") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: ref.cross_entropy(np.zeros((1, 2)), [0], "average"),
        lambda: ref.predict_proba(np.zeros((1, 2)), "softmx"),
        lambda: ref.predict_label(np.zeros((1, 1)), "sigmoid", threshold=1.5),
        lambda: ref.softmax(np.zeros(3), dtype=np.float16),
        lambda: ref.cross_entropy_from_probabilities([1], [1.0], eps=0.0),
    ],
)
def test_unknown_options_raise_value_error(call: Any) -> None:
    with pytest.raises(ValueError):
        call()
