"""The models the benchmark runs, and where each one's files come from.

Three fp32 classifiers, each an ``.onnx`` file with its head plus the run folder it
was exported from (the PyTorch paths load the run):

- ``digits`` (64 -> 128 -> 10, softmax) and ``breast-cancer`` (30 -> 128 -> 1,
  sigmoid): ``artifacts/<name>.onnx`` and ``artifacts/runs/<name>`` when ``make
  export`` has written them, else trained here with :func:`onnxedge.models.train.train`
  (a few seconds each) and exported;
- ``mlp-784-512-10``: the notebook's 28x28 input size with random weights (seeded),
  written as a run folder and exported through the same head.

Export goes through the project's ``checkpoint_to_onnx`` (with its parity check); the
results record which exporter ran. The int8 variant of the larger MLP comes from
:func:`onnxedge.export.variants.make_variant`.

torch and onnx are imported inside the functions that need them, so a worker that
only runs onnxruntime (the RSS probes) never loads them.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The larger MLP: the notebook's 28x28 images, one hidden layer of 512, 10 classes.
LARGE_MLP = "mlp-784-512-10"
LARGE_MLP_SHAPE = (784, (512,), 10)
BUNDLED = ("digits", "breast-cancer")
#: Epochs when a bundled model is trained here (no ``make export`` artifacts).
TRAIN_EPOCHS = 10
MODEL_NAMES = (*BUNDLED, LARGE_MLP)


@dataclass
class BenchModel:
    """One benchmarked model.

    Attributes:
        name: ``digits``, ``breast-cancer`` or ``mlp-784-512-10``.
        onnx_path: the fp32 model.
        run_dir: the run folder it was exported from.
        layers: ``(in, out)`` of each Linear layer, input first.
        source: ``artifacts`` (from ``make export``), ``trained`` (here) or ``random``.
        exporter: what wrote ``onnx_path``.
        variants: ``int8`` / ``fp16`` variant paths that were built.
        notes: what could not be done, in words.
    """

    name: str
    onnx_path: Path
    run_dir: Path
    layers: tuple[tuple[int, int], ...]
    source: str
    exporter: str
    variants: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        """Features per input row."""
        return self.layers[0][0]

    def flops_per_row(self) -> int:
        """``2 * in * out`` summed over the Linear layers (multiply and add)."""
        return sum(2 * fan_in * fan_out for fan_in, fan_out in self.layers)

    def sample(self, rows: int, seed: int = 0) -> np.ndarray:
        """``(rows, features)`` float32 raw inputs: the validation split, tiled.

        Random standard-normal rows when the run folder has no validation split.
        """
        path = self.run_dir / "validation.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                base = np.asarray(data["features"], dtype=np.float32)
        else:
            rng = np.random.default_rng(seed)
            base = rng.standard_normal((256, self.num_features), dtype=np.float32)
        reps = -(-rows // len(base))
        return np.ascontiguousarray(np.tile(base, (reps, 1))[:rows], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the model."""
        return {
            "name": self.name,
            "onnx": str(self.onnx_path),
            "run": str(self.run_dir),
            "layers": [list(layer) for layer in self.layers],
            "flops_per_row": self.flops_per_row(),
            "source": self.source,
            "exporter": self.exporter,
            "size_bytes": self.onnx_path.stat().st_size,
            "variants": {k: str(v) for k, v in self.variants.items()},
            "notes": list(self.notes),
        }


def prepare_models(
    workdir: Path,
    artifacts: Path | None,
    *,
    names: tuple[str, ...] = MODEL_NAMES,
    int8: bool = True,
    log: Callable[[str], None] = print,
) -> list[BenchModel]:
    """Find, train or build each model and export it; build the larger MLP's int8 variant.

    Args:
        workdir: where models made here go (a scratch folder).
        artifacts: ``make export``'s output folder, used when it holds the model.
        names: which models, from :data:`MODEL_NAMES`.
        int8: build the int8 variant of the larger MLP (when the variants module exists).
        log: progress lines.

    Raises:
        ValueError: an unknown model name.
    """
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown benchmark model(s) {unknown}; expected {list(MODEL_NAMES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    models = []
    for name in names:
        started = time.perf_counter()
        model = _bundled(name, workdir, artifacts) if name in BUNDLED else _large_mlp(workdir)
        if name == LARGE_MLP and int8:
            _add_int8(model, workdir)
        log(
            f"  {name}: {model.source}, exported by {model.exporter} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        models.append(model)
    return models


def load_head_module(run_dir: Path) -> Any:
    """The torch module the ONNX file was exported from (eval mode): normalize -> net -> head."""
    from onnxedge.export.heads import build_head_module
    from onnxedge.models.checkpoint import load_run

    return build_head_module(load_run(run_dir))


# --- sources ---------------------------------------------------------------------------


def _layers(run_dir: Path) -> tuple[tuple[int, int], ...]:
    config = json.loads((run_dir / "config.json").read_text())["net"]
    widths = [int(config["input_size"]), *(int(h) for h in config["hidden_sizes"])]
    outputs = 1 if config["task"] == "binary" else int(config["num_classes"])
    widths.append(outputs)
    return tuple(itertools.pairwise(widths))


def _bundled(name: str, workdir: Path, artifacts: Path | None) -> BenchModel:
    if artifacts is not None:
        onnx_path, run_dir = artifacts / f"{name}.onnx", artifacts / "runs" / name
        if onnx_path.is_file() and (run_dir / "config.json").is_file():
            return BenchModel(
                name,
                onnx_path,
                run_dir,
                _layers(run_dir),
                "artifacts",
                _recorded_exporter(onnx_path),
            )
    from onnxedge.models.train import TrainOptions, train

    run_dir = workdir / "runs" / name
    if not (run_dir / "config.json").is_file():
        # Speed does not depend on the weights' values: a short run builds the same net.
        options = TrainOptions(epochs=TRAIN_EPOCHS, patience=TRAIN_EPOCHS)
        train(name, run_dir, options, overwrite=True, progress=False)
    onnx_path = workdir / f"{name}.onnx"
    exporter = _export(run_dir, onnx_path)
    model = BenchModel(name, onnx_path, run_dir, _layers(run_dir), "trained", exporter)
    model.notes.append(
        f"no {name}.onnx in the artifacts folder: trained here for {TRAIN_EPOCHS} epochs "
        "(same architecture as make export's; speed does not depend on the weights)"
    )
    return model


def _recorded_exporter(onnx_path: Path) -> str:
    """``make export (dynamo, opset 18)``, from the model's own metadata where it says."""
    import onnx

    props = {
        p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props
    }
    details = [
        value
        for value in (
            props.get("onnxedge.exporter"),
            f"opset {props['onnxedge.opset']}" if "onnxedge.opset" in props else None,
        )
        if value
    ]
    return "make export" + (f" ({', '.join(details)})" if details else "")


def _large_mlp(workdir: Path, seed: int = 0) -> BenchModel:
    features, hidden, classes = LARGE_MLP_SHAPE
    return random_model(workdir, LARGE_MLP, features, hidden, classes, seed=seed)


def random_model(
    workdir: Path,
    name: str,
    features: int,
    hidden: tuple[int, ...],
    classes: int,
    *,
    seed: int = 0,
    fast: bool = False,
) -> BenchModel:
    """A run folder holding a seeded random multiclass net, exported through the head.

    Inputs are pixel-like values in ``[0, 1]`` standardized with MNIST's statistics;
    the validation labels are the net's own predictions.

    Args:
        workdir: the run goes to ``workdir/runs/<name>``, the model to ``workdir/<name>.onnx``.
        name: the model's name.
        features, hidden, classes: the net's widths.
        seed: seeds the weights and the rows.
        fast: export with the TorchScript exporter and no parity check (tests).
    """
    import torch
    from onnxedge.models.checkpoint import save_run
    from onnxedge.models.nets import NetConfig, build_net
    from onnxedge.models.preprocess import Standardize

    run_dir = workdir / "runs" / name
    if not (run_dir / "config.json").is_file():
        torch.manual_seed(seed)
        net = build_net(NetConfig("multiclass", features, hidden, classes)).eval()
        rng = np.random.default_rng(seed)
        mean, std = np.float32(0.1307), np.float32(0.3081)
        x_val = rng.random((512, features), dtype=np.float32)
        with torch.inference_mode():
            y_val = net(torch.from_numpy((x_val - mean) / std)).argmax(dim=1).numpy()
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run(
            run_dir,
            net=net,
            preprocess=Standardize(
                mean=np.full(features, mean, np.float32), std=np.full(features, std, np.float32)
            ),
            class_names=[str(c) for c in range(classes)],
            feature_names=[f"pixel{i}" for i in range(features)],
            metrics={"best_epoch": 0, "epochs_run": 0, "best": {}, "history": []},
            info={"task": "multiclass", "dataset": f"random weights, seed {seed}"},
            validation=(x_val, y_val.astype(np.int64)),
            calibration=rng.random((512, features), dtype=np.float32),
        )
    onnx_path = workdir / f"{name}.onnx"
    exporter = _export(run_dir, onnx_path, fast=fast)
    return BenchModel(name, onnx_path, run_dir, _layers(run_dir), "random", exporter)


def _add_int8(model: BenchModel, workdir: Path) -> None:
    try:
        from onnxedge.export.variants import make_variant
    except ImportError as exc:
        model.notes.append(f"int8 variant not built: {exc}")
        return
    out = workdir / f"{model.name}.int8.onnx"
    # Random weights and labels: the variant's accuracy bar is beside the point here.
    report = make_variant(
        model.onnx_path, model.run_dir, "int8", out, accept_degradation=True, overwrite=True
    )
    model.variants["int8"] = out
    if getattr(report, "failures", None):
        model.notes.append(f"int8 variant misses its bar on random data: {report.failures}")


# --- export ----------------------------------------------------------------------------


def _export(run_dir: Path, onnx_path: Path, *, fast: bool = False) -> str:
    """Export a run to ``onnx_path`` (overwriting) with the project's exporter; say how."""
    from onnxedge.export.onnx_export import checkpoint_to_onnx

    if fast:
        result = checkpoint_to_onnx(
            run_dir, onnx_path, overwrite=True, exporter="torchscript", verify=False
        )
    else:
        result = checkpoint_to_onnx(run_dir, onnx_path, overwrite=True)
    verified = "verified" if result.parity is not None else "not verified"
    return f"checkpoint_to_onnx ({result.exporter}, opset {result.opset}, {verified})"
