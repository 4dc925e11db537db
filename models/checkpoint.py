"""The training run folder: what ``onnxedge train`` writes and ``export`` reads.

A run folder holds::

    config.json          the net's NetConfig (its arch and row shape), the preprocessing,
                         task, class / feature names, dataset, training options
    weights.safetensors  the net's parameters (safetensors: no pickle is ever loaded)
    metrics.json         per-epoch train / validation loss and accuracy, best epoch
    curves.png           loss and accuracy curves
    validation.npz       the validation split, raw rows and labels (for verify)
    calibration.npz      a sample of raw training rows (for int8 calibration)

Run folders written before the preprocessing moved into config.json keep it in
``normalization.json`` (per-feature mean and std); they still load. The checkpoint
carries its own config, so export never guesses hyperparameters or the architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxedge.models.nets import MLP, NetConfig, build_net
from onnxedge.models.preprocess import Preprocess, Standardize, preprocess_from_dict
from onnxedge.runtime.errors import CheckpointError, OutputExistsError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
#: Older run folders' preprocessing (read when config.json has no "preprocess").
NORMALIZATION_FILE = "normalization.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
VALIDATION_FILE = "validation.npz"
CALIBRATION_FILE = "calibration.npz"

REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
#: config.json keys that are not ``TrainedRun.info``.
_OWN_KEYS = {"net", "preprocess", "class_names", "feature_names"}


#: The older name of :class:`Standardize` (export/ and benchmarks/ still use it).
Normalization = Standardize


@dataclass
class TrainedRun:
    """A loaded run folder: the net with its weights and everything saved beside it.

    Attributes:
        path: the run folder.
        config: the net's config (names the architecture and the row shape).
        net: the net with its trained weights, in eval mode (logits out).
        preprocess: what is applied to raw rows before the net (``Standardize`` for
            tabular runs, ``Rescale`` for images, or None); export puts it in the graph.
        class_names: what each label index stands for.
        feature_names: one name per value of a flattened row.
        metrics: the training history and best epoch (``metrics.json``).
        weights_sha256: hex digest of ``weights.safetensors``.
        info: everything else ``config.json`` holds (task, dataset, training options).
    """

    path: Path
    config: NetConfig
    net: MLP
    preprocess: Preprocess | None
    class_names: list[str]
    feature_names: list[str]
    metrics: dict[str, Any]
    weights_sha256: str
    info: dict[str, Any] = field(default_factory=dict)

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
        value = self.info.get("dataset")
        return None if value is None else str(value)

    @property
    def normalization(self) -> Standardize:
        """The run's :class:`Standardize` step (the older name, for tabular runs).

        Raises:
            CheckpointError: the run's preprocessing is not a standardization.
        """
        if not isinstance(self.preprocess, Standardize):
            kind = "none" if self.preprocess is None else self.preprocess.to_dict()["kind"]
            raise CheckpointError(f"run {self.path} has no standardization (preprocess: {kind})")
        return self.preprocess

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split: raw rows ``(n, *input_shape)`` float32, labels ``(n,)`` int64.

        Raises:
            CheckpointError: the run folder has no readable validation split.
        """
        return self._rows(VALIDATION_FILE)

    def calibration(self) -> np.ndarray:
        """A sample of raw training rows ``(n, *input_shape)`` float32, for int8 calibration.

        Raises:
            CheckpointError: the run folder has no readable calibration sample.
        """
        return self._rows(CALIBRATION_FILE)[0]

    def weights(self) -> dict[str, np.ndarray]:
        """The net's parameters as float32 numpy arrays, by parameter name."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}

    def _rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = _load_xy(self.path / name)
        if x.size != len(x) * self.config.input_size:
            raise CheckpointError(
                f"{self.path / name} holds rows of shape {x.shape[1:]}; the net reads "
                f"{self.input_shape}"
            )
        return x.reshape(len(x), *self.input_shape), y


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

    On any error the temporary folder is removed and ``target`` is untouched.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        CheckpointError: the parent folder cannot be written.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise CheckpointError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if target.exists():
            backup = tmp.with_name(tmp.name + ".old")
            target.rename(backup)
            tmp.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_run(
    folder: Path,
    *,
    net: MLP,
    preprocess: Preprocess | None = None,
    class_names: list[str],
    feature_names: list[str],
    metrics: dict[str, Any],
    info: dict[str, Any],
    validation: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
    normalization: Standardize | None = None,
) -> None:
    """Write every file of a run folder into ``folder`` (which must exist).

    Args:
        folder: the (temporary) run folder.
        net: the trained net; its ``config`` is saved with the weights.
        preprocess: the step applied to raw rows before the net, or None.
        class_names, feature_names: what labels and row values stand for.
        metrics: the training history.
        info: more config.json keys (task, dataset, training options, versions).
        validation: raw rows ``(n, *input_shape)`` (or flattened) and labels.
        calibration: raw training rows, the same shape.
        normalization: the older name of ``preprocess`` (a ``Standardize``).
    """
    from safetensors.numpy import save_file

    step = preprocess if preprocess is not None else normalization
    tensors = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    save_file(
        tensors, str(folder / WEIGHTS_FILE), metadata={"format": f"onnxedge-{net.config.arch}"}
    )
    config = {
        "net": net.config.to_dict(),
        "preprocess": None if step is None else step.to_dict(),
        "class_names": class_names,
        "feature_names": feature_names,
        **info,
    }
    _write_json(folder / CONFIG_FILE, config)
    _write_json(folder / METRICS_FILE, metrics)
    shape = net.config.input_shape
    for name, (x, y) in (
        (VALIDATION_FILE, validation),
        (CALIBRATION_FILE, (calibration, np.zeros(len(calibration), dtype=np.int64))),
    ):
        rows = np.asarray(x, dtype=np.float32).reshape(len(x), *shape)
        np.savez(folder / name, features=rows, labels=np.asarray(y, dtype=np.int64))


def load_run(run_dir: str | os.PathLike[str]) -> TrainedRun:
    """Load a run folder written by ``onnxedge train`` (or an older onnxedge).

    Raises:
        CheckpointError: the path is not a folder, a required file is missing, a file
            is corrupt, or the config does not match the weights (names or shapes) or
            the preprocessing (shape).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(run_dir)
    if path.is_file():
        raise CheckpointError(f"{path} is a file; expected a run folder (onnxedge train -o)")
    if not path.is_dir():
        raise CheckpointError(f"run folder {path} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"run folder {path} is missing {', '.join(missing)}")
    raw = _read_json(path / CONFIG_FILE)
    if "preprocess" not in raw and not (path / NORMALIZATION_FILE).is_file():
        raise CheckpointError(
            f"run folder {path} is missing {NORMALIZATION_FILE} (or a 'preprocess' entry "
            f"in {CONFIG_FILE})"
        )
    if "net" not in raw:
        raise CheckpointError(f"{path / CONFIG_FILE} has no 'net' section")
    config = NetConfig.from_dict(raw["net"])
    if "preprocess" in raw:
        preprocess = preprocess_from_dict(raw["preprocess"])
    else:
        preprocess = preprocess_from_dict(_read_json(path / NORMALIZATION_FILE))
    if isinstance(preprocess, Standardize):
        try:
            fits = np.broadcast_shapes(preprocess.mean.shape, config.input_shape)
        except ValueError:
            fits = ()
        if fits != config.input_shape:
            raise CheckpointError(
                f"the standardization in {path} has shape {preprocess.mean.shape} but the "
                f"net reads rows of shape {config.input_shape}"
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
    return TrainedRun(
        path=path,
        config=config,
        net=net,
        preprocess=preprocess,
        class_names=class_names,
        feature_names=feature_names,
        metrics=metrics,
        weights_sha256=sha256_file(path / WEIGHTS_FILE),
        info={k: v for k, v in raw.items() if k not in _OWN_KEYS},
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
