"""Cold start, import time and peak memory, each measured in fresh processes.

- Cold start: from spawning the process to its exit, having printed the prediction
  for a one-row CSV (an upper bound on "start to first prediction": it includes the
  interpreter's shutdown). Commands: the embedded script, ``onnxedge score``, a
  Python snippet using ``Predictor``, and the PyTorch equivalent
  (``benchmarks/torch_predict.py``). One discarded run first (page cache), then
  ``runs`` rounds with the commands interleaved; medians.
- Import time: ``python -X importtime -c STATEMENT``, summing the cumulative time of
  the modules the statement imports at top level (those the bare interpreter does not
  import anyway); and the process's wall time minus that of ``python -c pass``.
- Peak RSS: ``ru_maxrss`` of a child (from ``wait4``) that builds one path and scores
  with it (:mod:`benchmarks.rss_probe`), and of each cold-start process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import OtherLoad, median, rotated
from benchmarks.paths import EDGE_SCRIPT, REPO

IMPORT_STATEMENTS = {
    "numpy": "import numpy",
    "onnxruntime": "import onnxruntime",
    "onnxedge.runtime": "import onnxedge.runtime",
    "onnxedge.runtime.Predictor": "from onnxedge.runtime import Predictor",
    "torch": "import torch",
}

_PREDICTOR_SNIPPET = (
    "import sys, numpy as np\n"
    "from onnxedge.runtime import Predictor\n"
    "rows = np.loadtxt(sys.argv[2], delimiter=',', skiprows=1, dtype=np.float32, ndmin=2)\n"
    "p = Predictor(sys.argv[1], provider='cpu').predict(rows)\n"
    "for label, name, top in zip(p.labels.tolist(), p.names, p.top_probabilities.tolist()):\n"
    "    print(f'{label}\\t{name}\\t{top:.6f}')\n"
)

_IMPORTTIME = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|( *)(\S+)\s*$")


@dataclass
class ProcessRun:
    """One finished child process."""

    seconds: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


#: Spawns the command, waits for it and prints ``seconds maxrss_kib exitcode``. A child's
#: ``ru_maxrss`` also counts the memory of the process it was spawned from (Linux keeps
#: the high-water mark across exec), so children are spawned from this small launcher
#: (a few MiB, below any Python program measured) rather than from the benchmark's own
#: process, which holds torch and every model.
_LAUNCHER = (
    "import os, sys, time\n"
    "argv = sys.argv[2:]\n"
    "start = time.perf_counter()\n"
    "pid = os.posix_spawnp(argv[0], argv, os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "seconds = time.perf_counter() - start\n"
    "with open(sys.argv[1], 'w') as fh:\n"
    "    fh.write(f'{seconds!r} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n"
)


def run_process(cmd: Sequence[str], *, cwd: Path = REPO, timeout_s: float = 300.0) -> ProcessRun:
    """Run ``cmd``; its wall time from spawn to exit and its peak RSS (``wait4``).

    The command is spawned by :data:`_LAUNCHER`, which times it; output goes to
    temporary files (a full pipe would stall the child).

    Raises:
        subprocess.TimeoutExpired: the command ran past ``timeout_s`` (it is killed).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".txt") as report,
    ):
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, report.name, *cmd]
        proc = subprocess.Popen(launcher, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        fields = report.read().split()
        if proc.returncode != 0 or len(fields) != 3:
            return ProcessRun(0.0, 0, proc.returncode or 1, stdout, stderr)
        return ProcessRun(
            seconds=float(fields[0]),
            maxrss_kib=int(fields[1]),
            returncode=int(fields[2]),
            stdout=stdout,
            stderr=stderr,
        )


def onnxedge_command() -> list[str]:
    """The ``onnxedge`` console script beside this interpreter (or a ``-c`` stand-in)."""
    script = Path(sys.executable).parent / "onnxedge"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from onnxedge.runtime.cli import main; main()"]


def score_available() -> bool:
    """Whether ``onnxedge score`` exists in this checkout."""
    return run_process([*onnxedge_command(), "score", "--help"], timeout_s=60).returncode == 0


def write_one_row_csv(x: np.ndarray, feature_names: Sequence[str], path: Path) -> Path:
    """A CSV with a header line and one row of raw features."""
    header = ",".join(feature_names)
    values = ",".join(repr(float(v)) for v in np.asarray(x, dtype=np.float32).reshape(-1))
    path.write_text(f"{header}\n{values}\n")
    return path


def cold_start(
    onnx_path: Path,
    run_dir: Path,
    row_csv: Path,
    *,
    runs: int,
    include_edge: bool,
    include_score: bool,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Spawn-to-exit seconds of each one-row command, interleaved over ``runs`` rounds.

    Returns ``{"commands": {name: {"argv", "seconds": [...], "median_s", "maxrss_kib"}},
    "edge_vs_torch": {...}}``.

    Raises:
        RuntimeError: a command failed (its stderr is quoted).
    """
    with tempfile.TemporaryDirectory(prefix="onnxedge-bench-cold-") as tmp:
        commands: dict[str, list[str]] = {}
        if include_edge:
            commands["edge"] = [sys.executable, str(EDGE_SCRIPT), str(onnx_path), str(row_csv)]
        if include_score:
            commands["score"] = [*onnxedge_command(), "score", str(onnx_path), str(row_csv), "-o"]
        commands["predictor"] = [
            sys.executable,
            "-c",
            _PREDICTOR_SNIPPET,
            str(onnx_path),
            str(row_csv),
        ]
        commands["torch"] = [
            sys.executable,
            str(REPO / "benchmarks" / "torch_predict.py"),
            str(run_dir),
            str(row_csv),
        ]
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        rss: dict[str, list[int]] = {name: [] for name in commands}
        outputs: dict[str, str] = {}
        other = OtherLoad()
        with other:
            for round_index in range(runs + 1):
                for name in rotated(list(commands), round_index):
                    argv = list(commands[name])
                    if name == "score":
                        argv.append(os.path.join(tmp, f"scores-{round_index}.csv"))
                    result = run_process(argv)
                    if result.returncode != 0:
                        raise RuntimeError(
                            f"cold start of {name} failed (exit {result.returncode}): "
                            f"{' '.join(argv)}\n{result.stderr[-2000:]}"
                        )
                    if round_index == 0:  # warm the page cache; not counted
                        outputs[name] = result.stdout.strip()[:200]
                        continue
                    seconds[name].append(result.seconds)
                    rss[name].append(result.maxrss_kib)
                if round_index == 0:
                    log("    cold start: page cache warmed")
    report: dict[str, Any] = {
        "commands": {},
        "runs": runs,
        "model": str(onnx_path),
        "other_load_cores": other.cores,
    }
    for name, argv in commands.items():
        report["commands"][name] = {
            "argv": [_short(a) for a in argv],
            "seconds": seconds[name],
            "median_s": median(seconds[name]),
            "min_s": min(seconds[name]),
            "max_s": max(seconds[name]),
            "maxrss_kib": int(median(rss[name])),
            "first_output": outputs.get(name, ""),
        }
    torch_s = report["commands"]["torch"]["median_s"]
    report["speedup_vs_torch"] = {
        name: torch_s / entry["median_s"]
        for name, entry in report["commands"].items()
        if name != "torch"
    }
    return report


def import_times(runs: int, statements: dict[str, str] | None = None) -> dict[str, Any]:
    """Import time of each statement: its ``-X importtime`` sum, and wall time over startup.

    Each sample is one ``python -X importtime -c STATEMENT`` process; startup is the
    same for ``pass``. The trace's own cost (a few percent) is in both.
    """
    statements = dict(statements or IMPORT_STATEMENTS)
    base_modules = set(_importtime_top(_run_python("pass").stderr))
    walls: dict[str, list[float]] = {name: [] for name in ("<pass>", *statements)}
    sums: dict[str, list[float]] = {name: [] for name in statements}
    order = ["<pass>", *statements]
    for round_index in range(runs):
        for name in rotated(order, round_index):
            traced = _run_python("pass" if name == "<pass>" else statements[name])
            walls[name].append(traced.seconds)
            if name != "<pass>":
                top = _importtime_top(traced.stderr)
                sums[name].append(
                    sum(us for mod, us in top.items() if mod not in base_modules) / 1e6
                )
    base = median(walls["<pass>"])
    return {
        "runs": runs,
        "python_startup_s": base,
        "statements": {
            name: {
                "statement": code,
                "importtime_s": median(sums[name]),
                "wall_over_startup_s": median(walls[name]) - base,
            }
            for name, code in statements.items()
        },
    }


def peak_rss(
    probes: dict[str, tuple[str, Path, Path, int, int]],
) -> dict[str, Any]:
    """Peak RSS of each probe ``name -> (path, onnx, run_dir, threads, batch)``, one process each.

    Raises:
        RuntimeError: a probe failed.
    """
    out: dict[str, Any] = {}
    for name, (path, onnx_path, run_dir, threads, batch) in probes.items():
        argv = [
            sys.executable,
            "-m",
            "benchmarks.rss_probe",
            path,
            str(onnx_path),
            str(run_dir),
            str(threads),
            str(batch),
        ]
        result = run_process(argv)
        if result.returncode != 0:
            raise RuntimeError(f"RSS probe {name} failed: {result.stderr[-2000:]}")
        out[name] = {
            "path": path,
            "threads": threads,
            "batch": batch,
            "maxrss_mib": result.maxrss_kib / 1024,
            "torch_loaded": '"torch_loaded": true' in result.stdout,
            "seconds": result.seconds,
        }
    return out


def _run_python(code: str) -> ProcessRun:
    argv = [sys.executable, "-X", "importtime", "-c", code]
    result = run_process(argv, timeout_s=120)
    if result.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed: {result.stderr[-2000:]}")
    return result


def _importtime_top(stderr: str) -> dict[str, int]:
    """Top-level modules of an ``-X importtime`` trace -> cumulative microseconds."""
    top: dict[str, int] = {}
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match and len(match.group(3)) == 1:  # nested imports are indented further
            top[match.group(4)] = top.get(match.group(4), 0) + int(match.group(2))
    return top


def _short(arg: str) -> str:
    """An argument with the repository and temp prefixes cut, for the report."""
    for prefix in (str(REPO) + os.sep, tempfile.gettempdir() + os.sep):
        if arg.startswith(prefix):
            return arg[len(prefix) :]
    if "\n" in arg:
        return "<predictor snippet>"
    return arg
