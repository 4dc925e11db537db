"""The installed onnxedge version, read from the package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onnxedge")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"


def library_versions(*modules: str) -> dict[str, str]:
    """onnxedge's version, each named (already loaded) module's ``__version__`` and
    Python's: what train, export and wrap record."""
    import importlib
    import platform

    found = {name: importlib.import_module(name).__version__ for name in modules}
    return {"onnxedge": __version__, **found, "python": platform.python_version()}
