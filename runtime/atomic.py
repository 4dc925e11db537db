"""The one atomic writer: a temp file or folder beside the target, then one final step.

Every command that writes (``score``, ``bundle``, ``export``, ``optimize``, ``train``,
Ray output folders) goes through :class:`Staged` (or the context managers
:func:`atomic_file` / :func:`atomic_folder` built on it):

* the temp name is ``.<name>.<random>.onnxedge-tmp`` beside the target, so the final
  step is a rename on one file system and readers see the old target or the whole new
  one, never a part;
* before that step the data are flushed to disk (``fsync``);
* without ``overwrite`` the final step never replaces anything: a file is hard-linked
  to the target (``os.link`` fails if the name exists) and its temp name unlinked; a
  folder is renamed with ``renameat2(RENAME_NOREPLACE)``. Of two writers racing to one
  new name exactly one wins; the other gets :class:`OutputExistsError`;
* on any exception (Ctrl-C, SIGTERM / SIGHUP through :func:`exit_on_signals`
  included) the temp is removed and the target untouched;
* files get the mode a plain ``open()`` gives (0666 less the umask), or the mode of
  the file they replace.

A run killed with SIGKILL cannot clean up; the next write to the same target removes
temps of its name older than :data:`STALE_SECONDS` and names them in a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError, OutputExistsError

__all__ = [
    "STALE_SECONDS",
    "TEMP_SUFFIX",
    "Staged",
    "atomic_file",
    "atomic_folder",
    "exists_message",
    "exit_on_signals",
    "place",
    "plain_mode",
]

TEMP_SUFFIX = ".onnxedge-tmp"
#: A temp of the target's name older than this is taken for a killed run's leftover
#: (a live writer touches its temp far more often than this).
STALE_SECONDS = 6 * 3600
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_log = logging.getLogger("onnxedge")
#: Temps not yet committed or discarded: a signal that lands between creating one and
#: entering its ``with`` block still finds it (:func:`exit_on_signals` removes them).
_LIVE: set[Path] = set()


def exists_message(target: str | os.PathLike[str]) -> str:
    """The one text for an output that exists while overwriting was not asked for."""
    return f"{target} already exists; pass --overwrite to replace it"


def plain_mode(*, folder: bool = False) -> int:
    """The mode ``open()`` (0666) or ``mkdir()`` (0777) gives under the current umask.

    Read from ``/proc`` where it can be: ``os.umask`` sets the process's mask to read
    it, which another thread creating a file at that moment would see.
    """
    mask: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for text in Path("/proc/self/status").read_text().splitlines():
            if text.startswith("Umask:"):
                mask = int(text.split()[1], 8)
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """``renameat2(source, target, flags)``; False where the system has no such call.

    Raises:
        OSError: the call exists and failed (EEXIST for an existing target, ...).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    status = call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(target))


def _fsync(path: Path, *, tree: bool = False) -> None:
    """Flush a file or folder to disk; with ``tree``, every regular file and folder below.

    Only our own staged output is walked (``tree``): the target's parent is one folder
    entry to flush, and walking it would open whatever else lives there (a FIFO blocks).
    """
    paths = [path]
    if tree and path.is_dir():
        paths = [Path(root) / name for root, _, names in os.walk(path) for name in names]
        paths += [Path(root) for root, _, _ in os.walk(path)]
    for item in paths:
        mode = os.lstat(item).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            continue  # never open a FIFO, socket or device (open could block)
        # Some file systems cannot fsync a folder; a file that cannot be flushed (EIO,
        # ENOSPC) is an error: the output is not known to be complete.
        with contextlib.suppress(OSError) if stat.S_ISDIR(mode) else contextlib.nullcontext():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _clear_stale(target: Path) -> None:
    """Remove this target's temps left by a killed run (older than STALE_SECONDS)."""
    stale = []
    with contextlib.suppress(OSError):
        for leftover in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if time.time() - leftover.lstat().st_mtime > STALE_SECONDS:
                    _remove(leftover)
                    stale.append(leftover.name)
    if stale:
        _log.warning(
            "removed temporary files left by an interrupted run in %s: %s",
            target.parent,
            ", ".join(sorted(stale)),
        )


def place(
    temp: Path,
    target: Path,
    *,
    overwrite: bool,
    error: type[OnnxEdgeError] = OnnxEdgeError,
) -> None:
    """The final step: flush ``temp`` (a file or a folder) and move it to ``target``.

    Without ``overwrite`` it never replaces: a file is hard-linked (then its temp name
    unlinked), a folder renamed with RENAME_NOREPLACE.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        OnnxEdgeError: of type ``error``: the file system refused the move.
    """
    try:
        _fsync(temp, tree=True)
    except OSError as exc:
        raise error(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        if overwrite and (target.exists() or target.is_symlink()):
            _replace(temp, target)
        else:
            _place_new(temp, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise OutputExistsError(exists_message(target)) from None
        raise error(f"cannot write {target}: {exc.strerror or exc}") from None
    _fsync(target.parent)


def _place_new(temp: Path, target: Path) -> None:
    """Move ``temp`` to a ``target`` that must not exist; never replaces."""
    if not temp.is_dir():
        try:
            os.link(temp, target)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # A file system without hard links: RENAME_NOREPLACE, as for folders.
        else:
            temp.unlink()
            return
    if not _renameat2(temp, target, _RENAME_NOREPLACE):
        # No renameat2: a rename onto an existing non-empty folder fails anyway; for a
        # file (or an empty folder) this check leaves a short race.
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target))
        os.rename(temp, target)


def _replace(temp: Path, target: Path) -> None:
    """Move ``temp`` over an existing ``target`` (``overwrite``)."""
    if not temp.is_dir():
        with contextlib.suppress(OSError):  # keep the rights of the file replaced
            os.chmod(temp, target.stat().st_mode & 0o7777)
        os.replace(temp, target)
        return
    # Swap the two folders in one step where possible, then drop the old one (now at
    # the temp name); else move the old one aside first.
    if _renameat2(temp, target, _RENAME_EXCHANGE):
        _remove(temp)
        return
    aside = temp.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    os.rename(target, aside)
    try:
        os.rename(temp, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.rename(aside, target)  # put the previous output back
        raise
    _remove(aside)


class Staged:
    """A temp file or folder beside ``target`` that :meth:`commit` moves into place.

    Use as a context manager: leaving the block without a commit (any exception)
    removes the temp. The temp file is created empty (mode as ``open()`` makes it);
    the temp folder is created empty.

    Args:
        target: the file or folder to write.
        overwrite: whether an existing target may be replaced.
        folder: stage a folder instead of a file.
        error: the OnnxEdgeError subclass raised when the folder cannot be written.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        OnnxEdgeError: of type ``error``: the target is a folder (file form) or a file
            (folder form), or its folder cannot be written.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        overwrite: bool,
        folder: bool = False,
        error: type[OnnxEdgeError] = OnnxEdgeError,
    ) -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.folder = folder
        self.error = error
        if self.target.is_dir() and not folder:
            raise error(f"{self.target} is a folder; give a file name")
        if self.target.exists() and not overwrite:
            raise OutputExistsError(exists_message(self.target))
        if folder and self.target.exists() and not self.target.is_dir():
            raise error(f"{self.target} exists and is not a folder; choose another name")
        parent = self.target.parent
        _clear_stale(self.target)
        self.path = parent / f".{self.target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        _LIVE.add(self.path)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if folder:
                self.path.mkdir()
            else:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as exc:
            raise error(f"cannot write to {parent}: {exc.strerror or exc}") from None
        self.done = False

    def commit(self) -> Path:
        """Flush the temp and move it to the target (see :func:`place`); returns the target."""
        if not self.done:
            place(self.path, self.target, overwrite=self.overwrite, error=self.error)
            self.done = True
            _LIVE.discard(self.path)
        return self.target

    def discard(self) -> None:
        """Remove the temp (nothing after a commit); the target is not touched."""
        if not self.done:
            self.done = True
            _remove(self.path)
            _LIVE.discard(self.path)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    error: type[OnnxEdgeError] = OnnxEdgeError,
) -> Iterator[Path]:
    """Yield a temp file path beside ``target`` that becomes ``target`` when the block ends.

    See :class:`Staged` for the arguments and what is raised; on an exception in the
    block the temp is removed and ``target`` untouched.
    """
    with Staged(target, overwrite=overwrite, error=error) as staged:
        yield staged.path
        staged.commit()


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    error: type[OnnxEdgeError] = OnnxEdgeError,
) -> Iterator[Path]:
    """Yield an empty temp folder beside ``target`` that becomes ``target`` at the end.

    See :class:`Staged` for the arguments and what is raised.
    """
    with Staged(target, overwrite=overwrite, folder=True, error=error) as staged:
        yield staged.path
        staged.commit()


class _Terminated(SystemExit):
    """Raised in the main thread by SIGTERM / SIGHUP, so that temps are removed."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # A second signal while cleaning up must not cut the cleanup short.
    for name in ("SIGTERM", "SIGHUP"):
        with contextlib.suppress(AttributeError, ValueError):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SystemExit(128 + signum)`` while the block runs.

    The exit unwinds like Ctrl-C does: every :class:`Staged` temp is removed, nothing
    is printed, and the process ends with the status a shell gives a signalled job.
    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for name in ("SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, _on_signal)
    try:
        yield
    except (_Terminated, KeyboardInterrupt):
        for path in list(_LIVE):
            _remove(path)
        _LIVE.clear()
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
