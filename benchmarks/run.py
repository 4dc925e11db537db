"""``make bench``: onnxedge beside PyTorch eager, raw onnxruntime and the GEMM ceiling.

One run measures, for each model (digits, breast-cancer, a 784 -> 512 -> 10 MLP):

1. the ceiling: numpy's float32 GEMM rate at each model's layer shapes and on a
   2048^3 GEMM, per thread count (:mod:`benchmarks.ceiling`, in subprocesses);
2. batch-1 latency (p50 / p90 / p99) of each path after warm-up;
3. throughput (rows/s) at batch 256 and 4096, single-thread and all cores, with each
   path's FLOP rate as a fraction of the ceiling; the larger MLP's int8 variant too;
4. cold start of the embedded script, ``onnxedge score``, a ``Predictor`` snippet and
   the PyTorch equivalent; import times; peak RSS per path (fresh processes);
5. the goals of the performance issue, met or missed, with a cProfile of
   ``Predictor.predict`` wherever one of its goals is missed.

Writes ``benchmarks/results.json``, ``benchmarks/RESULTS.md`` and
``benchmarks/results.png``, then prints the markdown.

Usage: ``python -m benchmarks.run [--quick] [--artifacts DIR] [--output-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import coldstart
from benchmarks.ceiling import LARGE, measure_ceiling
from benchmarks.harness import cpu_count, freeze_heap, machine_facts, pin_malloc
from benchmarks.measure import measure_latency, measure_throughput, profile_call
from benchmarks.models import LARGE_MLP, MODEL_NAMES, BenchModel, prepare_models
from benchmarks.paths import (
    PATH_NAMES,
    REPO,
    InferencePath,
    build_path,
    edge_available,
    variant_paths,
)

SECTIONS = ("ceiling", "latency", "throughput", "coldstart", "imports", "rss")

#: The issue's goals (and its reference figures, quoted in the report).
PREDICTOR_MAX_OVERHEAD = 0.10
PREDICTOR_MIN_VS_ORT = 0.95
EDGE_MIN_COLD_SPEEDUP = 8.0
REFERENCE_ORT_FRACTION = 0.76
REFERENCE_TORCH_FRACTION = 0.68
GOAL_BATCH = 4096


@dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        latency_calls: timed batch-1 calls per path per round (>= 2000 for the report).
        latency_rounds: latency rounds (pooled for percentiles; ratios per round).
        batches: throughput batch sizes.
        threads: thread counts (1 and all cores).
        rounds: throughput rounds per configuration.
        block_s: seconds per timed throughput block.
        ceiling_target_s, ceiling_rounds: per GEMM chain.
        ceiling_large: the large GEMM's size (2048 -> 2048^3).
        cold_runs: cold-start runs per command (after one discarded run).
        import_runs: runs per import statement.
        rss_batch: rows per batch in the RSS probes.
        profile_calls: calls profiled when a Predictor goal is missed.
        pin_malloc: fix glibc malloc's thresholds in this process first (see
            :func:`benchmarks.harness.pin_malloc`): PyTorch eager is then measured in
            its fast, steady state.
        sections: which of :data:`SECTIONS` to run.
    """

    latency_calls: int = 2000
    latency_rounds: int = 5
    batches: tuple[int, ...] = (256, 4096)
    threads: tuple[int, ...] = ()
    rounds: int = 15
    block_s: float = 0.03
    ceiling_target_s: float = 0.1
    ceiling_rounds: int = 5
    ceiling_large: int = 2048
    cold_runs: int = 7
    import_runs: int = 5
    rss_batch: int = 4096
    profile_calls: int = 2000
    pin_malloc: bool = True
    sections: tuple[str, ...] = SECTIONS
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Settings()
QUICK = Settings(
    latency_rounds=2,
    rounds=5,
    block_s=0.03,
    ceiling_target_s=0.05,
    ceiling_rounds=3,
    cold_runs=5,
    import_runs=3,
    profile_calls=1000,
)


def default_threads() -> tuple[int, ...]:
    """Single-thread and all cores (just 1 on a one-CPU machine)."""
    return tuple(sorted({1, cpu_count()}))


# --- the run ---------------------------------------------------------------------------


def run_benchmarks(
    models: list[BenchModel],
    settings: Settings,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every section in ``settings.sections`` for ``models``; return the results.

    Args:
        models: from :func:`benchmarks.models.prepare_models`.
        settings: repeat counts and what to run.
        log: progress lines.

    Returns:
        A JSON-ready dict (see ``benchmarks/RESULTS.md`` for what each part means).
    """
    threads = settings.threads or default_threads()
    settings = replace(settings, threads=threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "settings": asdict(settings),
        "machine": machine_facts(),
        "models": {m.name: m.describe() for m in models},
        "available": {
            "edge_script": edge_available(),
            "int8": any("int8" in m.variants for m in models),
        },
        "section_seconds": {},
        "malloc": pin_malloc() if settings.pin_malloc else {"pinned": False},
    }

    def section(name: str) -> bool:
        if name in settings.sections:
            log(f"[{name}] ({time.perf_counter() - started:.0f} s)")
            return True
        return False

    if section("ceiling"):
        t0 = time.perf_counter()
        results["ceiling"] = _ceiling(models, settings)
        results["section_seconds"]["ceiling"] = time.perf_counter() - t0

    paths: dict[tuple[str, int], list[InferencePath]] = {}
    if "latency" in settings.sections or "throughput" in settings.sections:
        for model in models:
            for count in threads:
                paths[model.name, count] = _build_paths(model, count)
        freeze_heap()

    if section("latency"):
        t0 = time.perf_counter()
        results["latency"] = {}
        for model in models:
            x1 = model.sample(1)
            for count in threads:
                fp32 = [p for p in paths[model.name, count] if "-" not in p.name]
                log(f"  latency {model.name}, {count} thread(s)")
                results["latency"].setdefault(model.name, {})[str(count)] = measure_latency(
                    fp32, x1, calls=settings.latency_calls, rounds=settings.latency_rounds
                )
        results["section_seconds"]["latency"] = time.perf_counter() - t0

    if section("throughput"):
        t0 = time.perf_counter()
        results["throughput"] = {}
        for model in models:
            for batch in settings.batches:
                x = model.sample(batch)
                for count in threads:
                    log(f"  throughput {model.name}, batch {batch}, {count} thread(s)")
                    measured = measure_throughput(
                        paths[model.name, count],
                        x,
                        rounds=settings.rounds,
                        block_s=settings.block_s,
                        flops_per_row=model.flops_per_row(),
                    )
                    results["throughput"].setdefault(model.name, {}).setdefault(str(batch), {})[
                        str(count)
                    ] = measured
        results["section_seconds"]["throughput"] = time.perf_counter() - t0

    if "ceiling" in results:
        # Again after the in-process sections: on a shared machine the rate drifts with
        # other work, and the faster of the two is the fairer ceiling.
        log("[ceiling, second measurement]")
        t0 = time.perf_counter()
        results["ceiling"] = _best_ceiling(results["ceiling"], _ceiling(models, settings))
        results["section_seconds"]["ceiling"] += time.perf_counter() - t0
        for model_name, by_batch in results.get("throughput", {}).items():
            for batch, by_threads in by_batch.items():
                for count, measured in by_threads.items():
                    _add_fractions(measured, results["ceiling"], model_name, int(batch), int(count))

    results["goals"] = []  # filled below, once cold start is known
    cold_model = next((m for m in models if m.name == "digits"), models[0])
    if section("coldstart"):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="onnxedge-bench-row-") as tmp:
            feature_names = json.loads((cold_model.run_dir / "config.json").read_text()).get(
                "feature_names"
            ) or [f"f{i}" for i in range(cold_model.num_features)]
            row = coldstart.write_one_row_csv(
                cold_model.sample(1)[0], feature_names, Path(tmp) / "one_row.csv"
            )
            results["coldstart"] = coldstart.cold_start(
                cold_model.onnx_path,
                cold_model.run_dir,
                row,
                runs=settings.cold_runs,
                include_edge=edge_available(),
                include_score=coldstart.score_available(),
                log=log,
            )
            results["coldstart"]["model_name"] = cold_model.name
        results["section_seconds"]["coldstart"] = time.perf_counter() - t0

    if section("imports"):
        t0 = time.perf_counter()
        results["imports"] = coldstart.import_times(settings.import_runs)
        results["section_seconds"]["imports"] = time.perf_counter() - t0

    if section("rss"):
        t0 = time.perf_counter()
        results["rss"] = _rss(models, settings, max(threads))
        results["section_seconds"]["rss"] = time.perf_counter() - t0

    results["goals"] = evaluate_goals(results)
    missed = [g for g in results["goals"] if g.get("met") is False and g.get("profile")]
    if missed:
        log("[profile] Predictor goals missed; profiling")
        results["profiles"] = _profiles(missed, models, paths, settings)
    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_seconds"] = time.perf_counter() - started
    return results


def _build_paths(model: BenchModel, threads: int) -> list[InferencePath]:
    names = [n for n in PATH_NAMES if n != "edge" or edge_available()]
    built = [build_path(n, model.onnx_path, model.run_dir, threads) for n in names]
    for variant, path in model.variants.items():
        built += variant_paths(path, threads, variant)
    return built


def _ceiling(models: list[BenchModel], settings: Settings) -> dict[str, Any]:
    chains = {
        f"{m.name}@{batch}": [[batch, fan_in, fan_out] for fan_in, fan_out in m.layers]
        for m in models
        for batch in settings.batches
    }
    size = settings.ceiling_large
    return measure_ceiling(
        chains,
        list(settings.threads),
        target_s=settings.ceiling_target_s,
        rounds=settings.ceiling_rounds,
        large=(size, size, size),
    )


def _best_ceiling(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Per thread count and GEMM, the faster of two ceiling measurements (both kept)."""
    best: dict[str, Any] = {}
    for count, chains in first["by_threads"].items():
        best[count] = {}
        for name, entry in chains.items():
            other = second["by_threads"].get(count, {}).get(name)
            best[count][name] = (
                other if other is not None and other["gflops"] > entry["gflops"] else entry
            )
    return {
        **first,
        "by_threads": best,
        "measurements": [first["by_threads"], second["by_threads"]],
    }


def _add_fractions(
    measured: dict[str, Any], ceiling: dict[str, Any] | None, model: str, batch: int, threads: int
) -> None:
    """Each path's GFLOP/s over the large GEMM's and over the same-shape numpy chain's.

    The ceiling at ``threads`` is numpy's best rate with at most that many threads:
    OpenBLAS splits even tiny GEMMs across every thread it is given, which can be
    slower than one thread, and a machine that can run a GEMM on one core can always
    do so with two.
    """
    if not ceiling:
        return

    def best(name: str) -> float | None:
        rates = [
            chains[name]["gflops"]
            for count, chains in ceiling["by_threads"].items()
            if int(count) <= threads and name in chains
        ]
        return max(rates) if rates else None

    large, shape = best(LARGE), best(f"{model}@{batch}")
    measured["ceiling_gflops"] = {"large_gemm": large, "same_shape": shape}
    for entry in measured["paths"].values():
        entry["fraction_of_gemm"] = entry["gflops"] / large if large else None
        entry["fraction_of_shape_gemm"] = entry["gflops"] / shape if shape else None


def _rss(models: list[BenchModel], settings: Settings, threads: int) -> dict[str, Any]:
    probes: dict[str, tuple[str, Path, Path, int, int]] = {}
    first = models[0]
    probes["baseline (python + numpy)"] = ("baseline", first.onnx_path, first.run_dir, 1, 1)
    for model in models:
        for name in PATH_NAMES:
            if name == "edge" and not edge_available():
                continue
            probes[f"{model.name}/{name}"] = (
                name,
                model.onnx_path,
                model.run_dir,
                threads,
                settings.rss_batch,
            )
    return {"threads": threads, "batch": settings.rss_batch, "probes": coldstart.peak_rss(probes)}


# --- goals -----------------------------------------------------------------------------


def _ratio(block: dict[str, Any] | None, name: str) -> float | None:
    if not block:
        return None
    value = block.get("ratios", {}).get(name, {}).get("median")
    return None if value is None or math.isnan(value) else float(value)


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each with its measured figure and met / missed (None: not measured)."""
    goals: list[dict[str, Any]] = []
    for model, by_threads in results.get("latency", {}).items():
        for count, block in by_threads.items():
            ratio = _ratio(block, "predictor_over_ort")
            goals.append(
                {
                    "goal": "Predictor.predict overhead over raw session.run, batch 1 (median)",
                    "model": model,
                    "threads": int(count),
                    "target": f"<= {PREDICTOR_MAX_OVERHEAD:.0%}",
                    "measured": None if ratio is None else ratio - 1,
                    "display": None if ratio is None else f"{ratio - 1:+.1%}",
                    "met": None if ratio is None else ratio - 1 <= PREDICTOR_MAX_OVERHEAD,
                    "profile": {"model": model, "threads": int(count), "batch": 1},
                    "other_load_cores": block.get("other_load_cores"),
                }
            )
    for model, by_batch in results.get("throughput", {}).items():
        for count, block in by_batch.get(str(GOAL_BATCH), {}).items():
            vs_ort = _ratio(block, "predictor_vs_ort")
            vs_torch = _ratio(block, "predictor_vs_torch")
            label = "larger MLP fp32: " if model == LARGE_MLP else ""
            goals.append(
                {
                    "goal": f"{label}Predictor vs raw onnxruntime, batch {GOAL_BATCH}",
                    "model": model,
                    "threads": int(count),
                    "target": f">= {PREDICTOR_MIN_VS_ORT:.2f}x",
                    "measured": vs_ort,
                    "display": None if vs_ort is None else f"{vs_ort:.3f}x",
                    "met": None if vs_ort is None else vs_ort >= PREDICTOR_MIN_VS_ORT,
                    "profile": {"model": model, "threads": int(count), "batch": GOAL_BATCH},
                    "other_load_cores": block.get("other_load_cores"),
                }
            )
            goals.append(
                {
                    "goal": f"Predictor ahead of PyTorch eager, batch {GOAL_BATCH}",
                    "model": model,
                    "threads": int(count),
                    "target": "> 1.00x",
                    "measured": vs_torch,
                    "display": None if vs_torch is None else f"{vs_torch:.2f}x",
                    "met": None if vs_torch is None else vs_torch > 1.0,
                    "other_load_cores": block.get("other_load_cores"),
                }
            )
    large = results.get("throughput", {}).get(LARGE_MLP, {}).get(str(GOAL_BATCH), {})
    for count, block in large.items():
        int8 = block["paths"].get("predictor-int8")
        fraction = None if int8 is None else int8.get("fraction_of_gemm")
        goals.append(
            {
                "goal": (
                    f"larger MLP int8, batch {GOAL_BATCH}: effective rate (fp32 FLOPs) "
                    "vs the fp32 GEMM ceiling"
                ),
                "model": LARGE_MLP,
                "threads": int(count),
                "target": "> 1.00x",
                "measured": fraction,
                "display": None if fraction is None else f"{fraction:.2f}x",
                "met": None if fraction is None else fraction > 1.0,
                "note": None if int8 is not None else "int8 variant not available",
                "other_load_cores": block.get("other_load_cores"),
            }
        )
    cold = results.get("coldstart")
    speedup = None if not cold else cold.get("speedup_vs_torch", {}).get("edge")
    goals.append(
        {
            "goal": "embedded script cold start vs the PyTorch path",
            "model": None if not cold else cold.get("model_name"),
            "threads": None,
            "target": f">= {EDGE_MIN_COLD_SPEEDUP:.0f}x faster",
            "measured": speedup,
            "display": None if speedup is None else f"{speedup:.1f}x",
            "met": None if speedup is None else speedup >= EDGE_MIN_COLD_SPEEDUP,
            "other_load_cores": None if not cold else cold.get("other_load_cores"),
            "note": None
            if speedup is not None
            else ("runtime/edge_infer.py not present" if cold else "cold start not measured"),
        }
    )
    return goals


def _profiles(
    missed: list[dict[str, Any]],
    models: list[BenchModel],
    paths: dict[tuple[str, int], list[InferencePath]],
    settings: Settings,
) -> dict[str, Any]:
    by_name = {m.name: m for m in models}
    out: dict[str, Any] = {}
    for goal in missed:
        where = goal["profile"]
        key = f"{where['model']}, batch {where['batch']}, {where['threads']} thread(s)"
        if key in out or (where["model"], where["threads"]) not in paths:
            continue
        x = by_name[where["model"]].sample(where["batch"])
        group = {p.name: p for p in paths[where["model"], where["threads"]]}
        calls = settings.profile_calls if where["batch"] == 1 else max(5, settings.rounds * 4)
        out[key] = {
            "goal": goal["goal"],
            "calls": calls,
            "predictor": profile_call(partial(group["predictor"], x), calls),
            "ort": profile_call(partial(group["ort"], x), calls),
        }
    return out


# --- output ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else round(number, 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_outputs(results: dict[str, Any], out_dir: Path, *, plot: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``RESULTS.md`` and (``plot``) ``results.png`` into ``out_dir``."""
    from benchmarks.report import render_markdown, render_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": out_dir / "results.json", "markdown": out_dir / "RESULTS.md"}
    data = _jsonable(results)
    written["json"].write_text(json.dumps(data, indent=1) + "\n")
    written["markdown"].write_text(render_markdown(data))
    if plot:
        written["png"] = out_dir / "results.png"
        render_plot(data, written["png"])
    return written


def wait_for_idle(limit_s: float, log: Callable[[str], None] = print) -> bool:
    """Wait up to ``limit_s`` for the 1-minute load average to drop below half the CPUs.

    Returns whether it did (the run goes ahead either way; the load is recorded).
    """
    if not hasattr(os, "getloadavg"):
        return True
    threshold = cpu_count() / 2
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold:
        if time.monotonic() >= deadline:
            log(f"[idle] load average still {os.getloadavg()[0]:.2f}; running anyway")
            return False
        time.sleep(5)
    return True


def main(argv: list[str] | None = None) -> int:
    """Prepare the models, run every section, write the three files, print the markdown."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute less)")
    parser.add_argument(
        "--artifacts", type=Path, default=REPO / "artifacts", help="make export's folder"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=REPO / "benchmarks", help="where the results go"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep models made here (default: temp)"
    )
    parser.add_argument(
        "--models", default=",".join(MODEL_NAMES), help="comma-separated model names"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, from {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to fall below "
        "half the CPU count (shared machines)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; expected {list(SECTIONS)}")
    settings = replace(QUICK if args.quick else FULL, sections=sections)
    names = tuple(n for n in args.models.split(",") if n)

    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxedge-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        print(f"[models] preparing {', '.join(names)} in {workdir}")
        models = prepare_models(workdir, args.artifacts, names=names)
        results = run_benchmarks(models, settings)
        results["quick"] = args.quick
        results["prepare_seconds"] = results["total_seconds"] and (
            time.perf_counter() - started - results["total_seconds"]
        )
        results["wall_seconds"] = time.perf_counter() - started
        written = write_outputs(results, args.output_dir)
    print()
    print(written["markdown"].read_text())
    print(
        "wrote "
        + ", ".join(
            str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in written.values()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
