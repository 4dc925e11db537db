"""The exceptions onnxedge raises; only the CLI turns them into one line ``Error: ...``
and exit code 1. Every layer uses this module, which imports nothing heavy."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a CLI user never sees a traceback)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class OnnxEdgeError(Exception):
    """Base class of every error onnxedge raises for a user to act on."""


class DataError(OnnxEdgeError):
    """A dataset or input file cannot be used (missing column, NaN, bad labels, ...)."""


class InputShapeError(OnnxEdgeError):
    """An input batch does not match the model's signature (rank, feature count)."""


class InputValueError(OnnxEdgeError):
    """An input batch holds values the model refuses (NaN / Inf, non-numeric)."""


class ModelLoadError(OnnxEdgeError):
    """A model file is missing, empty, truncated, not ONNX, or unsafe to open."""


class CheckpointError(OnnxEdgeError):
    """A training run folder is missing files, corrupt, or inconsistent."""


class ProviderUnavailableError(OnnxEdgeError):
    """An execution provider was requested that this onnxruntime cannot give."""


class ExportError(OnnxEdgeError):
    """Export to ONNX failed or produced a model that does not pass the checker."""


class ParityError(OnnxEdgeError):
    """The exported model does not compute what PyTorch and the numpy reference compute;
    ``failures`` names every failing check, so a report lists them all at once."""

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])


class OutputExistsError(OnnxEdgeError):
    """The output path exists and overwriting was not asked for."""


class MissingDependencyError(OnnxEdgeError):
    """An optional dependency is needed for what was asked (ray, pyarrow, torch, ...)."""
