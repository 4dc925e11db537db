"""Timing primitives and machine facts shared by the benchmark modules.

Timings here are noisy (2 shared cores): every figure is measured in several rounds,
paths are interleaved round by round (their order rotates, so drift and position
bias spread over all of them), and ratios are taken inside a round before the median
is taken across rounds. Between blocks the harness sleeps briefly so that worker
threads still spinning after one path's block (libgomp for torch, onnxruntime's own
pool) have parked before the next path's block starts.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Seconds to sleep between timed blocks. Worker threads keep spinning for a while after
#: a parallel region (libgomp for torch, onnxruntime's pool); a 2-thread session whose
#: worker wakes beside one still spinning shares a core with it and runs a whole block
#: at about its 1-thread speed. Measured here: right after another 2-thread session's
#: block 7 blocks in 8 ran so, after 20 ms 2 in 8, after 50-200 ms about none.
SETTLE_S = 0.05

#: Environment variables that change BLAS / OpenMP behaviour; recorded with the results.
THREAD_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
    "GOMP_SPINCOUNT",
)
#: CPU flags worth knowing for these kernels.
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def settle() -> None:
    """Give worker threads still spinning after the previous block time to park."""
    time.sleep(SETTLE_S)


def freeze_heap() -> None:
    """Collect garbage once, then exempt every live object from later collections.

    With torch loaded a full collection takes about 0.1 s; after the freeze the
    collector only walks what the timed calls themselves allocate.
    """
    gc.collect()
    gc.freeze()


def latency_ns(fn: Callable[[], Any], calls: int) -> np.ndarray:
    """Time ``calls`` calls of ``fn`` one by one; ``(calls,)`` int64 nanoseconds."""
    clock = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        start = clock()
        fn()
        out[i] = clock() - start
    return out


def timed_block(fn: Callable[[], Any], min_s: float, min_calls: int = 3) -> np.ndarray:
    """Call ``fn`` until ``min_s`` seconds and ``min_calls`` calls have passed.

    Returns each call's seconds, ``(calls,)`` float64. Bounding blocks by time, not by
    a call count fixed in advance, keeps a run's length in hand when the machine is
    busy; timing each call lets the caller take a median that a burst of other work
    on the machine does not move.
    """
    clock = time.perf_counter
    times: list[float] = []
    start = last = clock()
    while True:
        fn()
        now = clock()
        times.append(now - last)
        last = now
        if len(times) >= min_calls and now - start >= min_s:
            return np.asarray(times)


class OtherLoad:
    """How many CPUs other processes kept busy while a block of code ran.

    System-wide busy time from ``/proc/stat`` minus the CPU time of this process and
    of the children it waited for, over the wall time: 0.0 on an idle machine, 1.0
    when other work held one CPU throughout. ``cores`` is None where ``/proc/stat``
    does not exist.
    """

    def __init__(self) -> None:
        self.cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._busy = _busy_seconds()
        self._own = _own_seconds()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        own = _own_seconds() - self._own
        self.cores = max(0.0, (busy - self._busy - own) / wall)


def _own_seconds() -> float:
    """CPU seconds of this process (every thread) and of its reaped children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _busy_seconds() -> float | None:
    """CPU seconds every CPU spent busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated left by ``round_index`` (each round starts with another path)."""
    k = round_index % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def percentiles_us(samples_ns: np.ndarray) -> dict[str, float]:
    """p50 / p90 / p99 / mean / min of nanosecond samples, in microseconds."""
    us = samples_ns.astype(np.float64) / 1e3
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {
        "p50_us": float(p50),
        "p90_us": float(p90),
        "p99_us": float(p99),
        "mean_us": float(us.mean()),
        "min_us": float(us.min()),
        "calls": int(us.size),
    }


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (nan when empty)."""
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else math.nan


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-round figures."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "rounds": 0}
    return {
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "rounds": int(arr.size),
    }


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap once malloc is pinned (the larger MLP's
#: biggest buffer at batch 4096 is its 12.8 MB input).
PINNED_MMAP_THRESHOLD = 64 << 20
PINNED_TRIM_THRESHOLD = 256 << 20


def pin_malloc() -> dict[str, Any]:
    """Fix glibc malloc in its adapted steady state: no mmap for activations, no trimming.

    With glibc's defaults, a freshly allocated activation of a few MB (PyTorch eager
    allocates one per layer per call) may come from ``mmap`` and be returned to the
    OS on free, so every call page-faults it back in; glibc raises its mmap
    threshold only after such a buffer is freed, and trims the heap again later, so
    a process flips between that mode and a fast one depending on its history
    (measured here: breast-cancer at batch 4096, one thread, 2.2 ms with about 1000
    page faults per call against 0.58 ms with none). Pinning the thresholds gives
    PyTorch its fast mode every time. onnxruntime keeps its intermediates in its own
    arena; the output arrays every path returns come from malloc either way, so all
    paths are measured in the same steady state.

    Returns what was set; ``{"pinned": False, ...}`` where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util

    settings = {
        "mmap_threshold_bytes": PINNED_MMAP_THRESHOLD,
        "trim_threshold_bytes": PINNED_TRIM_THRESHOLD,
    }
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return {"pinned": False, "reason": "no glibc mallopt", **settings}
    ok = mallopt(_M_MMAP_THRESHOLD, PINNED_MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, PINNED_TRIM_THRESHOLD) == 1 and ok
    return {"pinned": ok, **settings}


def cpu_count() -> int:
    """CPUs this process may run on (honours taskset / cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpuinfo() -> tuple[str, set[str]]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    """CPU model and flags, cores, memory, library versions and thread environment."""
    model, flags = _cpuinfo()
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib: float | None = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cpus": cpu_count(),
        "os_cpu_count": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("onnxedge", "numpy", "onnxruntime", "torch", "onnx", "threadpoolctl")
        },
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
        "executable": sys.executable,
    }
