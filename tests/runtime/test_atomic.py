"""The one atomic writer: concurrent writers, no-replace, permissions, stale temps."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from onnxedge.runtime import atomic
from onnxedge.runtime.atomic import Staged, atomic_file, atomic_folder
from onnxedge.runtime.errors import DataError, OutputExistsError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _race(target: Path, *, folder: bool) -> tuple[list[str], list[BaseException]]:
    """Two writers into one new name, both past the start check before either commits."""
    both_staged = threading.Barrier(2)
    won: list[str] = []
    failed: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            with Staged(target, overwrite=False, folder=folder) as staged:
                if folder:
                    (staged.path / "part").write_text(tag * 1000)
                else:
                    staged.path.write_text(tag * 1000)
                both_staged.wait()
                staged.commit()
            won.append(tag)
        except OutputExistsError as exc:
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, failed


@pytest.mark.parametrize("no_renameat2", [False, True])
@pytest.mark.parametrize("folder", [False, True])
def test_of_two_concurrent_writers_exactly_one_wins(
    tmp_path: Path, folder: bool, no_renameat2: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if no_renameat2:
        monkeypatch.setattr(atomic, "_renameat2", lambda *args: False)
    target = tmp_path / "out"
    won, failed = _race(target, folder=folder)
    assert len(won) == 1 and len(failed) == 1
    assert str(failed[0]) == f"{target} already exists; pass --overwrite to replace it"
    written = (target / "part") if folder else target
    assert written.read_text() == won[0] * 1000  # the winner's file, whole
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_a_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "o.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("no_renameat2", [False, True])
def test_overwrite_replaces_a_folder(
    tmp_path: Path, no_renameat2: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if no_renameat2:
        monkeypatch.setattr(atomic, "_renameat2", lambda *args: False)
    target = tmp_path / "run"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert _leftovers(tmp_path) == []


def test_new_files_and_folders_get_plain_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        with atomic_file(tmp_path / "f", overwrite=False) as tmp:
            tmp.write_text("x")
        with atomic_folder(tmp_path / "d", overwrite=False) as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_an_error_in_the_block_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "o.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_existing_target_is_refused_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "o.txt"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        Staged(target, overwrite=False)
    with pytest.raises(DataError, match=r"is a folder; give a file name$"):
        Staged(tmp_path, overwrite=True, error=DataError)


def test_stale_temps_of_a_killed_run_are_removed_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "scores.csv"
    stale = tmp_path / f".scores.csv.0123456789ab{atomic.TEMP_SUFFIX}"
    stale.write_text("partial")
    old = time.time() - atomic.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    fresh = tmp_path / f".scores.csv.ba9876543210{atomic.TEMP_SUFFIX}"  # a live writer's
    fresh.write_text("busy")
    with (
        caplog.at_level(logging.WARNING, logger="onnxedge"),
        atomic_file(target, overwrite=False) as tmp,
    ):
        tmp.write_text("new")
    assert not stale.exists() and fresh.exists()
    assert caplog.messages == [
        f"removed temporary files left by an interrupted run in {tmp_path}: {stale.name}"
    ]


@pytest.mark.parametrize("folder", [False, True])
def test_a_fifo_beside_the_target_is_never_opened(tmp_path: Path, folder: bool) -> None:
    # Flushing the target's folder must not open what else lives there: opening a FIFO
    # with no writer blocks forever. A subprocess with a timeout turns a hang into a fail.
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe")
    code = (
        "from pathlib import Path\n"
        "from onnxedge.runtime.atomic import atomic_file, atomic_folder\n"
        f"target = Path({str(tmp_path / 'out')!r})\n"
        f"with (atomic_folder if {folder} else atomic_file)(target, overwrite=False) as temp:\n"
        "    (temp / 'part' if temp.is_dir() else temp).write_text('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "out" / "part" if folder else tmp_path / "out"
    assert written.read_text() == "done"


def test_sigterm_exits_128_plus_signum_and_removes_live_temps(tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as caught, atomic.exit_on_signals():
        staged = Staged(tmp_path / "o.txt", overwrite=False)  # held outside a with block
        staged.path.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_done_after_a_commit_or_a_discard(tmp_path: Path) -> None:
    kept, dropped = Staged(tmp_path / "a", overwrite=False), Staged(tmp_path / "b", overwrite=False)
    assert not kept.done and not dropped.done
    assert kept.commit() == tmp_path / "a"
    dropped.discard()
    assert kept.done and dropped.done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_a_file_system_without_hard_links_still_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vfat / exFAT refuse os.link with EPERM: the no-replace rename takes over
    import errno

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    target = tmp_path / "out.csv"
    with atomic_file(target, overwrite=False) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    racer = Staged(tmp_path / "race.csv", overwrite=False)
    racer.path.write_text("late")
    (tmp_path / "race.csv").write_text("first")  # another run finished first
    with pytest.raises(atomic.OutputExistsError):
        racer.commit()
    racer.discard()
    assert (tmp_path / "race.csv").read_text() == "first"
    assert not list(tmp_path.glob(f"*{atomic.TEMP_SUFFIX}"))
