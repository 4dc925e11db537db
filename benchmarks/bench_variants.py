"""Edge variants side by side: size, agreement, accuracy, latency and throughput.

For each model (digits, breast-cancer, a 784 -> 512 -> 10 MLP) and each variant
(fp32; int8 static QDQ per-tensor, static QDQ per-channel, dynamic; fp16; the forms
not offered, QOperator, int8 activations and requantized logits, were measured on
2026-11-28 and are no longer buildable), one run measures, in the same process and
interleaved round by round:

- file size, and its share of the fp32 file;
- label agreement with fp32 and accuracy on the model's validation split (from
  :func:`onnxedge.export.variants.verify_variant`, both models in onnxruntime);
- batch-1 latency p50 / p99 over >= 1000 calls after warm-up;
- throughput (rows/s) at batch 1024;

at 1 and 2 intra-op threads (a fresh session per setting, sequential execution). Rounds
rotate the order of the variants so that drift on the shared 2-core machine spreads over
all of them; latency percentiles pool every round's calls, throughput is the median of
the rounds.

Models: digits and breast-cancer from ``make export``'s ``artifacts/`` when present
(else trained here with the same defaults); the larger MLP is trained for a few epochs
on synthetic data (10 Gaussian classes in 784 dimensions, pixel-like scale), so its
agreement figures mean something (random weights give near-tied logits).

Usage: ``python -m benchmarks.bench_variants [--quick] [--artifacts DIR] [--out FILE]``.
Writes ``benchmarks/results_variants.md`` and ``benchmarks/results_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
LARGE = "mlp-784-512-10"
THREADS = (1, 2)
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 1024
#: Goals of the variants issue.
GOAL_INT8_SIZE_RATIO = 0.30
GOAL_INT8_SPEEDUP = 1.3


@dataclass
class Form:
    """One variant to build: the library's variant name plus its int8 settings."""

    name: str
    variant: str  # fp32 | int8 | fp16
    settings: dict[str, Any] = field(default_factory=dict)
    offered: bool = True  # False: measured only to justify not offering it


FORMS = (
    Form("fp32", "fp32"),
    Form("int8 static per-tensor", "int8", {"method": "static", "per_channel": False}),
    Form("int8 static per-channel", "int8", {"method": "static", "per_channel": True}),
    Form("int8 dynamic", "int8", {"method": "dynamic", "per_channel": False}),
    Form("fp16", "fp16"),
)


@dataclass
class Model:
    """An fp32 model, its run folder and where they came from."""

    name: str
    onnx_path: Path
    run_dir: Path
    source: str


# --- models ---------------------------------------------------------------------------


def bundled(name: str, artifacts: Path | None, workdir: Path) -> Model:
    """``make export``'s model when ``artifacts`` has it, else the same recipe here."""
    if artifacts is not None:
        onnx_path, run_dir = artifacts / f"{name}.onnx", artifacts / "runs" / name
        if onnx_path.is_file() and (run_dir / "config.json").is_file():
            return Model(name, onnx_path, run_dir, f"{artifacts}/ (make export)")
    from onnxedge.export.default_models import export_default_models

    results = export_default_models(workdir, names=(name,), progress=False)
    if results[0].errors:
        raise RuntimeError(f"cannot build {name}: {results[0].errors}")
    return Model(
        name, results[0].model_path, results[0].run_dir, "trained here (make export's recipe)"
    )


def large_mlp(workdir: Path, *, epochs: int, seed: int = 0) -> Model:
    """784 -> 512 -> 10 trained briefly on 10 Gaussian classes at a pixel-like scale."""
    from onnxedge.export.onnx_export import checkpoint_to_onnx
    from onnxedge.models.train import TrainOptions, train

    rng = np.random.default_rng(seed)
    rows, features, classes = 8000, 784, 10
    centers = rng.normal(0.0, 1.0, (classes, features))
    y = rng.integers(0, classes, rows)
    x = np.clip(100.0 + 40.0 * (centers[y] + rng.normal(0.0, 6.0, (rows, features))), 0, 255)
    data = workdir / "mlp784.npz"
    np.savez(data, X=x.astype(np.float32), y=y.astype(np.int64))
    run_dir = workdir / "runs" / LARGE
    options = TrainOptions(hidden_sizes=(512,), epochs=epochs, patience=epochs, seed=seed)
    train(data, run_dir, options, overwrite=True, progress=False)
    onnx_path = workdir / f"{LARGE}.onnx"
    checkpoint_to_onnx(run_dir, onnx_path, overwrite=True)
    return Model(LARGE, onnx_path, run_dir, f"trained {epochs} epochs on synthetic 784-d data")


# --- building and verifying each form ---------------------------------------------------


def build_form(model: Model, form: Form, workdir: Path) -> dict[str, Any]:
    """Write ``form`` of ``model`` and verify it against the fp32 file; its figures."""
    import onnx
    from onnxedge.export.variants import (
        choose_int8_settings,
        onnx_to_fp16,
        onnx_to_int8,
        verify_variant,
    )
    from onnxedge.models.checkpoint import load_run

    run = load_run(model.run_dir)
    x_val, y_val = run.validation()
    fp32_acc = None
    if form.variant == "fp32":
        path = model.onnx_path
        figures: dict[str, Any] = {"label_agreement": 1.0}
    else:
        path = workdir / f"{model.name}.{form.name.replace(' ', '_').replace(',', '')}.onnx"
        source = onnx.load(str(model.onnx_path))
        if form.variant == "fp16":
            built = onnx_to_fp16(source)
        else:
            settings = choose_int8_settings(
                form.settings["method"], per_channel=form.settings.get("per_channel")
            )
            built = onnx_to_int8(source, settings, run.calibration())
        onnx.save(built, str(path))
        report = verify_variant(path, model.onnx_path, x_val, y_val, variant=form.variant)
        fp32_acc = report.accuracy_source
        figures = {
            "label_agreement": report.label_agreement,
            "accuracy": report.accuracy_variant,
            "accuracy_drop": report.accuracy_drop,
            "loss_delta": report.loss_delta,
            "max_probability_error": report.max_probability_error,
            "bar_failures": report.failures,
        }
    figures["path"] = str(path)
    figures["size_bytes"] = path.stat().st_size
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    figures["graph_bytes"] = bare.ByteSize()  # weights and graph, without the metadata
    figures["offered"] = form.offered
    if fp32_acc is not None:
        figures["fp32_accuracy"] = fp32_acc
    return figures


# --- timing -----------------------------------------------------------------------------


def session(path: str, threads: int) -> Any:
    """A CPU session with ``threads`` intra-op threads and sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _run_session(session: Any, x: np.ndarray) -> Any:
    return session.run(None, {"input": x})


def time_forms(
    paths: dict[str, str],
    x1: np.ndarray,
    xb: np.ndarray,
    *,
    threads: int,
    rounds: int,
    latency_calls: int,
    throughput_s: float,
) -> dict[str, dict[str, float]]:
    """Latency at batch 1 and throughput at ``len(xb)``, interleaved round by round."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    runs: dict[str, Callable[[np.ndarray], Any]] = {
        name: partial(_run_session, s) for name, s in sessions.items()
    }
    for run in runs.values():  # warm-up: allocator, thread pool, kernel caches
        for _ in range(100):
            run(x1)
        for _ in range(3):
            run(xb)
    latency: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    throughput: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    clock = time.perf_counter_ns
    per_round = -(-latency_calls // rounds)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = runs[name]
            samples = np.empty(per_round, dtype=np.int64)
            for i in range(per_round):
                start = clock()
                run(x1)
                samples[i] = clock() - start
            latency[name].append(samples)
            time.sleep(0.02)  # let the previous block's worker threads park
            calls, start_s = 0, time.perf_counter()
            while True:
                run(xb)
                calls += 1
                elapsed = time.perf_counter() - start_s
                if calls >= 3 and elapsed >= throughput_s:
                    break
            throughput[name].append(calls * len(xb) / elapsed)
            time.sleep(0.02)
    out = {}
    base = np.asarray(throughput[names[0]])  # fp32 comes first: ratios within each round
    for name in names:
        us = np.concatenate(latency[name]).astype(np.float64) / 1e3
        out[name] = {
            "speedup": float(np.median(np.asarray(throughput[name]) / base)),
            "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)),
            "calls": int(us.size),
            "rows_per_s": float(np.median(throughput[name])),
            "rows_per_s_min": float(np.min(throughput[name])),
            "rows_per_s_max": float(np.max(throughput[name])),
        }
    return out


# --- report -----------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    """The markdown table and the goals, met or missed."""
    m = results["machine"]
    lines = [
        "# Edge variants: size, agreement, speed",
        "",
        f"`python -m benchmarks.bench_variants{' --quick' if results['quick'] else ''}` "
        f"on {m['cpu']} ({m['cpus']} cores; int8 flags: {', '.join(m['int8_flags']) or 'none'}), "
        f"onnxruntime {m['onnxruntime']}, {results['date']}. Batch-1 latency over "
        f">= {results['latency_calls']} calls per variant after warm-up; throughput at "
        f"batch {THROUGHPUT_BATCH} is the median of {results['rounds']} interleaved rounds. "
        "Agreement and accuracy on each model's validation split, computed with "
        "onnxruntime on both files; x fp32 is the median over rounds of each round's "
        "throughput ratio. Rows in *italics* are measured to justify not offering them. "
        f"Load average (1/5/15 min) at start {m['load_average_at_start']}, at end "
        f"{m['load_average_at_end']}: the 2 cores are shared, so 2-thread figures are noisy.",
        "",
    ]
    for model in results["models"]:
        fp32 = model["forms"]["fp32"]
        lines += [
            f"## {model['name']} ({model['rows']} validation rows; {model['source']})",
            "",
            "| variant | size KiB | % of fp32 | % w/o metadata | agreement | accuracy "
            + "".join(
                f"| p50 µs ({t}t) | p99 µs ({t}t) | rows/s ({t}t) | x fp32 ({t}t) " for t in THREADS
            )
            + "|",
            "|---|---:|---:|---:|---:|---:" + "|---:|---:|---:|---:" * len(THREADS) + "|",
        ]
        for name, f in model["forms"].items():
            label = name if f["offered"] else f"*{name}*"
            accuracy = f.get("accuracy", model["fp32_accuracy"])
            cells = [
                label,
                f"{f['size_bytes'] / 1024:.1f}",
                f"{100 * f['size_bytes'] / fp32['size_bytes']:.0f}%",
                f"{100 * f['graph_bytes'] / fp32['graph_bytes']:.0f}%",
                f"{f['label_agreement']:.4f}",
                f"{accuracy:.4f}",
            ]
            for t in THREADS:
                timing = model["timing"][str(t)][name]
                cells += [
                    f"{timing['p50_us']:.1f}",
                    f"{timing['p99_us']:.1f}",
                    f"{timing['rows_per_s']:,.0f}",
                    f"{timing['speedup']:.2f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        failures = {
            n: f["bar_failures"] for n, f in model["forms"].items() if f.get("bar_failures")
        }
        if failures:
            lines.append("")
            lines += [f"- {n} misses the variant bar: {'; '.join(v)}" for n, v in failures.items()]
        lines.append("")
    lines += ["## Fastest int8 form per model (batch 1024 throughput)", ""]
    for model in results["models"]:
        for t in THREADS:
            timing = model["timing"][str(t)]
            offered = [
                n for n, f in model["forms"].items() if f["offered"] and n.startswith("int8")
            ]
            ranked = sorted(offered, key=lambda n: -timing[n]["rows_per_s"])
            lines.append(
                f"- {model['name']}, {t} thread{'s' if t > 1 else ''}: "
                + " > ".join(f"{n} ({timing[n]['rows_per_s']:,.0f})" for n in ranked)
            )
    lines += ["", "## Goals", ""]
    for goal in results["goals"]:
        lines.append(
            f"- {'met' if goal['met'] else 'MISSED'}: {goal['goal']} -- {goal['measured']}"
        )
    lines.append("")
    return "\n".join(lines)


def goals(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals against the default int8 form (static per-tensor)."""
    out = []
    default = "int8 static per-tensor"
    for model in models:
        forms = model["forms"]
        ratio = forms[default]["size_bytes"] / forms["fp32"]["size_bytes"]
        graph = forms[default]["graph_bytes"] / forms["fp32"]["graph_bytes"]
        metadata = forms["fp32"]["size_bytes"] - forms["fp32"]["graph_bytes"]
        out.append(
            {
                "goal": f"{model['name']}: int8 file <= {GOAL_INT8_SIZE_RATIO:.0%} of fp32",
                "met": ratio <= GOAL_INT8_SIZE_RATIO,
                "measured": f"{ratio:.1%} of the file ({graph:.1%} of weights + graph; both "
                f"files carry ~{metadata / 1024:.1f} KiB of onnxedge metadata)",
            }
        )
    large = next((m for m in models if m["name"] == LARGE), None)
    if large is not None:
        for t in THREADS:
            timing = large["timing"][str(t)]
            speedup = timing[default]["speedup"]
            out.append(
                {
                    "goal": f"{LARGE}: int8 throughput >= {GOAL_INT8_SPEEDUP}x fp32 at batch "
                    f"{THROUGHPUT_BATCH}, {t} thread{'s' if t > 1 else ''}",
                    "met": speedup >= GOAL_INT8_SPEEDUP,
                    "measured": f"{speedup:.2f}x",
                }
            )
    return out


INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    return [
        f
        for line in text.splitlines()
        if line.startswith(("flags", "Features"))
        for f in line.split(":", 1)[1].split()
    ]


def machine() -> dict[str, Any]:
    """CPU, cores and the int8-relevant flags."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "int8_flags": sorted(set(INT8_FLAGS) & set(_cpu_flags())),
        "onnxruntime": ort.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    """Build every form of every model, time them, write the markdown and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path, default=HERE / "results_variants.md")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the quantizer's advice lines, not results

    rounds = 2 if args.quick else 5
    latency_calls = 200 if args.quick else 1000
    throughput_s = 0.1 if args.quick else 0.4
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxedge-bench-variants-") as tmp:
        workdir = Path(tmp)
        artifacts = args.artifacts if args.artifacts.is_dir() else None
        models = [
            bundled("digits", artifacts, workdir),
            bundled("breast-cancer", artifacts, workdir),
            large_mlp(workdir, epochs=1 if args.quick else 3),
        ]
        results: dict[str, Any] = {
            "quick": args.quick,
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "rounds": rounds,
            "latency_calls": latency_calls,
            "models": [],
        }
        for model in models:
            print(f"{model.name}: building {len(FORMS)} forms", file=sys.stderr)
            forms = {f.name: build_form(model, f, workdir) for f in FORMS}
            from onnxedge.models.checkpoint import load_run

            run = load_run(model.run_dir)
            x_val, _ = run.validation()
            rng = np.random.default_rng(0)
            x1 = x_val[:1]
            xb = x_val[rng.integers(0, len(x_val), THROUGHPUT_BATCH)]
            timing = {}
            for t in THREADS:
                print(f"{model.name}: timing at {t} thread(s)", file=sys.stderr)
                timing[str(t)] = time_forms(
                    {n: f["path"] for n, f in forms.items()},
                    x1,
                    xb,
                    threads=t,
                    rounds=rounds,
                    latency_calls=latency_calls,
                    throughput_s=throughput_s,
                )
            fp32_accuracy = next(f["fp32_accuracy"] for f in forms.values() if "fp32_accuracy" in f)
            for f in forms.values():
                f["path"] = Path(f["path"]).name
            results["models"].append(
                {
                    "name": model.name,
                    "source": model.source,
                    "rows": len(x_val),
                    "fp32_accuracy": fp32_accuracy,
                    "forms": forms,
                    "timing": timing,
                }
            )
    results["goals"] = goals(results["models"])
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    markdown = render(results)
    args.out.write_text(markdown)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
