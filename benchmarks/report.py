"""``RESULTS.md`` and ``results.png`` from the results dict that :mod:`benchmarks.run` builds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.ceiling import LARGE
from benchmarks.harness import SETTLE_S
from benchmarks.paths import PATH_LABELS

_ORDER = ("torch", "ort", "predictor", "edge", "ort-int8", "predictor-int8")
_VARIANT_LABELS = {
    "ort-int8": "raw ORT session.run, int8",
    "predictor-int8": "Predictor.predict, int8",
}
_LATENCY_RATIO = {
    "predictor": "predictor_over_ort",
    "edge": "edge_over_ort",
    "torch": "torch_over_ort",
}
_THROUGHPUT_RATIO = {
    "predictor": "predictor_vs_ort",
    "edge": "edge_vs_ort",
    "ort-int8": "ort_int8_vs_ort",
    "predictor-int8": "predictor_int8_vs_ort",
}


def label(path: str) -> str:
    """A path's name in words."""
    return PATH_LABELS.get(path, _VARIANT_LABELS.get(path, path))


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    number = float(value)
    if abs(number) >= 1e6:
        return f"{number / 1e6:.{max(digits, 2)}f} M"
    if abs(number) >= 1e4:
        return f"{number / 1e3:.{digits}f} k"
    return f"{number:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.0f}%"


def _ratio(block: dict[str, Any], name: str | None) -> str:
    if name is None:
        return ""
    entry = block.get("ratios", {}).get(name)
    if not entry or entry.get("median") is None:
        return ""
    return f"{entry['median']:.3f}x ({entry['min']:.2f}-{entry['max']:.2f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _ordered(names: Any) -> list[str]:
    names = list(names)
    return [n for n in _ORDER if n in names] + [n for n in names if n not in _ORDER]


def render_markdown(data: dict[str, Any]) -> str:
    """The whole report as markdown."""
    out: list[str] = []
    machine = data.get("machine", {})
    threads = [str(t) for t in data.get("settings", {}).get("threads", [])]
    all_cores = threads[-1] if threads else "?"
    out += [
        "# onnxedge benchmarks",
        "",
        "PyTorch eager, raw onnxruntime, `Predictor` and the embedded script side by side, "
        "against the machine's own float32 GEMM rate. Written by `make bench` "
        f"(`python -m benchmarks.run{' --quick' if data.get('quick') else ''}`) on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, commit {machine.get('git_commit') or '?'}, "
        f"in {data.get('wall_seconds') or data.get('total_seconds') or 0:.0f} s. "
        "Every timing is a median over rounds; every ratio is taken inside a round, then "
        "the median over rounds is shown with its range.",
        "",
    ]
    out += _machine(data)
    out += _goals(data)
    out += _latency(data, threads)
    out += _throughput(data, threads, all_cores)
    out += _interference(data, threads)
    out += _ceiling(data, threads)
    out += _cold(data)
    out += _imports(data)
    out += _rss(data)
    out += _profiles(data)
    out += _method(data)
    return "\n".join(out).rstrip() + "\n"


def _machine(data: dict[str, Any]) -> list[str]:
    m = data.get("machine", {})
    flags = [name for name, present in m.get("cpu_flags", {}).items() if present]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    env = {k: v for k, v in m.get("thread_env", {}).items() if v is not None}
    threads = data.get("settings", {}).get("threads", [])
    lines = [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs usable; "
        f"{m.get('memory_gib', '?')} GiB memory; {m.get('platform', '')}",
        f"- CPU flags: {', '.join(flags) or 'none of note'}",
        f"- Python {m.get('python', '?')}; {versions}",
        f"- Threads measured: {', '.join(str(t) for t in threads)} "
        "(torch.set_num_threads and ORT intra_op_num_threads; inter-op 1)",
    ]
    ceiling = data.get("ceiling") or {}
    for info in ceiling.get("blas", []):
        if info.get("user_api") == "blas":
            lines.append(
                f"- numpy BLAS: {info.get('internal_api')} {info.get('version')}, kernel "
                f"`{info.get('architecture')}` (threadpoolctl)"
            )
    removed = ceiling.get("removed_env") or {}
    if removed:
        lines.append(
            "- The environment sets "
            + ", ".join(f"`{k}={v}`" for k, v in removed.items())
            + ": removed for the GEMM ceiling (they select a slower OpenBLAS kernel); "
            "see the ceiling table for the rate with them."
        )
    else:
        lines.append("- `OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE`: not set in this environment")
    if env:
        lines.append("- Thread environment: " + ", ".join(f"`{k}={v}`" for k, v in env.items()))
    start, end = m.get("loadavg_start"), m.get("loadavg_end")
    if start:
        lines.append(
            f"- Load average at start {start[0]:.2f}, at end {end[0] if end else float('nan'):.2f} "
            "(other work on the machine shows up as noise: compare the ratios)"
        )
    return [*lines, ""]


def _goals(data: dict[str, Any]) -> list[str]:
    goals = data.get("goals") or []
    if not goals:
        return []
    rows = []
    for g in goals:
        status = {True: "met", False: "**missed**", None: "not measured"}[g.get("met")]
        threads = "" if g.get("threads") is None else str(g["threads"])
        measured = g.get("display") or (g.get("note") or "n/a")
        other = g.get("other_load_cores")
        busy = "" if other is None else f"{other:.2f}"
        rows.append([g["goal"], g.get("model") or "", threads, g["target"], measured, status, busy])
    lines = [
        "## Goals",
        "",
        "`other CPUs busy`: how many CPUs other processes kept busy, on average, while "
        "that figure was measured (from `/proc/stat`, less this run's own CPU time); "
        "figures taken with other work running are noisier, all-core ones most of all.",
        "",
    ]
    header = ["goal", "model", "threads", "target", "measured", "status", "other CPUs busy"]
    lines += _table(header, rows)
    return lines


def _latency(data: dict[str, Any], threads: list[str]) -> list[str]:
    latency = data.get("latency")
    if not latency:
        return []
    header = ["model", "path"]
    for t in threads:
        header += [f"p50 ({t}t)", f"p90 ({t}t)", f"p99 ({t}t)"]
    header += [f"vs raw ORT, p50 ({t}t)" for t in threads]
    rows = []
    for model, by_threads in latency.items():
        names = _ordered(next(iter(by_threads.values()))["paths"])
        for path in names:
            row = [model, label(path)]
            for t in threads:
                stats = by_threads.get(t, {}).get("paths", {}).get(path, {})
                row += [
                    _num(stats.get("p50_us")),
                    _num(stats.get("p90_us")),
                    _num(stats.get("p99_us")),
                ]
            row += [_ratio(by_threads.get(t, {}), _LATENCY_RATIO.get(path)) for t in threads]
            rows.append(row)
    some = next(iter(next(iter(latency.values())).values()))
    return [
        "## Latency at batch 1 (microseconds)",
        "",
        f"{some['calls_per_round']} timed calls per path per round, {some['rounds']} rounds "
        "(percentiles over all calls), after 200 warm-up calls. The ratio is the per-round "
        "p50 of the path over raw `session.run`'s.",
        "",
        *_table(header, rows),
    ]


def _throughput(data: dict[str, Any], threads: list[str], all_cores: str) -> list[str]:
    throughput = data.get("throughput")
    if not throughput:
        return []
    header = ["model", "batch", "path"]
    for t in threads:
        header += [f"rows/s ({t}t)", f"GFLOP/s ({t}t)", f"% GEMM ({t}t)", f"% same-shape ({t}t)"]
    header += [f"vs raw ORT ({t}t)" for t in threads] + [f"vs torch ({t}t)" for t in threads]
    rows = []
    for model, by_batch in throughput.items():
        for batch, by_threads in by_batch.items():
            names = _ordered(next(iter(by_threads.values()))["paths"])
            for path in names:
                row = [model, batch, label(path)]
                for t in threads:
                    entry = by_threads.get(t, {}).get("paths", {}).get(path, {})
                    row += [
                        _num(entry.get("rows_per_s")),
                        _num(entry.get("gflops"), 2),
                        _pct(entry.get("fraction_of_gemm")),
                        _pct(entry.get("fraction_of_shape_gemm")),
                    ]
                row += [_ratio(by_threads.get(t, {}), _THROUGHPUT_RATIO.get(path)) for t in threads]
                torch_ratio = {"predictor": "predictor_vs_torch", "ort": "ort_vs_torch"}.get(path)
                row += [_ratio(by_threads.get(t, {}), torch_ratio) for t in threads]
                rows.append(row)
    return [
        "## Throughput (rows/s) and share of the ceiling",
        "",
        "rows/s is the batch over the median call time, over every call of every round "
        "(blocks of at least "
        f"{data.get('settings', {}).get('block_s', 0) * 1000:.0f} ms, "
        f"{data.get('settings', {}).get('rounds', '?')} rounds). "
        "GFLOP/s counts `2 * in * out` per Linear layer per row (the int8 rows count the "
        "fp32 model's FLOPs: an effective rate). `% GEMM` is that over numpy's float32 rate "
        "on the large square GEMM with at most that many threads; `% same-shape` over "
        "numpy's rate on the model's own layer GEMMs at that batch (numpy's best with at "
        "most that many threads, since OpenBLAS can be slower on two threads than on one "
        "for small GEMMs). Ratios: rows/s over raw ORT's "
        f"(and over PyTorch eager's) in the same round. {all_cores}t = all cores.",
        "",
        *_table(header, rows),
    ]


def _interference(data: dict[str, Any], threads: list[str]) -> list[str]:
    latency, throughput = data.get("latency", {}), data.get("throughput", {})
    models = list(dict.fromkeys([*latency, *throughput]))
    if not models:
        return []
    batches = ["1"] * bool(latency) + sorted(
        {b for by_batch in throughput.values() for b in by_batch}, key=int
    )
    header = ["model"] + [f"batch {b}, {t}t" for b in batches for t in threads]
    rows = []
    for model in models:
        row = [model]
        for b in batches:
            for t in threads:
                block = (
                    latency.get(model, {}).get(t)
                    if b == "1"
                    else throughput.get(model, {}).get(b, {}).get(t)
                )
                other = None if not block else block.get("other_load_cores")
                row.append("" if other is None else f"{other:.2f}")
        rows.append(row)
    cold = data.get("coldstart") or {}
    tail = (
        []
        if cold.get("other_load_cores") is None
        else [f"During the cold-start runs: {cold['other_load_cores']:.2f}.", ""]
    )
    return [
        "## Other work on the machine during each measurement (CPUs busy)",
        "",
        "Average number of CPUs that other processes kept busy while each block of rows "
        "above was measured (`/proc/stat` busy time less this run's own CPU time).",
        "",
        *_table(header, rows),
        *tail,
    ]


def _ceiling(data: dict[str, Any], threads: list[str]) -> list[str]:
    ceiling = data.get("ceiling")
    if not ceiling:
        return []
    by_threads = ceiling["by_threads"]
    names = list(next(iter(by_threads.values())))
    rows = []
    for name in names:
        first = next(iter(by_threads.values()))[name]
        shapes = " + ".join("x".join(str(d) for d in chain) for chain in first["chain"])
        shown = f"{name} ({shapes})" if name == LARGE else name
        row = [shown]
        for t in threads:
            entry = by_threads.get(t, {}).get(name, {})
            each = [
                _num(m.get(t, {}).get(name, {}).get("gflops"))
                for m in ceiling.get("measurements", [])
            ]
            row.append(
                f"{_num(entry.get('gflops'))} ({' / '.join(each)})"
                if each
                else _num(entry.get("gflops"))
            )
        rows.append(row)
    lines = [
        "## Ceiling: numpy float32 GEMM (GFLOP/s)",
        "",
        "Measured in subprocesses with `OPENBLAS_NUM_THREADS` set to the thread count and "
        "`OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` removed, once before and once after the "
        "in-process sections; the faster median of the two is the ceiling (both in "
        "brackets). A model's row is its layers' GEMMs at that batch, one after another, "
        "without bias or activation.",
        "",
        *_table(["GEMM", *[f"{t} thread(s)" for t in threads]], rows),
    ]
    override = ceiling.get("with_env_override")
    if override:
        parts = [f"{t}t {_num(v['chains'][LARGE]['gflops'])} GFLOP/s" for t, v in override.items()]
        lines += [f"With the environment's OpenBLAS overrides: {', '.join(parts)}.", ""]
    return lines


def _cold(data: dict[str, Any]) -> list[str]:
    cold = data.get("coldstart")
    if not cold:
        return []
    names = {
        "edge": "embedded script `python runtime/edge_infer.py MODEL one_row.csv`",
        "score": "`onnxedge score MODEL one_row.csv -o OUT`",
        "predictor": "Python snippet: `from onnxedge.runtime import Predictor` + predict",
        "torch": "PyTorch: `python benchmarks/torch_predict.py RUN one_row.csv`",
    }
    rows = []
    for name, entry in cold["commands"].items():
        speed = cold.get("speedup_vs_torch", {}).get(name)
        rows.append(
            [
                names.get(name, name),
                f"{entry['median_s']:.3f}",
                f"{entry['min_s']:.3f}-{entry['max_s']:.3f}",
                _num(entry["maxrss_kib"] / 1024),
                "1.0x (reference)" if name == "torch" else f"{speed:.1f}x",
            ]
        )
    return [
        "## Cold start: process start to prediction, one-row CSV",
        "",
        f"Model: {cold.get('model_name')}. Spawn to exit (prediction printed), "
        f"{cold['runs']} runs each after one discarded run, commands interleaved.",
        "",
        *_table(["command", "median s", "range s", "peak RSS MiB", "faster than torch"], rows),
    ]


def _imports(data: dict[str, Any]) -> list[str]:
    imports = data.get("imports")
    if not imports:
        return []
    rows = [
        [
            f"`{entry['statement']}`",
            f"{entry['importtime_s']:.3f}",
            f"{entry['wall_over_startup_s']:.3f}",
        ]
        for entry in imports["statements"].values()
    ]
    return [
        "## Import time (seconds)",
        "",
        f"Median of {imports['runs']} fresh processes each. `-X importtime`: the statement's "
        "top-level imports, cumulative. Wall: that process minus `python -X importtime -c pass` "
        f"({imports['python_startup_s']:.3f} s).",
        "",
        *_table(["statement", "-X importtime", "wall over startup"], rows),
    ]


def _rss(data: dict[str, Any]) -> list[str]:
    rss = data.get("rss")
    if not rss:
        return []
    probes = rss["probes"]
    models: dict[str, dict[str, float]] = {}
    baseline = None
    for name, entry in probes.items():
        if entry["path"] == "baseline":
            baseline = entry["maxrss_mib"]
            continue
        model, path = name.split("/", 1)
        models.setdefault(model, {})[path] = entry["maxrss_mib"]
    paths = _ordered({p for entries in models.values() for p in entries})
    rows = [[model, *[_num(entries.get(p)) for p in paths]] for model, entries in models.items()]
    return [
        "## Peak RSS (MiB)",
        "",
        f"One fresh process per cell: build the path, score 1 row x20 and {rss['batch']} rows "
        f"x5 at {rss['threads']} thread(s); `ru_maxrss`. Python + numpy alone: "
        f"{_num(baseline)} MiB.",
        "",
        *_table(["model", *[label(p) for p in paths]], rows),
    ]


def _profiles(data: dict[str, Any]) -> list[str]:
    profiles = data.get("profiles")
    if not profiles:
        return []
    lines = ["## Profiles of missed Predictor goals (cProfile)", ""]
    for key, entry in profiles.items():
        lines += [f"### {key}: {entry['goal']}", ""]
        for which in ("predictor", "ort"):
            rows = [
                [
                    f"`{row['function']}`",
                    f"{row['calls_per_call']:.0f}",
                    f"{row['own_us_per_call']:.2f}",
                    f"{row['cum_us_per_call']:.2f}",
                ]
                for row in entry[which][:10]
            ]
            lines += [f"{label(which)}, {entry['calls']} calls, per call:", ""]
            lines += _table(["function", "calls", "own us", "cumulative us"], rows)
    return lines


def _widths(layers: list[list[int]]) -> list[int]:
    """``[[64, 128], [128, 10]]`` -> ``[64, 128, 10]``."""
    return [layers[0][0], *(layer[1] for layer in layers)]


def _method(data: dict[str, Any]) -> list[str]:
    notes = [
        note
        for model in data.get("models", {}).values()
        for note in [f"{model['name']}: {n}" for n in model.get("notes", [])]
    ]
    models = [
        f"{m['name']} ({' -> '.join(str(w) for w in _widths(m['layers']))}; "
        f"{m['source']}; {m['exporter']})"
        for m in data.get("models", {}).values()
    ]
    lines = [
        "## How this was measured",
        "",
        "- Models: " + "; ".join(models) + ".",
        "- Paths: PyTorch eager is the exported head module (standardize -> net -> softmax/"
        "sigmoid -> label) under `torch.inference_mode()`; raw ORT is `InferenceSession.run` "
        "fetching `probabilities` and `label` with Predictor's session options; Predictor is "
        "`Predictor(model, provider='cpu', threads=t).predict(x)` (input validation included); "
        "the embedded script is its scoring function, loaded from `runtime/edge_infer.py`.",
        (
            "- PyTorch eager is measured in its fast state: "
            "glibc malloc's mmap and trim thresholds were pinned "
            f"({data.get('malloc', {}).get('mmap_threshold_bytes', 0) >> 20} MiB / "
            f"{data.get('malloc', {}).get('trim_threshold_bytes', 0) >> 20} MiB) "
            "so that its per-call activations are not page-faulted in on every call; "
            "with glibc's defaults a process flips between that and a state up to 4x "
            "slower on the small models (breast-cancer, batch 4096, 1 thread: 2.2 ms "
            "with about 1000 page faults per call, against 0.58 ms)."
            if data.get("malloc", {}).get("pinned")
            else "- glibc malloc was left at its defaults: PyTorch eager may flip between a "
            "fast state and one that page-faults its activations on every call."
        ),
        "- Rounds interleave the paths in a rotating order, short blocks with a "
        f"{SETTLE_S * 1000:.0f} ms pause between them (spinning worker threads park), so "
        "ratios compare figures taken a moment apart and a burst of other work lands on "
        "every path alike.",
        "- On 2 cores, a 2-thread block sometimes runs at about 1-thread speed when the "
        "scheduler puts the pool's worker beside the calling thread; the medians absorb "
        "it, the ranges of the all-core ratios show it.",
        "- The issue's reference figures on this kind of machine: raw ORT about "
        "76% of numpy's GEMM rate on the larger MLP at batch 4096, PyTorch eager about 68%.",
    ]
    lines += [f"- Note: {n}" for n in notes]
    avail = data.get("available", {})
    if not avail.get("edge_script"):
        lines.append(
            "- The embedded script (`runtime/edge_infer.py`) was not present: its rows are missing."
        )
    return [*lines, ""]


# --- chart -----------------------------------------------------------------------------


def render_plot(data: dict[str, Any], path: Path) -> None:
    """Throughput at the largest batch and batch-1 latency per path, per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = [str(t) for t in data.get("settings", {}).get("threads", [])] or ["1"]
    fig, axes = plt.subplots(2, len(threads), figsize=(6.5 * len(threads), 8.5), squeeze=False)
    throughput = data.get("throughput", {})
    latency = data.get("latency", {})
    largest = max((int(b) for v in throughput.values() for b in v), default=0)
    for col, t in enumerate(threads):
        _bars(
            axes[0][col],
            {
                model: {
                    p: e["rows_per_s"]
                    for p, e in by_batch[max(by_batch, key=int)].get(t, {}).get("paths", {}).items()
                }
                for model, by_batch in throughput.items()
                if by_batch
            },
            None,
            f"throughput, batch {largest}, {t} thread(s)",
            "rows/s (log)",
        )
        _bars(
            axes[1][col],
            {
                model: {p: e["p50_us"] for p, e in by_threads.get(t, {}).get("paths", {}).items()}
                for model, by_threads in latency.items()
            },
            {
                model: {p: e["p99_us"] for p, e in by_threads.get(t, {}).get("paths", {}).items()}
                for model, by_threads in latency.items()
            },
            f"latency at batch 1, {t} thread(s): p50 bar, p99 tick",
            "microseconds (log)",
        )
    fig.suptitle(
        f"onnxedge benchmarks: {data.get('machine', {}).get('cpu_model', '')}, "
        f"{data.get('machine', {}).get('cpus', '?')} CPUs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Any,
    values: dict[str, dict[str, float]],
    upper: dict[str, dict[str, float]] | None,
    title: str,
    ylabel: str,
) -> None:
    models = [m for m in values if values[m]]
    paths = _ordered({p for m in models for p in values[m]})
    if not models or not paths:
        ax.set_visible(False)
        return
    width = 0.8 / len(paths)
    for i, p in enumerate(paths):
        xs = [k + (i - (len(paths) - 1) / 2) * width for k in range(len(models))]
        ys = [values[m].get(p, 0.0) for m in models]
        ax.bar(xs, ys, width, label=label(p))
        if upper is not None:
            tops = [upper[m].get(p, 0.0) for m in models]
            ax.scatter(xs, tops, marker="_", color="black", s=60, zorder=3)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7)
