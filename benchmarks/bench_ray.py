"""``onnxedge score --engine ray`` with 1 and 2 workers against the local engine.

The same Parquet input (default 1,000,000 rows x 64 features in 8 files) is scored
by :func:`onnxedge.runtime.score.score_file` and by
:func:`onnxedge.runtime.score_ray.score_ray` on a local Ray runtime that each Ray
run starts and stops itself, as ``onnxedge score --engine ray`` does. Ray's fixed
start-up cost is measured on its own: the same call on a 1,000-row file (start the
runtime, start the actors and build their sessions, score the first batch, write,
stop). The steady rate of a Ray run is then ``rows / (total - fixed)``.

The model is ``artifacts/digits.onnx`` (64 -> 128 -> 10) when ``make export`` has
written it, else a model of the same shape with random weights built with
``onnx.helper``. Runs are repeated round-robin (``--repeats``) and medians reported;
the machine is shared, so the load average is recorded with the figures.

    .venv/bin/python -m benchmarks.bench_ray             # writes benchmarks/results_ray.md
    .venv/bin/python -m benchmarks.bench_ray --rows 100000 --repeats 1 --out /tmp/r.md

The generated data (about 260 MB for 1M rows) lives in a temporary folder that is
removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine_facts

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results_ray.md"
DIGITS = REPO / "artifacts" / "digits.onnx"
#: Rows of the small input whose end-to-end time is the fixed start-up cost.
FIXED_COST_ROWS = 1000
WORKER_COUNTS = (1, 2)


def digits_like_model(workdir: Path) -> tuple[Path, str]:
    """``artifacts/digits.onnx``, or a 64 -> 128 -> 10 softmax MLP with random weights."""
    if DIGITS.is_file():
        return DIGITS, "artifacts/digits.onnx"
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((64, 128)).astype(np.float32) * 0.1,
        "b1": np.zeros(128, dtype=np.float32),
        "w2": rng.standard_normal((128, 10)).astype(np.float32) * 0.1,
        "b2": np.zeros(10, dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = workdir / "digits_like.onnx"
    onnx.save(model, path)
    return path, "64 -> 128 -> 10 onnx.helper model (random weights; no artifacts/digits.onnx)"


def feature_names(model: Path) -> list[str]:
    from onnxedge.runtime import Predictor

    names = Predictor(model, provider="cpu").contract.feature_names
    return list(names) if names else [f"f{j}" for j in range(64)]


def write_parquet_folder(folder: Path, rows: int, files: int, names: list[str]) -> Path:
    """``rows`` digits-like rows (pixel intensities 0..16, float32) over ``files`` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, part in enumerate(np.array_split(np.arange(rows), files)):
        x = rng.integers(0, 17, size=(part.size, len(names))).astype(np.float32)
        table = pa.table({name: x[:, j] for j, name in enumerate(names)})
        pq.write_table(table, folder / f"part-{k:03d}.parquet", row_group_size=65536)
    return folder


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Wall seconds of ``fn(*args, **kwargs)``, and its result."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from onnxedge.runtime.score import score_file
    from onnxedge.runtime.score_ray import score_ray

    workdir = Path(tempfile.mkdtemp(prefix="bench_ray_", dir=args.workdir))
    try:
        model, model_note = digits_like_model(workdir)
        names = feature_names(model)
        big = write_parquet_folder(workdir / "big", args.rows, args.files, names)
        small = write_parquet_folder(workdir / "small", FIXED_COST_ROWS, 1, names)
        samples: dict[str, list[dict[str, float]]] = {}
        counter = 0

        def out() -> Path:
            nonlocal counter
            counter += 1
            return workdir / f"out-{counter}"

        machine = machine_facts()  # the load average before the runs
        for _ in range(args.repeats):
            seconds, summary = timed(
                score_file, model, big, out().with_suffix(".parquet"), progress=False
            )
            assert summary.rows_scored == args.rows
            samples.setdefault("local", []).append({"seconds": seconds})
            for workers in WORKER_COUNTS:
                fixed, tiny = timed(score_ray, model, small, out(), workers=workers)
                assert tiny.rows_scored == FIXED_COST_ROWS
                seconds, summary = timed(score_ray, model, big, out(), workers=workers)
                assert summary.rows_scored == args.rows
                samples.setdefault(f"ray-{workers}", []).append(
                    {
                        "seconds": seconds,
                        "fixed_seconds": fixed,
                        "init_seconds": summary.startup_seconds,
                        "shards": summary.shards,
                    }
                )
            for path in workdir.glob("out-*"):  # keep the disk use to one input
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return {
            "rows": args.rows,
            "files": args.files,
            "features": len(names),
            "batch_size": 8192,
            "repeats": args.repeats,
            "model": model_note,
            "samples": samples,
            "machine": {
                **machine,
                "ray": _version("ray"),
                "pyarrow": _version("pyarrow"),
                "loadavg_end": list(os.getloadavg()),
            },
        }
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def render(results: dict[str, Any]) -> str:
    rows = results["rows"]
    samples = results["samples"]
    local_s = statistics.median(s["seconds"] for s in samples["local"])
    lines = [
        "# `onnxedge score --engine ray` vs the local engine",
        "",
        f"{rows:,} rows x {results['features']} float32 features in {results['files']} "
        f"Parquet files -> a Parquet output; model: {results['model']}; batch size "
        f"{results['batch_size']}; medians of {results['repeats']} round(s). Written by "
        "`.venv/bin/python -m benchmarks.bench_ray`.",
        "",
        "Each Ray run starts a local Ray runtime and stops it (as `onnxedge score --engine ray`"
        " without `--ray-address` does), with 1 onnxruntime thread per worker. *Fixed* is the"
        f" same call on {FIXED_COST_ROWS:,} rows: Ray start-up (*init*), actor start-up with"
        " session build, the first batch, the write and the shutdown. *Steady* is"
        " rows / (total - fixed). The local engine uses onnxruntime's default here"
        f" ({min(results['machine']['cpus'], 4)} threads) in one process.",
        "",
        "| engine | workers | total s | rows/s end to end | fixed s (init s) | steady rows/s |"
        " vs local |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| local | - | {local_s:.2f} | {rows / local_s:,.0f} | - | - | 1.00x |",
    ]
    steady: dict[int, float] = {}
    for workers in WORKER_COUNTS:
        runs = samples[f"ray-{workers}"]
        total = statistics.median(s["seconds"] for s in runs)
        fixed = statistics.median(s["fixed_seconds"] for s in runs)
        init = statistics.median(s["init_seconds"] for s in runs)
        steady[workers] = rows / (total - fixed) if total > fixed else float("nan")
        lines.append(
            f"| ray | {workers} | {total:.2f} | {rows / total:,.0f} | {fixed:.1f} ({init:.1f}) "
            f"| {steady[workers]:,.0f} | {local_s / total:.2f}x |"
        )
    best = max(WORKER_COUNTS, key=lambda w: steady[w])
    cpus = results["machine"]["cpus"]
    notes = [
        f"Reading the table: the best steady rate ({best} worker(s)) is "
        f"{steady[best] / (rows / local_s):.2f}x the local engine's end-to-end rate. Every "
        "batch crosses processes through Ray's object store (read task -> scoring actor -> "
        f"write task), and all of them share this machine's {cpus} CPUs with Ray's daemons."
    ]
    if steady[max(WORKER_COUNTS)] <= steady[min(WORKER_COUNTS)]:
        notes.append(
            f"More workers did not raise the steady rate here: with {cpus} CPUs they compete "
            "for the same cores as Ray Data's read and write tasks."
        )
    notes.append(
        "The Ray engine pays off when the input is spread over more cores than one machine "
        "has: the fixed cost is paid once per run and the steady rate adds up across nodes."
    )
    lines += ["", " ".join(notes)]
    machine = results["machine"]
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cpus']} CPUs available, "
        f"{machine['memory_gib']} GiB memory; {machine['platform']}; Python {machine['python']}",
        f"- onnxruntime {machine['versions']['onnxruntime']}, numpy "
        f"{machine['versions']['numpy']}, pyarrow {machine['pyarrow']}, ray {machine['ray']}",
        f"- load average at start {machine['loadavg_start']}, at end {machine['loadavg_end']} "
        "(a shared machine: other processes ran beside the benchmark)",
        f"- git commit {machine['git_commit']}",
        "",
        "## Raw samples (seconds)",
        "",
        "```json",
        json.dumps(samples, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8, help="Parquet files the rows are split in")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where the data is generated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args(argv)
    results = run(args)
    text = render(results)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
