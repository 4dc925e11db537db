"""The head module: choice validation, and its outputs against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxedge.export.heads import DEFAULT_THRESHOLD, HeadSpec, resolve_head
from onnxedge.export.onnx_export import ClassifierWithHead
from onnxedge.models import reference
from onnxedge.models.nets import NetConfig, build_net
from onnxedge.models.preprocess import Standardize
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.errors import ExportError

MULTICLASS = NetConfig("multiclass", 4, (8,), 3)
BINARY = NetConfig("binary", 4, (8,), 2)


def test_auto_follows_the_task() -> None:
    assert resolve_head(MULTICLASS) == HeadSpec("softmax", DEFAULT_THRESHOLD)
    assert resolve_head(BINARY) == HeadSpec("sigmoid", DEFAULT_THRESHOLD)
    assert resolve_head(BINARY, "sigmoid", 0.3) == HeadSpec("sigmoid", 0.3)


@pytest.mark.parametrize(
    ("config", "head", "threshold", "message"),
    [
        (
            MULTICLASS,
            "sigmoid",
            None,
            "head sigmoid does not fit this multiclass net (3 logits, 3 classes); "
            "use --head softmax or --head auto",
        ),
        (
            BINARY,
            "softmax",
            None,
            "head softmax does not fit this binary net (1 logit, 2 classes); "
            "use --head sigmoid or --head auto",
        ),
        (BINARY, "none", None, "unknown head 'none'; expected one of auto, softmax, sigmoid"),
        (
            MULTICLASS,
            "auto",
            0.3,
            "a threshold (0.3) applies to the sigmoid head only; the softmax head labels each "
            "row with its most probable class",
        ),
        (BINARY, "auto", 1.0, "threshold must lie strictly between 0 and 1, got 1.0"),
        (BINARY, "auto", float("nan"), "threshold must lie strictly between 0 and 1, got nan"),
    ],
)
def test_bad_head_choices_say_what_fits(
    config: NetConfig, head: str, threshold: float | None, message: str
) -> None:
    with pytest.raises(ExportError) as info:
        resolve_head(config, head, threshold)
    assert str(info.value) == message


def _module(config: NetConfig, threshold: float = DEFAULT_THRESHOLD) -> ClassifierWithHead:
    torch.manual_seed(0)
    net = build_net(config).eval()
    rng = np.random.default_rng(0)
    normalization = Standardize(
        mean=rng.normal(size=config.input_size).astype(np.float32) * 10,
        std=rng.uniform(0.5, 5, size=config.input_size).astype(np.float32),
    )
    spec = resolve_head(config, threshold=None if config.task == "multiclass" else threshold)
    return ClassifierWithHead(net, normalization, spec).eval()


def _weights(module: ClassifierWithHead) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.net.state_dict().items()}


def _normalization(module: ClassifierWithHead) -> dict[str, np.ndarray]:
    assert module.preprocess is not None
    return {"mean": module.preprocess.mean.numpy(), "std": module.preprocess.std.numpy()}


@pytest.mark.parametrize("config", [MULTICLASS, BINARY], ids=["softmax", "sigmoid"])
def test_head_module_matches_the_reference(config: NetConfig) -> None:
    module = _module(config, threshold=0.4)
    x = np.random.default_rng(1).normal(scale=20, size=(50, config.input_size)).astype(np.float32)
    with torch.inference_mode():
        logits, probabilities, label = (t.numpy() for t in module(torch.from_numpy(x)))
    expected_logits = reference.forward(_weights(module), x, normalization=_normalization(module))
    np.testing.assert_allclose(
        logits, expected_logits, rtol=tol.REFERENCE_FLOAT32_RTOL, atol=tol.LOGIT_ATOL
    )
    expected_p = reference.predict_proba(expected_logits, module.head)
    np.testing.assert_allclose(probabilities, expected_p, rtol=0, atol=tol.PROBABILITY_ATOL)
    assert probabilities.shape == (50, config.output_size)
    assert label.dtype == np.int64 and label.shape == (50,)
    np.testing.assert_array_equal(
        label, reference.predict_label(probabilities, module.head, module.threshold)
    )


def test_sigmoid_label_uses_the_threshold() -> None:
    module = _module(BINARY, threshold=0.8)
    x = np.random.default_rng(2).normal(scale=20, size=(200, 4)).astype(np.float32)
    with torch.inference_mode():
        _, probabilities, label = module(torch.from_numpy(x))
    np.testing.assert_array_equal(label.numpy(), (probabilities[:, 0] >= 0.8).long().numpy())
    assert 0 < int(label.sum()) < int((probabilities[:, 0] >= 0.5).sum())


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(min_value=1.0, max_value=1e6),
    seed=st.integers(min_value=0, max_value=2**16),
    binary=st.booleans(),
)
def test_head_stays_finite_and_normalized_for_huge_inputs(
    scale: float, seed: int, binary: bool
) -> None:
    module = _module(BINARY if binary else MULTICLASS)
    x = (np.random.default_rng(seed).normal(size=(16, 4)) * scale).astype(np.float32)
    with torch.inference_mode():
        logits, probabilities, _ = (t.numpy() for t in module(torch.from_numpy(x)))
    assert np.isfinite(logits).all() and np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    # the graph's head against the reference head on the same float32 logits
    expected = reference.predict_proba(logits, module.head)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=tol.PROBABILITY_ATOL)
    if not binary:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=tol.PROBABILITY_SUM_ATOL)
