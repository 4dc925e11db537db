"""Edge variants (int8 / fp16 / ORT format): built, verified against their bar, and honest.

The models are the two bundled real datasets (digits: multiclass softmax, breast-cancer:
binary sigmoid), trained briefly and exported through ``checkpoint_to_onnx``, so the
variants see the same graphs ``make export`` writes. Every figure a report states is
recomputed here independently from the written files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnxedge.export import variants
from onnxedge.export.onnx_export import checkpoint_to_onnx
from onnxedge.export.variants import (
    LATENCY_BATCHES,
    LISTED,
    VariantBar,
    choose_int8_settings,
    class_figures,
    compare_nodes,
    latency_gate,
    make_variant,
    onnx_to_ort,
    variant_path,
    verify_variant_file,
)
from onnxedge.models.checkpoint import TrainedRun, load_run, sha256_file
from onnxedge.models.train import TrainOptions, train
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.atomic import TEMP_SUFFIX
from onnxedge.runtime.cli import cli
from onnxedge.runtime.contract import (
    KEY_GOLDEN,
    KEY_GRAPH_WEIGHTS_SHA256,
    KEY_PARITY,
    KEY_SOURCE_SHA256,
    KEY_TASK,
    KEY_VARIANT,
    KEY_VARIANT_REPORT,
)
from onnxedge.runtime.errors import (
    CheckpointError,
    DataError,
    ExportError,
    ModelLoadError,
    OutputExistsError,
    ParityError,
)

HEAD_OPS = {"Softmax", "Sigmoid", "ArgMax", "GreaterOrEqual", "Greater"}
FLOAT, FLOAT16, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64


@dataclass
class Exported:
    """A run folder and the fp32 model exported from it."""

    run_dir: Path
    run: TrainedRun
    model: Path


def _export(root: Path, dataset: str) -> Exported:
    run_dir = root / "runs" / dataset
    train(dataset, run_dir, TrainOptions(hidden_sizes=(32,), epochs=30, seed=0), progress=False)
    model = root / f"{dataset}.onnx"
    checkpoint_to_onnx(run_dir, model)
    return Exported(run_dir, load_run(run_dir), model)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("variants")


@pytest.fixture(scope="module")
def digits(root: Path) -> Exported:
    return _export(root, "digits")


@pytest.fixture(scope="module")
def cancer(root: Path) -> Exported:
    return _export(root, "breast-cancer")


@pytest.fixture(params=["digits", "cancer"])
def exported(request: pytest.FixtureRequest) -> Exported:
    value: Exported = request.getfixturevalue(request.param)
    return value


@pytest.fixture(scope="module")
def built(root: Path, digits: Exported, cancer: Exported) -> dict[tuple[str, str], Path]:
    """The default int8 and the fp16 variant of both models, written once."""
    paths = {}
    for name, e in (("digits", digits), ("cancer", cancer)):
        for variant in ("int8", "fp16"):
            path = root / f"{name}.{variant}.onnx"
            make_variant(e.model, e.run_dir, variant, path)
            paths[name, variant] = path
    return paths


def _run(model: Path | bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _types(path: Path) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True).graph
    types = {t.name: t.data_type for t in graph.initializer}
    for v in (*graph.input, *graph.value_info, *graph.output):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def _torch_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = torch.from_numpy(logits.astype(np.float64))
    if z.shape[1] == 1:
        return float(torch.nn.BCEWithLogitsLoss()(z[:, 0], torch.from_numpy(y.astype(np.float64))))
    return float(torch.nn.CrossEntropyLoss()(z, torch.from_numpy(y)))


# --- build and verify ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variant_builds_and_its_figures_are_recomputable(
    exported: Exported, variant: str, tmp_path: Path
) -> None:
    out = tmp_path / f"m.{variant}.onnx"
    report = make_variant(exported.model, exported.run_dir, variant, out)
    assert report.passed and not report.accepted_degradation, report.failures

    # recompute every figure from the two files on the validation split
    x, y = exported.run.validation()
    src, var = _run(exported.model, x), _run(out, x)
    assert report.rows == len(y)
    assert report.label_agreement == np.mean(var["label"] == src["label"])
    assert report.accuracy_source == np.mean(src["label"] == y)
    assert report.accuracy_variant == np.mean(var["label"] == y)
    dp = np.abs(var["probabilities"].astype(np.float64) - src["probabilities"])
    assert report.max_probability_error == pytest.approx(dp.max(), abs=tol.PROBABILITY_ATOL)
    loss_src, loss_var = _torch_loss(src["logits"], y), _torch_loss(var["logits"], y)
    assert report.loss_source == pytest.approx(loss_src, rel=tol.LOSS_RTOL, abs=tol.LOSS_ATOL)
    assert report.loss_variant == pytest.approx(loss_var, rel=tol.LOSS_RTOL, abs=tol.LOSS_ATOL)
    assert report.loss_delta == pytest.approx(abs(loss_var - loss_src), abs=tol.LOSS_ATOL)

    # and the bar it cleared is the named one
    assert report.label_agreement >= tol.VARIANT_MIN_LABEL_AGREEMENT
    assert report.accuracy_drop <= tol.VARIANT_MAX_ACCURACY_DROP
    assert report.bar == VariantBar.for_variant(variant)


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_metadata_names_the_variant_its_source_and_its_figures(
    exported: Exported, variant: str, tmp_path: Path
) -> None:
    out = tmp_path / f"m.{variant}.onnx"
    report = make_variant(exported.model, exported.run_dir, variant, out)
    props, source = _props(out), _props(exported.model)
    assert props[KEY_VARIANT] == variant
    assert props[KEY_SOURCE_SHA256] == sha256_file(exported.model)
    assert props[KEY_TASK] == source[KEY_TASK] == exported.run.task
    recorded = json.loads(props[KEY_VARIANT_REPORT])
    assert recorded["size_bytes"] == out.stat().st_size == report.size_bytes
    assert recorded["source_size_bytes"] == exported.model.stat().st_size
    assert recorded["label_agreement"] == report.label_agreement
    assert recorded["passed"] is True and recorded["failures"] == []
    assert (recorded["source"], recorded["output"]) == (exported.model.name, out.name)
    # the fp32 parity figures describe another graph; the digest is this graph's own
    assert KEY_PARITY not in props
    assert props[KEY_GRAPH_WEIGHTS_SHA256] != source[KEY_GRAPH_WEIGHTS_SHA256]
    # the golden set holds this graph's own outputs on the source's golden rows
    golden, fp32_golden = json.loads(props[KEY_GOLDEN]), json.loads(source[KEY_GOLDEN])
    assert golden["rows"] == fp32_golden["rows"]
    rows = np.asarray(golden["rows"], np.float32)
    np.testing.assert_array_equal(_run(out, rows)["label"], golden["labels"])


def test_int8_quantizes_only_the_layers(built: dict[tuple[str, str], Path]) -> None:
    for name in ("digits", "cancer"):
        model = onnx.load(str(built[name, "int8"]))
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        int8_weights = [
            t
            for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
        ]
        assert len(int8_weights) == 2  # the hidden and the output layer's weight matrices
        float_matrices = [
            t.name for t in model.graph.initializer if t.data_type == FLOAT and len(t.dims) == 2
        ]
        assert float_matrices == []
        # standardization and head are untouched float32 ops
        assert {"Sub", "Div"} <= set(ops) and HEAD_OPS & set(ops)
        # only the domains the nodes use are imported (pre-processing adds a dozen)
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"} | {
            n.domain for n in model.graph.node
        }


def test_int8_is_smaller_than_fp32(built: dict[tuple[str, str], Path], digits: Exported) -> None:
    assert built["digits", "int8"].stat().st_size < digits.model.stat().st_size


@pytest.mark.parametrize("variant", ["int8", "fp16"])
@pytest.mark.parametrize("name", ["digits", "cancer"])
def test_head_and_standardization_stay_float32(
    built: dict[tuple[str, str], Path], name: str, variant: str
) -> None:
    path = built[name, variant]
    model, types = onnx.load(str(path)), _types(path)
    heads = [n for n in model.graph.node if n.op_type in HEAD_OPS]
    assert heads
    for node in heads:
        assert types[node.input[0]] == FLOAT, (node.op_type, node.input[0])
    for node in model.graph.node:
        if node.op_type in {"Sub", "Div"} and node.input[0] == "input":
            assert all(types[i] == FLOAT for i in node.input)


@pytest.mark.parametrize("name", ["digits", "cancer"])
def test_fp16_keeps_float32_io_and_converts_the_layers(
    built: dict[tuple[str, str], Path], name: str
) -> None:
    model = onnx.load(str(built[name, "fp16"]))
    io = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert io == {"input": FLOAT, "logits": FLOAT, "probabilities": FLOAT, "label": INT64}
    layer_weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert layer_weights and all(t.data_type == FLOAT16 for t in layer_weights)


def test_dynamic_int8_is_an_option(digits: Exported, tmp_path: Path) -> None:
    out = tmp_path / "d.int8.onnx"
    report = make_variant(digits.model, digits.run_dir, "int8", out, method="dynamic")
    assert report.settings["method"] == "dynamic"
    assert report.settings["form"] == "dynamic per-tensor" and report.attempts == []
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert "calibration_rows" not in report.settings


# --- the bar trips ------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e4, 0.0])
def test_absurd_calibration_trips_the_bar(exported: Exported, tmp_path: Path, scale: float) -> None:
    """Rows 1e4 times too large (or all zero) calibrate useless activation ranges."""
    out = tmp_path / "bad.int8.onnx"
    bad = exported.run.calibration() * scale
    with pytest.raises(ParityError) as caught:
        make_variant(
            exported.model, exported.run_dir, "int8", out, method="static", calibration=bad
        )
    failures = caught.value.failures
    assert any(f.startswith("label int8~fp32: ") for f in failures), failures
    assert all(f in str(caught.value) for f in failures)
    assert "--accept-degradation" in str(caught.value)
    assert not out.exists() and not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))

    report = make_variant(
        exported.model,
        exported.run_dir,
        "int8",
        out,
        method="static",
        calibration=bad,
        accept_degradation=True,
    )
    assert report.failures == failures and report.accepted_degradation
    recorded = json.loads(_props(out)[KEY_VARIANT_REPORT])
    assert recorded["passed"] is False and recorded["accepted_degradation"] is True
    assert recorded["failures"] == failures
    # the recorded agreement is the one the file really has
    x, _ = exported.run.validation()
    agreement = np.mean(_run(out, x)["label"] == _run(exported.model, x)["label"])
    assert recorded["label_agreement"] == agreement < tol.VARIANT_MIN_LABEL_AGREEMENT


def _fast(model: str, batch: int) -> float:
    """An injected timer: every variant twice as fast as fp32."""
    return 1.0 if model == "fp32" else 0.5


def test_auto_repairs_absurd_calibration_and_records_each_attempt(
    digits: Exported, tmp_path: Path
) -> None:
    """Useless calibration rows sink every static form; dynamic needs none and passes."""
    out = tmp_path / "auto.int8.onnx"
    bad = digits.run.calibration() * 1e4
    report = make_variant(
        digits.model, digits.run_dir, "int8", out, method="auto", calibration=bad, timer=_fast
    )
    assert report.passed and report.written and report.settings["form"] == "dynamic per-tensor"
    forms = [a["form"] for a in report.attempts]
    # two layers: one may be kept in float (one at least stays int8)
    assert forms == [
        "static per-tensor",
        "static per-channel",
        "static per-channel, 1 layer in float",
        "dynamic per-tensor",
    ]
    assert all("misses" in a["reached"] for a in report.attempts[:-1])
    assert report.attempts[-1]["reached"].endswith("batch-1 2.00x, batch-256 2.00x")
    # the layer kept in float is a layer of the fp32 graph
    layers = {n.output[0] for n in onnx.load(str(digits.model)).graph.node if n.op_type == "Gemm"}
    assert set(report.attempts[2]["keep_float"]) < layers
    assert json.loads(_props(out)[KEY_VARIANT_REPORT])["attempts"] == report.attempts


def test_auto_names_every_attempt_when_none_passes(
    digits: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impossible = VariantBar(1.1, 1.0, 1.0, 1.0)  # agreement above 100%: nothing passes
    monkeypatch.setattr(VariantBar, "for_variant", classmethod(lambda cls, v: impossible))
    out = tmp_path / "none.int8.onnx"
    with pytest.raises(ParityError) as caught:
        make_variant(digits.model, digits.run_dir, "int8", out, method="auto", timer=_fast)
    forms = list(dict.fromkeys(f.split(":")[0] for f in caught.value.failures))
    assert forms == [
        "static per-tensor",
        "static per-channel",
        "static per-channel, 1 layer in float",
        "dynamic per-tensor",
    ]
    message = str(caught.value)
    assert message.startswith("every int8 form tried (static per-tensor reached label agreement ")
    assert all(f"{form} reached label agreement " in message for form in forms)
    assert not out.exists()

    report = make_variant(
        digits.model, digits.run_dir, "int8", out, method="auto", accept_degradation=True
    )
    best = max(float(a["reached"].split()[2].rstrip(",")) for a in report.attempts)
    assert report.accepted_degradation and round(report.label_agreement, 4) == best


def test_auto_keeps_fp32_when_no_variant_is_faster(digits: Exported, tmp_path: Path) -> None:
    out = tmp_path / "slow.int8.onnx"
    report = make_variant(
        digits.model,
        digits.run_dir,
        "int8",
        out,
        method="auto",
        timer=lambda m, b: 1.0 + (m != "fp32"),
    )
    assert not report.written and not out.exists()
    assert report.verdict.startswith(f"kept fp32 {digits.model}: no int8 form that clears its bar")
    assert "static per-tensor: label agreement" in report.verdict
    assert "not faster than fp32 here: batch-1 0.50x, batch-256 0.50x" in report.verdict
    # static per-tensor cleared the bar but was slow: no float-layer repair is tried for speed
    assert [a["form"] for a in report.attempts] == [
        "static per-tensor",
        "static per-channel",
        "dynamic per-tensor",
    ]


def test_latency_gate_interleaves_rounds_and_takes_medians() -> None:
    calls: list[tuple[str, int]] = []
    # variant: twice as fast at the large batch, slower at batch 1; one outlier round each
    times = {("fp32", 1): 1.0, ("variant", 1): 2.0, ("fp32", 256): 4.0, ("variant", 256): 2.0}

    def timer(model: str, batch: int) -> float:
        calls.append((model, batch))
        return times[model, batch] * (100.0 if len(calls) == 3 else 1.0)

    gate = latency_gate(lambda x: x, lambda x: x, np.zeros((3, 2), np.float32), timer=timer)
    assert gate["speedup"] == {"1": 0.5, "256": 2.0} and gate["faster"] is False
    assert gate["summary"] == "not faster than fp32 here: batch-1 0.50x, batch-256 2.00x"
    rounds = variants.LATENCY_ROUNDS
    assert len(calls) == 2 * rounds * len(LATENCY_BATCHES)
    assert calls[:4] == [("fp32", 1), ("variant", 1), ("variant", 1), ("fp32", 1)]
    fast = latency_gate(lambda x: x, lambda x: x, np.zeros((3, 2)), timer=_fast)
    assert (
        fast["faster"] is True
        and fast["summary"] == "faster than fp32 here: batch-1 2.00x, batch-256 2.00x"
    )


def test_a_stricter_bar_names_every_failing_check(digits: Exported, tmp_path: Path) -> None:
    from onnxedge.export.variants import onnx_to_int8, verify_variant

    x, y = digits.run.validation()
    settings_ = choose_int8_settings()
    int8 = onnx_to_int8(onnx.load(str(digits.model)), settings_, digits.run.calibration())
    impossible = VariantBar(1.1, -1.0, -1.0, -1.0)
    report = verify_variant(int8, digits.model, x, y, variant="int8", bar=impossible)
    names = [f.split(":")[0] for f in report.failures]
    assert names == [
        "probabilities int8~fp32",
        "label int8~fp32",
        "loss int8~fp32",
        "accuracy_drop int8~fp32",
    ]


# --- int8 settings ------------------------------------------------------------------------


def test_int8_settings_name_their_form() -> None:
    chosen = choose_int8_settings("dynamic", per_channel=True)
    assert (chosen.method, chosen.per_channel) == ("dynamic", True)
    assert chosen.form == "dynamic per-channel"
    assert choose_int8_settings().form == "static per-tensor"


def test_unknown_int8_method_is_refused() -> None:
    with pytest.raises(ExportError, match="unknown int8 method 'weekly'"):
        choose_int8_settings("weekly")
    with pytest.raises(ExportError, match=re.escape("expected one of static, dynamic, auto")):
        make_variant("m.onnx", None, "int8", "o.onnx", method="weekly")


# --- refusals -----------------------------------------------------------------------------


def test_existing_output_is_kept_without_overwrite(digits: Exported, tmp_path: Path) -> None:
    out = tmp_path / "taken.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(
        OutputExistsError, match=re.escape("taken.onnx already exists; pass --overwrite")
    ):
        make_variant(digits.model, digits.run_dir, "fp16", out)
    assert out.read_bytes() == b"keep me"
    make_variant(digits.model, digits.run_dir, "fp16", out, overwrite=True)
    assert _props(out)[KEY_VARIANT] == "fp16"


def test_refusals_name_what_was_asked(
    digits: Exported, cancer: Exported, built: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="unknown variant 'int4'"):
        make_variant(digits.model, digits.run_dir, "int4", out)
    with pytest.raises(OutputExistsError, match="is the source model"):
        make_variant(digits.model, digits.run_dir, "int8", digits.model, overwrite=True)
    with pytest.raises(ExportError, match="already an int8 variant"):
        make_variant(built["digits", "int8"], digits.run_dir, "fp16", out)
    with pytest.raises(CheckpointError, match="pass the model's own run"):
        make_variant(digits.model, cancer.run_dir, "int8", out)
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_variant(tmp_path / "nope.onnx", digits.run_dir, "int8", out)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx")
    with pytest.raises(ModelLoadError, match=re.escape(str(garbage))):
        make_variant(garbage, digits.run_dir, "int8", out)
    rows = digits.run.calibration().copy()
    rows[3, 5] = np.nan
    with pytest.raises(DataError, match="calibration row 3 column 5 is not finite"):
        make_variant(digits.model, digits.run_dir, "int8", out, calibration=rows)
    with pytest.raises(
        DataError,
        match=re.escape("calibration rows have shape (30,); the model expects rows of shape (64,)"),
    ):
        make_variant(
            digits.model, digits.run_dir, "int8", out, calibration=cancer.run.calibration()
        )
    assert not out.exists() and not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))


def test_rows_of_an_image_model_keep_their_layout() -> None:
    # An image input listed after an initializer: the row shape is read from "input".
    shape = (3, 4, 4)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["out"])],
        "g",
        [
            onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [7]),
            onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", *shape]),
        ],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", *shape])],
    )
    model = onnx.helper.make_model(graph)
    images = np.arange(2 * 48, dtype=np.float32).reshape(2, *shape)
    np.testing.assert_array_equal(variants._rows(images, model, "calibration"), images)
    flat = variants._rows(images.reshape(2, 48), model, "calibration")
    np.testing.assert_array_equal(flat, images)
    # The same 48 values per row in channels-last layout are another image: refused.
    with pytest.raises(
        DataError,
        match=re.escape(
            "calibration rows have shape (4, 4, 3); the model expects rows of shape (3, 4, 4)"
        ),
    ):
        variants._rows(images.transpose(0, 2, 3, 1), model, "calibration")


# --- re-verification, numerics, ORT format ------------------------------------------------


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_written_variant_reverifies_against_the_numpy_reference(
    built: dict[tuple[str, str], Path], digits: Exported, variant: str
) -> None:
    path = built["digits", variant]
    report = verify_variant_file(path, digits.run_dir)
    assert report.passed, report.failures
    against_fp32 = verify_variant_file(path, digits.run_dir, source=digits.model)
    recorded = json.loads(_props(path)[KEY_VARIANT_REPORT])
    assert against_fp32.label_agreement == recorded["label_agreement"]
    assert against_fp32.max_probability_error == pytest.approx(
        recorded["max_probability_error"], abs=tol.PROBABILITY_ATOL
    )
    with pytest.raises(ModelLoadError, match="is not an int8 / fp16 variant"):
        verify_variant_file(digits.model, digits.run_dir)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_variants_stay_finite_and_consistent_on_extreme_inputs(
    built: dict[tuple[str, str], Path], digits: Exported, data: st.DataObject
) -> None:
    """Rows up to 1e3 times the training range: probabilities valid, label = argmax."""
    limit = float(np.abs(digits.run.calibration()).max()) * 1e3
    x = data.draw(
        arrays(np.float32, (5, 64), elements=st.floats(-limit, limit, width=32)), label="x"
    )
    for variant in ("int8", "fp16"):
        out = _run(built["digits", variant], x)
        p = out["probabilities"]
        assert np.isfinite(out["logits"]).all() and np.isfinite(p).all()
        assert ((p >= 0) & (p <= 1)).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=tol.PROBABILITY_SUM_ATOL)
        np.testing.assert_array_equal(out["label"], p.argmax(axis=1))


def test_ort_format_runs_like_the_onnx_file(
    built: dict[tuple[str, str], Path], digits: Exported, tmp_path: Path
) -> None:
    src = built["digits", "int8"]
    ort_file, config = onnx_to_ort(src, tmp_path / "d.int8.ort")
    assert ort_file.read_bytes()[4:8] == b"ORTM"
    assert "QuantizeLinear" in config.read_text()
    x, _ = digits.run.validation()
    a, b = _run(src, x), _run(ort_file, x)
    for name in ("logits", "probabilities", "label"):
        np.testing.assert_array_equal(a[name], b[name])
    meta = ort.InferenceSession(str(ort_file)).get_modelmeta().custom_metadata_map
    assert meta[KEY_VARIANT] == "int8"
    with pytest.raises(OutputExistsError):
        onnx_to_ort(src, ort_file)


def test_variant_path_sits_beside_the_source() -> None:
    assert variant_path("artifacts/digits.onnx", "int8") == Path("artifacts/digits.int8.onnx")


# --- CLI ----------------------------------------------------------------------------------


def test_cli_optimize_json(cancer: Exported, tmp_path: Path) -> None:
    out = tmp_path / "c.int8.onnx"
    args = ["optimize", str(cancer.model), "--run", str(cancer.run_dir), "--int8", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--json", "--ort"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["variant"] == "int8" and data["passed"] is True
    assert data["size_bytes"] == out.stat().st_size
    assert Path(data["ort"]["path"]).is_file()

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1
    assert again.output == f"Error: {out} already exists; pass --overwrite to replace it\n"


def test_cli_optimize_prints_the_bar(digits: Exported, tmp_path: Path) -> None:
    out = tmp_path / "d.fp16.onnx"
    result = CliRunner().invoke(
        cli, ["optimize", str(digits.model), "--run", str(digits.run_dir), "--fp16", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"fp16 variant of {digits.model} -> {out} (")
    assert any(line.split()[:2] == ["label", "fp16~fp32"] and " ok " in line for line in lines)
    assert any(line.startswith(f"{len(digits.run.validation()[1])} check rows") for line in lines)
    assert any(
        line.startswith(
            ("  speed: faster than fp32 here: ", "  speed: not faster than fp32 here: ")
        )
        for line in lines
    )


def test_cli_optimize_usage_errors(digits: Exported) -> None:
    runner = CliRunner()
    model, run = str(digits.model), ["--run", str(digits.run_dir)]
    nothing = runner.invoke(cli, ["optimize", model])
    assert nothing.exit_code == 2 and "choose --int8, --fp16 or --ort" in nothing.output
    for args, message in (
        (["--fp16", "--per-channel"], "--per-channel applies to --int8 only"),
        (["--ort", "--per-tensor"], "--per-channel applies to --int8 only"),
        (["--int8", "--fp16"], "choose one of --int8 and --fp16"),
        (["--int8", "auto", "--per-channel"], "--int8 auto chooses the weight scales"),
        (["--int8", "weekly"], "'weekly' is not one of 'static', 'dynamic', 'auto'"),
    ):
        result = runner.invoke(cli, ["optimize", model, *run, *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_cli_verify_holds_a_variant_to_its_bar(
    built: dict[tuple[str, str], Path], digits: Exported, tmp_path: Path
) -> None:
    runner = CliRunner()
    good = built["digits", "int8"]
    ok = runner.invoke(cli, ["verify", str(good), "--run", str(digits.run_dir), "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert data["variant"] == "int8" and data["passed"] is True

    no_run = runner.invoke(cli, ["verify", str(good)])
    assert no_run.exit_code == 1
    assert no_run.output == f"Error: {good} is an edge variant; verify it with --run RUN_DIR\n"

    bad = tmp_path / "bad.int8.onnx"
    calibration = digits.run.calibration() * 1e4
    make_variant(
        digits.model,
        digits.run_dir,
        "int8",
        bad,
        method="static",
        calibration=calibration,
        accept_degradation=True,
    )
    report = tmp_path / "bad.json"
    failed = runner.invoke(
        cli, ["verify", str(bad), "--run", str(digits.run_dir), "--report", str(report)]
    )
    assert failed.exit_code == 1
    last = failed.output.strip().splitlines()[-1]
    assert last.startswith("Error: int8 variant misses its bar: ")
    assert "label int8~fp32: " in last
    assert json.loads(report.read_text())["passed"] is False


# --- where a variant diverges, and what it does to the classes ----------------------------


def _gemms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in {"Gemm", "MatMul"}]


def test_per_node_comparison_names_a_tampered_layer_first(
    built: dict[tuple[str, str], Path], digits: Exported
) -> None:
    source, variant = onnx.load(str(digits.model)), onnx.load(str(built["digits", "int8"]))
    x = digits.run.validation()[0][:64]
    clean = compare_nodes(source, variant, x, "int8")
    assert clean["first_diverging"] is None and clean["compared"] >= 4
    assert clean["tolerance"] == "INT8_MAX_PROBABILITY_ERROR"

    # permute the int8 weight rows of the last layer (the middle of the three nodes it
    # feeds through: Gemm, Relu, Gemm)
    last = _gemms(variant)[-1]
    dq = next(n for n in variant.graph.node if n.output[0] == last.input[1])
    weight = next(t for t in variant.graph.initializer if t.name == dq.input[0])
    values = onnx.numpy_helper.to_array(weight)
    weight.CopyFrom(onnx.numpy_helper.from_array(np.roll(values, 1, axis=0), weight.name))
    found = compare_nodes(source, variant, x, "int8")
    expected = _gemms(source)[-1]
    first = found["first_diverging"]
    assert (first["node"], first["op_type"], first["output"]) == (
        expected.name,
        expected.op_type,
        expected.output[0],
    )
    # its error, recomputed: max |variant - fp32| over the fp32 range of that node
    from onnxedge.export.localize import node_outputs

    a, b = node_outputs(source, x)[expected.output[0]], node_outputs(variant, x)[expected.output[0]]
    recomputed = np.abs(b.astype(np.float64) - a).max() / np.abs(a).max()
    assert first["relative_error"] == pytest.approx(recomputed, rel=tol.LOSS_RTOL)
    assert first["relative_error"] > tol.INT8_MAX_PROBABILITY_ERROR
    assert found["worst"][0]["relative_error"] >= found["worst"][-1]["relative_error"]


def test_class_figures_match_an_independent_count() -> None:
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    n, k = 200, 4
    pa = rng.dirichlet(np.ones(k), size=n)
    pb = np.clip(pa + rng.normal(0, 0.1, size=pa.shape), 0, None)
    y = rng.integers(0, k, n)
    ref = {"logits": pa, "probabilities": pa, "label": pa.argmax(1)}
    out = {"logits": pb, "probabilities": pb, "label": pb.argmax(1)}
    figures = class_figures(y, ref, out, margin=0.05, margin_name="M")
    before = confusion_matrix(y, ref["label"], labels=range(k))
    after = confusion_matrix(y, out["label"], labels=range(k))
    for c in figures["per_class"]:
        cls = c["class"]
        mask = y == cls
        assert c["rows"] == mask.sum()
        assert c["fp32"] == np.mean(ref["label"][mask] == cls)
        assert c["variant"] == np.mean(out["label"][mask] == cls)
    cells = {(t, p) for t, p in zip(*np.nonzero(before != after), strict=True)}
    assert figures["confusion_cells_changed"] == len(cells)
    for cell in figures["confusion_change"]:
        t, p = cell["true"], cell["pred"]
        assert (t, p) in cells and (cell["fp32"], cell["variant"]) == (before[t, p], after[t, p])
    flipped = [i for i in range(n) if ref["label"][i] != out["label"][i]]
    assert figures["flipped"] == len(flipped) > LISTED
    assert [f["row"] for f in figures["flipped_rows"]] == flipped[:LISTED]
    row = figures["flipped_rows"][0]
    assert row["fp32"][str(ref["label"][row["row"]])] == pa[row["row"]].max()
    assert row["variant"][str(out["label"][row["row"]])] == pb[row["row"]].max()
    top2 = np.array([sorted(r)[-1] - sorted(r)[-2] for r in pa])
    assert figures["near_ties"] == int((top2 <= 0.05).sum())
    assert figures["flipped_near_ties"] == int((top2[flipped] <= 0.05).sum())


def test_a_failed_variant_names_its_first_diverging_node(digits: Exported, tmp_path: Path) -> None:
    out = tmp_path / "zero.int8.onnx"
    zeros = digits.run.calibration() * 0.0
    with pytest.raises(ParityError) as caught:
        make_variant(digits.model, digits.run_dir, "int8", out, calibration=zeros)
    first = _gemms(onnx.load(str(digits.model)))[0]
    assert str(caught.value).startswith(
        f"the int8 variant (first diverging node {first.name}, Gemm) of {digits.model} misses "
    )
    assert str(caught.value).endswith(
        "(pass --accept-degradation to write it anyway, or try --int8 auto)"
    )


# --- any exported model, rows from a data file --------------------------------------------


@pytest.fixture(scope="module")
def plain(root: Path) -> tuple[Path, Path]:
    """A model from export_classifier (no run folder, no recorded dataset) and its data."""
    from onnxedge.export import Standardize, export_classifier
    from onnxedge.models.data import load_dataset

    ds = load_dataset("breast-cancer")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    step = Standardize(ds.features.mean(0), ds.features.std(0) + 1e-6)
    x = torch.from_numpy((ds.features - step.mean) / step.std)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), torch.from_numpy(ds.labels)).backward()
        optimizer.step()
    model = root / "plain.onnx"
    export_classifier(
        net, model, input_shape=(30,), preprocess=step, verify_data=(ds.features, ds.labels)
    )
    data = root / "bc.npz"
    np.savez(data, X=ds.features, y=ds.labels)
    return model, data


def test_a_variant_of_any_exported_model_from_a_data_file(
    plain: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = plain
    out = tmp_path / "plain.int8.onnx"
    result = CliRunner().invoke(
        cli, ["optimize", str(model), "--data", str(data), "--int8", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["written"] and out.is_file()
    assert report["data"] == "bc.npz: 142 calibration rows, 427 check rows"
    assert report["rows"] == 427 and report["latency"]["batches"] == list(LATENCY_BATCHES)

    other = tmp_path / "other.int8.onnx"
    missing = CliRunner().invoke(cli, ["optimize", str(model), "--int8", "-o", str(other)])
    assert missing.exit_code == 1
    assert missing.output == (
        f"Error: a variant of {model} needs rows to calibrate and check on: pass --run "
        "RUN_DIR or --data FILE (the model records no bundled dataset)\n"
    )
    other_classes = CliRunner().invoke(
        cli, ["optimize", str(model), "--data", "breast-cancer", "--int8", "-o", str(other)]
    )
    assert other_classes.exit_code == 1
    assert other_classes.output == (
        "Error: breast-cancer has classes ['malignant', 'benign']; the model's are ['0', '1']\n"
    )
    absent = CliRunner().invoke(
        cli, ["optimize", str(model), "--data", str(tmp_path / "nope.npz"), "--fp16"]
    )
    assert absent.exit_code == 1 and absent.output.startswith("Error: ")
    assert "nope.npz" in absent.output and len(absent.output.splitlines()) == 1


def test_cli_auto_keeps_fp32_and_says_why(
    digits: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(f: Any, v: Any, rows: np.ndarray, timer: Any = None) -> dict[str, Any]:
        return latency_gate(f, v, rows, timer=lambda m, b: 1.0 + (m != "fp32"))

    monkeypatch.setattr(variants, "latency_gate", slow)
    out = tmp_path / "kept.int8.onnx"
    args = ["optimize", str(digits.model), "--run", str(digits.run_dir), "--int8", "auto"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"kept fp32 {digits.model}: no int8 form that clears its bar" in result.output
    assert not out.exists()
    data = json.loads(CliRunner().invoke(cli, [*args, "-o", str(out), "--json"]).output)
    assert data["written"] is False and len(data["attempts"]) == 3


def test_keep_float_leaves_those_layers_unquantized(digits: Exported) -> None:
    from onnxedge.export.variants import Int8Settings, onnx_to_int8

    source = onnx.load(str(digits.model))
    first = _gemms(source)[0]
    for keep, int8_layers in (((), 2), ((first.output[0],), 1)):
        settings = Int8Settings("static", True, False, keep)
        model = onnx_to_int8(source, settings, digits.run.calibration())
        weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert sum(len(t.dims) == 2 for t in weights) == int8_layers
        float_weights = {
            i for n in model.graph.node if n.output[0] == first.output[0] for i in n.input
        }
        assert (first.input[1] in float_weights) is bool(keep)


def test_per_node_comparison_of_fp16_names_a_tampered_layer(
    built: dict[tuple[str, str], Path], digits: Exported
) -> None:
    source, variant = onnx.load(str(digits.model)), onnx.load(str(built["digits", "fp16"]))
    x = digits.run.validation()[0][:64]
    assert compare_nodes(source, variant, x, "fp16")["first_diverging"] is None
    first = _gemms(source)[0]
    weight = next(t for t in variant.graph.initializer if t.name == _gemms(variant)[0].input[1])
    values = onnx.numpy_helper.to_array(weight)
    weight.CopyFrom(onnx.numpy_helper.from_array(values * np.float16(3), weight.name))
    found = compare_nodes(source, variant, x, "fp16")
    assert found["tolerance"] == "FP16_MAX_PROBABILITY_ERROR"
    assert (found["first_diverging"]["node"], found["first_diverging"]["output"]) == (
        first.name,
        first.output[0],
    )
