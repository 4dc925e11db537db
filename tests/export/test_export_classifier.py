"""export_classifier on users' own modules: round trips, tampering, shapes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from onnxedge.export import Rescale, Standardize, export_classifier, verify_model
from onnxedge.export.compare import compare
from onnxedge.models import reference
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.cli import cli
from onnxedge.runtime.contract import (
    BATCH_AXIS,
    GOLDEN_MAX_ROWS,
    GOLDEN_MIN_ROWS,
    INPUT_NAME,
    KEY_GOLDEN,
    OUTPUT_NAMES,
    ModelContract,
)
from onnxedge.runtime.errors import ExportError, InputShapeError
from torch import nn


def _cnn(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def _mlp_bn(classes: int) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, classes)
    )
    net.train()
    with torch.no_grad():  # running statistics that differ from (0, 1)
        net(torch.randn(64, 6) * 3 + 1)
    return net


def _sequential(classes: int) -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, classes))


CASES = {
    "cnn": (_cnn, (1, 8, 8), Rescale(1 / 16)),
    "mlp-batchnorm-dropout": (
        _mlp_bn,
        (6,),
        Standardize(
            np.linspace(-5, 5, 6, dtype=np.float32), np.linspace(1, 3, 6, dtype=np.float32)
        ),
    ),
    "sequential": (_sequential, (4,), None),
}


def _rows(shape: tuple[int, ...], step: object, n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(5)
    if isinstance(step, Rescale):
        return rng.integers(0, 17, size=(n, *shape)).astype(np.float32)
    return (rng.normal(size=(n, *shape)) * 3).astype(np.float32)


@pytest.mark.parametrize("classes", [3, 1], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip(case: str, classes: int, tmp_path: Path) -> None:
    build, shape, step = CASES[case]
    module = build(classes)
    x = _rows(shape, step)
    y = np.arange(len(x)) % max(classes, 2)
    out = tmp_path / f"{case}.onnx"
    result = export_classifier(module, out, input_shape=shape, preprocess=step, verify_data=(x, y))
    assert result.report is not None and result.report.passed, result.report.failures
    assert result.head == ("softmax" if classes > 1 else "sigmoid")
    assert result.report.computations["torch"].startswith("the given module (Sequential)")
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    assert contract.input_shape == shape
    assert contract.preprocess == (step.to_dict() if step is not None else None)
    # an independent computation: the user's module in float64 on fresh rows of any batch
    fresh = _rows(shape, step, 7) + 0.5
    logits, p, label = ort.InferenceSession(str(out)).run(None, {INPUT_NAME: fresh})
    with torch.inference_mode():
        pre = step.apply(fresh) if step is not None else fresh
        expected = module.double()(torch.from_numpy(pre.astype(np.float64))).numpy()
    module.float()
    np.testing.assert_allclose(
        logits, expected, rtol=tol.REFERENCE_FLOAT32_RTOL, atol=tol.LOGIT_ATOL
    )
    np.testing.assert_allclose(
        p, reference.predict_proba(expected, result.head), rtol=0, atol=tol.PROBABILITY_ATOL
    )
    assert label.shape == (7,)


def test_the_golden_set_reproduces_on_onnxruntime(tmp_path: Path) -> None:
    out = tmp_path / "cnn.onnx"
    export_classifier(_cnn(10), out, input_shape=(1, 8, 8), preprocess=Rescale(1 / 16))
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    golden = json.loads(props[KEY_GOLDEN])
    rows = np.asarray(golden["rows"], np.float32).reshape(-1, 1, 8, 8)
    assert GOLDEN_MIN_ROWS <= len(rows) <= GOLDEN_MAX_ROWS
    logits, p, label = ort.InferenceSession(str(out)).run(None, {INPUT_NAME: rows})
    checks = compare(
        {
            "logits": np.asarray(golden["logits"]),
            "probabilities": np.asarray(golden["probabilities"]),
        },
        {"logits": logits, "probabilities": p},
        golden["tolerances"],
    )
    assert [c.name for c in checks if c.passed] == ["logits", "probabilities"]
    np.testing.assert_array_equal(label, golden["labels"])


def test_a_weight_tampered_in_the_middle_of_the_cnn_fails(tmp_path: Path) -> None:
    module = _cnn(10)
    out = tmp_path / "cnn.onnx"
    export_classifier(module, out, input_shape=(1, 8, 8), preprocess=Rescale(1 / 16))
    model = onnx.load(str(out))
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == "net.2.weight":  # the second conv: the middle of the net
            array = numpy_helper.to_array(tensor).copy()
            array[0, 0, 1, 1] += 0.5
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    report = verify_model(tampered, _rows((1, 8, 8), Rescale(1 / 16)), module)
    failed = {f.split(":")[0] for f in report.failures}
    assert "graph_weights_sha256" in failed
    assert any(f.startswith("logits onnxruntime~torch batch=") for f in failed)
    # onnx.reference runs the same (tampered) graph: it agrees with onnxruntime
    assert not any(f.startswith("logits onnxruntime~reference") for f in failed)
    # the first node (graph order) that breaks its tolerance is the tampered conv
    where = report.localization
    assert where is not None and where["against"] == "torch forward hooks by module path"
    assert (where["op_type"], where["module"]) == ("Conv", "net.2")
    assert where["max_abs"] > where["limit"]
    assert "first diverging node: " in report.render_table()
    # a passing model, forced: nothing diverges among the nodes compared
    clean = verify_model(out, _rows((1, 8, 8), Rescale(1 / 16)), module, localize=True)
    assert clean.passed and clean.localization is not None
    assert clean.localization["node"] is None and clean.localization["compared"] >= 5


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 9)),
        st.tuples(st.integers(1, 3), st.integers(2, 6), st.integers(2, 6)),
    ),
    classes=st.sampled_from([1, 2, 5]),
    batch=st.integers(2, 9),
)
def test_any_row_shape_and_batch_size(
    shape: tuple[int, ...], classes: int, batch: int, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    width = int(np.prod(shape))
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(width, classes)]
    if len(shape) == 3:
        layers = [
            nn.Conv2d(shape[0], 2, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width // shape[0], classes),
        ]
    out = tmp_path / f"m{'x'.join(map(str, shape))}_{classes}.onnx"
    result = export_classifier(
        nn.Sequential(*layers), out, input_shape=shape, batch_sizes=(1, batch), overwrite=True
    )
    assert result.report is not None and result.report.passed, result.report.failures
    assert result.report.batch_sizes == [1, batch]


# --- bad input: one Error line naming expected vs got, no file ----------------------------


class _Returns(nn.Module):
    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.linear(x))  # type: ignore[operator, no-any-return]


@pytest.mark.parametrize(
    ("module", "kwargs", "error", "message"),
    [
        (
            _Returns(lambda z: z.reshape(len(z), 3, 1)),
            {},
            ExportError,
            "the module must return logits of shape (batch, classes) or (batch, 1); for a "
            "batch of shape (256, 4) it returned (256, 3, 1)",
        ),
        (
            nn.Linear(6, 3),
            {},
            ExportError,
            "the module rejects rows of input_shape (4,) (a batch of shape (256, 4)): "
            "RuntimeError: mat1 and mat2 shapes cannot be multiplied (256x4 and 6x3)",
        ),
        (
            _Returns(lambda z: z * float("nan")),
            {},
            ExportError,
            "the module's logits hold NaN / Inf on 256 of 256 check rows",
        ),
        (
            nn.Linear(4, 3),
            {"verify_data": (np.zeros((10, 5), np.float32), np.zeros(10))},
            InputShapeError,
            "verify_data must hold rows of shape (4,); got an array of shape (10, 5)",
        ),
        (
            nn.Linear(4, 3),
            {"verify_data": (np.zeros((10, 4), np.float32), np.zeros(9))},
            InputShapeError,
            "verify_data labels must have shape (10,), got (9,)",
        ),
        (
            nn.Linear(4, 3),
            {"head": "sigmoid"},
            ExportError,
            "head sigmoid does not fit this multiclass net (3 logits, 3 classes); "
            "use --head softmax or --head auto",
        ),
        (
            nn.Linear(4, 1),
            {"head": "softmax"},
            ExportError,
            "head softmax does not fit this binary net (1 logit, 2 classes); "
            "use --head sigmoid or --head auto",
        ),
        (
            nn.Linear(4, 3),
            {"class_names": ["a", "b"]},
            ExportError,
            "class_names has 2 names; 3 logits make 3 classes",
        ),
    ],
)
def test_bad_input_is_one_error_and_no_file(
    module: nn.Module,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
    tmp_path: Path,
) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(error) as caught:
        export_classifier(module, out, input_shape=(4,), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_file_where_a_run_folder_belongs(tmp_path: Path) -> None:
    weights = tmp_path / "cnn.pt"
    weights.write_bytes(b"not a run folder")
    result = CliRunner().invoke(cli, ["export", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {weights} is a file; onnxedge export takes a run folder (what onnxedge train "
        "writes); export your own module with onnxedge.export.export_classifier\n"
    )
