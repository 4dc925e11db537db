"""In-process measurements: batch-1 latency, throughput, and profiles of ``Predictor``.

Every path of one model and thread count is measured in the same rounds, in a
rotating order, so that ratios (``Predictor`` over raw onnxruntime, onnxruntime over
torch) compare figures taken seconds apart.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import (
    OtherLoad,
    latency_ns,
    percentiles_us,
    rotated,
    settle,
    spread,
    timed_block,
)
from benchmarks.paths import InferencePath

#: Ratios reported per round, as (name, numerator path, denominator path).
RATIOS = (
    ("predictor_over_ort", "predictor", "ort"),
    ("edge_over_ort", "edge", "ort"),
    ("torch_over_ort", "torch", "ort"),
)
THROUGHPUT_RATIOS = (
    ("predictor_vs_ort", "predictor", "ort"),
    ("predictor_vs_torch", "predictor", "torch"),
    ("ort_vs_torch", "ort", "torch"),
    ("edge_vs_ort", "edge", "ort"),
    ("ort_int8_vs_ort", "ort-int8", "ort"),
    ("predictor_int8_vs_ort", "predictor-int8", "ort"),
)


def measure_latency(
    paths: list[InferencePath], x: np.ndarray, *, calls: int, rounds: int, warmup: int = 200
) -> dict[str, Any]:
    """Batch latency of each path: ``calls`` timed calls per round, ``rounds`` rounds.

    Returns ``{"paths": {name: percentiles over all calls + per-round p50s},
    "ratios": {name: spread of the per-round p50 ratio}}``.
    """
    for path in paths:
        path.enter()
        for _ in range(warmup):
            path(x)
    samples: dict[str, list[np.ndarray]] = {p.name: [] for p in paths}
    with OtherLoad() as other:
        for round_index in range(rounds):
            for path in rotated(paths, round_index):
                path.enter()
                path(x)
                settle()
                samples[path.name].append(latency_ns(lambda p=path: p(x), calls))  # type: ignore[misc]
    out: dict[str, Any] = {
        "paths": {},
        "ratios": {},
        "calls_per_round": calls,
        "rounds": rounds,
        "other_load_cores": other.cores,
    }
    p50s: dict[str, list[float]] = {}
    for name, parts in samples.items():
        p50s[name] = [float(np.median(part)) / 1e3 for part in parts]
        out["paths"][name] = {
            **percentiles_us(np.concatenate(parts)),
            "round_p50_us": p50s[name],
        }
    for ratio, top, bottom in RATIOS:
        if top in p50s and bottom in p50s:
            out["ratios"][ratio] = spread(
                [a / b for a, b in zip(p50s[top], p50s[bottom], strict=True)]
            )
    return out


def measure_throughput(
    paths: list[InferencePath],
    x: np.ndarray,
    *,
    rounds: int,
    block_s: float,
    flops_per_row: int,
) -> dict[str, Any]:
    """Rows per second of each path on batches ``x``; timed blocks of at least ``block_s`` s.

    A path's rate is the batch over its median call time, over every call of every
    round (a burst of other work slows a few calls, not the median); the mean-based
    rate (rows over total time) is kept beside it. Each round's rate is the batch over
    that block's median call time; ratios are taken per round.

    Returns ``{"paths": {name: {"rows_per_s", "gflops", "round_rows_per_s", ...}},
    "ratios": {name: spread of the per-round rows/s ratio}}``.
    """
    for path in paths:
        path.enter()
        path(x)
        path(x)
    rates: dict[str, list[float]] = {p.name: [] for p in paths}
    times: dict[str, list[np.ndarray]] = {p.name: [] for p in paths}
    rows = x.shape[0]
    with OtherLoad() as other:
        for round_index in range(rounds):
            for path in rotated(paths, round_index):
                path.enter()
                path(x)
                settle()
                block = timed_block(lambda p=path: p(x), block_s)  # type: ignore[misc]
                rates[path.name].append(rows / float(np.median(block)))
                times[path.name].append(block)
    out: dict[str, Any] = {
        "paths": {},
        "ratios": {},
        "rounds": rounds,
        "batch": rows,
        "other_load_cores": other.cores,
    }
    for name, values in rates.items():
        every = np.concatenate(times[name])
        rate = rows / float(np.median(every))
        out["paths"][name] = {
            "rows_per_s": rate,
            "gflops": rate * flops_per_row / 1e9,
            "mean_rows_per_s": rows * every.size / float(every.sum()),
            "round_rows_per_s": values,
            "calls_per_round": [len(t) for t in times[name]],
        }
    for ratio, top, bottom in THROUGHPUT_RATIOS:
        if top in rates and bottom in rates:
            out["ratios"][ratio] = spread(
                [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
            )
    return out


def profile_call(fn: Callable[[], Any], calls: int, top: int = 15) -> list[dict[str, Any]]:
    """cProfile ``calls`` calls of ``fn``; the ``top`` functions by own time.

    Each entry: function (``file:line(name)``), calls, own and cumulative microseconds
    per profiled call of ``fn``.
    """
    fn()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in raw.items():
        rows.append(
            {
                "function": f"{_short_file(filename)}:{line}({func})",
                "calls_per_call": ncalls / calls,
                "own_us_per_call": tottime / calls * 1e6,
                "cum_us_per_call": cumtime / calls * 1e6,
            }
        )
    rows.sort(key=lambda r: r["own_us_per_call"], reverse=True)
    return rows[:top]


def _short_file(filename: str) -> str:
    """``.../onnxedge/runtime/predictor.py`` -> ``runtime/predictor.py`` (builtins unchanged)."""
    parts = filename.replace("\\", "/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 1 else filename
