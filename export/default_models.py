"""``make export``: train, export and verify the two default models into one folder.

``python -m onnxedge.export.default_models --out artifacts`` trains ``digits`` and
``breast-cancer`` (seed 0: a fresh clone reproduces them) into ``artifacts/runs/<name>``,
exports ``artifacts/<name>.onnx`` with ``<name>.parity.json``, writes ``summary.json`` and
prints a table; it exits 1 if any model fails a step or ``MIN_VAL_ACCURACY``, after all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from onnxedge.runtime.errors import ExportError, OnnxEdgeError, one_line

#: The default models, each named as the bundled dataset it is trained on.
DEFAULT_MODELS: tuple[str, ...] = ("digits", "breast-cancer")
#: Validation accuracy each default model must reach (the product's promise for them).
MIN_VAL_ACCURACY = 0.95
EDGE_VARIANTS: tuple[str, ...] = ("int8", "fp16")


@dataclass
class DefaultModel:
    """One default model's outcome: where its files went, its task, validation accuracy,
    times, size, parity summary, variants' figures and errors (one line each)."""

    name: str
    run_dir: Path
    model_path: Path
    report_path: Path
    task: str = ""
    val_accuracy: float = float("nan")
    train_seconds: float = 0.0
    export_seconds: float = 0.0
    size_bytes: int = 0
    parity: dict[str, Any] | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Trained, exported, verified and accurate enough."""
        return not self.errors and self.parity is not None and bool(self.parity["passed"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an entry of ``summary.json``)."""
        paths = {k: str(v) for k, v in asdict(self).items() if isinstance(v, Path)}
        return {"passed": self.passed, **asdict(self), **paths}


def parse_variants(text: str | None) -> tuple[str, ...]:
    """``"int8,fp16"`` -> ``("int8", "fp16")``; ExportError for an unknown variant."""
    names = tuple(v.strip() for v in (text or "").split(",") if v.strip())
    unknown = [v for v in names if v not in EDGE_VARIANTS]
    if unknown:
        raise ExportError(
            f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(EDGE_VARIANTS)}"
        )
    return names


def export_default_models(
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] = DEFAULT_MODELS,
    options: Any = None,
    min_accuracy: float = MIN_VAL_ACCURACY,
    variants: Sequence[str] = (),
    progress: bool | None = None,
) -> list[DefaultModel]:
    """Train, export and verify each of ``names`` into ``out_dir`` with ``options``
    (``TrainOptions``), then make ``variants``; never stops at the first failure.
    ``progress``: training progress bars (None: only on a terminal).

    Raises:
        ExportError: an unknown name or variant (before anything is trained).
    """
    from onnxedge.export.onnx_export import checkpoint_to_onnx
    from onnxedge.models.train import TrainOptions, train

    unknown = [n for n in names if n not in DEFAULT_MODELS]
    if unknown:
        raise ExportError(
            f"unknown default model(s) {', '.join(unknown)}; expected {', '.join(DEFAULT_MODELS)}"
        )
    variants = parse_variants(",".join(variants))
    out = Path(out_dir)
    results = []
    for name in names:
        result = DefaultModel(
            name, out / "runs" / name, out / f"{name}.onnx", out / f"{name}.parity.json"
        )
        results.append(result)
        try:
            started = time.perf_counter()
            trained = train(
                name, result.run_dir, options or TrainOptions(), overwrite=True, progress=progress
            )
            result.train_seconds = time.perf_counter() - started
            result.task, result.val_accuracy = trained.task, trained.val_accuracy
            if trained.val_accuracy < min_accuracy:
                result.errors.append(
                    f"{name}: validation accuracy {trained.val_accuracy:.4f} is below "
                    f"{min_accuracy:g}"
                )
            exported = checkpoint_to_onnx(
                result.run_dir, result.model_path, overwrite=True, report_path=result.report_path
            )
            result.export_seconds, result.size_bytes = exported.seconds, exported.size_bytes
            result.parity = exported.report.summary() if exported.report is not None else None
            for variant in variants:
                result.variants[variant] = _make_variant(result, variant)
        except OnnxEdgeError as exc:
            result.errors.append(f"{name}: {one_line(exc)}")
            if result.parity is None and result.report_path.is_file():
                result.parity = json.loads(result.report_path.read_text()).get("summary")
    return results


def _make_variant(result: DefaultModel, variant: str) -> dict[str, Any]:
    """Make one edge variant beside the model; its figures."""
    from onnxedge.export.variants import make_variant, variant_path

    path = variant_path(result.model_path, variant)
    figures = make_variant(result.model_path, result.run_dir, variant, path, overwrite=True)
    keys = ("label_agreement", "accuracy_drop", "loss_delta", "max_probability_error", "passed")
    found = figures.to_dict()
    return {"path": str(path), "size_bytes": path.stat().st_size, **{k: found.get(k) for k in keys}}


def render_summary(results: Sequence[DefaultModel], seconds: float) -> str:
    """The summary table ``make export`` prints."""
    header = (
        f"{'model':14}{'task':11}{'val acc':>8}{'onnx acc':>9}{'max |dp|':>10}"
        f"{'max |dlogit|':>13}{'checks':>8}{'size':>10}  path"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        p = r.parity or {}
        acc = p.get("accuracy", {}).get("onnxruntime", float("nan"))
        max_abs = p.get("max_abs_error", {})
        checks = f"{p.get('checks', 0) - p.get('failed', 0)}/{p.get('checks', 0)}" if p else "-"
        lines.append(
            f"{r.name:14}{r.task or '-':11}{r.val_accuracy:>8.4f}{acc:>9.4f}"
            f"{_num(max_abs.get('probabilities')):>10}{_num(max_abs.get('logits')):>13}{checks:>8}"
            f"{r.size_bytes / 1024:>8.1f}KB  {r.model_path}"
        )
        for variant, v in r.variants.items():
            drop = v.get("accuracy_drop")
            variant_acc = acc - drop if isinstance(drop, int | float) else float("nan")
            agreement = v.get("label_agreement")
            agree = f" (label agreement {agreement:.2%})" if isinstance(agreement, float) else ""
            lines.append(
                f"  {variant:12}{'':11}{'':8}{variant_acc:>9.4f}"
                f"{_num(v.get('max_probability_error')):>10}{'':13}{'':8}"
                f"{v.get('size_bytes', 0) / 1024:>8.1f}KB  {v.get('path')}{agree}"
            )
    passed = sum(r.passed for r in results)
    lines.append(
        f"{passed} of {len(results)} models trained, exported and verified in {seconds:.1f}s"
        + ("" if passed == len(results) else " -- FAILED")
    )
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.2e}" if isinstance(value, int | float) else "-"


@click.command(
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  python -m onnxedge.export.default_models --out artifacts\n"
        "  python -m onnxedge.export.default_models --out /tmp/a --models digits --epochs 5 \\\n"
        "      --min-accuracy 0"
    )
)
@click.option(
    "--out",
    "out_dir",
    default="artifacts",
    show_default=True,
    type=click.Path(),
    help="Artifacts folder (runs/, the .onnx files, parity reports, summary.json).",
)
@click.option(
    "--models",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Which default models to build, comma-separated.",
)
@click.option("--epochs", type=int, default=None, help="Override the maximum training epochs.")
@click.option(
    "--min-accuracy",
    type=float,
    default=MIN_VAL_ACCURACY,
    show_default=True,
    help="Validation accuracy each model must reach.",
)
@click.option("--variants", default=None, help="Also make edge variants: int8, fp16.")
@click.option("--quiet", is_flag=True, help="No training progress bars.")
def main(
    out_dir: str,
    models: str,
    epochs: int | None,
    min_accuracy: float,
    variants: str | None,
    quiet: bool,
) -> None:
    """Train, export and verify the default models (digits, breast-cancer)."""
    from onnxedge.export.verify import write_json_atomic
    from onnxedge.models.train import TrainOptions

    started = time.perf_counter()
    try:
        results = export_default_models(
            out_dir,
            names=[n.strip() for n in models.split(",") if n.strip()],
            options=TrainOptions() if epochs is None else TrainOptions(epochs=epochs),
            min_accuracy=min_accuracy,
            variants=parse_variants(variants),
            progress=False if quiet else None,
        )
    except OnnxEdgeError as exc:
        raise click.ClickException(one_line(exc)) from None
    seconds = time.perf_counter() - started
    summary = {
        "passed": all(r.passed for r in results),
        "seconds": round(seconds, 2),
        "models": [r.to_dict() for r in results],
    }
    write_json_atomic(Path(out_dir) / "summary.json", summary)
    click.echo(render_summary(results, seconds))
    errors = [e for r in results for e in r.errors]
    for error in errors:
        click.echo(f"Error: {error}", err=True)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="python -m onnxedge.export.default_models")
