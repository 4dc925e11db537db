"""The run folder ``onnxedge train`` writes and ``export`` reads: ``config.json``,
``weights.safetensors`` (no pickle), ``metrics.json``, ``curves.png``, and raw rows in
``validation.npz`` and ``calibration.npz`` (older folders: ``normalization.json``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.models.nets import MLP, NetConfig, build_net
from onnxedge.models.preprocess import Preprocess, Standardize, preprocess_from_dict
from onnxedge.runtime.errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
NORMALIZATION_FILE = "normalization.json"  # older run folders' preprocessing
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
VALIDATION_FILE = "validation.npz"
CALIBRATION_FILE = "calibration.npz"
_OWN_KEYS = {"net", "preprocess", "class_names", "feature_names"}  # not TrainedRun.info


@dataclass
class TrainedRun:
    """A loaded run folder: ``net`` (trained, eval mode, logits out) built from ``config``,
    the ``preprocess`` step export puts in front of it (or None), ``class_names``, one
    ``feature_names`` entry per value of a flattened row, ``metrics`` (``metrics.json``),
    ``weights_sha256`` and ``info`` (the rest of ``config.json``: task, dataset, options).
    """

    path: Path
    config: NetConfig
    net: MLP
    preprocess: Preprocess | None
    class_names: list[str]
    feature_names: list[str]
    metrics: dict[str, Any]
    weights_sha256: str
    info: dict[str, Any]

    @property
    def task(self) -> str:
        """``multiclass`` or ``binary``."""
        return self.config.task

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One raw row's shape: ``(features,)``, or ``(C, H, W)`` for images."""
        return self.config.input_shape

    @property
    def dataset(self) -> str | None:
        """The bundled dataset name or the file path the run was trained on, if recorded."""
        return None if self.info.get("dataset") is None else str(self.info["dataset"])

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw validation rows ``(n, *input_shape)`` float32 and labels (CheckpointError)."""
        return self._rows(VALIDATION_FILE)

    def calibration(self) -> np.ndarray:
        """Raw training rows ``(n, *input_shape)`` float32, for int8 (CheckpointError)."""
        return self._rows(CALIBRATION_FILE)[0]

    def weights(self) -> dict[str, np.ndarray]:
        """The net's parameters as float32 numpy arrays, by parameter name."""
        return _arrays(self.net)

    def _rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        file = self.path / name
        if not file.is_file():
            raise CheckpointError(f"{file} does not exist")
        try:
            with np.load(file, allow_pickle=False) as data:
                x, y = data["features"].astype(np.float32), data["labels"].astype(np.int64)
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot read {file}: {exc}") from None
        if x.size != len(x) * self.config.input_size:
            raise CheckpointError(
                f"{file} holds rows of shape {x.shape[1:]}; the net reads {self.input_shape}"
            )
        return x.reshape(len(x), *self.input_shape), y


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def save_run(
    folder: Path,
    *,
    net: MLP,
    preprocess: Preprocess | None,
    class_names: list[str],
    feature_names: list[str],
    metrics: dict[str, Any],
    info: dict[str, Any],
    validation: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
) -> None:
    """Write a run folder's files but the curves into ``folder`` (which must exist). ``info``
    is more config.json keys; ``validation`` raw rows and labels, ``calibration`` raw rows."""
    from safetensors.numpy import save_file

    arch = net.config.arch
    save_file(_arrays(net), str(folder / WEIGHTS_FILE), metadata={"format": f"onnxedge-{arch}"})
    step = None if preprocess is None else preprocess.to_dict()
    names = {"class_names": class_names, "feature_names": feature_names}
    config = {"net": net.config.to_dict(), "preprocess": step, **names, **info}
    for name, data in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
        (folder / name).write_text(json.dumps(data, indent=2) + "\n")
    no_labels = np.zeros(len(calibration), dtype=np.int64)
    splits = {VALIDATION_FILE: validation, CALIBRATION_FILE: (calibration, no_labels)}
    for name, (x, y) in splits.items():
        rows = np.asarray(x, dtype=np.float32).reshape(len(x), *net.config.input_shape)
        np.savez(folder / name, features=rows, labels=np.asarray(y, dtype=np.int64))


def load_run(run_dir: str | os.PathLike[str]) -> TrainedRun:
    """Load a run folder written by ``onnxedge train`` (or an older onnxedge).

    Raises:
        CheckpointError: not a folder, a file missing or corrupt, or a config that does not
            match the weights or the preprocessing."""
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(run_dir)
    if path.is_file():
        raise CheckpointError(f"{path} is a file; expected a run folder (onnxedge train -o)")
    if not path.is_dir():
        raise CheckpointError(f"run folder {path} does not exist")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"run folder {path} is missing {', '.join(missing)}")
    raw = _read_json(path / CONFIG_FILE)
    if "net" not in raw:
        raise CheckpointError(f"{path / CONFIG_FILE} has no 'net' section")
    if "preprocess" in raw:
        preprocess = preprocess_from_dict(raw["preprocess"])
    elif (path / NORMALIZATION_FILE).is_file():
        preprocess = preprocess_from_dict(_read_json(path / NORMALIZATION_FILE))
    else:
        raise CheckpointError(
            f"run folder {path} is missing {NORMALIZATION_FILE} (or a 'preprocess' entry "
            f"in {CONFIG_FILE})"
        )
    config = NetConfig.from_dict(raw["net"])
    row = config.input_shape
    if isinstance(preprocess, Standardize) and _broadcast(preprocess.mean.shape, row) != row:
        raise CheckpointError(
            f"the standardization in {path} has shape {preprocess.mean.shape} but the net "
            f"reads rows of shape {row}"
        )
    try:
        arrays = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / WEIGHTS_FILE}: {exc}") from None
    net = build_net(config)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    problems = [
        f"{name}: config expects {shape}, weights have {found.get(name, 'nothing')}"
        for name, shape in expected.items()
        if found.get(name) != shape
    ]
    problems += [f"{name}: unexpected in weights" for name in sorted(set(found) - set(expected))]
    if problems:
        raise CheckpointError(
            f"{CONFIG_FILE} does not match {WEIGHTS_FILE} in {path}: " + "; ".join(problems)
        )
    net.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    net.eval()
    classes = [str(c) for c in raw.get("class_names", range(config.num_classes))]
    features = [str(f) for f in raw.get("feature_names", [])]
    features = features or [f"f{i}" for i in range(config.input_size)]
    metrics = _read_json(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else {}
    info = {k: v for k, v in raw.items() if k not in _OWN_KEYS}
    digest = sha256_file(path / WEIGHTS_FILE)
    return TrainedRun(path, config, net, preprocess, classes, features, metrics, digest, info)


def _broadcast(shape: tuple[int, ...], row: tuple[int, ...]) -> tuple[int, ...] | None:
    with contextlib.suppress(ValueError):
        return np.broadcast_shapes(shape, row)
    return None


def _arrays(net: MLP) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object")
    return data
