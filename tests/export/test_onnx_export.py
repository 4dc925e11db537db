"""Export: the graph's signature, dynamic batch, metadata, exporters, and refusals."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from onnxedge.export import onnx_export
from onnxedge.export.onnx_export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    checkpoint_to_onnx,
)
from onnxedge.export.verify import (
    KEY_NODE_MODULE,
    Check,
    graph_weights_sha256,
    verify_model,
)
from onnxedge.models import reference
from onnxedge.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, TrainedRun
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.cli import cli
from onnxedge.runtime.contract import (
    INPUT_NAME,
    OUTPUT_NAMES,
    PREFIX,
    ModelContract,
)
from onnxedge.runtime.errors import ExportError, ParityError

from tests.export.tiny_models import TinyModel


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reference_outputs(run: TrainedRun, x: np.ndarray, threshold: float = 0.5) -> tuple:
    head = "softmax" if run.task == "multiclass" else "sigmoid"
    logits = reference.forward(run.weights(), x, normalization=run.preprocess.to_dict())
    p = reference.predict_proba(logits, head)
    return logits, p, reference.predict_label(p, head, threshold)


def test_signature_is_the_contract(tiny: TinyModel) -> None:
    session = _session(tiny.model)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == (
        INPUT_NAME,
        "tensor(float)",
        ["batch", tiny.run.config.input_size],
    )
    outputs = session.get_outputs()
    assert [o.name for o in outputs] == list(OUTPUT_NAMES)
    assert [o.type for o in outputs] == ["tensor(float)", "tensor(float)", "tensor(int64)"]
    width = tiny.run.config.output_size
    assert [o.shape for o in outputs] == [["batch", width], ["batch", width], ["batch"]]


def test_export_records_exporter_opset_and_a_passing_parity(tiny: TinyModel) -> None:
    result = tiny.export
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.opset == DEFAULT_OPSET
    model = onnx.load(str(tiny.model))
    assert {o.domain: o.version for o in model.opset_import}[""] == DEFAULT_OPSET
    assert result.parity is not None and result.parity.passed
    assert result.size_bytes == tiny.model.stat().st_size


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_runs_at_any_batch_size(tiny: TinyModel, batch: int) -> None:
    # a batch size baked into the graph is a known exporter bug
    x = np.random.default_rng(batch).normal(size=(batch, tiny.run.config.input_size))
    x = (x * tiny.run.preprocess.std + tiny.run.preprocess.mean).astype(np.float32)
    logits, p, label = _session(tiny.model).run(None, {INPUT_NAME: x})
    assert logits.shape == p.shape == (batch, tiny.run.config.output_size)
    assert label.shape == (batch,) and label.dtype == np.int64
    ref_logits, ref_p, ref_label = _reference_outputs(tiny.run, x)
    np.testing.assert_allclose(logits, ref_logits, rtol=tol.LOGIT_RTOL, atol=tol.LOGIT_ATOL)
    np.testing.assert_allclose(p, ref_p, rtol=0, atol=tol.PROBABILITY_ATOL)
    margins = np.abs(ref_p[:, 0] - 0.5) if p.shape[1] == 1 else np.inf
    agree = (label == ref_label) | (margins <= tol.LABEL_TIE_ATOL)
    assert agree.all()


def test_graph_is_clean_and_self_contained(tiny: TinyModel) -> None:
    model = onnx.load(str(tiny.model), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    # no exporter debug annotations (stack traces with the build machine's paths)
    kept = {p.key for n in model.graph.node for p in n.metadata_props}
    assert kept == {KEY_NODE_MODULE}  # only the torch module path each node came from
    assert b"stack_trace" not in tiny.model.read_bytes()
    names = {t.name for t in model.graph.initializer}
    assert {"preprocess.mean", "preprocess.std", "net.output.weight", "net.output.bias"} <= names


def test_metadata_holds_the_contract_and_provenance(tiny: TinyModel) -> None:
    model = onnx.load(str(tiny.model))
    props = {p.key: p.value for p in model.metadata_props}
    assert all(k.startswith(PREFIX) for k in props)
    contract = ModelContract.from_metadata(props)
    run = tiny.run
    assert contract.missing == []
    assert contract.task == run.task
    assert contract.head == ("softmax" if run.task == "multiclass" else "sigmoid")
    assert contract.threshold == 0.5
    assert contract.class_names == run.class_names
    assert contract.num_features == run.config.input_size
    assert contract.feature_names == run.feature_names
    assert contract.variant == "fp32"
    extra = contract.extra
    assert contract.input_shape == (run.config.input_size,)
    assert contract.preprocess is not None and contract.preprocess["kind"] == "standardize"
    np.testing.assert_array_equal(contract.preprocess["mean"], run.preprocess.mean)
    np.testing.assert_array_equal(contract.preprocess["std"], run.preprocess.std)
    assert json.loads(extra["architecture"]) == run.config.to_dict()
    assert extra["weights_sha256"] == run.weights_sha256
    assert extra["graph_weights_sha256"] == graph_weights_sha256(model)
    assert extra["training_metrics"]["best_epoch"] == run.metrics["best_epoch"]
    assert extra["training_metrics"]["val_accuracy"] == run.metrics["best"]["val_accuracy"]
    assert set(extra["versions"]) >= {"onnxedge", "torch", "onnx", "onnxruntime"}
    assert datetime.fromisoformat(extra["exported_at"]).tzinfo is not None
    assert extra["opset"] == str(DEFAULT_OPSET)
    assert extra["exporter"] == "dynamo"
    parity = extra["parity"]
    assert parity["passed"] is True and parity["failed"] == 0
    assert parity["batch_sizes"] == [1, 37, parity["rows"]]
    assert parity["max_abs_error"]["probabilities"] <= tol.PROBABILITY_ATOL
    assert parity["tolerances"]["PROBABILITY_ATOL"] == tol.PROBABILITY_ATOL


def test_sigmoid_threshold_is_in_the_graph_and_the_metadata(
    binary: TinyModel, tmp_path: Path
) -> None:
    out = tmp_path / "t.onnx"
    result = checkpoint_to_onnx(binary.run_dir, out, threshold=0.3)
    assert result.threshold == 0.3
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert ModelContract.from_metadata(props).threshold == 0.3
    x, _ = binary.run.validation()
    _, p, label = _session(out).run(None, {INPUT_NAME: x})
    np.testing.assert_array_equal(label, (p[:, 0] >= np.float32(0.3)).astype(np.int64))


@pytest.mark.slow
def test_torchscript_exporter_gives_the_same_model(multiclass: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "ts.onnx"
    result = checkpoint_to_onnx(multiclass.run_dir, out, exporter="torchscript")
    assert result.exporter == "torchscript" and result.parity is not None
    assert result.parity.passed
    x, _ = multiclass.run.validation()
    dynamo = _session(multiclass.model).run(None, {INPUT_NAME: x})
    script = _session(out).run(None, {INPUT_NAME: x})
    for a, b in zip(dynamo[:2], script[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol.PROBABILITY_ATOL)
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert props[PREFIX + "exporter"] == "torchscript"
    # TorchScript keeps no module paths: --localize says so, a failing verify notes it
    result = CliRunner().invoke(
        cli, ["verify", str(out), "--run", str(multiclass.run_dir), "--localize"]
    )
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot localize in {out}: its nodes record no torch module paths "
        "(onnxedge.module node metadata, written by the dynamo exporter) to match the "
        "module's forward hooks\n",
    )
    weight = next(t for t in model.graph.initializer if t.name.endswith("weight"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 1, weight.name))
    onnx.save(model, str(tmp_path / "tampered.onnx"))
    report = verify_model(tmp_path / "tampered.onnx", run_dir=multiclass.run_dir)
    assert not report.passed and report.localization is not None
    assert report.localization["unavailable"].startswith("its nodes record no torch module")
    assert "first diverging node not searched: its nodes" in report.render_table()


def test_falls_back_to_torchscript_only_when_dynamo_fails(
    binary: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr(onnx_export, "_dynamo_export", broken)
    result = checkpoint_to_onnx(binary.run_dir, tmp_path / "fb.onnx", verify=False)
    assert result.exporter == "torchscript"
    assert result.fallback_reason == (
        "dynamo exporter failed: RuntimeError: unsupported operator aten::frobnicate"
    )
    with pytest.raises(ExportError, match="the dynamo exporter failed: RuntimeError"):
        checkpoint_to_onnx(binary.run_dir, tmp_path / "strict.onnx", exporter="dynamo")
    assert not (tmp_path / "strict.onnx").exists()


@pytest.mark.slow
def test_another_opset_is_written_and_recorded(binary: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "o20.onnx"
    result = checkpoint_to_onnx(binary.run_dir, out, opset=20)
    model = onnx.load(str(out))
    assert result.opset == 20 and {o.domain: o.version for o in model.opset_import}[""] == 20
    assert (
        ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}).extra["opset"]
        == "20"
    )


@pytest.mark.parametrize(
    ("opset", "exporter", "message"),
    [
        (
            17,
            "auto",
            f"opset 17 is not supported by the auto exporter; choose "
            f"{MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})",
        ),
        (
            21,
            "torchscript",
            f"opset 21 is not supported by the torchscript exporter; choose "
            f"{MIN_OPSET}..20 (default {DEFAULT_OPSET})",
        ),
    ],
)
def test_unsupported_opsets_are_refused(
    binary: TinyModel, tmp_path: Path, opset: int, exporter: str, message: str
) -> None:
    with pytest.raises(ExportError) as info:
        checkpoint_to_onnx(binary.run_dir, tmp_path / "m.onnx", opset=opset, exporter=exporter)
    assert str(info.value) == message


def test_failed_parity_leaves_no_file_but_writes_the_report(
    binary: TinyModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    leftovers: Callable[[Path], list[str]],
) -> None:
    def failing_verify(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        report = verify_model(*args, **kwargs)  # type: ignore[arg-type]
        report.checks.append(
            Check(
                "probabilities",
                "onnx~torch",
                1,
                1.0,
                tol.PROBABILITY_ATOL,
                "PROBABILITY_ATOL",
                False,
                "max abs 1",
            )
        )
        return report

    monkeypatch.setattr(onnx_export, "verify_model", failing_verify)
    out, report = tmp_path / "m.onnx", tmp_path / "m.parity.json"
    with pytest.raises(ParityError) as info:
        checkpoint_to_onnx(binary.run_dir, out, report_path=report)
    assert info.value.failures == ["probabilities onnx~torch batch=1: max abs 1"]
    assert not out.exists() and leftovers(tmp_path) == []
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["model"] == str(out)


# --- bad input through the CLI: one line, exit 1, nothing left behind ----------------------


def _export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["export", *args])
    return result.exit_code, result.output


def _copy_run(tiny: TinyModel, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny.run_dir, tmp_path / "run"))


def test_missing_weights(
    binary: TinyModel, tmp_path: Path, leftovers: Callable[[Path], list[str]]
) -> None:
    run = _copy_run(binary, tmp_path)
    (run / WEIGHTS_FILE).unlink()
    out = tmp_path / "out" / "m.onnx"
    code, output = _export(str(run), "-o", str(out))
    assert code == 1
    assert output == f"Error: run folder {run} is missing {WEIGHTS_FILE}\n"
    assert not out.exists()


def test_corrupt_weights(
    binary: TinyModel, tmp_path: Path, leftovers: Callable[[Path], list[str]]
) -> None:
    run = _copy_run(binary, tmp_path)
    (run / WEIGHTS_FILE).write_bytes(b"\x00\x01 not safetensors")
    out = tmp_path / "m.onnx"
    code, output = _export(str(run), "-o", str(out))
    assert code == 1
    assert output.startswith(f"Error: cannot read {run / WEIGHTS_FILE}: ")
    assert output.count("\n") == 1
    assert not out.exists() and leftovers(tmp_path) == []


def test_config_that_does_not_match_the_weights(
    binary: TinyModel, tmp_path: Path, leftovers: Callable[[Path], list[str]]
) -> None:
    run = _copy_run(binary, tmp_path)
    config = json.loads((run / CONFIG_FILE).read_text())
    config["net"]["hidden_sizes"] = [13]
    (run / CONFIG_FILE).write_text(json.dumps(config))
    out = tmp_path / "m.onnx"
    code, output = _export(str(run), "-o", str(out))
    assert code == 1
    features = binary.run.config.input_size
    assert output == (
        f"Error: {CONFIG_FILE} does not match {WEIGHTS_FILE} in {run}: "
        f"hidden.0.weight: config expects (13, {features}), weights have (12, {features}); "
        "hidden.0.bias: config expects (13,), weights have (12,); "
        "output.weight: config expects (1, 13), weights have (1, 12)\n"
    )
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(binary: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    code, output = _export(str(binary.run_dir), "-o", str(out))
    assert code == 1
    assert output == f"Error: {out} already exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == b"keep me"
    code, _ = _export(str(binary.run_dir), "-o", str(out), "--overwrite", "--no-verify")
    assert code == 0
    assert onnx.load(str(out)).graph.output[0].name == "logits"


def test_output_under_a_file_is_unwritable(binary: TinyModel, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code, output = _export(str(binary.run_dir), "-o", str(blocker / "m.onnx"))
    assert code == 1
    assert output.startswith(f"Error: cannot write to {blocker}: ")
    assert output.count("\n") == 1


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_read_only_folder_is_unwritable(binary: TinyModel, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, output = _export(str(binary.run_dir), "-o", str(folder / "m.onnx"))
    finally:
        folder.chmod(0o700)
    assert code == 1
    assert output == f"Error: cannot write to {folder}: Permission denied\n"
    assert list(folder.iterdir()) == []


def test_output_that_is_a_folder(binary: TinyModel, tmp_path: Path) -> None:
    code, output = _export(str(binary.run_dir), "-o", str(tmp_path))
    assert code == 1
    assert output == (
        f"Error: {tmp_path} is a folder; give the model's file name, like {tmp_path}/model.onnx\n"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ("--head", "sigmoid"),
            "head sigmoid does not fit this multiclass net (4 logits, 4 classes); "
            "use --head softmax or --head auto",
        ),
        (  # the default's own value too: no threshold is "not given" by its value
            ("--threshold", "0.5"),
            "a threshold (0.5) applies to the sigmoid head only; the softmax head labels "
            "each row with its most probable class",
        ),
    ],
)
def test_head_that_does_not_fit(
    multiclass: TinyModel, tmp_path: Path, option: tuple[str, str], message: str
) -> None:
    out = tmp_path / "m.onnx"
    code, output = _export(str(multiclass.run_dir), "-o", str(out), *option)
    assert code == 1
    assert output == f"Error: {message}\n"
    assert not out.exists()


def test_missing_run_folder(tmp_path: Path) -> None:
    code, output = _export(str(tmp_path / "nope"), "-o", str(tmp_path / "m.onnx"))
    assert code == 1
    assert output == f"Error: run folder {tmp_path / 'nope'} does not exist\n"
