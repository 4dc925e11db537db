"""The one atomic writer: a temp file or folder beside the target, flushed, then moved.

Without ``overwrite`` nothing is replaced: a file is hard-linked to its name, a folder
renamed with ``renameat2(RENAME_NOREPLACE)`` (else after a check that the name is free).
``overwrite`` moves an old folder aside for the instant of the swap, and back if it fails.
An exception removes the temp; a SIGKILL's temps go once older than STALE_SECONDS.
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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from onnxedge.runtime.errors import OnnxEdgeError, OutputExistsError

TEMP_SUFFIX = ".onnxedge-tmp"
#: A temp older than this is a killed run's (a live writer touches its temp far sooner).
STALE_SECONDS = 6 * 3600
_RENAME_NOREPLACE, _AT_FDCWD = 1, -100
_SIGNALS = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
_LIVE: set[Path] = set()  # temps not committed or discarded, for exit_on_signals
_Path = str | os.PathLike[str]
_Error = type[OnnxEdgeError]
_log = logging.getLogger("onnxedge")


def exists_message(target: _Path) -> str:
    """The one text for an output that exists while overwriting was not asked for."""
    return f"{target} already exists; pass --overwrite to replace it"


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """``renameat2(source, target, flags)``; False where the system has none."""
    call = sys.platform == "linux" and getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if not call:
        return False
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(target))


def _flush(*paths: Path) -> None:
    """fsync files (else an error) and folders (where the file system can); never a FIFO."""
    for item in paths:
        mode = os.lstat(item).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            with contextlib.suppress(OSError) if stat.S_ISDIR(mode) else contextlib.nullcontext():
                fd = os.open(item, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _linked(temp: Path, target: Path) -> bool:
    """Hard-link ``temp`` to ``target`` (never replaces); False without hard links (vfat)."""
    try:
        os.link(temp, target)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            return False
        raise
    return True


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)  # a folder (never follows a link)
    with contextlib.suppress(OSError):
        path.unlink()  # a file or a link


def _clear_stale(target: Path) -> None:
    """Remove this target's temps left by a killed run (older than STALE_SECONDS)."""
    stale = []
    for leftover in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.lstat().st_mtime > STALE_SECONDS:
                _remove(leftover)
                stale.append(leftover.name)
    if stale:
        where, names = target.parent, ", ".join(sorted(stale))
        _log.warning("removed temporary files left by an interrupted run in %s: %s", where, names)


def place(temp: Path, target: Path, *, overwrite: bool, error: _Error = OnnxEdgeError) -> None:
    """Flush ``temp`` (a file or a folder) and move it to ``target``.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is false.
        OnnxEdgeError: of type ``error``: the data cannot be flushed or moved.
    """
    try:
        # only our own temp is walked: the target's parent may hold a FIFO
        _flush(temp, *(Path(root, n) for root, ds, fs in os.walk(temp) for n in ds + fs))
        if not temp.is_dir() and overwrite:
            with contextlib.suppress(OSError):  # keep the rights of the file replaced
                os.chmod(temp, target.stat().st_mode & 0o7777)
            os.replace(temp, target)
        elif not temp.is_dir() and _linked(temp, target):
            temp.unlink()
        elif overwrite and os.path.lexists(target):
            # the old folder steps aside, and comes back if the new one cannot take its place
            # (a signal included); touched, so no stale-temp sweep takes it for hours
            aside = temp.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
            os.rename(target, aside)
            try:
                os.utime(aside)
                os.rename(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.rename(aside, target)
                raise
            _remove(aside)
        elif not _renameat2(temp, target, _RENAME_NOREPLACE):
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "exists", str(target))
            os.rename(temp, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise OutputExistsError(exists_message(target)) from None
        raise error(f"cannot write {target}: {exc.strerror or exc}") from None
    _flush(target.parent)


class Staged:
    """An empty temp file (or folder) beside ``target``; :meth:`commit` moves it there,
    leaving its ``with`` block without a commit removes it; ``done`` once either happened.
    Raises OutputExistsError if ``target`` exists (without ``overwrite``) or is no folder;
    ``error`` if a file is staged over a folder or the target's folder cannot be written.
    """

    def __init__(
        self, target: _Path, *, overwrite: bool, folder: bool = False, error: _Error = OnnxEdgeError
    ) -> None:
        self.target, self.overwrite, self.error = (target := Path(target)), overwrite, error
        if target.is_dir() and not folder:
            raise error(f"{target} is a folder; give a file name")
        if folder and target.exists() and not target.is_dir():
            raise OutputExistsError(f"{target} exists and is not a folder; choose another name")
        if target.exists() and not overwrite:
            raise OutputExistsError(exists_message(target))
        _clear_stale(target)
        self.path = target.parent / f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        self.done = False
        _LIVE.add(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.path.mkdir if folder else self.path.touch)(exist_ok=False)  # umask applies
        except OSError as exc:
            raise error(f"cannot write to {target.parent}: {exc.strerror or exc}") from None

    def commit(self) -> Path:
        """Flush the temp and move it to the target (see :func:`place`); returns the target."""
        if not self.done:
            place(self.path, self.target, overwrite=self.overwrite, error=self.error)
            _LIVE.discard(self.path)
            self.done = True
        return self.target

    def discard(self, *exc: object) -> None:
        """Remove the temp (nothing after a commit); the target is not touched."""
        if not self.done:
            _LIVE.discard(self.path)
            _remove(self.path)
            self.done = True

    def __enter__(self) -> Staged:
        return self

    __exit__ = discard


@contextlib.contextmanager
def atomic_file(
    target: _Path, *, overwrite: bool, error: _Error = OnnxEdgeError, folder: bool = False
) -> Iterator[Path]:
    """Yield a temp file (or ``folder``) that becomes ``target`` when the block ends; an
    exception leaves ``target`` untouched (see :class:`Staged`)."""
    with Staged(target, overwrite=overwrite, folder=folder, error=error) as staged:
        yield staged.path
        staged.commit()


def atomic_folder(
    target: _Path, *, overwrite: bool, error: _Error = OnnxEdgeError
) -> contextlib.AbstractContextManager[Path]:
    """:func:`atomic_file` for a folder: yields an empty temp folder that becomes ``target``."""
    return atomic_file(target, overwrite=overwrite, error=error, folder=True)


def _on_signal(signum: int, frame: object) -> None:
    for number in _SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(number, signal.SIG_IGN)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM / SIGHUP raise ``SystemExit(128 + signum)`` (a shell's
    status for a signalled job), and an exception removes every uncommitted temp."""
    main = threading.current_thread() is threading.main_thread()  # handlers need it
    previous = {number: signal.signal(number, _on_signal) for number in _SIGNALS if main}
    try:
        yield
    except BaseException:
        for path in list(_LIVE):
            _remove(path)
        _LIVE.clear()
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
