"""The original notebook's printed numbers, reproduced by torch and by the reference.

The notebook (after Patrick Loeber's PyTorch tutorial on softmax and cross-entropy)
printed its figures with a fixed number of decimals; each is asserted here as the same
string. The torch figures with 7 decimals are what float32 torch prints; the float64
reference matches them to the 4 decimals the tutorial prints and within the
float32-vs-float64 tolerance beyond that.

Inputs and the figures they really give (checked with torch 2.13 and the reference):

- one sample, target [0]: good logits [[2.0, 1.0, 0.1]] -> 0.4170299; bad logits
  [[0.2, 2.0, 0.1]] -> 2.0737360 (the tutorial's own bad logits [[0.5, 2.0, 0.3]] give
  1.8406162).
- three samples, targets [2, 0, 1]: the tutorial's good logits -> 0.2834222 and bad
  logits -> 1.6418449, predicted labels [2, 0, 1] and [0, 2, 0].
- numpy, Y = [1, 0, 0]: [0.7, 0.2, 0.1] -> 0.3567 and [0.1, 0.3, 0.6] -> 2.3026, i.e.
  -log(0.7) and -log(0.1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxedge.models import reference as ref
from onnxedge.runtime.tolerances import (
    PROBABILITY_SUM_ATOL,
    REFERENCE_FLOAT32_ATOL,
    REFERENCE_FLOAT32_RTOL,
)
from torch import nn

SOFTMAX_INPUT = [2.0, 1.0, 0.1, 1.2]
SOFTMAX_PRINTED = ["0.50844605", "0.18704685", "0.07604757", "0.22845953"]

Y_ONE_HOT = [1, 0, 0]
NUMPY_CASES = [
    pytest.param([0.7, 0.2, 0.1], "0.3567", id="good"),
    pytest.param([0.1, 0.3, 0.6], "2.3026", id="bad"),
]

# (logits, targets, loss as float32 torch prints it with 7 decimals, argmax labels)
TORCH_CASES = [
    pytest.param([[2.0, 1.0, 0.1]], [0], "0.4170299", [0], id="one-sample-good"),
    pytest.param([[0.2, 2.0, 0.1]], [0], "2.0737360", [1], id="one-sample-bad"),
    pytest.param([[0.5, 2.0, 0.3]], [0], "1.8406162", [1], id="one-sample-bad-tutorial"),
    pytest.param(
        [[0.1, 0.2, 3.9], [1.2, 0.1, 0.3], [0.3, 2.2, 0.2]],
        [2, 0, 1],
        "0.2834222",
        [2, 0, 1],
        id="three-samples-good",
    ),
    pytest.param(
        [[0.9, 0.2, 0.1], [0.1, 0.3, 1.5], [1.2, 0.2, 0.5]],
        [2, 0, 1],
        "1.6418449",
        [0, 2, 0],
        id="three-samples-bad",
    ),
]


def naive_softmax(x: np.ndarray) -> np.ndarray:
    """The notebook's softmax, exactly as written there."""
    return np.exp(x) / np.sum(np.exp(x))


def notebook_cross_entropy(actual: np.ndarray, predicted: np.ndarray) -> float:
    """The notebook's numpy cross-entropy, exactly as written there."""
    return float(-np.sum(actual * np.log(predicted)))


def test_softmax_prints_the_notebooks_numbers() -> None:
    x = np.array(SOFTMAX_INPUT)
    for name, probabilities in [
        ("reference", ref.softmax(x)),
        ("notebook", naive_softmax(x)),
        ("torch", torch.softmax(torch.tensor(SOFTMAX_INPUT, dtype=torch.float64), 0).numpy()),
    ]:
        assert [f"{p:.8f}" for p in probabilities] == SOFTMAX_PRINTED, name


@pytest.mark.parametrize(("predicted", "printed"), NUMPY_CASES)
def test_numpy_cross_entropy_prints_the_notebooks_numbers(
    predicted: list[float], printed: str
) -> None:
    y, p = np.array(Y_ONE_HOT), np.array(predicted)
    assert f"{notebook_cross_entropy(y, p):.4f}" == printed
    assert f"{ref.cross_entropy_from_probabilities(y, p):.4f}" == printed
    # the same sample given as a class index instead of one-hot
    assert f"{ref.cross_entropy_from_probabilities(0, p):.4f}" == printed


@pytest.mark.parametrize(("logits", "targets", "printed", "labels"), TORCH_CASES)
def test_cross_entropy_prints_the_notebooks_numbers(
    logits: list[list[float]], targets: list[int], printed: str, labels: list[int]
) -> None:
    x, t = torch.tensor(logits), torch.tensor(targets)  # float32, as in the notebook
    torch_loss = nn.CrossEntropyLoss()(x, t).item()
    assert f"{torch_loss:.7f}" == printed

    reference_loss = ref.cross_entropy(np.array(logits), np.array(targets))
    assert f"{reference_loss:.4f}" == f"{float(printed):.4f}"  # the tutorial's .4f print
    np.testing.assert_allclose(
        reference_loss, float(printed), rtol=REFERENCE_FLOAT32_RTOL, atol=REFERENCE_FLOAT32_ATOL
    )

    _, torch_labels = torch.max(x, 1)
    assert torch_labels.tolist() == labels
    probabilities = ref.predict_proba(np.array(logits), "softmax")
    assert ref.predict_label(probabilities, "softmax").tolist() == labels


def test_naive_softmax_overflows_in_float32_and_ours_does_not() -> None:
    # exp overflows float32 past ~88.7: the notebook's form becomes inf / inf = nan.
    x = np.array([89.0, 1.0, 0.1], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = naive_softmax(x)
    assert np.isnan(naive).any()

    ours = ref.softmax(x, dtype=np.float32)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours.sum(), 1.0, rtol=0, atol=PROBABILITY_SUM_ATOL)
    np.testing.assert_allclose(
        ours,
        torch.softmax(torch.from_numpy(x), 0).numpy(),
        rtol=REFERENCE_FLOAT32_RTOL,
        atol=REFERENCE_FLOAT32_ATOL,
    )
