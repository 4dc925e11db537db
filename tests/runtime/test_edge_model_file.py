"""Untrusted model files: the protobuf walk against onnx's own parser, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxedge.runtime import ModelLoadError, Predictor, edge_infer
from onnxedge.runtime.edge_infer import _SCHEMA, EdgeError, ModelScan, check_external_data

from tests.runtime.onnx_models import (
    ModelCase,
    build_cnn,
    build_multiclass,
    build_sklearn_linear,
    save,
    with_external_data,
)


def inspect_model(model: Path | bytes) -> ModelScan:
    """The edge script's walk of a model file, or of its bytes."""
    if isinstance(model, bytes):
        return edge_infer.scan_model(model, "<bytes>")
    return edge_infer.read_model_file(str(model), str(model))


def _relocate(path: Path, location: str, out: Path) -> Path:
    """Rewrite every external-data location of the model at ``path`` to ``location``."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("name", ["multiclass", "binary", "plain"])
def test_header_matches_onnx(name: str, request: pytest.FixtureRequest) -> None:
    case: ModelCase = request.getfixturevalue(name)
    model = onnx.load(str(case.path))
    info = inspect_model(case.path)
    assert info.format == "onnx"
    assert info.ir_version == model.ir_version
    assert info.producer_name == model.producer_name
    assert info.opsets == {o.domain: o.version for o in model.opset_import}
    assert info.size_bytes == case.path.stat().st_size
    assert info.external == []
    # bytes and path give the same answer
    assert inspect_model(case.data) == info


def test_external_data_in_the_model_folder_is_allowed(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path / "ok", "model")
    info = inspect_model(path)
    assert {t.location for t in info.external} == {"model.bin"}
    assert len(info.external) == len(
        onnx.load(str(path), load_external_data=False).graph.initializer
    )
    check_external_data(info.external, str(path.parent), str(path))
    x = multiclass.rows(4)
    np.testing.assert_array_equal(
        Predictor(path).predict(x).probabilities,
        Predictor(multiclass.path).predict(x).probabilities,
    )


def test_external_data_escaping_the_folder_is_refused(
    tmp_path: Path, multiclass: ModelCase
) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path / "sub", "model")
    (tmp_path / "model.bin").write_bytes((tmp_path / "sub" / "model.bin").read_bytes())
    escaping = _relocate(path, "../model.bin", tmp_path / "sub" / "escaping.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(escaping)
    resolved = os.path.realpath(tmp_path / "model.bin")
    folder = os.path.realpath(tmp_path / "sub")
    assert str(info.value) == (
        f"refusing model {escaping}: tensor 'mean' reads external data from '../model.bin', "
        f"which resolves to {resolved!r} outside the model's folder {folder!r}"
    )


def test_absolute_external_path_is_refused(tmp_path: Path, multiclass: ModelCase) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path, "model")
    target = str(tmp_path / "model.bin")
    absolute = _relocate(path, target, tmp_path / "absolute.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(absolute)
    assert str(info.value) == (
        f"refusing model {absolute}: tensor 'mean' reads external data from absolute path "
        f"{target!r}; external data must lie in the model's folder"
    )


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path, multiclass: ModelCase) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path / "outside", "model")
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "link.bin").symlink_to(path.parent / "model.bin")
    linked = _relocate(path, "link.bin", inside / "linked.onnx")
    with pytest.raises(ModelLoadError, match=r"resolves to .* outside the model's folder"):
        Predictor(linked)


def test_bytes_with_external_data_are_refused(tmp_path: Path, multiclass: ModelCase) -> None:
    path = with_external_data(onnx.load(str(multiclass.path)), tmp_path, "model")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path.read_bytes())
    assert str(info.value) == (
        "refusing model <bytes>: tensor 'mean' is stored in external file 'model.bin', and a "
        "model given as bytes has no folder to read it from; open the model from its path instead"
    )


def test_external_data_inside_a_subgraph_is_found(tmp_path: Path) -> None:
    # An If whose branches hold Constant tensors: the walk must reach node attributes
    # of subgraphs, not just the top-level initializers.
    def branch(value: float, name: str) -> onnx.GraphProto:
        const = numpy_helper.from_array(np.full((64,), value, dtype=np.float32), f"{name}_value")
        node = helper.make_node("Constant", [], [f"{name}_out"], value=const)
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [64])
        return helper.make_graph([node], name, [], [out])

    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])
    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=branch(1.0, "then"), else_branch=branch(2.0, "else")
    )
    model = helper.make_model(
        helper.make_graph([node], "g", [cond], [out]), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = with_external_data(model, tmp_path / "sub", "if")
    assert {t.tensor for t in inspect_model(path).external} == {"then_value", "else_value"}
    escaping = _relocate(path, "../if.bin", tmp_path / "sub" / "escaping.onnx")
    with pytest.raises(
        EdgeError, match=r"tensor '(then|else)_value' reads external data from '\.\./if\.bin'"
    ):
        check_external_data(inspect_model(escaping).external, str(escaping.parent), str(escaping))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value) == f"not a valid ONNX model: {path}: the file is empty"
    with pytest.raises(
        ModelLoadError, match=r"^not a valid ONNX model: <bytes>: the file is empty$"
    ):
        Predictor(b"")


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"this is a text file, not a model\n")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    message = str(info.value)
    assert message.startswith(f"not a valid ONNX model: {path}: protobuf parsing failed (")
    assert "\n" not in message


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, multiclass: ModelCase, fraction: float) -> None:
    data = multiclass.data
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value).startswith(f"not a valid ONNX model: {path}: ")
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value) == f"model file not found: {path}"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        Predictor(tmp_path)
    assert str(info.value) == f"model path is a directory, not a file: {tmp_path}"


def test_wrong_type() -> None:
    with pytest.raises(ModelLoadError, match=r"^model must be a path or bytes; got int$"):
        Predictor(3)  # type: ignore[arg-type]


def test_valid_protobuf_that_is_not_a_model(tmp_path: Path) -> None:
    # A TensorProto parses as protobuf but holds no graph.
    path = tmp_path / "tensor.onnx"
    path.write_bytes(
        numpy_helper.from_array(np.arange(6, dtype=np.float32), "t").SerializeToString()
    )
    with pytest.raises(ModelLoadError, match=r"^not a valid ONNX model: .*tensor\.onnx: "):
        Predictor(path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def test_deep_nesting_is_refused_without_recursion() -> None:
    # GraphProto.node(1) -> NodeProto.attribute(5) -> AttributeProto.g(6) -> GraphProto,
    # 80 levels deep: more than protobuf itself parses, so it is written by hand.
    graph = b""
    for _ in range(80):
        graph = _field(1, _field(5, _field(6, graph)))
    with pytest.raises(
        EdgeError, match=r"^refusing model <bytes>: subgraphs nest deeper than 64 levels$"
    ):
        inspect_model(_field(7, graph))
    shallow = b""
    for _ in range(10):
        shallow = _field(1, _field(5, _field(6, shallow)))
    assert inspect_model(_field(7, shallow)).external == []


def test_multi_input_model_is_refused(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Add", ["a", "b"], ["probabilities"])], "g", [a, b], [y]
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = save(model, tmp_path / "two.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value) == (
        f"cannot use model {path}: onnxedge runs classifiers with one input; "
        "this model has 2 (a, b)"
    )


def test_metadata_disagreeing_with_the_graph_is_refused(tmp_path: Path) -> None:
    model, _, contract = build_multiclass(num_features=5)
    contract.num_features = 6
    del model.metadata_props[:]
    helper.set_model_props(model, contract.to_metadata())
    path = save(model, tmp_path / "liar.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value) == (
        f"cannot use model {path}: its metadata says 6 features but input 'input' takes 5"
    )


def test_ort_format_opens(tmp_path: Path, multiclass: ModelCase) -> None:
    import onnxruntime as ort

    ort_path = tmp_path / "multiclass.ort"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(multiclass.path), options, providers=["CPUExecutionProvider"])
    assert inspect_model(ort_path).format == "ort"
    x = multiclass.rows(9)
    want = Predictor(multiclass.path).predict(x)
    for source in (ort_path, ort_path.read_bytes()):
        predictor = Predictor(source)
        got = predictor.predict(x)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.probabilities, want.probabilities)
        assert predictor.describe()["format"] == "ort"


# --- as strict as protobuf --------------------------------------------------------------


def _our_name(descriptor: object) -> str:
    names = {
        "onnx.ModelProto": "Model",
        "onnx.OperatorSetIdProto": "Opset",
        "onnx.StringStringEntryProto": "Entry",
        "onnx.DeviceConfigurationProto": "Config",
        "onnx.GraphProto": "Graph",
        "onnx.NodeProto": "Node",
        "onnx.AttributeProto": "Attribute",
        "onnx.TensorProto": "Tensor",
        "onnx.TensorProto.Segment": "Segment",
        "onnx.SparseTensorProto": "Sparse",
        "onnx.ValueInfoProto": "Value",
        "onnx.TypeProto": "Type",
        "onnx.TypeProto.Tensor": "TensorType",
        "onnx.TypeProto.SparseTensor": "TensorType",
        "onnx.TypeProto.Sequence": "ElemType",
        "onnx.TypeProto.Optional": "ElemType",
        "onnx.TypeProto.Map": "MapType",
        "onnx.TypeProto.Opaque": "Opaque",
        "onnx.TensorShapeProto": "Shape",
        "onnx.TensorShapeProto.Dimension": "Dim",
        "onnx.TensorAnnotation": "Annotation",
        "onnx.TrainingInfoProto": "Training",
        "onnx.FunctionProto": "Function",
        "onnx.NodeDeviceConfigurationProto": "NodeConfig",
        "onnx.ShardingSpecProto": "Sharding",
        "onnx.IntIntListEntryProto": "IntList",
        "onnx.ShardedDimProto": "ShardedDim",
        "onnx.SimpleShardedDimProto": "SimpleDim",
    }
    return names[descriptor.full_name]  # type: ignore[attr-defined]


def test_the_walk_follows_onnx_proto() -> None:
    from google.protobuf.descriptor import FieldDescriptor as F

    fixed32 = {F.TYPE_FLOAT, F.TYPE_FIXED32, F.TYPE_SFIXED32}
    fixed64 = {F.TYPE_DOUBLE, F.TYPE_FIXED64, F.TYPE_SFIXED64}
    todo, seen = [onnx.ModelProto.DESCRIPTOR], set()
    while todo:
        descriptor = todo.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        expected: dict[int, str] = {}
        for f in descriptor.fields:
            if f.type == F.TYPE_MESSAGE:
                expected[f.number] = _our_name(f.message_type)
                todo.append(f.message_type)
            elif f.is_repeated and f.type not in (F.TYPE_STRING, F.TYPE_BYTES):
                expected[f.number] = (
                    "f4" if f.type in fixed32 else "f8" if f.type in fixed64 else "v"
                )
        assert _SCHEMA[_our_name(descriptor)] == expected, descriptor.full_name


def _corrupted(data: bytes, seed: int, truncations: int, flips: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    copies = [data[:k] for k in rng.integers(1, len(data), truncations)]
    for _ in range(flips):
        copy = bytearray(data)
        copy[rng.integers(0, len(copy))] ^= int(rng.integers(1, 256))
        copies.append(bytes(copy))
    return copies


def test_corrupted_copies_are_refused_as_protobuf_refuses_them(multiclass: ModelCase) -> None:
    models = [multiclass.data, build_cnn()[0].SerializeToString()]
    models.append(build_sklearn_linear()[0].SerializeToString())
    refused_by_protobuf = 0
    for seed, data in enumerate(models):
        for copy in _corrupted(data, seed, truncations=60, flips=300):
            try:
                onnx.ModelProto().ParseFromString(copy)
                parsed = True
            except Exception:
                parsed = False
            try:
                inspect_model(copy)
                walked = ""
            except EdgeError as exc:
                walked = str(exc)
            if not parsed:
                refused_by_protobuf += 1
                assert walked.startswith("not a valid ONNX model: <bytes>: "), copy
            elif walked:  # stricter than protobuf only where onnxedge asks for a graph
                assert walked == "not a valid ONNX model: <bytes>: the file holds no graph"
    assert refused_by_protobuf > 300, "the corruptions should hit protobuf's checks"


# --- untrusted external data: nothing is opened that may not be read ---------------------


def _set_entries(path: Path, out: Path, **entries: str) -> Path:
    """Rewrite the external-data entries of every tensor of the model at ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key in entries:
                entry.value = entries[entry.key]
        for key in set(entries) - {e.key for e in tensor.external_data}:
            tensor.external_data.add(key=key, value=entries[key])
    onnx.save(model, str(out))
    return out


def _run(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Python code in a subprocess; a hang (a FIFO opened) fails instead of blocking."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {SUBPROCESS_TIMEOUT_S} s: {code} {args}")


#: a hang fails the test after this long (model loads take well under a second)
SUBPROCESS_TIMEOUT_S = 120

PREDICTOR = (
    "import sys\nfrom onnxedge.runtime import OnnxEdgeError, Predictor\n"
    "try:\n    Predictor(sys.argv[1])\nexcept OnnxEdgeError as exc:\n"
    "    print(exc)\n    sys.exit(1)\n"
)
EDGE = (
    "import runpy, sys\nsys.argv = ['edge_infer.py', *sys.argv[1:]]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)
SCORE = "import sys\nfrom onnxedge.runtime.cli import main\nmain(sys.argv[1:])\n"


@pytest.fixture
def hostile(tmp_path: Path, multiclass: ModelCase) -> dict[str, tuple[Path, str]]:
    """Models whose external data must not be read, with the refusal each gets."""
    folder = tmp_path / "models"
    path = with_external_data(onnx.load(str(multiclass.path)), folder, "model")
    size = (folder / "model.bin").stat().st_size
    os.mkfifo(folder / "pipe.bin")
    (tmp_path / "secret").write_bytes(b"\x00" * size)
    where = "tensor 'mean' reads external data from"
    cases = {
        "fifo": ({"location": "pipe.bin"}, f"{where} 'pipe.bin', which is not a regular file"),
        "marker": (
            {"location": "*/_ORT_MEM_ADDR_/*"},
            "tensor 'mean' has an invalid external data location '*/_ORT_MEM_ADDR_/*'",
        ),
        "traversal": (
            {"location": "../secret"},
            f"{where} '../secret', which resolves to "
            f"{os.path.realpath(tmp_path / 'secret')!r} outside the model's folder "
            f"{os.path.realpath(folder)!r}",
        ),
        "past_the_end": (
            {"offset": str(size - 4), "length": "64"},
            f"{where} 'model.bin' at bytes {size - 4}..{size + 60}, past the end of the file "
            f"({size} bytes)",
        ),
        "folder": ({"location": "."}, f"{where} '.', which is not a regular file"),
    }
    out = {}
    for name, (entries, why) in cases.items():
        target = _set_entries(path, folder / f"{name}.onnx", **entries)
        out[name] = (target, f"refusing model {target}: {why}")
    fifo_model = folder / "fifo_model.onnx"
    os.mkfifo(fifo_model)
    out["model_is_a_fifo"] = (fifo_model, f"refusing model {fifo_model}: it is not a regular file")
    return out


def test_hostile_external_data_is_refused_everywhere(
    hostile: dict[str, tuple[Path, str]], tmp_path: Path, multiclass: ModelCase
) -> None:
    rows = tmp_path / "rows.npy"
    np.save(rows, multiclass.rows(3))
    edge = EDGE.format(script=str(Path(edge_infer.__file__)))
    for name, (path, message) in hostile.items():
        got = _run(PREDICTOR, str(path), cwd=tmp_path)
        assert (got.returncode, got.stdout, got.stderr) == (1, message + "\n", ""), name
        got = _run(edge, str(path), str(rows), cwd=tmp_path)
        assert (got.returncode, got.stdout) == (1, ""), name
        assert got.stderr == f"Error: {message}\n", name
        out = tmp_path / f"{name}.csv"
        got = _run(SCORE, "score", str(path), str(rows), "-o", str(out), cwd=tmp_path)
        assert got.returncode == 1 and got.stderr.endswith(f"Error: {message}\n"), name
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "rows.npy", "secret"]
