"""Files that appear whole or not at all: a temp file beside the target, then a rename.

Export (models), verify (JSON reports) and the edge variants all write through
:func:`atomic_file`, so a failure or Ctrl-C never leaves a half-written file at the
target and an existing file there stays untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from onnxedge.runtime.atomic import atomic_file as _atomic_file
from onnxedge.runtime.atomic import plain_mode
from onnxedge.runtime.errors import ExportError, OnnxEdgeError


def readable_like_open(path: Path) -> None:
    """Give a file the mode ``open()`` would have: 0666 less umask (runtime/atomic.py)."""
    os.chmod(path, plain_mode())


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    error: type[OnnxEdgeError] = ExportError,
) -> Iterator[Path]:
    """Yield a temp file beside ``target`` that becomes ``target`` when the block succeeds.

    The one writer of :mod:`onnxedge.runtime.atomic`, with ``error`` defaulting to
    :class:`ExportError`. On any error the temp file is removed and ``target`` is
    untouched.

    Raises:
        OutputExistsError: ``target`` exists (or appears meanwhile) and ``overwrite`` is
            false.
        OnnxEdgeError: of type ``error``: ``target`` is a folder, or its folder cannot be
            created or written.
    """
    with _atomic_file(target, overwrite=overwrite, error=error) as tmp:
        yield tmp
