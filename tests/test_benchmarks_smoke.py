"""The ``make bench`` harness runs end to end on a tiny model and writes its three files.

Structure only: no timing is asserted (speed is reported by ``make bench``, never
tested). The subprocess sections (cold start, import time, RSS) are left out: each
of them starts torch in a fresh process, seconds apiece.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from benchmarks.models import random_model
from benchmarks.run import Settings, evaluate_goals, run_benchmarks, write_outputs

TINY = Settings(
    latency_calls=20,
    latency_rounds=2,
    batches=(8,),
    threads=(1,),
    rounds=2,
    block_s=0.002,
    ceiling_target_s=0.001,
    ceiling_rounds=1,
    ceiling_large=64,
    pin_malloc=False,  # leave the test process's allocator alone
    sections=("ceiling", "latency", "throughput"),
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("bench")
    model = random_model(workdir, "tiny", 6, (8,), 3, fast=True)
    return run_benchmarks([model], TINY, log=lambda _: None)


def test_every_path_is_measured_per_model_and_thread_count(results: dict) -> None:
    latency = results["latency"]["tiny"]["1"]
    expected = {"torch", "ort", "predictor"}
    assert expected <= set(latency["paths"])
    for stats in latency["paths"].values():
        assert stats["calls"] == TINY.latency_calls * TINY.latency_rounds
        assert stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"]
        assert len(stats["round_p50_us"]) == TINY.latency_rounds
    assert {"predictor_over_ort", "torch_over_ort"} <= set(latency["ratios"])
    # Other work on the machine is recorded beside every figure (None without /proc/stat).
    assert latency["other_load_cores"] is None or latency["other_load_cores"] >= 0

    throughput = results["throughput"]["tiny"]["8"]["1"]
    assert expected <= set(throughput["paths"])
    for entry in throughput["paths"].values():
        assert entry["rows_per_s"] > 0
        assert len(entry["round_rows_per_s"]) == TINY.rounds
        assert all(calls >= 3 for calls in entry["calls_per_round"])
        # GFLOP/s is rows/s times the model's FLOPs per row: 2 * (6*8 + 8*3).
        assert math.isclose(entry["gflops"], entry["rows_per_s"] * 2 * (6 * 8 + 8 * 3) / 1e9)
        assert entry["fraction_of_gemm"] is not None
        assert entry["fraction_of_shape_gemm"] is not None


def test_ceiling_has_the_large_gemm_and_each_model_shape(results: dict) -> None:
    by_threads = results["ceiling"]["by_threads"]["1"]
    assert {"large-gemm", "tiny@8"} <= set(by_threads)
    assert by_threads["tiny@8"]["chain"] == [[8, 6, 8], [8, 8, 3]]
    assert results["ceiling"]["large_shape"] == [64, 64, 64]
    # Measured before and after the in-process sections; the faster one is kept.
    first, second = results["ceiling"]["measurements"]
    best = by_threads["large-gemm"]["gflops"]
    assert best == max(first["1"]["large-gemm"]["gflops"], second["1"]["large-gemm"]["gflops"])


def test_goals_name_a_status_for_every_measured_figure(results: dict) -> None:
    goals = evaluate_goals(results)
    assert goals == results["goals"]
    overhead = [g for g in goals if g["goal"].startswith("Predictor.predict overhead")]
    assert [g["threads"] for g in overhead] == [1]
    assert all(isinstance(g["met"], bool) for g in overhead)
    # Batch 4096 and cold start were not measured: those goals say so instead of passing.
    cold = [g for g in goals if "cold start" in g["goal"]]
    assert cold and cold[0]["met"] is None


def test_outputs_are_written_and_the_markdown_shows_each_table(
    results: dict, tmp_path: Path
) -> None:
    written = write_outputs(results, tmp_path)
    data = json.loads(written["json"].read_text())
    assert data["models"]["tiny"]["layers"] == [[6, 8], [8, 3]]
    markdown = written["markdown"].read_text()
    headings = (
        "## Machine",
        "## Goals",
        "## Latency",
        "## Throughput",
        "## Other work",
        "## Ceiling",
    )
    for heading in headings:
        assert heading in markdown
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
