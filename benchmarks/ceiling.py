"""The machine's float32 matrix-multiply rate, measured with numpy's BLAS in a subprocess.

Each thread count runs in its own process with ``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to it, and with ``OPENBLAS_CORETYPE``
and ``OPENBLAS_L2_SIZE`` removed from the environment: set on some machines here,
they pin OpenBLAS to a slower kernel. Which kernel OpenBLAS picked is read back with
threadpoolctl when it is installed. When those variables are set, the large GEMM is
also measured with them, to show what they cost.

A *chain* is a list of ``(m, k, n)`` GEMMs run one after another, like a model's layers
at one batch size: its rate is its FLOPs (``2*m*k*n`` each) over the chain's time.

Run as ``python -m benchmarks.ceiling SPEC_JSON``; prints one JSON document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

#: Variables that slow OpenBLAS where they are set; removed for the ceiling.
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: The chain name of the large square GEMM (2048^3 unless the caller says otherwise).
LARGE = "large-gemm"
LARGE_SHAPE = (2048, 2048, 2048)


def chain_flops(chain: list[list[int]]) -> int:
    """``2*m*k*n`` summed over a chain's GEMMs."""
    return sum(2 * m * k * n for m, k, n in chain)


def _measure_chain(chain: list[list[int]], target_s: float, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    operands = [
        (
            rng.standard_normal((m, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32),
            np.empty((m, n), dtype=np.float32),
        )
        for m, k, n in chain
    ]

    def once() -> None:
        for a, b, c in operands:
            np.matmul(a, b, out=c)

    once()
    start = time.perf_counter()
    once()
    one = time.perf_counter() - start
    calls = max(1, round(target_s / max(one, 1e-9)))
    # Each call timed alone: the median call is what the machine does when other work
    # on it leaves this process alone; a burst slows a few calls, not the median.
    times = np.empty(rounds * calls)
    for i in range(times.size):
        start = time.perf_counter()
        once()
        times[i] = time.perf_counter() - start
    flops = chain_flops(chain)
    return {
        "chain": chain,
        "flops": flops,
        "gflops": flops / float(np.median(times)) / 1e9,
        "gflops_max": flops / float(times.min()) / 1e9,
        "gflops_mean": flops * times.size / float(times.sum()) / 1e9,
        "calls": int(times.size),
    }


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: v for k, v in info.items() if k in keep} for info in threadpool_info()]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure every chain in ``spec["chains"]`` in this process (threads set by the caller)."""
    results = {
        name: _measure_chain(chain, float(spec["target_s"]), int(spec["rounds"]))
        for name, chain in spec["chains"].items()
    }
    return {"blas": _blas_info(), "chains": results}


def measure_ceiling(
    chains: dict[str, list[list[int]]],
    threads: list[int],
    *,
    target_s: float = 0.1,
    rounds: int = 5,
    large: tuple[int, int, int] = LARGE_SHAPE,
) -> dict[str, Any]:
    """Measure each chain's float32 GEMM rate at each thread count, each in a subprocess.

    Args:
        chains: name -> list of ``(m, k, n)``; :data:`LARGE` (``large``) is always added.
        threads: thread counts.
        target_s: seconds per round per chain.
        rounds: rounds of ``target_s`` per chain; the rate is FLOPs over the median call.
        large: the large GEMM's ``(m, k, n)``.

    Returns:
        ``{"by_threads": {"1": {name: {...gflops...}}, ...}, "blas": ...,
        "removed_env": {...}, "with_env_override": {...} or None}``.

    Raises:
        RuntimeError: a worker process failed.
    """
    chains = {LARGE: [list(large)], **chains}
    removed = {name: os.environ[name] for name in BLAS_OVERRIDES if name in os.environ}
    by_threads: dict[str, Any] = {}
    blas: list[dict[str, Any]] = []
    for count in threads:
        out = _spawn({"chains": chains, "target_s": target_s, "rounds": rounds}, count, clean=True)
        by_threads[str(count)] = out["chains"]
        blas = out["blas"] or blas
    with_override = None
    if removed:
        # What the environment's own settings give on the large GEMM, for comparison.
        with_override = {
            str(count): _spawn(
                {"chains": {LARGE: [list(large)]}, "target_s": target_s, "rounds": rounds},
                count,
                clean=False,
            )
            for count in threads
        }
    return {
        "by_threads": by_threads,
        "blas": blas,
        "removed_env": removed,
        "with_env_override": with_override,
        "large_shape": list(large),
        "target_s": target_s,
        "rounds": rounds,
    }


def _spawn(spec: dict[str, Any], threads: int, *, clean: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if clean:
        for name in BLAS_OVERRIDES:
            env.pop(name, None)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ceiling", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"GEMM ceiling worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
