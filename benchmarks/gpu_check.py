"""``make gpu-check``: does CUDA compute what the CPU computes on the default models?

Prints the onnxruntime version, the onnxruntime distributions installed (two at once
is reported: they overwrite each other) and the providers this onnxruntime offers.
Where ``CUDAExecutionProvider`` is offered, it scores ``digits.onnx`` and
``breast-cancer.onnx`` from the artifacts folder (``make export`` writes them) on
CUDA (strict: the session must get CUDA and run its Gemm / MatMul / Conv nodes there;
the nodes per provider are printed) and on the CPU, at batch sizes 1, 7
and all rows, and compares: labels equal, max |p_cuda - p_cpu| <=
``PROVIDER_PROBABILITY_ATOL``. Rows are the models' own datasets when scikit-learn is
installed, else rows drawn around each model's normalization mean (seeded).

Exit status: 0 when every comparison passes, or when this onnxruntime offers no CUDA
(nothing to compare; said so); 1 on a mismatch; 2 when the check cannot run (a model
missing, or CUDA offered but the session could not get it).

    python benchmarks/gpu_check.py --artifacts artifacts
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MODELS = ("digits", "breast-cancer")
BATCH_SIZES = (1, 7, None)


def _rows(
    name: str, num_features: int, normalization: object, count: int
) -> tuple[np.ndarray, str]:
    """Rows to score: the model's dataset if scikit-learn is there, else synthetic rows."""
    try:
        from sklearn import datasets

        loader = {"digits": datasets.load_digits, "breast-cancer": datasets.load_breast_cancer}[
            name
        ]
        data = loader().data.astype(np.float32)
        if data.shape[1] == num_features:
            return data[:count], f"{min(count, len(data))} rows of scikit-learn's {name} data"
    except (ImportError, KeyError):
        pass
    rng = np.random.default_rng(0)
    mean = np.zeros(num_features)
    std = np.ones(num_features)
    if isinstance(normalization, dict):
        mean = np.asarray(normalization.get("mean", mean), dtype=np.float64)
        std = np.asarray(normalization.get("std", std), dtype=np.float64)
    rows = mean + std * rng.standard_normal((count, num_features))
    return rows.astype(np.float32), f"{count} synthetic rows around the normalization mean"


def _compare(path: Path, rows: int, atol: float, provider: str) -> list[str]:
    """Score one model on ``provider`` and the CPU; return the failures (empty: all agree)."""
    from onnxedge.runtime import OnnxEdgeError, Predictor

    cpu = Predictor(path, provider="cpu")
    gpu = Predictor(path, provider=provider)
    print(f"  sessions: {provider} {gpu.providers}, cpu {cpu.providers}")
    # cuda is strict: Predictor refused the session had Gemm / MatMul / Conv left the GPU
    print(f"  placement: {provider} {gpu.placement()}")
    if cpu.num_features is None:
        raise OnnxEdgeError(f"{path}: the model does not say how many features it takes")
    x, source = _rows(path.stem, cpu.num_features, cpu.contract.extra.get("normalization"), rows)
    print(f"  data: {source}")
    failures = []
    want = cpu.predict(x)
    for batch_size in BATCH_SIZES:
        got = gpu.predict(x, batch_size=batch_size)
        label = f"batch {batch_size or len(x)}"
        diff = float(np.max(np.abs(got.probabilities - want.probabilities))) if len(x) else 0.0
        disagree = int(np.count_nonzero(got.labels != want.labels))
        ok = disagree == 0 and diff <= atol
        print(
            f"  {label:>10}: labels differ on {disagree}/{len(x)} rows, "
            f"max |p_{provider} - p_cpu| = {diff:.3g} (bar {atol:g}) {'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            failures.append(f"{path.name} {label}: {disagree} labels differ, max diff {diff:.3g}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--rows", type=int, default=2000, help="rows per model (default 2000)")
    parser.add_argument(
        "--provider",
        choices=("cuda", "cpu"),
        default="cuda",
        help="what is compared with the CPU (cpu: a self-test of this script)",
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")

    import onnxruntime as ort
    from onnxedge.runtime.errors import OnnxEdgeError
    from onnxedge.runtime.providers import (
        CUDA,
        distribution_conflict,
        installed_ort_distributions,
    )
    from onnxedge.runtime.tolerances import PROVIDER_PROBABILITY_ATOL

    distributions = installed_ort_distributions()
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}; installed as: {', '.join(distributions) or 'unknown'}")
    conflict = distribution_conflict(distributions)
    if conflict:
        print(f"WARNING: {conflict}")
    print(f"available providers: {', '.join(available)}")
    print(f"device: {ort.get_device()}")
    if args.provider == "cpu":
        print("comparing the CPU with itself (--provider cpu): a check of this script only")
    elif CUDA not in available:
        print(
            f"{CUDA} is not offered by this onnxruntime: nothing to compare. On a machine "
            "with an NVIDIA GPU run `make setup-gpu` (onnxruntime-gpu) first."
        )
        return 0

    paths = [args.artifacts / f"{name}.onnx" for name in MODELS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(
            f"missing model(s): {', '.join(missing)}; run `make export` first (nothing built here)"
        )
        return 2
    failures: list[str] = []
    for path in paths:
        print(f"{path}:")
        try:
            failures += _compare(path, args.rows, PROVIDER_PROBABILITY_ATOL, args.provider)
        except OnnxEdgeError as exc:
            print(f"  Error: {exc}")
            return 2
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print(
        f"OK: {args.provider} and cpu agree on {', '.join(MODELS)} (labels equal, "
        f"probabilities within {PROVIDER_PROBABILITY_ATOL:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
