"""Predictor: results against onnxruntime called by hand and the numpy reference, input
validation with exact messages, batching, bytes vs path, plain models, threads."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper, numpy_helper
from onnxedge.runtime import (
    InputShapeError,
    InputValueError,
    ModelLoadError,
    OnnxEdgeError,
    Prediction,
    Predictor,
)
from onnxedge.runtime.predictor import MAX_DEFAULT_THREADS, default_threads
from onnxedge.runtime.tolerances import (
    LOGIT_ATOL,
    PROBABILITY_ATOL,
    PROBABILITY_SUM_ATOL,
    REFERENCE_FLOAT32_ATOL,
    REFERENCE_FLOAT32_RTOL,
)

from tests.runtime.onnx_models import (
    ModelCase,
    build_cnn,
    build_foreign,
    build_multiclass,
    build_sklearn_linear,
    cnn_forward,
    numpy_forward,
    save,
    with_golden,
)


def _by_hand(case: ModelCase, x: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's outputs from a session created here, bypassing Predictor."""
    session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


# --- results --------------------------------------------------------------------------


def test_multiclass_equals_onnxruntime_by_hand(multiclass: ModelCase) -> None:
    x = multiclass.rows(50)
    got = Predictor(multiclass.path).predict(x, return_logits=True)
    want = _by_hand(multiclass, x)
    assert got.probabilities.dtype == np.float32 and got.probabilities.shape == (50, 3)
    assert got.labels.dtype == np.int64 and got.labels.shape == (50,)
    np.testing.assert_allclose(
        got.probabilities, want["probabilities"], rtol=0, atol=PROBABILITY_ATOL
    )
    np.testing.assert_array_equal(got.labels, want["label"])
    assert got.logits is not None
    np.testing.assert_allclose(got.logits, want["logits"], rtol=0, atol=LOGIT_ATOL)
    assert got.class_names == ["class_0", "class_1", "class_2"]
    assert got.names == [f"class_{k}" for k in want["label"]]


def test_binary_expands_to_two_columns(binary: ModelCase) -> None:
    x = binary.rows(200, seed=3)
    got = Predictor(binary.path).predict(x)
    want = _by_hand(binary, x)
    positive = want["probabilities"][:, 0]
    assert got.probabilities.shape == (200, 2)
    np.testing.assert_allclose(got.probabilities[:, 1], positive, rtol=0, atol=PROBABILITY_ATOL)
    np.testing.assert_allclose(
        got.probabilities[:, 0], np.float32(1) - positive, rtol=0, atol=PROBABILITY_ATOL
    )
    np.testing.assert_array_equal(got.labels, want["label"])
    # the graph's label is its threshold (0.4 here, not 0.5) applied to p
    np.testing.assert_array_equal(got.labels, (positive >= binary.threshold).astype(np.int64))
    assert {0, 1} <= set(got.labels.tolist()), "the test data should hit both classes"
    assert got.names == [["negative", "positive"][k] for k in got.labels]


def test_results_match_the_numpy_reference(any_model: ModelCase) -> None:
    x = any_model.rows(64, seed=7)
    got = Predictor(any_model.path).predict(x, return_logits=True)
    ref = numpy_forward(any_model, x)
    np.testing.assert_allclose(
        got.probabilities,
        ref["probabilities"],
        rtol=REFERENCE_FLOAT32_RTOL,
        atol=REFERENCE_FLOAT32_ATOL,
    )
    np.testing.assert_array_equal(got.labels, _reference_labels(any_model, ref["probabilities"]))
    np.testing.assert_allclose(
        got.probabilities.sum(axis=1), np.ones(64), rtol=0, atol=PROBABILITY_SUM_ATOL
    )


def _reference_labels(case: ModelCase, probs: np.ndarray) -> np.ndarray:
    if probs.shape[1] == 2 and case.name == "binary":
        return (probs[:, 1] >= case.threshold).astype(np.int64)
    return probs.argmax(axis=1)


def test_top_probabilities(multiclass: ModelCase, binary: ModelCase) -> None:
    for case in (multiclass, binary):
        got = Predictor(case.path).predict(case.rows(30))
        np.testing.assert_array_equal(
            got.top_probabilities, got.probabilities[np.arange(30), got.labels]
        )


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_batching_gives_the_same_results(any_model: ModelCase, batch_size: int) -> None:
    x = any_model.rows(100, seed=11)
    predictor = Predictor(any_model.path)
    whole = predictor.predict(x, return_logits=True)
    batched = predictor.predict(x, batch_size=batch_size, return_logits=True)
    np.testing.assert_array_equal(batched.labels, whole.labels)
    np.testing.assert_allclose(
        batched.probabilities, whole.probabilities, rtol=0, atol=PROBABILITY_ATOL
    )
    if whole.logits is not None:
        assert batched.logits is not None
        np.testing.assert_allclose(batched.logits, whole.logits, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("batch_size", [None, 1, 13])
def test_io_binding_gives_the_same_results(any_model: ModelCase, batch_size: int | None) -> None:
    # The CUDA path (I/O binding into the result arrays) exercised on the CPU provider.
    x = any_model.rows(40, seed=2)
    plain_run = Predictor(any_model.path).predict(x, return_logits=True)
    bound = Predictor(any_model.path, io_binding=True).predict(
        x, batch_size=batch_size, return_logits=True
    )
    np.testing.assert_array_equal(bound.labels, plain_run.labels)
    np.testing.assert_allclose(
        bound.probabilities, plain_run.probabilities, rtol=0, atol=PROBABILITY_ATOL
    )
    assert (bound.logits is None) == (plain_run.logits is None)


def test_bytes_and_path_agree(any_model: ModelCase) -> None:
    x = any_model.rows(20, seed=4)
    from_path = Predictor(any_model.path).predict(x)
    for source in (any_model.data, bytearray(any_model.data), str(any_model.path)):
        got = Predictor(source).predict(x)  # type: ignore[arg-type]
        np.testing.assert_array_equal(got.probabilities, from_path.probabilities)
        np.testing.assert_array_equal(got.labels, from_path.labels)


def test_plain_model_runs_and_says_what_it_does_not_know(
    plain: ModelCase, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxedge.runtime"):
        predictor = Predictor(plain.path)
    assert predictor.input_name == "float_input"
    assert predictor.output_names == ["output_probability"]
    assert predictor.num_features == 3 and predictor.num_classes == 4
    assert predictor.class_names is None
    assert predictor.contract.missing == [
        "onnxedge.task",
        "onnxedge.head",
        "onnxedge.class_names",
        "onnxedge.num_features",
    ]
    assert predictor.warnings == [
        "output 'output_probability' is taken as the class probabilities "
        "(skl2onnx's probability output)",
        "the model has no label output; labels are computed from the probabilities",
        "no onnxedge metadata for onnxedge.task, onnxedge.head, onnxedge.class_names, "
        "onnxedge.num_features; labels are class indices",
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(w in message for message in logged) for w in predictor.warnings)
    x = plain.rows(25)
    got = predictor.predict(x, return_logits=True)
    want = _by_hand(plain, x)["output_probability"]
    np.testing.assert_allclose(got.probabilities, want, rtol=0, atol=PROBABILITY_ATOL)
    np.testing.assert_array_equal(got.labels, want.argmax(axis=1))
    assert got.logits is None
    assert got.names == [str(k) for k in got.labels]


def test_onnxedge_model_has_no_warnings(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    assert predictor.warnings == []
    assert predictor.contract.missing == []
    assert predictor.contract.feature_names == [f"f{i}" for i in range(5)]


def test_attributes(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path, provider="cpu", threads=1)
    assert predictor.input_name == "input"
    assert predictor.output_names == ["logits", "probabilities", "label"]
    assert (predictor.num_features, predictor.num_classes) == (5, 3)
    assert predictor.provider == "CPUExecutionProvider"
    assert repr(predictor) == (
        f"Predictor({str(multiclass.path)!r}, provider='CPUExecutionProvider', "
        "features=5, classes=3)"
    )


def test_describe(multiclass: ModelCase) -> None:
    info = Predictor(multiclass.path).describe()
    assert info["opsets"] == {"": 17}
    assert info["ir_version"] == 9
    assert info["producer"] == "onnxedge-tests"
    assert info["size_bytes"] == multiclass.path.stat().st_size
    assert info["inputs"] == [{"name": "input", "type": "tensor(float)", "shape": ["batch", 5]}]
    assert [o["name"] for o in info["outputs"]] == ["logits", "probabilities", "label"]
    assert info["onnxedge"]["class_names"] == ["class_0", "class_1", "class_2"]
    assert info["onnxedge"]["parity"] == {"probabilities_max_abs": 1.2e-7, "labels_equal": True}
    assert info["onnxedge"]["normalization"]["mean"] == multiclass.weights["mean"].tolist()
    assert info["available_providers"] == ort.get_available_providers()
    assert info["onnxruntime"]["version"] == ort.__version__


def test_prediction_is_a_small_value_object() -> None:
    p = Prediction(
        probabilities=np.array([[0.25, 0.75]], dtype=np.float32),
        labels=np.array([5], dtype=np.int64),
        class_names=["a", "b"],
    )
    assert len(p) == 1
    assert p.names == ["5"]  # out of range of the names: the label itself


# --- input validation -----------------------------------------------------------------


def test_one_row_is_a_batch_of_one(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    x = multiclass.rows(1)
    np.testing.assert_array_equal(
        predictor.predict(x[0]).probabilities, predictor.predict(x).probabilities
    )
    assert predictor.predict(x[0].tolist()).labels.shape == (1,)


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.uint64, np.bool_]
)
def test_numeric_dtypes_are_cast_to_float32(multiclass: ModelCase, dtype: type) -> None:
    predictor = Predictor(multiclass.path)
    x = (multiclass.rows(6) * 3).astype(dtype)
    got = predictor.predict(x)
    want = predictor.predict(x.astype(np.float32))
    np.testing.assert_array_equal(got.probabilities, want.probabilities)


def test_lists_are_accepted(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    x = multiclass.rows(3)
    np.testing.assert_array_equal(
        predictor.predict(x.tolist()).probabilities, predictor.predict(x).probabilities
    )


def test_non_contiguous_input(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    wide = multiclass.rows(20)
    strided = np.asfortranarray(wide)[::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(
        predictor.predict(strided).probabilities,
        predictor.predict(np.ascontiguousarray(strided)).probabilities,
    )


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (np.array([["a", "b", "c", "d", "e"]]), "<U1"),
        (np.array([[1, None, 2, 3, 4]], dtype=object), "object"),
        (np.ones((2, 5), dtype=np.complex64), "complex64"),
        (np.array(["2024-01-01"] * 5, dtype="datetime64[D]"), "datetime64[D]"),
    ],
)
def test_non_numeric_input_is_refused(multiclass: ModelCase, value: np.ndarray, dtype: str) -> None:
    with pytest.raises(InputValueError) as info:
        Predictor(multiclass.path).predict(value)
    assert str(info.value) == (
        f"input has dtype {dtype}; expected numbers (bool, int, uint or float, cast to float32)"
    )


def test_wrong_feature_count(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    with pytest.raises(InputShapeError) as info:
        predictor.predict(np.zeros((3, 4), dtype=np.float32))
    assert str(info.value) == "model expects 5 features, input has 4"
    with pytest.raises(InputShapeError) as info:
        predictor.predict(np.zeros(6))
    assert str(info.value) == "model expects 5 features, input has 6"


def test_ragged_rows_name_the_row(multiclass: ModelCase) -> None:
    rows = [[0.0] * 5, [0.0] * 5, [0.0] * 4, [0.0] * 5]
    with pytest.raises(InputShapeError) as info:
        Predictor(multiclass.path).predict(rows)
    assert str(info.value) == "model expects 5 features, input row 2 has 4"


@pytest.mark.parametrize("shape", [(2, 3, 5), (), (1, 1, 1, 5)])
def test_wrong_rank(multiclass: ModelCase, shape: tuple[int, ...]) -> None:
    with pytest.raises(InputShapeError) as info:
        Predictor(multiclass.path).predict(np.zeros(shape, dtype=np.float32))
    assert str(info.value) == (
        f"input must be 2-D (batch, features) or one 1-D row; got shape {shape}"
    )


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_nonfinite_is_refused_with_row_and_column(
    multiclass: ModelCase, bad: float, shown: str
) -> None:
    x = multiclass.rows(10)
    x[7, 3] = bad
    x[8, 0] = bad  # only the first bad value is named
    with pytest.raises(InputValueError) as info:
        Predictor(multiclass.path).predict(x)
    assert str(info.value) == (
        f"input row 7, column 3 ('f3') is {shown}; NaN / Inf are rejected (values beyond "
        "float32's range become inf); pass nonfinite='allow' to score them anyway"
    )


def test_float64_beyond_float32_is_refused(plain: ModelCase) -> None:
    x = np.zeros((2, 3))
    x[1, 2] = 1e39  # finite in float64, inf in float32
    with pytest.raises(InputValueError) as info:
        Predictor(plain.path).predict(x)
    # the plain model has no feature names: the column is a number only
    assert str(info.value).startswith("input row 1, column 2 is inf; ")


def test_huge_finite_values_are_not_mistaken_for_inf(multiclass: ModelCase) -> None:
    # x.x overflows float32 here; the exact check must let the batch through.
    x = np.full((2, 5), 3e38, dtype=np.float32)
    got = Predictor(multiclass.path).predict(x)
    assert got.labels.shape == (2,)


def test_nonfinite_allowed(multiclass: ModelCase) -> None:
    x = multiclass.rows(3)
    x[1, 1] = np.nan
    got = Predictor(multiclass.path, nonfinite="allow").predict(x)
    assert np.isnan(got.probabilities[1]).all()
    assert np.isfinite(got.probabilities[[0, 2]]).all()


def test_bad_options() -> None:
    with pytest.raises(
        InputValueError, match=r"^nonfinite must be 'reject' or 'allow'; got 'drop'$"
    ):
        Predictor(b"", nonfinite="drop")  # type: ignore[arg-type]


def test_bad_batch_size(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputValueError) as info:
            predictor.predict(multiclass.rows(2), batch_size=bad)  # type: ignore[arg-type]
        assert str(info.value) == f"batch_size must be an integer >= 1; got {bad!r}"


def test_empty_batch(any_model: ModelCase) -> None:
    for io_binding in (False, True):
        predictor = Predictor(any_model.path, io_binding=io_binding)
        got = predictor.predict(
            np.empty((0, any_model.num_features), dtype=np.float32), return_logits=True
        )
        assert got.probabilities.shape == (0, any_model.num_classes)
        assert got.probabilities.dtype == np.float32
        assert got.labels.shape == (0,) and got.labels.dtype == np.int64
        assert got.names == []
        assert len(got.top_probabilities) == 0
        assert len(predictor.predict(np.empty((0, any_model.num_features)), batch_size=4)) == 0


# --- hypothesis: extreme values --------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    x=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6).map(lambda s: (s[0], 5)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    )
)
def test_any_float64_batch_is_scored_or_refused_by_the_rule(
    multiclass_predictor: Predictor, x: np.ndarray
) -> None:
    with np.errstate(over="ignore"):
        as32 = x.astype(np.float32)
    if not np.isfinite(as32).all():
        with pytest.raises(InputValueError):
            multiclass_predictor.predict(x)
        return
    got = multiclass_predictor.predict(x)
    probs = got.probabilities
    # Extreme but finite inputs may drive the logits to inf (then softmax gives NaN);
    # wherever the logits are finite the head must give a distribution.
    logits = multiclass_predictor.predict(x, return_logits=True).logits
    assert logits is not None
    finite_rows = np.isfinite(logits).all(axis=1)
    ok = probs[finite_rows]
    assert ((ok >= 0) & (ok <= 1)).all()
    np.testing.assert_allclose(ok.sum(axis=1), 1.0, rtol=0, atol=PROBABILITY_SUM_ATOL)
    np.testing.assert_array_equal(got.labels[finite_rows], ok.argmax(axis=1))


@pytest.fixture(scope="module")
def multiclass_predictor(multiclass: ModelCase) -> Predictor:
    return Predictor(multiclass.path)


# --- threads, options, concurrency ----------------------------------------------------


def test_default_threads() -> None:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    assert default_threads() == max(1, min(cpus, MAX_DEFAULT_THREADS))


def test_threads_reach_the_session(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path, threads=3, graph_optimization_level="basic")
    options = predictor.session.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert (
        Predictor(multiclass.path).session.get_session_options().intra_op_num_threads
        == default_threads()
    )


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_threads(multiclass: ModelCase, bad: object) -> None:
    with pytest.raises(InputValueError) as info:
        Predictor(multiclass.path, threads=bad)  # type: ignore[arg-type]
    assert str(info.value) == f"threads must be an integer >= 1 or None; got {bad!r}"


def test_optimization_levels_agree(multiclass: ModelCase) -> None:
    x = multiclass.rows(30)
    want = Predictor(multiclass.path, graph_optimization_level="all").predict(x)
    for level in ("disable", "basic", "EXTENDED"):
        got = Predictor(multiclass.path, graph_optimization_level=level).predict(x)
        np.testing.assert_allclose(
            got.probabilities, want.probabilities, rtol=0, atol=PROBABILITY_ATOL
        )
    with pytest.raises(InputValueError) as info:
        Predictor(multiclass.path, graph_optimization_level="max")
    assert (
        str(info.value)
        == "graph_optimization_level must be one of disable, basic, extended, all; got 'max'"
    )


def test_concurrent_predict_calls_on_one_instance(multiclass: ModelCase, binary: ModelCase) -> None:
    for case in (multiclass, binary):
        predictor = Predictor(case.path, threads=1)
        batches = [case.rows(n, seed=n) for n in (1, 5, 17, 64, 3, 200, 9, 33)]
        want = [predictor.predict(b, batch_size=16) for b in batches]
        jobs = [(i % len(batches)) for i in range(64)]

        def score(i: int, predictor: Predictor = predictor, batches: list = batches) -> Prediction:
            return predictor.predict(batches[i], batch_size=16)

        with ThreadPoolExecutor(max_workers=4) as pool:
            got = list(pool.map(score, jobs))
        for i, result in zip(jobs, got, strict=True):
            np.testing.assert_array_equal(result.labels, want[i].labels)
            np.testing.assert_array_equal(result.probabilities, want[i].probabilities)


def test_warmup(multiclass: ModelCase, tmp_path: Path) -> None:
    Predictor(multiclass.path, io_binding=True).warmup(runs=2)
    # a graph whose feature count is dynamic and unstated cannot be warmed up
    model, _, contract = build_multiclass()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    contract.num_features = None
    del model.metadata_props[:]
    from onnx import helper

    helper.set_model_props(model, contract.to_metadata())
    path = save(model, tmp_path / "dynamic.onnx")
    predictor = Predictor(path)
    assert predictor.num_features is None
    with pytest.raises(InputShapeError, match="does not say how many features it takes"):
        predictor.warmup()
    # it still runs; onnxruntime's own refusal becomes a one-line OnnxEdgeError
    assert predictor.predict(multiclass.rows(2)).labels.shape == (2,)
    with pytest.raises(OnnxEdgeError) as info:
        predictor.predict(np.zeros((2, 4), dtype=np.float32))
    assert str(info.value).startswith(f"{path}: onnxruntime failed to run the model: ")
    assert "\n" not in str(info.value)
    assert predictor.warnings == [
        "the model does not say how many features it takes; inputs are not checked",
        "no onnxedge metadata for onnxedge.num_features",
    ]


# --- onnxruntime's own output --------------------------------------------------------


def test_onnxruntime_prints_errors_only_and_never_falls_back(
    multiclass: ModelCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    real = ort.InferenceSession

    def spy(*args: object, **kwargs: object) -> ort.InferenceSession:
        seen.update(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ort, "InferenceSession", spy)
    predictor = Predictor(multiclass.path)
    # its C++ log would go straight to fd 2: errors only (they become exceptions)
    assert predictor.session.get_session_options().log_severity_level == 3
    assert predictor.run_options.log_severity_level == 4
    # no provider fallback printed on stdout, no session settings from the model
    assert (seen["enable_fallback"], seen["read_config_from_model"]) == (0, 0)


def test_binary_probabilities_are_built_from_the_positive_column(binary: ModelCase) -> None:
    import onnxruntime as ort

    x = binary.rows(5)
    session = ort.InferenceSession(str(binary.path), providers=["CPUExecutionProvider"])
    p = session.run(["probabilities"], {"input": x})[0][:, 0]
    for batch in (x, x[:1]):
        result = Predictor(binary.path, provider="cpu").predict(batch)
        n = len(batch)
        assert result.positive is not None
        np.testing.assert_array_equal(result.positive, p[:n])
        np.testing.assert_array_equal(result.probabilities[:, 1], p[:n])
        np.testing.assert_array_equal(result.probabilities[:, 0], np.float32(1) - p[:n])
        assert result.probabilities.dtype == np.float32
        assert result.probabilities is result.probabilities  # built once, then kept


# --- only probabilities are scored ----------------------------------------------------


def _refusal(label: str, output: str, why: str) -> str:
    return (
        f"{label}: output {output!r} is not known to hold probabilities ({why}) -- "
        f"add a head with: onnxedge wrap {label} -o wrapped.onnx"
    )


NO_HEAD = (
    "the model has no onnxedge head in its metadata and is not a known converter's "
    "probability output"
)


@pytest.mark.parametrize(
    ("kind", "output", "why"),
    [
        ("dynamo", "linear_1", NO_HEAD),
        ("identity", "y", NO_HEAD),
        ("logits", "logits", "it holds logits"),
    ],
)
def test_outputs_not_known_to_be_probabilities_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, output: str, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    save(build_foreign(kind), tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor("model.onnx")
    assert str(info.value) == _refusal("model.onnx", output, why)
    # described all the same (onnxedge info), and refused when asked to score
    predictor = Predictor("model.onnx", require_probabilities=False)
    described = predictor.describe()
    assert (described["usable"], described["refusal"]) == (False, str(info.value))
    with pytest.raises(ModelLoadError, match=r"^model\.onnx: output .* -o wrapped\.onnx$"):
        predictor.predict(np.zeros((2, 5), dtype=np.float32))


def test_a_head_the_values_deny_fails_on_the_first_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dynamo export of a net with onnxedge metadata that claims a softmax head:
    # the rule takes its one output, the first batch shows the values are logits.
    model = build_foreign("dynamo")
    helper.set_model_props(model, {"onnxedge.head": "softmax", "onnxedge.task": "multiclass"})
    monkeypatch.chdir(tmp_path)
    save(model, tmp_path / "model.onnx")
    predictor = Predictor("model.onnx")
    x = np.random.default_rng(0).normal(0, 50, (8, 5)).astype(np.float32)
    logits = _by_hand_path(tmp_path / "model.onnx", x)["linear_1"]
    assert logits.min() < 0 or logits.max() > 1, "the fixture must give values outside [0, 1]"
    with pytest.raises(ModelLoadError) as info:
        predictor.predict(x)
    assert str(info.value) == (
        "model.onnx: output 'linear_1' is not known to hold probabilities (its values are not "
        "in [0, 1]) -- add a head with: onnxedge wrap model.onnx -o wrapped.onnx"
    )


def test_rows_that_do_not_sum_to_one_fail_on_the_first_batch(tmp_path: Path) -> None:
    # sigmoid over three columns: each value in [0, 1], the rows do not sum to 1
    model, _, contract = build_multiclass()
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.op_type = "Sigmoid"
    del softmax.attribute[:]
    path = save(model, tmp_path / "sigmoid3.onnx")
    x = model_rows(contract, 6)
    probs = _by_hand_path(path, x)["probabilities"]
    sums = probs.astype(np.float64).sum(axis=1)
    assert np.abs(sums - 1).max() > PROBABILITY_SUM_ATOL
    with pytest.raises(ModelLoadError) as info:
        Predictor(path).predict(x)
    assert str(info.value) == _refusal(str(path), "probabilities", "its rows do not sum to 1")


def test_the_edge_script_uses_the_named_tolerances() -> None:
    from onnxedge.runtime import edge_infer, tolerances

    assert edge_infer.PROBABILITY_SUM_ATOL == tolerances.PROBABILITY_SUM_ATOL
    assert edge_infer.FP16_PROBABILITY_SUM_ATOL == tolerances.FP16_MAX_PROBABILITY_ERROR


def test_skl2onnx_classifier_scores_with_its_class_labels(tmp_path: Path) -> None:
    model, coef, intercepts = build_sklearn_linear()
    path = save(model, tmp_path / "logreg.onnx")
    predictor = Predictor(path)
    assert predictor.class_names == ["setosa", "versicolor", "virginica"]
    assert predictor.file_info.class_labels == ["setosa", "versicolor", "virginica"]
    assert predictor.warnings[:2] == [
        "output 'output_label' is tensor(string), not an integer label; ignored",
        "output 'output_probability' is taken as the class probabilities "
        "(skl2onnx's probability output)",
    ]
    x = np.random.default_rng(3).normal(0, 1, (40, 4)).astype(np.float32)
    got = predictor.predict(x)
    z = x.astype(np.float64) @ coef.T.astype(np.float64) + intercepts
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        got.probabilities, want, rtol=REFERENCE_FLOAT32_RTOL, atol=REFERENCE_FLOAT32_ATOL
    )
    np.testing.assert_array_equal(got.labels, want.argmax(axis=1))
    assert got.names == [predictor.class_names[k] for k in want.argmax(axis=1)]
    assert predictor.describe()["usable"] is True


def test_info_says_whether_a_model_is_usable(tmp_path: Path, multiclass: ModelCase) -> None:
    from click.testing import CliRunner
    from onnxedge.runtime.cli import cli

    path = save(build_foreign("logits"), tmp_path / "logits.onnx")
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert f"usable       no: {_refusal(str(path), 'logits', 'it holds logits')}" in (
        result.output.splitlines()
    )
    good = CliRunner().invoke(cli, ["info", str(multiclass.path)])
    assert "usable       yes, as it is" in good.output.splitlines()


def _by_hand_path(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


def model_rows(contract: Any, n: int) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 2, (n, contract.num_features)).astype(np.float32)


# --- image inputs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    model, weights = build_cnn()
    return save(model, tmp_path_factory.mktemp("cnn") / "cnn.onnx"), weights


def test_image_rows_in_every_accepted_shape(cnn: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, weights = cnn
    predictor = Predictor(path)
    assert (predictor.input_shape, predictor.num_features) == ((1, 8, 8), 64)
    assert predictor.warnings == []
    x = np.random.default_rng(2).uniform(0, 1, (9, 1, 8, 8)).astype(np.float32)
    got = predictor.predict(x, return_logits=True)
    logits = cnn_forward(weights, x)
    assert got.logits is not None
    np.testing.assert_allclose(got.logits, logits, rtol=REFERENCE_FLOAT32_RTOL, atol=LOGIT_ATOL)
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        got.probabilities, want, rtol=REFERENCE_FLOAT32_RTOL, atol=REFERENCE_FLOAT32_ATOL
    )
    np.testing.assert_array_equal(got.labels, want.argmax(axis=1))
    # (n, 64) is reshaped to the row shape; one row of (1, 8, 8) is a batch of one
    flat = predictor.predict(x.reshape(9, 64))
    np.testing.assert_array_equal(flat.probabilities, got.probabilities)
    one = predictor.predict(x[3])
    np.testing.assert_array_equal(one.probabilities, got.probabilities[3:4])
    np.testing.assert_array_equal(predictor.predict(x[:1]).labels, got.labels[:1])


@pytest.mark.parametrize(
    ("shape", "shown"), [((4, 1, 7, 8), "(1, 7, 8)"), ((1, 7, 8), "(1, 7, 8)"), ((4, 63), "(63,)")]
)
def test_wrong_image_shapes_name_both(
    cnn: tuple[Path, dict[str, np.ndarray]], shape: tuple[int, ...], shown: str
) -> None:
    with pytest.raises(InputShapeError) as info:
        Predictor(cnn[0]).predict(np.zeros(shape, dtype=np.float32))
    assert str(info.value) == f"model expects rows of shape (1, 8, 8), input has {shown}"


def test_row_shape_from_the_graph_and_the_contract(tmp_path: Path) -> None:
    model, _ = build_cnn()
    # the graph alone: its non-batch dims
    del model.metadata_props[:]
    plain = Predictor(save(model, tmp_path / "bare.onnx"), require_probabilities=False)
    assert (plain.input_shape, plain.num_features) == ((1, 8, 8), 64)
    # a contract that contradicts the graph is refused
    flat, _, contract = build_multiclass(num_features=64)
    contract.input_shape = (1, 8, 8)
    del flat.metadata_props[:]
    helper.set_model_props(flat, contract.to_metadata())
    path = save(flat, tmp_path / "liar.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path)
    assert str(info.value) == (
        f"cannot use model {path}: its metadata says rows of shape (1, 8, 8) but input 'input' "
        "takes (64,)"
    )


# --- the on-device self-test -------------------------------------------------------------


def _golden_case(tmp_path: Path, tamper: bool = False) -> Path:
    model, weights, contract = build_multiclass()
    x = model_rows(contract, 8)
    golden = with_golden(model, x)
    if tamper:  # a weight changed after export
        w2 = next(t for t in golden.graph.initializer if t.name == "W2")
        w2.CopyFrom(numpy_helper.from_array(weights["W2"] * np.float32(1.5), "W2"))
    return save(golden, tmp_path / ("tampered.onnx" if tamper else "golden.onnx"))


def test_self_test_passes_on_a_fresh_model_and_fails_on_a_tampered_one(tmp_path: Path) -> None:
    report = Predictor(_golden_case(tmp_path)).self_test()
    assert report["passed"] is True
    assert (report["rows"], report["labels_agreeing"]) == (8, 8)
    assert report["tolerances"] == {"probabilities": PROBABILITY_ATOL, "logits": LOGIT_ATOL}
    assert report["max_abs_error"]["probabilities"] <= PROBABILITY_ATOL
    assert report["onnxruntime"] == ort.__version__
    assert report["provider"] == "CPUExecutionProvider"
    bad = Predictor(_golden_case(tmp_path, tamper=True)).self_test()
    assert bad["passed"] is False
    assert bad["max_abs_error"]["logits"] > LOGIT_ATOL


def test_parity_matrix_passes_on_a_fresh_model(tmp_path: Path) -> None:
    from onnxedge.runtime.edge_infer import format_self_test

    report = Predictor(_golden_case(tmp_path)).self_test()
    providers = [
        p
        for p in ("CPUExecutionProvider", "CUDAExecutionProvider")
        if p in ort.get_available_providers()
    ]
    levels = ["disable", "basic", "extended", "all"]
    assert [(e["provider"], e["level"]) for e in report["matrix"]] == [
        (p, level) for p in providers for level in levels
    ]
    assert all(e["passed"] and e["labels_agreeing"] == 8 for e in report["matrix"])
    assert report["failed"] == [] and report["passed"] is True
    text = format_self_test(report)
    assert "levels         CPUExecutionProvider: disable ok, basic ok, extended ok, all ok" in text
    assert len(text.splitlines()) <= 24  # one screen


def test_parity_matrix_names_the_level_that_changes_the_outputs(tmp_path: Path) -> None:
    from onnxedge.runtime.edge_infer import format_self_test

    predictor = Predictor(_golden_case(tmp_path))
    # Injected: under "extended" only, the session computes with a changed weight.
    tampered = ort.InferenceSession(
        str(_golden_case(tmp_path, tamper=True)), providers=["CPUExecutionProvider"]
    )

    def open_session(provider: str, level: str) -> Any:
        if level == "extended":
            return tampered
        return predictor.reopen(provider=provider, level=level)

    report = predictor.self_test(open_session)
    assert report["passed"] is False
    assert report["failed"] == ["CPUExecutionProvider extended"]
    bad = next(e for e in report["matrix"] if e["level"] == "extended")
    assert bad["max_abs_error"]["logits"] > LOGIT_ATOL
    text = format_self_test(report)
    assert text.startswith("self-test FAILED")
    assert "extended FAILED (labels " in text and "basic ok" in text
    assert text.endswith("FAILED under   CPUExecutionProvider extended")


def test_self_test_without_a_golden_set_says_how_to_add_one(multiclass: ModelCase) -> None:
    with pytest.raises(ModelLoadError) as info:
        Predictor(multiclass.path).self_test()
    assert str(info.value) == (
        f"{multiclass.path} has no golden set (metadata onnxedge.golden) to self-test with; "
        "onnxedge export and onnxedge wrap store one in the model"
    )


def test_a_golden_set_that_does_not_fit_is_a_load_error(tmp_path: Path) -> None:
    model, _, contract = build_multiclass()
    golden = with_golden(model, model_rows(contract, 4))
    entry = next(p for p in golden.metadata_props if p.key == "onnxedge.golden")
    data = json.loads(entry.value)
    data["rows"] = [row[:4] for row in data["rows"]]
    entry.value = json.dumps(data)
    path = save(golden, tmp_path / "misfit.onnx")
    with pytest.raises(ModelLoadError) as info:
        Predictor(path).self_test()
    assert str(info.value) == (
        f"cannot use model {path}: its golden set does not fit the model: rows of shape (4,), "
        "the model takes 5 values"
    )


def test_info_self_test(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from onnxedge.runtime.cli import cli

    good = CliRunner().invoke(cli, ["info", str(_golden_case(tmp_path)), "--self-test"])
    assert good.exit_code == 0, good.output
    assert good.output.startswith(f"self-test PASSED: {tmp_path / 'golden.onnx'}, 8 golden rows")
    tampered = _golden_case(tmp_path, tamper=True)
    bad = CliRunner().invoke(cli, ["info", str(tampered), "--self-test", "--json"])
    assert bad.exit_code == 1
    report, error = bad.output.rsplit("\n", 2)[0], bad.output.splitlines()[-1]
    assert json.loads(report)["passed"] is False
    assert error == f"Error: self-test failed on {tampered}"


def test_score_refuses_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxedge.runtime.score import score_file

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rows.npy", np.full((20, 5), 30.0, dtype=np.float32))
    save(build_foreign("dynamo"), tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError) as info:
        score_file("model.onnx", "rows.npy", "out.csv", progress=False)
    assert str(info.value) == _refusal("model.onnx", "linear_1", NO_HEAD)
    lying = build_foreign("dynamo")
    helper.set_model_props(lying, {"onnxedge.head": "softmax"})
    save(lying, tmp_path / "lying.onnx")
    with pytest.raises(ModelLoadError) as info:
        score_file("lying.onnx", "rows.npy", "out.csv", progress=False)
    assert str(info.value) == _refusal("lying.onnx", "linear_1", "its values are not in [0, 1]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lying.onnx", "model.onnx", "rows.npy"]
