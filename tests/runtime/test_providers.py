"""Provider resolution against faked onnxruntime provider lists, and the strict CUDA rule."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxedge.runtime import Predictor, ProviderUnavailableError
from onnxedge.runtime.edge_infer import (
    CPU,
    CUDA,
    EdgeError,
    check_placement,
    check_session_providers,
    choose_providers,
    count_placement,
    normalize_request,
)
from onnxedge.runtime.providers import distribution_conflict, installed_ort_distributions

from tests.runtime.onnx_models import ModelCase

CPU_ONLY = ["AzureExecutionProvider", CPU]
CUDA_AND_CPU = ["TensorrtExecutionProvider", CUDA, CPU]
HAS_CUDA = CUDA in ort.get_available_providers()


@pytest.mark.parametrize("request_", ["auto", "AUTO", "Auto", " auto "])
def test_request_is_case_insensitive(request_: str) -> None:
    assert normalize_request(request_) == "auto"


def test_full_provider_names_are_accepted() -> None:
    assert normalize_request("CUDAExecutionProvider") == "cuda"
    assert normalize_request("cpuexecutionprovider") == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "", "gpu", None])
def test_unknown_request_is_refused(bad: object, multiclass: ModelCase) -> None:
    with pytest.raises(EdgeError) as info:
        normalize_request(bad)  # type: ignore[arg-type]
    assert str(info.value) == f"provider must be one of auto, cpu, cuda; got {bad!r}"
    with pytest.raises(ProviderUnavailableError) as typed:
        Predictor(multiclass.path, provider=bad)  # type: ignore[arg-type]
    assert str(typed.value) == str(info.value)


def test_cpu_only_machine() -> None:
    assert choose_providers("cpu", CPU_ONLY) == [(CPU, {})]
    assert choose_providers("auto", CPU_ONLY) == [(CPU, {})]
    with pytest.raises(EdgeError) as info:
        choose_providers("cuda", CPU_ONLY)
    # The Azure provider only calls remote endpoints; it is not named as available.
    assert str(info.value) == "CUDAExecutionProvider requested; available: CPUExecutionProvider"


def test_cuda_machine() -> None:
    expected = [(CUDA, {"device_id": 0}), (CPU, {})]
    assert choose_providers("auto", CUDA_AND_CPU) == expected
    assert choose_providers("cuda", CUDA_AND_CPU) == expected
    assert choose_providers("cpu", CUDA_AND_CPU) == [(CPU, {})]


def test_device_id_and_options_go_to_cuda_only() -> None:
    got = choose_providers(
        "cuda", CUDA_AND_CPU, device_id=3, options={"arena_extend_strategy": "kSameAsRequested"}
    )
    assert got == [(CUDA, {"device_id": 3, "arena_extend_strategy": "kSameAsRequested"}), (CPU, {})]


@pytest.mark.parametrize("device_id", [-1, 1.5, True, "0"])
def test_bad_device_id(device_id: object) -> None:
    with pytest.raises(EdgeError, match="device_id must be an integer >= 0"):
        choose_providers("cuda", CUDA_AND_CPU, device_id=device_id)  # type: ignore[arg-type]


def test_no_local_provider_at_all() -> None:
    with pytest.raises(EdgeError) as info:
        choose_providers("cuda", ["AzureExecutionProvider"])
    assert str(info.value) == "CUDAExecutionProvider requested; available: none"


def test_session_that_fell_back_to_cpu() -> None:
    resolved = [(CUDA, {"device_id": 0}), (CPU, {})]
    # onnxruntime-gpu offers CUDA but could not create it (missing libraries): the
    # session silently holds only the CPU provider.
    with pytest.raises(EdgeError) as info:
        check_session_providers("cuda", resolved, [CPU])
    assert str(info.value).startswith(
        "CUDAExecutionProvider requested; the session got: CPUExecutionProvider"
    )
    note = check_session_providers("auto", resolved, [CPU])
    assert note == "CUDAExecutionProvider was offered but the session runs on CPUExecutionProvider"
    assert check_session_providers("auto", resolved, [CUDA, CPU]) is None
    assert check_session_providers("cpu", [(CPU, {})], [CPU]) is None


def test_both_wheels_installed_is_reported() -> None:
    found = installed_ort_distributions(["onnxruntime", "onnxruntime_gpu", "numpy"])
    assert found == ["onnxruntime", "onnxruntime-gpu"]
    message = distribution_conflict(found)
    assert message is not None
    assert "onnxruntime, onnxruntime-gpu" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in message


def test_one_wheel_is_fine() -> None:
    assert distribution_conflict(installed_ort_distributions(["onnxruntime-gpu"])) is None
    assert distribution_conflict([]) is None


def test_this_environment_has_exactly_one_onnxruntime() -> None:
    # The dev environment installs the CPU wheel only (Makefile: never both).
    found = installed_ort_distributions()
    assert len(found) == 1, found


def test_predictor_reports_both_wheels(
    multiclass: ModelCase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from onnxedge.runtime import predictor as predictor_module

    monkeypatch.setattr(
        predictor_module, "_installed_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"]
    )
    with caplog.at_level(logging.WARNING, logger="onnxedge.runtime"):
        predictor = Predictor(multiclass.path, provider="cpu")
    assert any("several onnxruntime distributions" in w for w in predictor.warnings)
    assert any("several onnxruntime distributions" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(HAS_CUDA, reason="this test needs a machine without CUDA")
def test_strict_cuda_raises_on_this_machine(multiclass: ModelCase) -> None:
    with pytest.raises(ProviderUnavailableError) as info:
        Predictor(multiclass.path, provider="cuda")
    assert str(info.value) == "CUDAExecutionProvider requested; available: CPUExecutionProvider"


@pytest.mark.skipif(HAS_CUDA, reason="this test needs a machine without CUDA")
def test_auto_runs_on_cpu_here(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path, provider="auto")
    assert predictor.provider == CPU
    assert predictor.providers == [CPU]


def test_cpu_is_cpu(multiclass: ModelCase) -> None:
    predictor = Predictor(multiclass.path, provider="CPU")
    assert predictor.provider == CPU
    assert predictor.requested_provider == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDAExecutionProvider")
def test_cuda_predicts_what_cpu_predicts(multiclass: ModelCase, binary: ModelCase) -> None:
    from onnxedge.runtime.tolerances import PROVIDER_PROBABILITY_ATOL

    for case in (multiclass, binary):
        x = case.rows(1000, seed=5)
        gpu = Predictor(case.path, provider="cuda")
        cpu = Predictor(case.path, provider="cpu")
        assert gpu.provider == CUDA
        got = gpu.predict(x, batch_size=300, return_logits=True)
        want = cpu.predict(x, return_logits=True)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(
            got.probabilities, want.probabilities, rtol=0, atol=PROVIDER_PROBABILITY_ATOL
        )


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDAExecutionProvider")
def test_auto_takes_cuda_when_there(multiclass: ModelCase) -> None:
    assert Predictor(multiclass.path, provider="auto").provider == CUDA


# --- node placement ------------------------------------------------------------------


def _event(name: str, op: str, provider: str | None) -> dict[str, object]:
    args = {"op_name": op} | ({"provider": provider} if provider else {})
    return {"cat": "Node", "name": f"{name}_kernel_time", "args": args}


def test_placement_counts_a_recorded_profile() -> None:
    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        _event("fused /MatMulAddFusion", "FusedGemm", CUDA),
        _event("Conv_0", "QLinearConv", CUDA),
        _event("MemcpyToHost", "MemcpyToHost", CPU),
        _event("Softmax_7", "Softmax", CPU),
        _event("MatMul_3", "MatMul", CPU),
        _event("MatMul_3", "MatMul", CPU),  # a node run twice (a loop body) counts once
        {"cat": "Node", "name": "Softmax_7_fence_before", "args": {"op_name": "Softmax"}},
    ]
    placement = count_placement(events)
    assert placement == {"nodes": {CUDA: 2, CPU: 3}, "compute": {CUDA: 2, CPU: 1}}
    with pytest.raises(EdgeError) as info:
        check_placement(placement, CUDA)
    assert str(info.value) == (
        "CUDAExecutionProvider requested but 1 of 3 Gemm/MatMul/Conv nodes run on "
        "CPUExecutionProvider"
    )
    check_placement({"nodes": {CUDA: 4, CPU: 1}, "compute": {CUDA: 3}}, CUDA)


def test_placement_from_a_real_profile_and_the_cuda_refusal(multiclass: ModelCase) -> None:
    # Unoptimized, the profile's nodes are the graph's own: count them from the file.
    graph = onnx.load(multiclass.path).graph
    compute = [n for n in graph.node if n.op_type in ("Gemm", "MatMul", "Conv")]
    predictor = Predictor(multiclass.path, provider="cpu", graph_optimization_level="disable")
    placement = predictor.placement()
    assert placement == {"nodes": {CPU: len(graph.node)}, "compute": {CPU: len(compute)}}
    assert predictor.describe()["placement"] == placement
    # Every node of this session is one CUDA did not take: a cuda request is refused.
    with pytest.raises(EdgeError) as info:
        check_placement(placement, CUDA)
    assert str(info.value) == (
        f"CUDAExecutionProvider requested but {len(compute)} of {len(compute)} "
        "Gemm/MatMul/Conv nodes run on CPUExecutionProvider"
    )


def test_info_reports_the_placement(multiclass: ModelCase) -> None:
    from click.testing import CliRunner
    from onnxedge.runtime.cli import cli

    result = CliRunner().invoke(cli, ["info", str(multiclass.path), "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    placement = Predictor(multiclass.path, provider="cpu").placement()
    assert placement is not None
    nodes, compute = placement["nodes"][CPU], placement["compute"][CPU]
    assert f"placement    {CPU} {nodes} nodes ({compute} Gemm/MatMul/Conv)" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDAExecutionProvider")
def test_cuda_runs_the_compute_nodes(multiclass: ModelCase) -> None:
    placement = Predictor(multiclass.path, provider="cuda").placement()
    assert placement is not None and set(placement["compute"]) == {CUDA}
