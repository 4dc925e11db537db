"""The original notebook's own inputs and printed outputs, by torch and by the reference.

The notebook (``shared/seeds/000_a2201fb3aeb1640f.txt``: softmax and cross-entropy with
numpy and torch, then the two nets) printed each figure once; every line it printed is
asserted here as the same text, from torch run as the notebook ran it (float32 tensors)
and from the numpy reference. The reference computes in float64, so its figures equal the
notebook's to the precision the notebook printed them (4 or 8 decimals), and torch's
float32 losses (printed as 17-digit floats) within REFERENCE_FLOAT32_* of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnxedge.models import reference as ref
from onnxedge.models.nets import BinclassNN, MulticlassNN
from onnxedge.runtime.tolerances import (
    PROBABILITY_SUM_ATOL,
    REFERENCE_FLOAT32_ATOL,
    REFERENCE_FLOAT32_RTOL,
)
from torch import nn

# In [7] / In [8]
SOFTMAX_INPUT = [2.0, 1.0, 0.1, 1.2]
SOFTMAX_NUMPY_PRINTED = "softmax numpy:  [0.50844605 0.18704685 0.07604757 0.22845953]"
SOFTMAX_TORCH_PRINTED = "softmax torch:  tensor([0.5084, 0.1870, 0.0760, 0.2285])"

# In [12] / In [13]: class 0 as one-hot, a good and a bad prediction (probabilities)
Y = [1, 0, 0]
Y_PRED_GOOD, Y_PRED_BAD = [0.8, 0.4, 0.1], [0.2, 0.9, 0.1]
NUMPY_LOSS_PRINTED = "loss 1 numpy: 0.2231 \nloss 2 numpy: 1.6094"

# In [None]..In [19]: (targets, good logits, bad logits, the loss line, the prediction line)
TORCH_CASES = [
    pytest.param(
        [0],
        [[2.0, 1.0, 0.1]],
        [[0.2, 2.0, 0.1]],
        "Loss 1: 0.4170299470424652, Loss 2: 2.0737359523773193",
        "prediction 1: tensor([0]), prediction 2: tensor([1])",
        id="one-sample",
    ),
    pytest.param(
        [2, 0, 1],
        [[1.0, 0.1, 2.1], [2.0, 1.0, 0.1], [1.0, 2.0, 0.1]],
        [[0.2, 2.0, 0.1], [0.2, 2.0, 0.1], [1.2, 0.1, 0.1]],
        "Loss 1: 0.40603378415107727, Loss 2: 1.9525808095932007",
        "prediction 1: tensor([2, 0, 1]), prediction 2: tensor([1, 1, 0])",
        id="three-samples",
    ),
]


def notebook_softmax(x: np.ndarray) -> np.ndarray:
    """The notebook's softmax, exactly as written there."""
    return np.exp(x) / np.sum(np.exp(x), axis=0)


def notebook_cross_entropy(actual: np.ndarray, predicted: np.ndarray) -> float:
    """The notebook's numpy cross-entropy, exactly as written there."""
    return float(-np.sum(actual * np.log(predicted)))


def test_softmax_prints_the_notebooks_lines() -> None:
    x = np.array(SOFTMAX_INPUT)
    assert f"softmax numpy:  {notebook_softmax(x)}" == SOFTMAX_NUMPY_PRINTED
    assert f"softmax numpy:  {ref.softmax(x)}" == SOFTMAX_NUMPY_PRINTED
    output = torch.softmax(torch.tensor(SOFTMAX_INPUT), dim=0)
    assert f"softmax torch:  {output}" == SOFTMAX_TORCH_PRINTED
    # the reference at the torch line's 4 decimals
    printed = SOFTMAX_TORCH_PRINTED.split("[")[1].split("]")[0].split(", ")
    assert [f"{p:.4f}" for p in ref.softmax(x)] == printed


def test_numpy_cross_entropy_prints_the_notebooks_lines() -> None:
    y = np.array(Y)
    losses = {
        "notebook": [notebook_cross_entropy(y, np.array(p)) for p in (Y_PRED_GOOD, Y_PRED_BAD)],
        "reference": [
            float(ref.cross_entropy_from_probabilities(y, p)) for p in (Y_PRED_GOOD, Y_PRED_BAD)
        ],
        # torch: negative log-likelihood of class 0 under log(p)
        "torch": [
            nn.NLLLoss()(
                torch.log(torch.tensor([p], dtype=torch.float64)), torch.tensor([0])
            ).item()
            for p in (Y_PRED_GOOD, Y_PRED_BAD)
        ],
    }
    for name, (l1, l2) in losses.items():
        assert f"loss 1 numpy: {l1:.4f} \nloss 2 numpy: {l2:.4f}" == NUMPY_LOSS_PRINTED, name


@pytest.mark.parametrize(("targets", "good", "bad", "loss_line", "prediction_line"), TORCH_CASES)
def test_cross_entropy_prints_the_notebooks_lines(
    targets: list[int],
    good: list[list[float]],
    bad: list[list[float]],
    loss_line: str,
    prediction_line: str,
) -> None:
    loss = nn.CrossEntropyLoss()
    y, y_pred_good, y_pred_bad = torch.tensor(targets), torch.tensor(good), torch.tensor(bad)
    l1, l2 = loss(y_pred_good, y), loss(y_pred_bad, y)
    assert f"Loss 1: {l1.item()}, Loss 2: {l2.item()}" == loss_line
    _, predictions1 = torch.max(y_pred_good, 1)
    _, predictions2 = torch.max(y_pred_bad, 1)
    assert f"prediction 1: {predictions1}, prediction 2: {predictions2}" == prediction_line

    # The reference on the float32 logits torch saw, in float64.
    printed = [float(part.split(": ")[1]) for part in loss_line.split(", ")]
    r1, r2 = (ref.cross_entropy(t.numpy(), targets) for t in (y_pred_good, y_pred_bad))
    np.testing.assert_allclose(
        [r1, r2], printed, rtol=REFERENCE_FLOAT32_RTOL, atol=REFERENCE_FLOAT32_ATOL
    )
    assert [f"{r:.4f}" for r in (r1, r2)] == [f"{p:.4f}" for p in printed]
    p1, p2 = (
        ref.predict_label(ref.predict_proba(t.numpy(), "softmax"), "softmax").tolist()
        for t in (y_pred_good, y_pred_bad)
    )
    assert f"prediction 1: tensor({p1}), prediction 2: tensor({p2})" == prediction_line


def test_the_notebooks_nets_and_criteria_at_its_sizes() -> None:
    # In [21] / In [26]: MulticlassNN(28*28, 5, 3) with CrossEntropyLoss, BinclassNN(28*28, 5)
    # with BCELoss on its sigmoid (the notebook's forward applied it; ours leaves it to
    # the head and returns the logit).
    torch.manual_seed(0)
    x = torch.rand(4, 28 * 28)
    multiclass = MulticlassNN(input_size=28 * 28, hidden_size=5, num_classes=3)
    binary = BinclassNN(input_size=28 * 28, hidden_size=5)
    with torch.no_grad():
        logits, logit = multiclass(x), binary(x)
    assert logits.shape == (4, 3) and logit.shape == (4, 1)
    y3, y2 = torch.tensor([0, 2, 1, 2]), torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    np.testing.assert_allclose(
        nn.CrossEntropyLoss()(logits, y3).item(),
        ref.cross_entropy(logits.numpy(), y3.numpy()),
        rtol=REFERENCE_FLOAT32_RTOL,
        atol=REFERENCE_FLOAT32_ATOL,
    )
    np.testing.assert_allclose(
        nn.BCELoss()(torch.sigmoid(logit), y2).item(),
        ref.binary_cross_entropy(ref.sigmoid(logit.numpy()), y2.numpy()),
        rtol=REFERENCE_FLOAT32_RTOL,
        atol=REFERENCE_FLOAT32_ATOL,
    )


def test_naive_softmax_overflows_in_float32_and_ours_does_not() -> None:
    # exp overflows float32 past ~88.7: the notebook's form becomes inf / inf = nan.
    x = np.array([89.0, 1.0, 0.1], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = notebook_softmax(x)
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
