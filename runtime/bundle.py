"""A deploy folder for a device: the model, the edge script, requirements and a README.

:func:`write_bundle` writes

* the model file (and its external-data files, if any) under its own name;
* ``edge_infer.py``, the self-contained script (stdlib + numpy + onnxruntime);
* ``requirements.txt``: onnxruntime and numpy with lower bounds;
* ``sample.csv``: a few input rows (the training mean, and mean -/+ one standard
  deviation when the model carries its normalization; zeros otherwise), with the
  feature names as header when the model names them;
* ``sample_expected.txt``: what :class:`Predictor` prints for ``sample.csv``, in the
  script's text format, to diff against on the device;
* ``selftest.json``: the self-test's report (the model's golden rows, run here) when
  the model carries a golden set;
* ``README.md`` with the exact commands.

The folder is built beside its destination under a temporary name and renamed into
place, so a reader never sees half a bundle; an existing destination is refused
unless ``overwrite`` is given.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from onnxedge.runtime.contract import KEY_GOLDEN
from onnxedge.runtime.errors import OnnxEdgeError, OutputExistsError
from onnxedge.runtime.predictor import Predictor
from onnxedge.runtime.version import __version__

#: Lower bounds written to requirements.txt (the runtime extra's in pyproject.toml); the
#: tests run the edge script on onnxruntime 1.18.0 with numpy 1.26 in a virtualenv.
ONNXRUNTIME_MIN = "1.18"
NUMPY_MIN = "1.26"
#: Highest default-domain opset onnxruntime ONNXRUNTIME_MIN runs; a newer model asks
#: for at least the onnxruntime it was checked with here.
ONNXRUNTIME_MIN_MAX_OPSET = 21

SCRIPT_NAME = "edge_infer.py"
SAMPLE_NAME = "sample.csv"
EXPECTED_NAME = "sample_expected.txt"
SELFTEST_NAME = "selftest.json"


@dataclass
class Bundle:
    """What :func:`write_bundle` wrote.

    Attributes:
        path: the bundle folder.
        model_name: the model's file name inside it.
        files: every file written, relative to ``path``, sorted.
        sample_rows: rows in ``sample.csv`` (0 when the feature count is unknown).
        run_command: the command that scores the sample, run inside ``path``.
    """

    path: Path
    model_name: str
    files: list[str] = field(default_factory=list)
    sample_rows: int = 0
    run_command: str = ""


def write_bundle(
    model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> Bundle:
    """Write a deploy folder for ``model`` at ``out_dir``.

    Args:
        model: an ``.onnx`` / ``.ort`` file; it is opened with :class:`Predictor` first,
            so a broken or unsafe model never gets bundled.
        out_dir: the folder to create.
        overwrite: replace ``out_dir`` if it exists (only a folder is replaced).

    Returns:
        A :class:`Bundle` describing what was written.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is false, or it is a file.
        ModelLoadError: the model cannot be opened (see :class:`Predictor`).
        OnnxEdgeError: the destination cannot be written.
    """
    source = Path(model)
    target = Path(out_dir)
    _check_target(target, overwrite)
    predictor = Predictor(source, provider="cpu")
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise OnnxEdgeError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        bundle = _fill(staging, source, predictor)
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bundle.path = target
    return bundle


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputExistsError(f"{target} exists and is not a folder; choose another -o")
        if not overwrite:
            raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    # The final step of the one writer: never replaces without overwrite.
    from onnxedge.runtime.atomic import place

    place(staging, target, overwrite=overwrite)


def _fill(folder: Path, source: Path, predictor: Predictor) -> Bundle:
    bundle = Bundle(path=folder, model_name=source.name)
    shutil.copyfile(source, folder / source.name)
    for location in sorted({t.location for t in predictor.file_info.external}):
        # check_external_data has proven each lies inside the model's folder
        destination = folder / location
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / location, destination)
    script = importlib.resources.files("onnxedge.runtime").joinpath(SCRIPT_NAME)
    (folder / SCRIPT_NAME).write_bytes(script.read_bytes())
    (folder / "requirements.txt").write_text(_requirements(predictor))

    sample = _sample_rows(predictor)
    if sample is not None:
        (folder / SAMPLE_NAME).write_text(_sample_csv(predictor, sample))
        (folder / EXPECTED_NAME).write_text(_expected_output(predictor, sample))
        bundle.sample_rows = int(sample.shape[0])
    if KEY_GOLDEN in predictor.metadata:
        # the golden rows on the bundled copy, here; the README has the device run it too
        report = Predictor(folder / source.name, provider="cpu").self_test()
        (folder / SELFTEST_NAME).write_text(json.dumps(report, indent=2) + "\n")
        if not report["passed"]:
            raise OnnxEdgeError(
                f"{source}: the self-test failed on the bundled copy (max |error| "
                f"{report['max_abs_error']}, {report['labels_agreeing']} of {report['rows']} "
                "labels agree)"
            )
    bundle.run_command = f"python {SCRIPT_NAME} {source.name} {SAMPLE_NAME}"
    (folder / "README.md").write_text(_readme(predictor, source, bundle))
    bundle.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return bundle


def _requirements(predictor: Predictor) -> str:
    """The tested range: from ONNXRUNTIME_MIN (tests run the edge script on it in a
    virtualenv) to the onnxruntime this bundle was checked with."""
    import onnxruntime

    major, minor = (int(part) for part in onnxruntime.__version__.split(".")[:2])
    np_major, np_minor = (int(part) for part in np.__version__.split(".")[:2])
    opset = predictor.file_info.opsets.get("", predictor.file_info.opsets.get("ai.onnx", 0))
    ort_min = f"{major}.{minor}" if opset > ONNXRUNTIME_MIN_MAX_OPSET else ONNXRUNTIME_MIN
    why = f"opset {opset}: " if opset > ONNXRUNTIME_MIN_MAX_OPSET else ""
    return (
        "# The model's runtime: nothing else is needed (no torch).\n"
        "# On an NVIDIA GPU install onnxruntime-gpu instead of onnxruntime (never both).\n"
        f"# Tested: onnxruntime {ONNXRUNTIME_MIN}.0 with numpy {NUMPY_MIN}, and "
        f"onnxruntime {onnxruntime.__version__} with numpy {np.__version__}.\n"
        f"onnxruntime>={ort_min},<{major}.{minor + 1}  # {why}checked with "
        f"{onnxruntime.__version__}\n"
        f"numpy>={NUMPY_MIN},<{np_major}.{np_minor + 1}  # onnxruntime < 1.19 needs numpy < 2\n"
    )


def _sample_rows(predictor: Predictor) -> np.ndarray | None:
    """Mean, mean - std, mean + std when the model carries its normalization, else zeros."""
    width = predictor.num_features
    if width is None:
        return None
    norm = predictor.contract.extra.get("normalization")
    if isinstance(norm, dict):
        mean = np.asarray(norm.get("mean", []), dtype=np.float64)
        std = np.asarray(norm.get("std", []), dtype=np.float64)
        if mean.shape == (width,) and std.shape == (width,) and np.isfinite(mean).all():
            std = np.where(np.isfinite(std), std, 0.0)
            rows = np.stack([mean, mean - std, mean + std])
            return rows.astype(np.float32)
    return np.zeros((1, width), dtype=np.float32)


def _sample_csv(predictor: Predictor, rows: np.ndarray) -> str:
    lines = []
    names = predictor.contract.feature_names
    if names is not None and len(names) == rows.shape[1]:
        lines.append(",".join(_csv_cell(name) for name in names))
    # repr of the double a float32 equals: parsing it back gives the same float32
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _csv_cell(text: str) -> str:
    if any(ch in text for ch in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _expected_output(predictor: Predictor, rows: np.ndarray) -> str:
    result = predictor.predict(rows)
    return "".join(
        f"{label}\t{name}\t{p:.6f}\n"
        for label, name, p in zip(
            result.labels.tolist(), result.names, result.top_probabilities.tolist(), strict=True
        )
    )


def _row_text(predictor: Predictor) -> str:
    shape = predictor.input_shape
    if shape is None:
        return "rows of an unknown number of float32 features"
    if len(shape) == 1:
        return f"{shape[0]} float32 features per row"
    return f"rows of shape {shape} ({predictor.num_features} float32 values, flattened in CSV)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _readme(predictor: Predictor, source: Path, bundle: Bundle) -> str:
    name = source.name
    classes = predictor.class_names
    contract = predictor.contract
    task = contract.task or "classifier"
    class_text = (
        ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        if classes
        else f"{predictor.num_classes or 'unknown'} (unnamed: labels are class indices)"
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {source.stem}: deploy bundle",
        "",
        f"Written by onnxedge {__version__} on {stamp}.",
        "",
        f"- model: `{name}` ({source.stat().st_size:,} bytes, sha256 `{_sha256(source)}`)",
        f"- task: {task}; input `{predictor.input_name}`: {_row_text(predictor)}",
        f"- classes: {class_text}",
        "",
        "## Install (no torch needed)",
        "",
        "```sh",
        "python3 -m venv .venv",
        ". .venv/bin/activate",
        "pip install -r requirements.txt",
        "```",
        "",
        "On an NVIDIA GPU, install `onnxruntime-gpu` instead of `onnxruntime` (never both).",
        "",
        "## Run",
        "",
        "```sh",
    ]
    if bundle.sample_rows:
        run = f"python {SCRIPT_NAME} {name}"
        lines += [
            f"{run} {SAMPLE_NAME}            # label<TAB>class<TAB>probability",
            f"{run} {SAMPLE_NAME} --json     # one JSON object per row",
            f"cat {SAMPLE_NAME} | {run} -    # CSV rows on stdin",
        ]
    lines += [
        f"python {SCRIPT_NAME} {name} rows.npy --provider cpu --threads 2",
        f"python {SCRIPT_NAME} --help",
        "```",
        "",
    ]
    if KEY_GOLDEN in predictor.metadata:
        lines += [
            "## First: the self-test",
            "",
            "```sh",
            f"python {SCRIPT_NAME} {name} --self-test         # add --json for fleets",
            "```",
            "",
            "It runs the golden rows stored in the model on this device's onnxruntime and",
            "compares them with the outputs recorded at export (exit status 1 on a mismatch);",
            f"`{SELFTEST_NAME}` is its report where the bundle was made.",
            "",
        ]
    else:
        lines += [
            "The model carries no golden set for a self-test (`onnxedge export` and",
            "`onnxedge wrap` store one).",
            "",
        ]
    if bundle.sample_rows:
        lines += [
            "## Check the device",
            "",
            "```sh",
            f"python {SCRIPT_NAME} {name} {SAMPLE_NAME} > got.txt && diff got.txt {EXPECTED_NAME}",
            "```",
            "",
            f"`{EXPECTED_NAME}` is what the model printed where it was bundled. Labels must",
            "match; another CPU may differ in the last printed digit of a probability.",
            "",
        ]
    lines += [
        "## Input and output",
        "",
        "INPUT is a `.npy` file (rows x row shape, rows x features, or one row), a `.csv`",
        "file (a row's values flattened), or `-` for CSV rows on stdin (answered row by",
        "row). A CSV header is optional; when it names",
        "the model's features those columns are used, in the model's order, and other",
        "columns are ignored. NaN / Inf values are refused.",
        "",
        "Each row prints `label<TAB>class_name<TAB>probability of that label`; with",
        '`--json`: `{"label": ..., "class": ..., "probabilities": [one per class]}`.',
        "Errors print one line `Error: ...` on stderr and exit with status 1;",
        "`--provider cuda` fails (exit 1) when CUDA is not available instead of",
        "running on the CPU.",
        "",
    ]
    return "\n".join(lines)
