"""One inference path in a fresh process, for its peak resident set size.

``python -m benchmarks.rss_probe PATH MODEL.onnx RUN_DIR THREADS BATCH`` builds the
path (``torch``, ``ort``, ``predictor``, ``edge``, or ``baseline``: the interpreter
with numpy and nothing else), scores one row 20 times and a batch of ``BATCH`` rows 5
times, and prints JSON: ``ru_maxrss`` in KiB and whether torch was loaded. The parent
also reads the child's ``ru_maxrss`` from ``wait4``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    """Run one probe; print its JSON line."""
    path_name, onnx_path, run_dir, threads, batch = argv
    rows = int(batch)
    if path_name != "baseline":
        from benchmarks.paths import build_path

        path = build_path(path_name, Path(onnx_path), Path(run_dir), int(threads))
        path.enter()
        width = _features(Path(run_dir))
        rng = np.random.default_rng(0)
        one = rng.standard_normal((1, width), dtype=np.float32)
        many = rng.standard_normal((rows, width), dtype=np.float32)
        for _ in range(20):
            path(one)
        for _ in range(5):
            path(many)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"ru_maxrss_kib": usage.ru_maxrss, "torch_loaded": "torch" in sys.modules}))
    return 0


def _features(run_dir: Path) -> int:
    return int(json.loads((run_dir / "config.json").read_text())["net"]["input_size"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
