"""Parity verification: report fields, independent figures, tampering, extreme inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnxedge.runtime import tolerances as tol
from onnxedge.export.verify import (
    ODD_BATCH_SIZE,
    PAIRS,
    pair_name,
    read_graph,
    tolerances_in_force,
    verify_model,
)
from onnxedge.runtime import Predictor
from onnxedge.runtime.cli import cli
from onnxedge.runtime.contract import INPUT_NAME, KEY_NORMALIZATION, KEY_THRESHOLD
from onnxedge.runtime.errors import DataError, ModelLoadError
from sklearn.metrics import log_loss

from tests.export.tiny_models import TinyModel, build_tiny


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
    if initializer is not None:
        for i, tensor in enumerate(model.graph.initializer):
            if tensor.name == initializer:
                array = numpy_helper.to_array(tensor).copy()
                array.flat[0] += 1.0
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    if props:
        for prop in model.metadata_props:
            if prop.key in props:
                prop.value = props[prop.key]
    onnx.save(model, str(out))
    return out


def test_report_fields(tiny: TinyModel) -> None:
    report = verify_model(tiny.model, run_dir=tiny.run_dir)
    _, y = tiny.run.validation()
    n = len(y)
    assert report.passed and report.failures == []
    assert report.rows == n and report.torch_source == "run"
    assert report.batch_sizes == [1, ODD_BATCH_SIZE, n]
    assert report.tolerances == tolerances_in_force()
    assert report.tolerances["PROBABILITY_ATOL"] == tol.PROBABILITY_ATOL
    pairs = {pair_name(p) for p in PAIRS}
    assert set(report.errors) == set(report.batch_sizes)
    for by_pair in report.errors.values():
        assert set(by_pair) == pairs
        for figures in by_pair.values():
            assert set(figures) == {"logits", "probabilities"}
            assert figures["probabilities"]["max_abs"] <= tol.PROBABILITY_ATOL
    names = {c.name for c in report.checks}
    assert names >= {
        "signature",
        "head",
        "finite",
        "probability_range",
        "label_rule",
        "logits",
        "probabilities",
        "labels",
        "loss",
        "normalization",
        "weights_sha256",
        "graph_weights_sha256",
    }
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True and data["summary"]["failed"] == 0
    assert set(data["losses"][str(n)]) == {"onnx", "torch", "reference"}
    table = report.render_table()
    assert f"{len(report.checks)} of {len(report.checks)} checks passed" in table
    assert "cross-entropy" in table or "BCE" in table


def test_accuracy_and_loss_match_an_independent_computation(tiny: TinyModel) -> None:
    report = verify_model(tiny.model, run_dir=tiny.run_dir)
    x, y = tiny.run.validation()
    _, p, label = ort.InferenceSession(str(tiny.model)).run(None, {INPUT_NAME: x})
    assert report.accuracy["onnx"] == pytest.approx(float(np.mean(label == y)), abs=0)
    # scikit-learn's log loss from the probabilities, against the report's from the logits
    p64 = p.astype(np.float64)
    probs = np.hstack([1 - p64, p64]) if p.shape[1] == 1 else p64 / p64.sum(axis=1, keepdims=True)
    expected = log_loss(y, probs, labels=list(range(probs.shape[1])))
    full = report.batch_sizes[-1]
    for computation in ("onnx", "torch", "reference"):
        assert report.losses[full][computation] == pytest.approx(
            expected, rel=tol.LOSS_RTOL, abs=tol.LOSS_ATOL
        )


def test_graph_weights_are_the_runs_weights(tiny: TinyModel) -> None:
    graph = read_graph(onnx.load(str(tiny.model)))
    weights = tiny.run.weights()
    assert set(graph.weights) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(graph.weights[name], value)
    assert graph.normalization is not None
    np.testing.assert_array_equal(graph.normalization["mean"], tiny.run.normalization.mean)
    np.testing.assert_array_equal(graph.normalization["std"], tiny.run.normalization.std)
    # the dynamo exporter names initializers after the module's parameters
    assert graph.initializer_names["output.weight"] == "net.output.weight"
    assert graph.initializer_names["hidden.0.weight"] == "net.hidden.0.weight"


def test_read_graph_follows_matmul_and_mul_forms() -> None:
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    w1, b1 = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    mean, inv_std = rng.normal(size=3).astype(np.float32), np.float32([0.5, 2.0, 4.0])
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [(mean, "m"), (inv_std, "s"), (w0, "a"), (b0, "b"), (w1, "c"), (b1, "d")]
    ]
    nodes = [
        helper.make_node("Sub", ["input", "m"], ["x0"]),
        helper.make_node("Mul", ["x0", "s"], ["x1"]),
        helper.make_node("MatMul", ["x1", "a"], ["x2"]),
        helper.make_node("Add", ["b", "x2"], ["x3"]),
        helper.make_node("Relu", ["x3"], ["x4"]),
        helper.make_node("MatMul", ["x4", "c"], ["x5"]),
        helper.make_node("Add", ["x5", "d"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        inits,
    )
    contents = read_graph(helper.make_model(graph))
    np.testing.assert_array_equal(contents.weights["hidden.0.weight"], w0.T)
    np.testing.assert_array_equal(contents.weights["output.weight"], w1.T)
    np.testing.assert_array_equal(contents.weights["output.bias"], b1)
    assert contents.normalization is not None
    np.testing.assert_allclose(contents.normalization["std"], 1 / inv_std, rtol=0, atol=0)
    assert contents.head == "softmax" and contents.hidden_sizes == (4,)


def test_a_changed_weight_fails_the_right_checks(tiny: TinyModel, tmp_path: Path) -> None:
    tampered = _edit(tiny.model, tmp_path / "tampered.onnx", initializer="net.output.weight")
    report_path = tmp_path / "report.json"
    code, output = _verify(str(tampered), "--run", str(tiny.run_dir), "--report", str(report_path))
    assert code == 1
    report = json.loads(report_path.read_text())
    failed = {c["check"] for c in report["checks"] if not c["passed"]}
    assert "graph_weights_sha256" in failed
    assert {f"logits onnx~torch batch={b}" for b in report["batch_sizes"]} <= failed
    assert {f"logits torch~reference batch={b}" for b in report["batch_sizes"]} <= failed
    # wrong logits do not excuse the probabilities they move
    assert {f"probabilities onnx~torch batch={b}" for b in report["batch_sizes"]} <= failed
    # the reference reads the same (changed) weights as onnxruntime: those two still agree
    assert not any(c.startswith("logits onnx~reference") for c in failed)
    error_line = output.strip().splitlines()[-1]
    assert error_line.startswith(f"Error: {tampered} failed {len(failed)} parity checks: ")
    for check in failed:
        assert check in error_line


def test_a_changed_weight_is_caught_without_the_run(tiny: TinyModel, tmp_path: Path) -> None:
    tampered = _edit(tiny.model, tmp_path / "tampered.onnx", initializer="net.hidden.0.bias")
    code, output = _verify(str(tampered), "--dataset", str(tiny.data))
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        f"Error: {tampered} failed 1 parity check: graph_weights_sha256: the graph's "
        f"initializers hash to {_digest_prefix(tampered)}..., export recorded "
        f"{_recorded_prefix(tiny.model)}... (a weight or constant was changed after export)"
    )


def _digest_prefix(path: Path) -> str:
    from onnxedge.export.verify import graph_weights_sha256

    return graph_weights_sha256(onnx.load(str(path)))[:12]


def _recorded_prefix(path: Path) -> str:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return props["onnxedge.graph_weights_sha256"][:12]


def test_metadata_that_disagrees_with_the_graph(binary: TinyModel, tmp_path: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(binary.model)).metadata_props}
    normalization = json.loads(props[KEY_NORMALIZATION])
    normalization["std"][0] *= 2
    edited = _edit(
        binary.model,
        tmp_path / "edited.onnx",
        props={KEY_THRESHOLD: "0.999", KEY_NORMALIZATION: json.dumps(normalization)},
    )
    report = verify_model(edited, run_dir=binary.run_dir)
    failed = {f.split(":")[0] for f in report.failures}
    assert "normalization metadata~graph" in failed
    # the graph still labels at 0.5; the metadata now promises 0.999
    assert any(f.startswith("label_rule onnx") for f in failed)


def test_without_the_run_torch_is_rebuilt_from_the_graph(tiny: TinyModel) -> None:
    report = verify_model(tiny.model, dataset=tiny.data)
    assert report.passed and report.torch_source == "onnx" and report.rows == 240
    assert report.data == f"dataset {tiny.data.name}"


def test_cli_json_and_report(binary: TinyModel, tmp_path: Path) -> None:
    report_path = tmp_path / "r" / "parity.json"
    code, output = _verify(
        str(binary.model), "--run", str(binary.run_dir), "--json", "--report", str(report_path)
    )
    assert code == 0
    printed = json.loads(output)
    assert printed["passed"] is True
    assert json.loads(report_path.read_text())["summary"] == printed["summary"]


def test_cli_needs_labelled_rows(binary: TinyModel) -> None:
    code, output = _verify(str(binary.model))
    assert code == 1
    assert output == (
        "Error: verify needs labelled rows: pass --run RUN_DIR (its validation split) "
        "or --dataset NAME_OR_FILE\n"
    )


def test_cli_wrong_feature_count(binary: TinyModel, multiclass: TinyModel) -> None:
    code, output = _verify(str(binary.model), "--dataset", str(multiclass.data))
    assert code == 1
    assert output == (
        f"Error: the model reads 5 features; dataset {multiclass.data.name} has shape (240, 6)\n"
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
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) + ",cat" for row in x[:5])
    csv = tmp_path / "other.csv"
    csv.write_text(
        ",".join(f"f{i}" for i in range(5))
        + ",label\n"
        + rows
        + "\n"
        + ",".join(f"{v:.6f}" for v in x[5])
        + ",dog\n"
    )
    with pytest.raises(DataError, match=r"dataset other.csv has classes the model does not know"):
        verify_model(binary.model, dataset=csv)


def test_small_sets_clamp_the_batch_sizes(binary: TinyModel) -> None:
    x, y = binary.run.validation()
    report = verify_model(binary.model, run_dir=binary.run, data=(x[:5], y[:5]))
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
            tiny.model, run_dir=tiny.run, data=(extreme, y), batch_sizes=(ODD_BATCH_SIZE, len(y))
        )
        assert report.passed, report.failures
        _, p, _ = ort.InferenceSession(str(tiny.model)).run(None, {INPUT_NAME: extreme})
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_features_scaled_by_a_thousand(tiny: TinyModel) -> None:
    x, y = tiny.run.validation()
    report = verify_model(tiny.model, run_dir=tiny.run, data=(x * 1e3, y))
    assert report.passed, report.failures
    assert all(c.passed for c in report.checks if c.name in ("finite", "head"))


def test_batch_size_one_alone_covers_the_rows_it_ran(multiclass: TinyModel) -> None:
    # With only batch size 1, capped below the data's size, accuracy is taken over the
    # rows that ran (it once compared 100 labels with 240 targets and crashed).
    report = verify_model(
        multiclass.model, run_dir=multiclass.run_dir, batch_sizes=(1,), single_row_limit=100
    )
    assert report.passed, report.failures
    x, y = multiclass.run.validation()
    expected = float(np.mean(Predictor(multiclass.model).predict(x[:100]).labels == y[:100]))
    assert report.accuracy["onnx"] == expected


def test_eleven_hidden_layers_are_read_in_layer_order(tmp_path: Path) -> None:
    # "hidden.10" sorts before "hidden.2" as text; the logit bounds must follow the layers.
    hidden = (12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2)  # distinct widths: text order cannot chain
    deep = build_tiny(tmp_path, "deep", classes=3, features=4, hidden=hidden)
    report = verify_model(deep.model, run_dir=deep.run_dir)
    assert report.passed, report.failures


def test_metadata_promising_normalization_the_graph_lacks(
    binary: TinyModel, tmp_path: Path
) -> None:
    # Cut the Sub / Div standardization out of the graph, keep the metadata's mean/std.
    model = onnx.load(str(binary.model))
    nodes = list(model.graph.node)
    sub, div = nodes[0], nodes[1]
    assert (sub.op_type, div.op_type) == ("Sub", "Div")
    for node in nodes[2:]:
        node.input[:] = [INPUT_NAME if name == div.output[0] else name for name in node.input]
    del model.graph.node[:2]
    dropped = {sub.input[1], div.input[1]}
    kept = [t for t in model.graph.initializer if t.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    cut = tmp_path / "no-standardization.onnx"
    onnx.save(model, str(cut))
    report = verify_model(cut, dataset=binary.data)
    failed = {f.split(":")[0] for f in report.failures}
    assert "normalization metadata~graph" in failed
