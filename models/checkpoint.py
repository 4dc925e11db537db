"""The training run folder: what ``onnxedge train`` writes and ``export`` reads.

A run folder holds::

    config.json          the net's NetConfig, task, class / feature names, training options
    weights.safetensors  the net's parameters (safetensors: no pickle is ever loaded)
    normalization.json   per-feature mean and std of the training split
    metrics.json         per-epoch train / validation loss and accuracy, best epoch
    curves.png           loss and accuracy curves
    validation.npz       the validation split, raw features and labels (for verify)
    calibration.npz      a sample of raw training rows (for int8 calibration)

The checkpoint carries its own config, so export never guesses hyperparameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.models.nets import MLP, NetConfig, build_net
from onnxedge.runtime.errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
NORMALIZATION_FILE = "normalization.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
VALIDATION_FILE = "validation.npz"
CALIBRATION_FILE = "calibration.npz"

REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, NORMALIZATION_FILE)


@dataclass
class Normalization:
    """Per-feature standardization ``(x - mean) / std`` computed on the training split."""

    mean: np.ndarray  # (features,) float32
    std: np.ndarray  # (features,) float32, never 0

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Rebuild from ``to_dict`` output.

        Raises:
            CheckpointError: keys missing, lengths differ, or a std is not positive.
        """
        try:
            mean = np.asarray(data["mean"], dtype=np.float32)
            std = np.asarray(data["std"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid normalization statistics: {exc}") from None
        if mean.ndim != 1 or mean.shape != std.shape:
            raise CheckpointError(
                f"normalization mean has shape {mean.shape} but std has shape {std.shape}"
            )
        if not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise CheckpointError("normalization statistics must be finite with std > 0")
        return cls(mean=mean, std=std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize raw features ``(n, features)``."""
        return (x - self.mean) / self.std


@dataclass
class TrainedRun:
    """A loaded run folder: the net with its weights and everything saved beside it."""

    path: Path
    config: NetConfig
    net: MLP
    normalization: Normalization
    class_names: list[str]
    feature_names: list[str]
    metrics: dict[str, Any]
    weights_sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``multiclass`` or ``binary``."""
        return self.config.task

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split: raw features ``(n, f)`` float32 and labels ``(n,)`` int64.

        Raises:
            CheckpointError: the run folder has no readable validation split.
        """
        return _load_xy(self.path / VALIDATION_FILE)

    def calibration(self) -> np.ndarray:
        """A sample of raw training rows ``(n, f)`` float32, for int8 calibration.

        Raises:
            CheckpointError: the run folder has no readable calibration sample.
        """
        return _load_xy(self.path / CALIBRATION_FILE)[0]

    def weights(self) -> dict[str, np.ndarray]:
        """The net's parameters as float32 numpy arrays, by parameter name."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_directory(target: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` on success.

    The folder form of the one writer, :func:`onnxedge.runtime.atomic.atomic_folder`.
    On any error the temporary folder is removed and ``target`` is untouched.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        CheckpointError: the parent folder cannot be written.
    """
    from onnxedge.runtime.atomic import atomic_folder

    with atomic_folder(target, overwrite=overwrite, error=CheckpointError) as tmp:
        yield tmp


def save_run(
    folder: Path,
    *,
    net: MLP,
    normalization: Normalization,
    class_names: list[str],
    feature_names: list[str],
    metrics: dict[str, Any],
    info: dict[str, Any],
    validation: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
) -> None:
    """Write every file of a run folder into ``folder`` (which must exist)."""
    from safetensors.numpy import save_file

    tensors = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "onnxedge-mlp"})
    config = {
        "net": net.config.to_dict(),
        "class_names": class_names,
        "feature_names": feature_names,
        **info,
    }
    _write_json(folder / CONFIG_FILE, config)
    _write_json(folder / NORMALIZATION_FILE, normalization.to_dict())
    _write_json(folder / METRICS_FILE, metrics)
    x_val, y_val = validation
    np.savez(folder / VALIDATION_FILE, features=x_val.astype(np.float32), labels=y_val)
    np.savez(
        folder / CALIBRATION_FILE,
        features=calibration.astype(np.float32),
        labels=np.zeros(len(calibration), dtype=np.int64),
    )


def load_run(run_dir: str | os.PathLike[str]) -> TrainedRun:
    """Load a run folder written by ``onnxedge train``.

    Raises:
        CheckpointError: the folder or a required file is missing, a file is corrupt,
            or the config does not match the weights (names or shapes).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"run folder {path} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"run folder {path} is missing {', '.join(missing)}")

    raw = _read_json(path / CONFIG_FILE)
    if "net" not in raw:
        raise CheckpointError(f"{path / CONFIG_FILE} has no 'net' section")
    config = NetConfig.from_dict(raw["net"])
    normalization = Normalization.from_dict(_read_json(path / NORMALIZATION_FILE))
    if normalization.mean.shape[0] != config.input_size:
        raise CheckpointError(
            f"{NORMALIZATION_FILE} has {normalization.mean.shape[0]} features but the net "
            f"expects {config.input_size}"
        )
    try:
        arrays = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / WEIGHTS_FILE}: {exc}") from None

    net = build_net(config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    problems = [
        f"{name}: config expects {shape}, weights have "
        + (str(found[name]) if name in found else "nothing")
        for name, shape in expected.items()
        if found.get(name) != shape
    ]
    problems += [f"{name}: unexpected in weights" for name in sorted(set(found) - set(expected))]
    if problems:
        raise CheckpointError(
            f"{CONFIG_FILE} does not match {WEIGHTS_FILE} in {path}: " + "; ".join(problems)
        )
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    net.eval()

    class_names = [str(c) for c in raw.get("class_names", range(config.num_classes))]
    feature_names = [str(f) for f in raw.get("feature_names", [])] or [
        f"f{i}" for i in range(config.input_size)
    ]
    metrics = _read_json(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else {}
    info = {k: v for k, v in raw.items() if k not in {"net", "class_names", "feature_names"}}
    return TrainedRun(
        path=path,
        config=config,
        net=net,
        normalization=normalization,
        class_names=class_names,
        feature_names=feature_names,
        metrics=metrics,
        weights_sha256=sha256_file(path / WEIGHTS_FILE),
        info=info,
    )


def _load_xy(file: Path) -> tuple[np.ndarray, np.ndarray]:
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist")
    try:
        with np.load(file, allow_pickle=False) as data:
            return data["features"].astype(np.float32), data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object")
    return data


def _write_json(file: Path, data: Any) -> None:
    file.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
