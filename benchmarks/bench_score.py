"""Batch scoring end to end against its ceiling: ``onnxedge score`` vs raw onnxruntime vs torch.

One run, on one generated input of ``--rows`` rows x 64 float32 features and a
digits-shaped classifier (``artifacts/digits.onnx`` when ``make export`` wrote it, else a
64 -> 128 -> 10 MLP with seeded random weights built with ``onnx.helper``):

1. **ceiling**: a raw ``onnxruntime.InferenceSession.run`` over the in-memory array,
   batch by batch at the same batch size, fetching what ``Predictor`` fetches
   (``probabilities`` and ``label``), with ``Predictor``'s session options; twice,
   with onnxruntime's spinning workers (its default) and without (what scoring
   uses), and the faster of the two in each round is the ceiling;
2. **predictor**: ``Predictor.predict`` over the same in-memory array;
3. **torch**: a plain PyTorch eager loop over the same array and batches (the ONNX
   graph's own weights, run op by op with torch under ``inference_mode``; checked
   against onnxruntime before timing);
4. **score**: :func:`onnxedge.runtime.score.score_file` end to end (model load, read,
   checks, inference, write, rename) from NPY, CSV and Parquet files of the same
   rows to a Parquet file (and NPY to CSV).

Each path runs ``--repeats`` times, interleaved (the order rotates each round); the
table reports medians of rows/s and of per-round ratios to the ceiling. Then the peak
RSS (VmHWM, see ``_RSS_CODE``) of NPY scoring at 100k, 1M and 5M rows, each in a fresh
process.

Writes ``benchmarks/results_score.md`` (``--output``) and prints it. Data files go to
``benchmarks/data/score/`` (git-ignored) and are deleted at the end unless
``--keep-data``. On a shared machine, ``--wait-idle SECONDS`` waits for a quiet moment.

Usage: ``python -m benchmarks.bench_score [--rows N] [--repeats R] [--rss-rows a,b,c]``.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "benchmarks" / "data" / "score"
RESULTS = REPO / "benchmarks" / "results_score.md"
DIGITS = REPO / "artifacts" / "digits.onnx"
FEATURES = 64
HIDDEN = 128
CLASSES = 10
#: The issue's goals.
GOAL_VS_CEILING = 0.85
GOAL_RSS_SPREAD = 0.20
#: Rows per generated chunk (file generation never holds the whole input).
GEN_ROWS = 262144


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def build_digits_like(path: Path, seed: int = 0) -> Path:
    """A 64 -> 128 -> 10 softmax classifier with the onnxedge graph contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxedge.runtime.contract import ModelContract

    rng = np.random.default_rng(seed)
    weights = {
        "mean": rng.uniform(0, 8, FEATURES).astype(np.float32),
        "std": rng.uniform(1, 5, FEATURES).astype(np.float32),
        "W1": (rng.standard_normal((FEATURES, HIDDEN)) / np.sqrt(FEATURES)).astype(np.float32),
        "b1": rng.normal(0, 0.1, HIDDEN).astype(np.float32),
        "W2": (rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b2": rng.normal(0, 0.1, CLASSES).astype(np.float32),
    }
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "W1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "W2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    contract = ModelContract(
        task="multiclass",
        head="softmax",
        class_names=[str(k) for k in range(CLASSES)],
        num_features=FEATURES,
        feature_names=[f"pixel_{i}" for i in range(FEATURES)],
    )
    helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def feature_names(model: Path) -> list[str]:
    """The model's feature names (or f0..f63 when it has none)."""
    from onnxedge.runtime import Predictor

    names = Predictor(model).contract.feature_names
    return list(names) if names else [f"f{i}" for i in range(FEATURES)]


# --- torch: the graph's own weights, op by op ------------------------------------------


class TorchGraph:
    """An ONNX MLP graph run with torch eager ops (the weights read from the file).

    Supports the ops an onnxedge classifier uses; raises NotImplementedError otherwise.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        torch.set_num_threads(threads)
        self.torch = torch
        model = onnx.load(str(path))
        self.consts = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in model.graph.initializer
        }
        self.nodes = []
        for node in model.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                self.consts[node.output[0]] = torch.from_numpy(
                    numpy_helper.to_array(attrs["value"]).copy()
                )
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.input = model.graph.input[0].name
        self.threads = threads

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            env = dict(self.consts)
            env[self.input] = torch.from_numpy(x)
            for op, inputs, outputs, attrs in self.nodes:
                args = [env[name] for name in inputs if name]
                env[outputs[0]] = self._op(op, args, attrs)
            return env["probabilities"].numpy(), env["label"].numpy()

    def _op(self, op: str, args: list[Any], attrs: dict[str, Any]) -> Any:
        torch = self.torch
        if op == "Sub":
            return args[0] - args[1]
        if op == "Div":
            return args[0] / args[1]
        if op == "Mul":
            return args[0] * args[1]
        if op == "Add":
            return args[0] + args[1]
        if op == "MatMul":
            return args[0] @ args[1]
        if op == "Gemm":
            a, b = args[0], args[1]
            if attrs.get("transA"):
                a = a.T
            if attrs.get("transB"):
                b = b.T
            out = attrs.get("alpha", 1.0) * (a @ b)
            return out + attrs.get("beta", 1.0) * args[2] if len(args) > 2 else out
        if op == "Relu":
            return torch.relu(args[0])
        if op == "Softmax":
            return torch.softmax(args[0], dim=attrs.get("axis", -1))
        if op == "Sigmoid":
            return torch.sigmoid(args[0])
        if op == "ArgMax":
            return torch.argmax(
                args[0], dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1))
            )
        if op == "Identity":
            return args[0]
        raise NotImplementedError(op)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _chunks(rows: int, seed: int) -> Any:
    """(start, (k, 64) float32) chunks of the benchmark rows: digits-like pixel values 0..16."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, GEN_ROWS):
        k = min(GEN_ROWS, rows - start)
        yield start, rng.integers(0, 17, size=(k, FEATURES)).astype(np.float32)


def write_npy(path: Path, rows: int, seed: int = 0) -> Path:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    for start, chunk in _chunks(rows, seed):
        out[start : start + chunk.shape[0]] = chunk
    out.flush()
    del out
    return path


def write_csv(path: Path, rows: int, names: list[str], seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema = pa.schema([(name, pa.float32()) for name in names])
    with pacsv.CSVWriter(str(path), schema) as writer:
        for _, chunk in _chunks(rows, seed):
            writer.write_table(pa.table(list(chunk.T), schema=schema))
    return path


def write_parquet(path: Path, rows: int, names: list[str], seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.float32()) for name in names])
    with pq.ParquetWriter(str(path), schema) as writer:
        for _, chunk in _chunks(rows, seed):
            writer.write_table(pa.table(list(chunk.T), schema=schema))
    return path


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def wait_for_idle(limit_s: float, threshold: float = 1.0) -> bool:
    """Wait (up to ``limit_s``) for the 1-minute load average to drop below ``threshold``.

    On a shared machine other work changes every figure; returns whether it got quiet.
    """
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold:
        if time.monotonic() >= deadline:
            print(f"load average still {os.getloadavg()[0]:.2f}; running anyway", file=sys.stderr)
            return False
        time.sleep(10)
    return True


def settle() -> None:
    """Collect garbage and let spinning worker threads park between timed blocks."""
    gc.collect()
    time.sleep(0.2)


def batched(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch: int) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, x.shape[0], batch):
            fn(x[start : start + batch])

    return run


@dataclass
class TimedPath:
    """A timed path: a name, a label for the table, and a callable doing one full run."""

    name: str
    label: str
    run: Callable[[], Any]
    seconds: list[float] = field(default_factory=list)


def time_paths(paths: list[TimedPath], repeats: int) -> None:
    for path in paths:  # warm-up: allocations, page cache, thread pools
        path.run()
    for round_index in range(repeats):
        k = round_index % len(paths)
        for path in paths[k:] + paths[:k]:
            settle()
            start = time.perf_counter()
            path.run()
            path.seconds.append(time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# RSS
# --------------------------------------------------------------------------------------

# The child's peak RSS is read from /proc/self/status (VmHWM, kept per address space):
# ru_maxrss survives fork + exec, so a child of this (large) process would report the
# parent's resident set instead of its own.
_RSS_CODE = """
import json, resource, sys
from onnxedge.runtime.score import score_file
summary = score_file(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=int(sys.argv[4]),
                     overwrite=True, progress=False)
try:
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss_kib": peak, "rows": summary.rows_scored, "seconds": summary.seconds}))
"""


def peak_rss(model: Path, npy: Path, out: Path, batch: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CODE, str(model), str(npy), str(out), str(batch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"RSS probe failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    try:
        from benchmarks.harness import machine_facts

        return machine_facts()
    except ImportError:
        from importlib.metadata import version

        return {
            "cpu_model": platform.processor() or platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {n: version(n) for n in ("numpy", "onnxruntime", "torch", "pyarrow")},
        }


def _load(values: Any) -> str:
    return "?" if not values else ", ".join(f"{v:.2f}" for v in values)


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Batch scoring benchmark (`benchmarks/bench_score.py`)",
        "",
        f"Command: `{results['command']}`",
        "",
        f"{results['rows']:,} rows x {FEATURES} float32 features, model: {results['model']}, "
        f"batch size {results['batch_size']:,}, onnxruntime threads {results['threads']}, "
        f"{results['repeats']} interleaved repeats (medians). The ceiling of each round is "
        "the faster of the two raw onnxruntime loops; ratios are per round, then medians. "
        "rows/s counts input rows; "
        "`onnxedge score` times are end to end (model load, read, checks, inference, write, "
        "rename).",
        "",
        "| path | rows/s | x ceiling | x torch eager |",
        "|---|---:|---:|---:|",
    ]
    for row in results["table"]:
        lines.append(
            f"| {row['label']} | {row['rows_per_s']:,.0f} | {row['vs_ceiling']:.2f} | "
            f"{row['vs_torch']:.2f} |"
        )
    lines += [
        "",
        "## Peak RSS, `score_file` NPY -> Parquet, fresh process per size",
        "",
        "Peak resident set (VmHWM) of a fresh `python -c` process that imports onnxedge and "
        "scores the file (interpreter, numpy, onnxruntime and pyarrow included).",
        "",
    ]
    if results.get("rss"):
        lines += ["| rows | NPY size | peak RSS (MiB) | seconds |", "|---:|---:|---:|---:|"]
        for row in results["rss"]:
            lines.append(
                f"| {row['rows']:,} | {row['npy_mib']:,.0f} MiB | "
                f"{row['maxrss_kib'] / 1024:,.1f} | {row['seconds']:.2f} |"
            )
        lines += ["", f"Spread (max / min - 1): {results['rss_spread'] * 100:.1f}%"]
    else:
        lines.append("(not measured in this run)")
    lines += [
        "",
        "## Reading the ratios",
        "",
        "The ceiling runs inference on an array already in memory and writes nothing. "
        "`onnxedge score` also maps the input file in (64 float32 = 256 bytes a row), checks "
        "every value for NaN / Inf, writes the label, class name and one probability per "
        "class (about 50 bytes a row) from a background thread, and renames the output into "
        "place. For a 64 -> 128 -> 10 MLP the inference itself is a fraction of a "
        "microsecond a row on this machine, so these per-row costs weigh about as much as "
        "it does; the cProfile below shows the split. Figures move with the load of the "
        "shared machine (load averages at the bottom).",
    ]
    lines += ["", "## Goals", ""]
    for goal in results["goals"]:
        lines.append(f"- {'met' if goal['met'] else 'MISSED'}: {goal['text']}")
    if results.get("profile"):
        lines += [
            "",
            "## cProfile of NPY scoring (top cumulative)",
            "",
            "```",
            results["profile"],
            "```",
        ]
    facts = results["machine"]
    versions = facts.get("versions", {})
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {facts.get('cpu_model')}, {facts.get('cpus')} usable CPUs, "
        f"memory {facts.get('memory_gib', '?')} GiB",
        f"- {facts.get('platform')}, Python {facts.get('python')}",
        "- " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- pyarrow {results['pyarrow']}; load average (1, 5, 15 min) at start "
        f"{_load(facts.get('loadavg_start'))}, at end {_load(results.get('loadavg_end'))} "
        "(a shared machine: other work changes the figures)",
        f"- git commit {facts.get('git_commit')}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rss-rows", default="100000,1000000,5000000", help="'' to skip")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile NPY scoring")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below 1",
    )
    args = parser.parse_args(argv)
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    facts = machine()  # the load average at the start, among the rest
    facts.setdefault("loadavg_start", list(os.getloadavg()))

    import onnxruntime as ort
    import pyarrow
    from onnxedge.runtime import Predictor
    from onnxedge.runtime.predictor import default_threads
    from onnxedge.runtime.score import DEFAULT_BATCH_SIZE, score_file

    batch = args.batch_size or DEFAULT_BATCH_SIZE
    threads = args.threads or default_threads()
    data = args.data_dir
    data.mkdir(parents=True, exist_ok=True)
    try:
        if DIGITS.exists():
            model, model_label = DIGITS, f"{DIGITS.relative_to(REPO)} (make export)"
        else:
            model = build_digits_like(data / "digits_like.onnx")
            model_label = "64 -> 128 -> 10 MLP, random weights (no artifacts/digits.onnx)"
        names = feature_names(model)
        print(f"generating {args.rows:,} rows ...", file=sys.stderr)
        npy = write_npy(data / "bench.npy", args.rows)
        csv_path = write_csv(data / "bench.csv", args.rows, names)
        parquet = write_parquet(data / "bench.parquet", args.rows, names)
        x = np.load(npy)  # the in-memory array of the ceiling and torch paths

        def raw_session(spinning: bool) -> Callable[[np.ndarray], Any]:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            fetch = ["probabilities", "label"]
            run_session = session.run

            def run(part: np.ndarray) -> Any:
                return run_session(fetch, {"input": part})

            return run

        ort_batch = raw_session(spinning=True)
        ort_batch_calm = raw_session(spinning=False)

        predictor = Predictor(model, provider="cpu", threads=threads)
        torch_graph = TorchGraph(model, threads)
        sample = x[:1000]
        probs_torch, labels_torch = torch_graph(sample)
        probs_ort, labels_ort = ort_batch(sample)
        if (
            not np.allclose(probs_torch, probs_ort, atol=1e-5)
            or not (labels_torch == labels_ort).all()
        ):
            raise RuntimeError("the torch path does not compute what onnxruntime computes")

        out = data / "out"
        out.mkdir(exist_ok=True)

        def scorer(source: Path, target: str) -> Callable[[], Any]:
            return lambda: score_file(
                model,
                source,
                out / target,
                batch_size=batch,
                threads=threads,
                overwrite=True,
                progress=False,
            )

        paths = [
            TimedPath(
                "ort-spin",
                "raw ORT `session.run`, in-memory array, workers spinning (ORT default)",
                batched(ort_batch, x, batch),
            ),
            TimedPath(
                "ort-calm",
                "raw ORT `session.run`, in-memory array, no spinning",
                batched(ort_batch_calm, x, batch),
            ),
            TimedPath(
                "predictor",
                "`Predictor.predict`, in-memory array",
                lambda: predictor.predict(x, batch_size=batch),
            ),
            TimedPath(
                "torch", "PyTorch eager loop, in-memory array", batched(torch_graph, x, batch)
            ),
            TimedPath("npy", "`onnxedge score` NPY -> Parquet", scorer(npy, "npy.parquet")),
            TimedPath("npy-csv", "`onnxedge score` NPY -> CSV", scorer(npy, "npy.csv")),
            TimedPath(
                "parquet", "`onnxedge score` Parquet -> Parquet", scorer(parquet, "pq.parquet")
            ),
            TimedPath("csv", "`onnxedge score` CSV -> Parquet", scorer(csv_path, "csv.parquet")),
        ]
        print("timing ...", file=sys.stderr)
        time_paths(paths, args.repeats)
        by_name = {p.name: p for p in paths}
        # The ceiling of each round: the faster of the two raw onnxruntime loops.
        ceiling = [
            min(a, b)
            for a, b in zip(by_name["ort-spin"].seconds, by_name["ort-calm"].seconds, strict=True)
        ]
        table = []
        for p in paths:
            vs_ceiling = [c / s for c, s in zip(ceiling, p.seconds, strict=True)]
            vs_torch = [t / s for t, s in zip(by_name["torch"].seconds, p.seconds, strict=True)]
            table.append(
                {
                    "name": p.name,
                    "label": p.label,
                    "seconds": p.seconds,
                    "rows_per_s": args.rows / statistics.median(p.seconds),
                    "vs_ceiling": statistics.median(vs_ceiling),
                    "vs_torch": statistics.median(vs_torch),
                }
            )
        rows_of = {row["name"]: row for row in table}

        profile_text = None
        if args.profile or rows_of["npy"]["vs_ceiling"] < GOAL_VS_CEILING:
            profiler = cProfile.Profile()
            profiler.enable()
            by_name["npy"].run()
            profiler.disable()
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(18)
            profile_text = "\n".join(
                line for line in buffer.getvalue().splitlines() if line.strip()
            )[:6000]

        x = np.empty((0, FEATURES), dtype=np.float32)  # free the array before RSS probes
        for name in ("bench.csv", "bench.parquet"):
            (data / name).unlink(missing_ok=True)
        rss = []
        for count in [int(v) for v in args.rss_rows.split(",") if v.strip()]:
            print(f"RSS at {count:,} rows ...", file=sys.stderr)
            probe = write_npy(data / f"rss_{count}.npy", count, seed=1)
            result = peak_rss(model, probe, out / "rss.parquet", batch)
            result["npy_mib"] = probe.stat().st_size / 2**20
            result["rows"] = count
            rss.append(result)
            probe.unlink()
        spread = (
            max(r["maxrss_kib"] for r in rss) / min(r["maxrss_kib"] for r in rss) - 1
            if rss
            else 0.0
        )
        goals = [
            {
                "text": f"`onnxedge score` NPY at >= {GOAL_VS_CEILING}x the raw ORT ceiling: "
                f"{rows_of['npy']['vs_ceiling']:.2f}x",
                "met": rows_of["npy"]["vs_ceiling"] >= GOAL_VS_CEILING,
            },
            {
                "text": f"`onnxedge score` NPY ahead of the torch eager loop: "
                f"{rows_of['npy']['vs_torch']:.2f}x torch",
                "met": rows_of["npy"]["vs_torch"] > 1.0,
            },
        ]
        if rss:
            goals.append(
                {
                    "text": f"peak RSS flat within {GOAL_RSS_SPREAD:.0%} from "
                    f"{rss[0]['rows']:,} to {rss[-1]['rows']:,} rows: {spread:.1%}",
                    "met": spread <= GOAL_RSS_SPREAD,
                }
            )
        command = (
            "python -m benchmarks.bench_score" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
        )
        results = {
            "command": command.strip(),
            "rows": args.rows,
            "model": model_label,
            "batch_size": batch,
            "threads": threads,
            "repeats": args.repeats,
            "table": table,
            "rss": rss,
            "rss_spread": spread,
            "goals": goals,
            "profile": profile_text,
            "machine": facts,
            "loadavg_end": list(os.getloadavg()),
            "pyarrow": pyarrow.__version__,
        }
        text = render(results)
        args.output.write_text(text)
        print(text)
    finally:
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
