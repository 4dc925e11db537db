"""A deploy folder for a device: the model (and its external data), ``edge_infer.py``,
``requirements.txt``, ``sample.csv`` with ``sample_expected.txt`` (what :class:`Predictor`
prints for it), ``selftest.json`` (the self-test run here, when the model carries a golden
set) and a README with the exact commands."""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from onnxedge.runtime.atomic import Staged
from onnxedge.runtime.contract import KEY_GOLDEN
from onnxedge.runtime.edge_infer import format_rows
from onnxedge.runtime.errors import OnnxEdgeError
from onnxedge.runtime.predictor import Predictor
from onnxedge.runtime.version import __version__

#: requirements.txt's lower bounds (tests run the edge script on them in a virtualenv).
ONNXRUNTIME_MIN = "1.18"
NUMPY_MIN = "1.26"
#: Highest opset ONNXRUNTIME_MIN runs; a newer model asks for the onnxruntime used here.
ONNXRUNTIME_MIN_MAX_OPSET = 21

SCRIPT_NAME = "edge_infer.py"
SAMPLE_NAME = "sample.csv"
EXPECTED_NAME = "sample_expected.txt"
SELFTEST_NAME = "selftest.json"


@dataclass
class Bundle:
    """What :func:`write_bundle` wrote: the folder, the model's name in it, every file
    (relative, sorted), the rows of ``sample.csv`` (0: feature count unknown) and the
    command that scores the sample."""

    path: Path
    model_name: str
    files: list[str] = field(default_factory=list)
    sample_rows: int = 0
    run_command: str = ""


def write_bundle(
    model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> Bundle:
    """Write a deploy folder for ``model`` (opened with :class:`Predictor` first, so a
    broken or unsafe model is never bundled) at ``out_dir``, staged and renamed into place.

    Raises:
        OutputExistsError: ``out_dir`` exists without ``overwrite``, or is not a folder.
        ModelLoadError: the model cannot be opened.
        OnnxEdgeError: the destination cannot be written, or the self-test failed.
    """
    source = Path(model)
    with Staged(out_dir, overwrite=overwrite, folder=True) as staged:
        bundle = _fill(staged.path, source, Predictor(source, provider="cpu"))
        bundle.path = staged.commit()
    return bundle


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
        expected = format_rows(predictor, *predictor.score(sample), as_json=False)
        (folder / EXPECTED_NAME).write_text(expected)  # what the script prints
        bundle.sample_rows = int(sample.shape[0])
    if KEY_GOLDEN in predictor.metadata:
        # the golden rows on the bundled copy, here; the README has the device run it too
        report = Predictor(folder / source.name, provider="cpu").self_test()
        (folder / SELFTEST_NAME).write_text(json.dumps(report, indent=2) + "\n")
        if not report["passed"]:
            raise OnnxEdgeError(
                f"{source}: the self-test failed on the bundled copy (max |error| "
                f"{report['max_abs_error']}, {report['labels_agreeing']} of {report['rows']} "
                f"labels agree; failed under: {', '.join(report['failed']) or 'none'})"
            )
    bundle.run_command = f"python {SCRIPT_NAME} {source.name} {SAMPLE_NAME}"
    (folder / "README.md").write_text(_readme(predictor, source, bundle))
    bundle.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return bundle


def _requirements(predictor: Predictor) -> str:
    """The tested range: ONNXRUNTIME_MIN up to the onnxruntime used here."""
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
            return np.stack([mean, mean - std, mean + std]).astype(np.float32)
    return np.zeros((1, width), dtype=np.float32)


def _sample_csv(predictor: Predictor, rows: np.ndarray) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")  # RFC 4180 quoting, plain line ends
    names = predictor.contract.feature_names
    if names is not None and len(names) == rows.shape[1]:
        writer.writerow(names)
    # repr of the double a float32 equals: parsing it back gives the same float32
    writer.writerows([repr(float(v)) for v in row] for row in rows)
    return text.getvalue()


def _row_text(predictor: Predictor) -> str:
    shape = predictor.input_shape
    if shape is None:
        return "rows of an unknown number of float32 features"
    if len(shape) == 1:
        return f"{shape[0]} float32 features per row"
    return f"rows of shape {shape} ({predictor.num_features} float32 values, flattened in CSV)"


def _readme(predictor: Predictor, source: Path, bundle: Bundle) -> str:
    name, classes = source.name, predictor.class_names
    class_text = (
        ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        if classes
        else f"{predictor.num_classes or 'unknown'} (unnamed: labels are class indices)"
    )
    with source.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = f"python {SCRIPT_NAME} {name}"
    lines = [
        f"# {source.stem}: deploy bundle\n\nWritten by onnxedge {__version__} on {stamp}.\n",
        f"- model: `{name}` ({source.stat().st_size:,} bytes, sha256 `{digest}`)",
        f"- task: {predictor.contract.task or 'classifier'}; input `{predictor.input_name}`: "
        f"{_row_text(predictor)}",
        f"- classes: {class_text}\n\n## Install (no torch needed)\n\n```sh",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n```\n",
        "On an NVIDIA GPU install `onnxruntime-gpu` instead of `onnxruntime` (never both).\n",
    ]
    if KEY_GOLDEN in predictor.metadata:
        lines += [
            f"## First: the self-test\n\n```sh\n{run} --self-test         # add --json for fleets",
            "```\n\nIt runs the model's golden rows at every optimization level on every provider",
            f"here (exit status 1 on a mismatch); `{SELFTEST_NAME}`: its report where made.\n",
        ]
    else:
        lines.append("The model carries no golden set for a self-test (`onnxedge export` and")
        lines.append("`onnxedge wrap` store one).\n")
    lines.append("## Run\n\n```sh")
    if bundle.sample_rows:
        lines += [
            f"{run} {SAMPLE_NAME}            # label<TAB>class<TAB>probability",
            f"{run} {SAMPLE_NAME} --json     # one JSON object per row",
            f"cat {SAMPLE_NAME} | {run} -    # CSV rows on stdin",
        ]
    lines.append(f"{run} rows.npy --provider cpu --threads 2\npython {SCRIPT_NAME} --help\n```\n")
    if bundle.sample_rows:
        lines += [
            f"## Check the device\n\n```sh\n{run} {SAMPLE_NAME} > got.txt && diff got.txt "
            f"{EXPECTED_NAME}\n```\n",
            f"`{EXPECTED_NAME}` is what the model printed where it was bundled. Labels must",
            "match; another CPU may differ in the last printed digit of a probability.\n",
        ]
    lines += [
        "## Input and output\n\nINPUT: `.npy` or `.csv` rows (a header naming the features picks",
        "and orders the columns), or `-` for CSV rows on stdin; NaN / Inf are refused. Each row",
        "prints `label<TAB>class_name<TAB>probability of that label`; with `--json`",
        '`{"label": ..., "class": ..., "probabilities": [one per class]}`. Errors print one',
        "line `Error: ...` on stderr (exit status 1); `--provider cuda` fails when CUDA is",
        f"not available, or leaves Gemm / MatMul / Conv nodes on the CPU. More: `python "
        f"{SCRIPT_NAME} --help`.\n",
    ]
    return "\n".join(lines)
