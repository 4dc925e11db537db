"""The ``onnxedge`` command line: a thin click group over the library.

Commands are loaded lazily by name, so ``onnxedge --help`` and ``onnxedge score``
never import torch; ``train`` / ``export`` / ``verify`` live beside the code they
call (``onnxedge.models.cli``, ``onnxedge.export.cli``) and need the ``train``
extra. Library errors (:class:`OnnxEdgeError`) become one line ``Error: ...`` and
exit code 1 here, and nowhere else.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click
from onnxedge.runtime.errors import MissingDependencyError, OnnxEdgeError

# name -> ("module:attribute", one-line summary shown by --help without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("onnxedge.models.cli:train", "Train a classifier on a dataset into a run folder."),
    "export": ("onnxedge.export.cli:export", "Export a run folder to a verified ONNX model."),
    "verify": ("onnxedge.export.cli:verify", "Check an ONNX model against PyTorch and numpy."),
    "score": ("onnxedge.runtime.score_cli:score", "Score a CSV/NPY/Parquet/JSONL file, streaming."),
    "info": ("onnxedge.runtime.commands:info", "Show a model's signature, opsets and metadata."),
    "bundle": ("onnxedge.runtime.commands:bundle", "Write a deploy folder for a device."),
    "optimize": (
        "onnxedge.export.variants_cli:optimize",
        "Make a verified int8 / fp16 (or ORT-format) edge variant of a model.",
    ),
    "wrap": (
        "onnxedge.export.wrap_cli:wrap",
        "Add the head, label and contract to a logits-only ONNX model.",
    ),
}

_TORCH_COMMANDS = frozenset({"train", "export", "verify", "optimize", "wrap"})


class LazyGroup(click.Group):
    """A click group whose commands are imported only when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if cmd_name in _TORCH_COMMANDS and exc.name in {"torch", "onnx", "onnxscript"}:
                raise click.ClickException(
                    f"`onnxedge {cmd_name}` needs the training extras ({exc.name} is not "
                    "installed): pip install 'onnxedge[train]'"
                ) from None
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Summaries come from COMMANDS so that --help imports no command module.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (OnnxEdgeError, MissingDependencyError) as exc:
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    """An error message on one line (a CLI user never sees a traceback)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Examples:\n\n"
        "\b\n"
        "  onnxedge train --dataset digits -o runs/digits\n"
        "  onnxedge export runs/digits -o digits.onnx\n"
        "  onnxedge verify digits.onnx --run runs/digits\n"
        "  onnxedge score digits.onnx rows.csv -o scores.parquet\n"
        "\b\n"
        "Run `onnxedge COMMAND --help` for each command's options."
    ),
)
# package_name: the version is read from the metadata only when --version is asked.
@click.version_option(None, "-V", "--version", package_name="onnxedge", prog_name="onnxedge")
def cli() -> None:
    """onnxedge: PyTorch classifiers to verified ONNX models, scored anywhere."""
    _log_to_stderr()


def _log_to_stderr() -> None:
    """Show onnxedge's warnings (e.g. what a plain model does not say) as one line each."""
    logger = logging.getLogger("onnxedge")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("Warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="onnxedge")
