"""``onnxedge info`` and ``onnxedge bundle``: thin click commands over the runtime."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
from onnxedge.runtime.cli import echo_json
from onnxedge.runtime.errors import OnnxEdgeError

_SHOWN_CHARS = 100  # longest metadata value ``info`` shows in full without ``--json``
_INFO_EPILOG = (
    "Examples:\n\n"
    "\b\n"
    "  onnxedge info artifacts/digits.onnx\n"
    "  onnxedge info artifacts/breast-cancer.onnx --json\n"
    "  onnxedge info artifacts/digits.onnx --self-test\n"
    "  onnxedge info artifacts/digits.onnx --provider cuda   # nodes per provider\n"
    "\b\n"
    "Long values are shortened; --json prints everything."
)

_BUNDLE_EPILOG = (
    "Examples:\n\n"
    "\b\n"
    "  onnxedge bundle artifacts/digits.onnx -o deploy/digits\n"
    "  onnxedge bundle artifacts/breast-cancer.onnx -o deploy/bc --overwrite\n"
    "\b\n"
    "Copy the folder to the device and follow its README."
)
_PATH = click.Path(path_type=Path)


@click.command("info", epilog=_INFO_EPILOG)
@click.argument("model", type=_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--self-test", is_flag=True, help="Golden rows x levels x providers (exit 1: fail).")
@click.option(
    "--provider",
    default="cpu",
    type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False),
    help="Session to describe (cuda: strict, compute nodes on CUDA).",
)
def info(model: Path, as_json: bool, self_test: bool, provider: str) -> None:
    """Describe an ONNX model: signature, opsets, providers and onnxedge metadata."""
    from onnxedge.runtime.predictor import LOGGER_NAME, Predictor

    # The notes Predictor logs are part of what info prints; not twice on stderr.
    quiet = logging.getLogger(f"{LOGGER_NAME}.info")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    # A model that is not usable as it is (logits, no head) is still described.
    predictor = Predictor(model, provider=provider, logger=quiet, require_probabilities=False)
    if self_test:
        from onnxedge.runtime.edge_infer import format_self_test

        report = predictor.self_test()
        echo_json(report, indent=2) if as_json else click.echo(format_self_test(report))
        if not report["passed"]:
            raise OnnxEdgeError(f"self-test failed on {model}")
        return
    described = predictor.describe()
    click.echo(json.dumps(described, indent=2, default=str) if as_json else format_info(described))


@click.command("bundle", epilog=_BUNDLE_EPILOG)
@click.argument("model", type=_PATH)
@click.option("-o", "--output", "out_dir", required=True, type=_PATH, help="Folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace the folder if it exists.")
def bundle(model: Path, out_dir: Path, overwrite: bool) -> None:
    """Write a deploy folder: the model, edge_infer.py (stdlib + numpy + onnxruntime),
    requirements.txt, a README, sample.csv, sample_expected.txt and selftest.json."""
    from onnxedge.runtime.bundle import write_bundle

    written = write_bundle(model, out_dir, overwrite=overwrite)
    click.echo(f"wrote {written.path}/")
    for name in written.files:
        click.echo(f"  {name}")
    click.echo(f"on the device: cd {written.path.name} && pip install -r requirements.txt")
    if written.sample_rows:
        click.echo(f"               {written.run_command}")


def format_info(described: dict[str, Any]) -> str:
    """The text ``onnxedge info`` prints for :meth:`Predictor.describe` output."""
    rows: list[tuple[str, str]] = []

    def add(label: str, *texts: str) -> None:  # one label, then continuation lines
        rows.extend((label if i == 0 else "", text) for i, text in enumerate(texts))

    ir = "" if described.get("ir_version") is None else f", IR {described['ir_version']}"
    add(
        "model",
        f"{described['model']} ({described['size_bytes']:,} bytes, {described['format']}{ir})",
    )
    add("producer", described["producer"])
    opsets = described["opsets"]
    if isinstance(opsets, dict):
        opsets = ", ".join(f"{domain or 'ai.onnx'} {version}" for domain, version in opsets.items())
    add("opsets", str(opsets))
    add("inputs", *map(_node_text, described["inputs"]))
    add("outputs", *map(_node_text, described["outputs"]))
    meta = described["onnxedge"]
    task, head = meta.get("task") or "unknown", meta.get("head")
    add("task", task + (f" ({head} head)" if head else ""))
    refusal = described.get("refusal")
    add("usable", "yes, as it is" if refusal is None else f"no: {refusal}")
    for label, count, names in (
        ("classes", described.get("num_classes"), described.get("class_names")),
        ("features", described.get("num_features"), meta.get("feature_names")),
    ):
        listed = f": {_shorten(', '.join(names))}" if names else ""
        add(label, f"{'unknown' if count is None else count}{listed}")
    if task == "binary":
        add("threshold", str(meta.get("threshold")))
    add("variant", str(meta.get("variant")))
    ort_info = described["onnxruntime"]
    distributions = ", ".join(ort_info["distributions"]) or "none found"
    add("onnxruntime", f"{ort_info['version']} (installed as: {distributions})")
    add("providers", ", ".join(described["available_providers"]))
    if placement := described.get("placement"):
        counts = [(p, n, placement["compute"].get(p, 0)) for p, n in placement["nodes"].items()]
        add("placement", "; ".join(f"{p} {n} nodes ({c} Gemm/MatMul/Conv)" for p, n, c in counts))
    shown = {"task", "head", "class_names", "feature_names", "threshold", "variant", "num_features"}
    extra = sorted((key, value) for key, value in meta.items() if key not in shown)
    add("metadata", *(f"{key}: {_shorten(_as_text(value))}" for key, value in extra))
    other = sorted(described.get("other_metadata", {}).items())
    add("other metadata", *(f"{key}: {_shorten(str(value))}" for key, value in other))
    if described.get("missing_metadata"):
        add("missing", ", ".join(described["missing_metadata"]))
    add("warnings", *described.get("warnings", []))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}".rstrip() for label, text in rows)


def _node_text(node: dict[str, Any]) -> str:
    shape = node.get("shape")
    dims = (
        "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    )
    kind = str(node["type"]).removeprefix("tensor(").removesuffix(")")
    return f"{node['name']}: {kind} {dims}"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
