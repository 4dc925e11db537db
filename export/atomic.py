"""Files that appear whole or not at all: a temp file beside the target, then a rename.

Export (models), verify (JSON reports) and the edge variants all write through
:func:`atomic_file`, so a failure or Ctrl-C never leaves a half-written file at the
target and an existing file there stays untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onnxedge.runtime.errors import ExportError, OnnxEdgeError, OutputExistsError


def readable_like_open(path: Path) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode ``open()`` would have: 0666 less umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    error: type[OnnxEdgeError] = ExportError,
) -> Iterator[Path]:
    """Yield a temp file beside ``target`` that replaces ``target`` when the block succeeds.

    On any error the temp file is removed and ``target`` is untouched.

    Args:
        target: the file to write.
        overwrite: replace an existing ``target``.
        error: the error raised when the folder cannot be created or written.

    Raises:
        OutputExistsError: ``target`` exists (or appears meanwhile) and ``overwrite`` is
            false.
        OnnxEdgeError: of type ``error``: ``target`` is a folder, or its folder cannot be
            created or written.
    """
    path = Path(target)
    if path.is_dir():
        raise error(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise error(f"cannot write to {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while the block ran
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
        readable_like_open(tmp)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
