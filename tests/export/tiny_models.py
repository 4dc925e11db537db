"""Tiny trained runs and their exported models, for the export tests.

The runs go through the real pipeline (``onnxedge.models.train.train`` on an ``.npz``
file), on synthetic blobs whose features sit far from zero with uneven scales, so that
the standardization inside the graph matters. A few epochs are enough: parity does not
care how good a model is, only that three computations agree about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxedge.export.onnx_export import ExportResult, checkpoint_to_onnx
from onnxedge.models.checkpoint import TrainedRun, load_run
from onnxedge.models.train import TrainOptions, train


@dataclass
class TinyModel:
    """A trained run, the data file it came from and its exported model."""

    data: Path
    run_dir: Path
    run: TrainedRun
    model: Path
    export: ExportResult


def write_blobs(path: Path, *, classes: int, features: int, rows: int, seed: int) -> Path:
    """Gaussian blobs, one per class, as an ``.npz`` with ``X`` and ``y``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, features))
    y = np.arange(rows) % classes
    x = centers[y] + rng.normal(size=(rows, features))
    # uneven scales and offsets: standardization in the graph is not a no-op
    x = x * rng.uniform(0.5, 50.0, size=features) + rng.uniform(-100, 100, size=features)
    np.savez(path, X=x.astype(np.float32), y=y.astype(np.int64))
    return path


def build_tiny(
    root: Path, name: str, *, classes: int, features: int, hidden: tuple[int, ...]
) -> TinyModel:
    data = write_blobs(root / f"{name}.npz", classes=classes, features=features, rows=240, seed=7)
    run_dir = root / "runs" / name
    options = TrainOptions(hidden_sizes=hidden, epochs=12, patience=12, seed=1, batch_size=32)
    train(data, run_dir, options, progress=False)
    model = root / f"{name}.onnx"
    result = checkpoint_to_onnx(run_dir, model)
    return TinyModel(data, run_dir, load_run(run_dir), model, result)
