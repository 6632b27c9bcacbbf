"""Room for a run's records: the journal's reserve past its end, preflight's runs_dir check."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.runner import journal as journal_module
from orchestrator.runner import room
from orchestrator.runner.journal import Journal, read_journal
from orchestrator.runner.room import JOURNAL_RESERVE_BYTES, check_runs_dir, release, reserve


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture
def reserving(tmp_path: Path) -> Path:
    """``tmp_path``, where the filesystem can reserve (skip on one that cannot)."""
    probe = tmp_path / "probe"
    descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        reserve(descriptor, 4096)
    except OSError as exc:
        if exc.errno in room.UNSUPPORTED:
            pytest.skip(f"{tmp_path}'s filesystem cannot reserve: {exc}")
        raise
    finally:
        os.close(descriptor)
        probe.unlink()
    return tmp_path


def test_reserve_allocates_past_the_end_and_release_gives_it_back(reserving: Path) -> None:
    """The reserve holds blocks past the file's end without changing its size; release frees
    what was not written, and keeps what was."""
    path = reserving / "f"
    path.write_bytes(b"x" * 100)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        reserve(descriptor, 1 << 20)
        assert os.fstat(descriptor).st_size == 100
        assert allocated(path) >= (1 << 20) + 100
        os.write(descriptor, b"y" * 5000)
        release(descriptor)
    finally:
        os.close(descriptor)
    assert path.read_bytes() == b"x" * 100 + b"y" * 5000
    assert allocated(path) < 64 << 10


def test_an_open_journal_holds_its_reserve_and_gives_it_back_at_close(reserving: Path) -> None:
    """Opening a journal reserves room past its end (a disk that fills during the run leaves
    it room); closing it leaves only its lines on disk."""
    journal = Journal(reserving, "r1")
    journal.event("run.start")
    assert allocated(journal.path) >= JOURNAL_RESERVE_BYTES
    journal.close()
    assert allocated(journal.path) < 64 << 10
    assert [e["event"] for e in read_journal(journal.path)] == ["run.start"]


def test_a_journal_reopened_by_resume_reserves_again(reserving: Path) -> None:
    """resume opens the journal again: it gets its own reserve, and appends after the run's
    lines."""
    Journal(reserving, "r2").close()
    again = Journal(reserving, "r2")
    again.event("resume.start")
    assert allocated(again.path) >= JOURNAL_RESERVE_BYTES
    again.close()
    assert [e["event"] for e in read_journal(again.path)] == ["resume.start"]


def test_the_reserve_goes_back_before_the_lock_and_the_journal_still_writes(
        reserving: Path) -> None:
    """A run's end gives the room back (before its lock frees the run to a resume); the
    events after that still append, and closing truncates nothing again."""
    journal = Journal(reserving, "r5")
    journal.event("run.end")
    journal.release_reserve()
    assert allocated(journal.path) < 64 << 10
    journal.event("hook.done")
    with journal.path.open("a") as resume:  # another process appending, as resume does
        resume.write('{"event": "resume.start"}\n')
    journal.close()
    assert [e["event"] for e in read_journal(journal.path)] == ["run.end", "hook.done",
                                                                "resume.start"]


def refusing(code: int) -> Any:
    def call(_descriptor: int, _nbytes: int = 0) -> None:
        raise OSError(code, os.strerror(code))
    return call


def test_no_room_for_the_reserve_is_said_once_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A disk without room for the reserve is a warning on stderr; the journal still writes."""
    monkeypatch.setattr(journal_module, "reserve", refusing(errno.ENOSPC))
    journal = Journal(tmp_path, "r3")
    journal.event("run.start")
    journal.close()
    assert "cannot reserve room" in capsys.readouterr().err
    assert [e["event"] for e in read_journal(journal.path)] == ["run.start"]


def test_a_filesystem_that_cannot_reserve_goes_unremarked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A filesystem or platform without fallocate is no fault of the run: no warning."""
    monkeypatch.setattr(journal_module, "reserve", refusing(errno.EOPNOTSUPP))
    Journal(tmp_path, "r4").close()
    assert capsys.readouterr().err == ""


def test_runs_dir_with_room_passes(tmp_path: Path) -> None:
    """Enough room: the check passes and says how much is free where."""
    result = check_runs_dir(tmp_path / "runs")
    assert result.ok and result.name == "runs_dir"
    assert result.detail.startswith(f"{tmp_path / 'runs'}: ")
    assert result.data["free_bytes"] >= result.data["needs_bytes"]


def test_runs_dir_without_room_for_a_journal_fails_naming_both_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Less free than a run needs: the check fails with what is free and what is needed, read
    on the nearest directory that exists (the runs directory before the first run)."""
    asked: list[Path] = []

    def usage(path: Path) -> Any:
        asked.append(Path(path))
        return SimpleNamespace(free=JOURNAL_RESERVE_BYTES)

    monkeypatch.setattr(room.shutil, "disk_usage", usage)
    result = check_runs_dir(tmp_path / "not" / "yet")
    assert not result.ok
    assert "1.0 MiB free, a run needs 2.0 MiB" in result.detail
    assert asked == [tmp_path]


def test_an_unreadable_runs_dir_fails_with_the_reason(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A free space that cannot be read is a failed check naming why, not a crash."""
    def broken(_path: Path) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(room.shutil, "disk_usage", broken)
    result = check_runs_dir(tmp_path)
    assert not result.ok and "Permission denied" in result.detail
