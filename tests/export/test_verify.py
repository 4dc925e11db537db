"""Parity verification: the three computations, tampering, no-data runs, plain models."""

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
from onnx import TensorProto, helper, numpy_helper
from onnxedge.export.compare import compare
from onnxedge.export.verify import (
    ODD_BATCH_SIZE,
    SHOWN_FAILURES,
    LocalizationError,
    first_diverging_node,
    graph_weights_sha256,
    verify_model,
)
from onnxedge.models import reference
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.cli import cli
from onnxedge.runtime.contract import INPUT_NAME, KEY_PREPROCESS, KEY_THRESHOLD
from onnxedge.runtime.errors import DataError, ModelLoadError
from sklearn.metrics import log_loss
from torch import nn

from tests.export.tiny_models import TinyModel


def _verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", *args])
    return result.exit_code, result.output


def _edit(
    model_path: Path,
    out: Path,
    *,
    initializer: str | None = None,
    props: dict[str, str] | None = None,
) -> Path:
    """A copy of the model with one weight changed and / or metadata entries replaced."""
    model = onnx.load(str(model_path))
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == initializer:
            array = numpy_helper.to_array(tensor).copy()
            array.flat[0] += 1.0
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    for prop in model.metadata_props:
        if props and prop.key in props:
            prop.value = props[prop.key]
    onnx.save(model, str(out))
    return out


def test_the_run_is_compared_with_the_file_and_the_numpy_forward(tiny: TinyModel) -> None:
    report = verify_model(tiny.model, run_dir=tiny.run_dir)
    assert report.passed, report.failures
    assert report.computations["torch"] == f"the run's own module ({tiny.run.path})"
    assert report.computations["reference"] == "numpy forward from the ONNX initializers (mlp)"
    assert report.batch_sizes == [1, ODD_BATCH_SIZE, report.rows]
    subjects = {(c.name, c.subject) for c in report.checks}
    for pair in ("onnxruntime~torch", "onnxruntime~reference", "torch~reference"):
        assert {("logits", pair), ("probabilities", pair), ("label", pair)} <= subjects
    # the numpy head on each float32 computation's own logits
    for comp in ("onnxruntime", "torch"):
        assert ("probabilities", f"numpy-head~{comp}") in subjects
        assert ("loss", f"{comp} logits~probabilities") in subjects
    assert "torch from onnx" not in report.render_table()


def test_accuracy_and_loss_match_an_independent_computation(tiny: TinyModel) -> None:
    report = verify_model(tiny.model, run_dir=tiny.run_dir)
    x, y = tiny.run.validation()
    _, p, label = ort.InferenceSession(str(tiny.model)).run(None, {INPUT_NAME: x})
    assert report.accuracy["onnxruntime"] == float(np.mean(label == y))
    proba = p if p.shape[1] > 1 else np.hstack([1 - p, p])
    expected = log_loss(y, proba.astype(np.float64), labels=list(range(proba.shape[1])))
    got = report.losses[report.rows]["onnxruntime"]
    assert abs(got - expected) <= tol.LOSS_ATOL + tol.REFERENCE_FLOAT32_RTOL * expected


def test_a_changed_weight_fails_the_comparisons_with_the_run(
    tiny: TinyModel, tmp_path: Path
) -> None:
    tampered = _edit(tiny.model, tmp_path / "tampered.onnx", initializer="net.output.weight")
    report_path = tmp_path / "report.json"
    code, output = _verify(str(tampered), "--run", str(tiny.run_dir), "--report", str(report_path))
    assert code == 1
    report = json.loads(report_path.read_text())
    failed = {c["check"] for c in report["checks"] if not c["passed"]}
    sizes = report["summary"]["batch_sizes"]
    assert "graph_weights_sha256" in failed
    assert {f"logits onnxruntime~torch batch={b}" for b in sizes} <= failed
    assert {f"probabilities onnxruntime~torch batch={b}" for b in sizes} <= failed
    # the numpy forward reads the same (changed) weights as onnxruntime: those agree
    assert not any(c.startswith("logits onnxruntime~reference") for c in failed)
    error_line = output.strip().splitlines()[-1]
    # the first node whose output breaks its tolerance is the tampered layer's
    assert error_line.startswith(
        f"Error: {tampered} failed {len(failed)} parity checks (first diverging node: "
    )
    assert ", Gemm, module net.output): " in error_line
    # one readable line: the first SHOWN_FAILURES checks, then how many more the table lists
    assert len(failed) > SHOWN_FAILURES
    assert error_line.endswith(f"; and {len(failed) - SHOWN_FAILURES} more")


def test_a_changed_weight_is_caught_without_the_run(tiny: TinyModel, tmp_path: Path) -> None:
    tampered = _edit(tiny.model, tmp_path / "tampered.onnx", initializer="net.hidden.0.bias")
    code, output = _verify(str(tampered), "--dataset", str(tiny.data))
    assert code == 1
    recorded = {p.key: p.value for p in onnx.load(str(tiny.model)).metadata_props}
    assert output.strip().splitlines()[-1] == (
        f"Error: {tampered} failed 1 parity check: graph_weights_sha256: the graph's "
        f"initializers hash to {graph_weights_sha256(onnx.load(str(tampered)))[:12]}..., "
        f"export recorded {recorded['onnxedge.graph_weights_sha256'][:12]}... "
        "(a weight or constant was changed after export)"
    )


def test_metadata_that_disagrees_with_the_graph(binary: TinyModel, tmp_path: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(binary.model)).metadata_props}
    step = json.loads(props[KEY_PREPROCESS])
    step["std"][0] *= 2
    edited = _edit(
        binary.model,
        tmp_path / "edited.onnx",
        props={KEY_THRESHOLD: "0.999", KEY_PREPROCESS: json.dumps(step)},
    )
    failed = {f.split(":")[0] for f in verify_model(edited, run_dir=binary.run_dir).failures}
    assert "preprocess metadata~graph" in failed
    # the graph still labels at 0.5; the metadata now promises 0.999
    assert any(f.startswith("label numpy-head~onnxruntime") for f in failed)


def test_no_data_argument_draws_rows_from_the_recorded_preprocessing(tiny: TinyModel) -> None:
    code, output = _verify(str(tiny.model))
    assert code == 0, output
    assert (
        "256 synthetic rows drawn from the recorded standardize preprocessing, labelled by "
        in output
    )
    assert "torch:" not in output  # no module at hand: no torch comparison is claimed
    code, output = _verify(str(tiny.model), "--localize")
    assert code == 0 and "against onnx.reference on the same graph" in output


def test_cli_json_and_report(binary: TinyModel, tmp_path: Path) -> None:
    report_path = tmp_path / "r" / "parity.json"
    code, output = _verify(
        str(binary.model), "--run", str(binary.run_dir), "--json", "--report", str(report_path)
    )
    assert code == 0
    printed = json.loads(output)
    assert printed["passed"] is True
    assert json.loads(report_path.read_text())["summary"] == printed["summary"]


def test_cli_wrong_row_shape(binary: TinyModel, multiclass: TinyModel) -> None:
    code, output = _verify(str(binary.model), "--dataset", str(multiclass.data))
    assert code == 1
    assert output == (
        f"Error: the model expects rows of shape (5,); dataset {multiclass.data.name} has "
        "rows of shape (6,)\n"
    )


def test_cli_missing_model(tmp_path: Path) -> None:
    code, output = _verify(str(tmp_path / "nope.onnx"), "--dataset", "digits")
    assert code == 1
    assert output == f"Error: model {tmp_path / 'nope.onnx'} does not exist\n"


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a model")
    with pytest.raises(ModelLoadError, match=f"cannot read {bad} as ONNX"):
        verify_model(bad, dataset="digits")


def test_dataset_classes_the_model_does_not_know(binary: TinyModel, tmp_path: Path) -> None:
    x, _ = binary.run.validation()
    lines = [
        ",".join(f"{v:.6f}" for v in row) + f",{c}" for row, c in zip(x[:6], "cccccd", strict=True)
    ]
    csv = tmp_path / "other.csv"
    csv.write_text(",".join(f"f{i}" for i in range(5)) + ",label\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"dataset other.csv has classes the model does not know"):
        verify_model(binary.model, dataset=csv)


def test_small_sets_clamp_the_batch_sizes(binary: TinyModel) -> None:
    x, y = binary.run.validation()
    report = verify_model(binary.model, (x[:5], y[:5]), run_dir=binary.run)
    assert report.passed and report.batch_sizes == [1, 5]


@pytest.mark.slow
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scale=st.sampled_from([1e1, 1e2, 1e3]),
    sign=st.sampled_from([1.0, -1.0]),
    seed=st.integers(0, 1000),
)
def test_extreme_inputs_stay_finite_and_match(
    multiclass: TinyModel, binary: TinyModel, scale: float, sign: float, seed: int
) -> None:
    for tiny in (multiclass, binary):
        x, y = tiny.run.validation()
        rng = np.random.default_rng(seed)
        extreme = (x * sign * scale * rng.uniform(0.5, 1.0, size=x.shape)).astype(np.float32)
        report = verify_model(
            tiny.model, (extreme, y), run_dir=tiny.run, batch_sizes=(ODD_BATCH_SIZE, len(y))
        )
        assert report.passed, report.failures


def _plain_model(path: Path) -> Path:
    """A logits-only model from 'another exporter': x -> x @ W + b, input named 'x'."""
    w = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Relu", ["z"], ["out"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_plain_model_is_compared_with_onnx_reference(tmp_path: Path) -> None:
    plain = _plain_model(tmp_path / "plain.onnx")
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    report = verify_model(plain, x)
    assert report.passed, report.failures
    assert report.head is None
    assert report.computations["reference"].startswith("onnx.reference.ReferenceEvaluator")
    assert {(c.name, c.subject) for c in report.checks} == {("out", "onnxruntime~reference")}


def test_the_comparator_flags_every_output_past_its_tolerance() -> None:
    z = np.zeros((4, 2))
    labels = np.array([0, 1, 1, 0])
    checks = compare(
        {"logits": z, "label": labels, "extra": z},
        {"logits": z + 2 * tol.LOGIT_ATOL, "label": np.array([0, 1, 0, 0]), "extra": z},
        {"logits": tol.LOGIT_ATOL, "label": 0.0},
    )
    assert [(c.name, c.passed) for c in checks] == [("logits", False), ("label", False)]
    excused = compare(
        {"label": labels},
        {"label": np.array([0, 1, 0, 0])},
        {"": 0.0},
        excused=np.array([False, False, True, False]),
    )
    assert excused[0].passed and "1 tie excused" in excused[0].detail
    nan = compare({"p": np.ones(3)}, {"p": np.array([1.0, np.nan, 1.0])}, {"": 1.0})
    assert not nan[0].passed
    # the reference softmax as oracle for one hand-made row, within the float64 bar
    p = reference.softmax(np.array([[0.0, np.log(3.0)]]))
    assert compare({"p": np.array([[0.25, 0.75]])}, {"p": p}, {"": tol.REFERENCE_FLOAT64_ATOL})[
        0
    ].passed


# --- --localize where intermediates cannot be exposed or matched ---------------------------


def _graph(path: Path, nodes: list[onnx.NodeProto], out_type: int) -> Path:
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", out_type, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_localize_where_onnxruntime_cannot_expose_an_intermediate(tmp_path: Path) -> None:
    # runs as it is; its bfloat16 intermediate has no numpy type to hand back
    model = _graph(
        tmp_path / "bf16.onnx",
        [
            helper.make_node("Cast", ["x"], ["half"], to=TensorProto.BFLOAT16),
            helper.make_node("Cast", ["half"], ["y"], to=TensorProto.FLOAT),
        ],
        TensorProto.FLOAT,
    )
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)  # exact in bfloat16
    assert verify_model(model, rows).passed
    assert _verify(str(model), "--localize") == (
        1,
        f"Error: cannot localize in {model}: onnxruntime cannot run the model with every node "
        "output exposed: No corresponding Numpy type for Tensor Type. bfloat16\n",
    )


def test_localize_on_a_graph_without_float_node_outputs(tmp_path: Path) -> None:
    model = _graph(
        tmp_path / "argmax.onnx",
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)],
        TensorProto.INT64,
    )
    assert _verify(str(model))[0] == 0
    assert _verify(str(model), "--localize") == (
        1,
        f"Error: cannot localize in {model}: none of its 1 node outputs is a float tensor "
        "to compare\n",
    )


def test_localize_with_a_module_whose_hooks_match_no_recorded_path(multiclass: TinyModel) -> None:
    x, _ = multiclass.run.validation()
    # the bare net, not the head module export traced: no recorded path is one of its own
    with pytest.raises(LocalizationError) as caught:
        first_diverging_node(onnx.load(str(multiclass.model)), x[:4], multiclass.run.net)
    assert str(caught.value) == (
        "no forward hook of the torch module matches the 5 module paths its nodes record "
        "(preprocess, net.hidden.0, net.relu, net.hidden.1, ...)"
    )


class _Partly(nn.Module):
    """The run's MLP with its hidden layers moved: only ``output`` keeps its path."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.layers, self.output = net.hidden, net.output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.output(x)  # type: ignore[no-any-return]


def test_localize_with_a_module_whose_hooks_match_in_part(
    multiclass: TinyModel, tmp_path: Path
) -> None:
    tampered = _edit(multiclass.model, tmp_path / "t.onnx", initializer="net.output.weight")
    report = verify_model(tampered, dataset=multiclass.data, module=_Partly(multiclass.run.net))
    where = report.localization
    assert where is not None and where["unmatched"] == ["net.hidden.0", "net.relu", "net.hidden.1"]
    # what can be matched is compared: the preprocessing's Div, then the tampered Gemm
    assert (where["op_type"], where["module"], where["compared"]) == ("Gemm", "net.output", 2)
    assert (
        "  not compared (no forward hook output to match): net.hidden.0, net.relu, net.hidden.1"
        in report.render_table().splitlines()
    )
