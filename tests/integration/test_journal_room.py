"""The journal's reserve on a real filesystem that fills up: a tmpfs mounted for the test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runner.journal import Journal, read_journal
from orchestrator.runner.room import check_runs_dir

pytestmark = pytest.mark.integration

DISK_BYTES = 4 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test (skips where mounting is not allowed)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700",
                              "fdt-room", str(where)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Fill ``directory``'s filesystem to the last byte; the filler file."""
    filler = directory / "filler"
    out = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(out, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC, nothing else
    finally:
        os.close(out)
    return filler


def test_a_disk_that_fills_during_a_run_loses_no_journal_line(small_disk: Path) -> None:
    """The journal opened before the disk filled writes every event of a run after it
    filled, and reads back whole once closed."""
    journal = Journal(small_disk / "runs", "r1")
    journal.event("run.start")
    fill(small_disk)
    with pytest.raises(OSError):
        (small_disk / "other").write_bytes(b"x" * 4096)  # the disk is full for everyone else
    for n in range(2000):  # a few hundred KiB: a deploy of many hosts
        journal.event("step.done", step=f"step{n}", slots={"app1": [8001, 8002]})
    journal.close()
    events = read_journal(journal.path)
    assert len(events) == 2001 and events[-1]["step"] == "step1999"


def test_a_run_whose_disk_was_full_from_the_start_is_refused(small_disk: Path) -> None:
    """preflight's runs_dir check reads the real filesystem: room, then none."""
    assert check_runs_dir(small_disk / "runs").ok
    fill(small_disk)
    refused = check_runs_dir(small_disk / "runs")
    assert not refused.ok and "0.0 MiB free, a run needs 2.0 MiB" in refused.detail


def test_closing_gives_the_room_back_to_the_filesystem(small_disk: Path) -> None:
    """What the journal held past its end is free again once it closed."""
    free = os.statvfs(small_disk).f_bfree
    journal = Journal(small_disk / "runs", "r2")
    assert os.statvfs(small_disk).f_bfree < free - 200  # 1 MiB in 4 KiB blocks: 256
    journal.close()
    assert os.statvfs(small_disk).f_bfree >= free - 8  # the directory and a line's block
