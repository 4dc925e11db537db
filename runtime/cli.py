"""The ``onnxedge`` command line: a thin click group over the library.

Commands are loaded lazily by name, so ``onnxedge --help`` and ``onnxedge score`` never
load torch. Library errors (:class:`OnnxEdgeError`) become one line ``Error: ...`` and
exit code 1 here and nowhere else (with ``--json`` also ``{"error": "..."}`` on stdout);
SIGTERM and SIGHUP unwind like Ctrl-C, leave no temporary file and exit 128 + signum.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

import click
from onnxedge.runtime.atomic import exit_on_signals
from onnxedge.runtime.errors import MissingDependencyError, OnnxEdgeError, one_line

_JSON_KEY = "onnxedge.json"
_JSON_PRINTED = "onnxedge.json_printed"

# name -> ("module:attribute", one-line summary shown by --help without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("onnxedge.models.cli:train", "Train a classifier on a dataset into a run folder."),
    "export": ("onnxedge.export.cli:export", "Export a run folder to a verified ONNX model."),
    "verify": ("onnxedge.export.cli:verify", "Check an ONNX model against PyTorch and numpy."),
    "score": ("onnxedge.runtime.score_cli:score", "Score a CSV/NPY/Parquet/JSONL file, streaming."),
    "info": ("onnxedge.runtime.commands:info", "Show a model's signature, opsets and metadata."),
    "bundle": ("onnxedge.runtime.commands:bundle", "Write a deploy folder for a device."),
    "optimize": ("onnxedge.export.variants_cli:optimize", "Make a verified int8 / fp16 variant."),
    "wrap": ("onnxedge.export.wrap_cli:wrap", "Add the head, label and contract to logits."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported only when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name][0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            torch_command = module_name.startswith(("onnxedge.models", "onnxedge.export"))
            if torch_command and exc.name in {"torch", "onnxscript", "onnx"}:
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
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The error boundary below must know whether the command was asked for JSON.
        ctx.meta[_JSON_KEY] = "--json" in args[: args.index("--") if "--" in args else None]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM / SIGHUP unwind like Ctrl-C (temps removed) and exit 128 + signum.
        with exit_on_signals():
            try:
                return super().invoke(ctx)
            except (OnnxEdgeError, MissingDependencyError) as exc:
                message = one_line(exc)
                # One JSON object on stdout: a command that already printed its result
                # (a failing report) is not followed by a second one.
                if ctx.meta.get(_JSON_KEY) and not ctx.meta.get(_JSON_PRINTED):
                    click.echo(json.dumps({"error": message}))
                raise click.ClickException(message) from None


def echo_json(data: Any, *, indent: int | None = None) -> None:
    """Print a command's JSON result; a later error then prints no second JSON object."""
    context = click.get_current_context(silent=True)
    if context is not None:
        context.find_root().meta[_JSON_PRINTED] = True
    click.echo(json.dumps(data, indent=indent))


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
    # onnxedge's warnings (e.g. what a plain model does not say), one line each.
    logger = logging.getLogger("onnxedge")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("Warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="onnxedge")
