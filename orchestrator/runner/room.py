"""Room for a run's records on the orchestrator's own disk.

After a crash, ``resume`` knows only what the run's journal holds: which
instance slot of each host was old and new, which steps started, whether the
window opened. A disk that fills during the run (another process's logs, a
core dump) must not cut those lines. So the journal, when it opens, has the
filesystem allocate :data:`JOURNAL_RESERVE_BYTES` past its end without
changing its size (``fallocate(2)`` with ``FALLOC_FL_KEEP_SIZE``): its appends
land in blocks it already holds, and a full disk no longer reaches them.
Closing the journal gives back what it did not use (a run's end gives it
back before the deploy lock frees the run to a ``resume`` that appends to
the same file). Preflight's
:func:`check_runs_dir` refuses a run whose runs directory cannot hold that
reserve, before anything is touched.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.check_result import CheckResult

JOURNAL_RESERVE_BYTES = 1 << 20
"""Room each open journal holds past its end: a deploy of a few dozen hosts writes well under
a tenth of it."""
RUNS_DIR_MIN_FREE_BYTES = 2 * JOURNAL_RESERVE_BYTES
"""What preflight wants free in the runs directory: the journal's reserve, and as much
again for the run's summary (``run.json``, written again at the end) and its copy of the
playbook, which the reserve does not cover."""
_KEEP_SIZE = 0x01
"""``FALLOC_FL_KEEP_SIZE`` (``linux/falloc.h``): allocate past the end, the size unchanged."""
UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS})
"""The errors of a filesystem or platform that cannot reserve (the journal goes on without)."""


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate`` with 64-bit offsets, or None on a platform without it.

    glibc has ``fallocate64`` on every architecture; plain ``fallocate`` takes a 64-bit
    ``off_t`` only where ``long`` is 64 bits (on 32-bit glibc it would read our lengths
    wrong)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    call = getattr(libc, "fallocate64", None)
    if call is None and ctypes.sizeof(ctypes.c_long) == 8:
        call = getattr(libc, "fallocate", None)
    if call is None:
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    call.restype = ctypes.c_int
    return call


def reserve(descriptor: int, nbytes: int = JOURNAL_RESERVE_BYTES) -> None:
    """Allocate ``nbytes`` past the end of the file open on ``descriptor``, its size unchanged.

    Raises :class:`OSError`: ``ENOSPC`` when the filesystem has not that much room (some
    keep what they did allocate until :func:`release`), an errno in :data:`UNSUPPORTED`
    when it cannot reserve at all. A filesystem that copies on write (btrfs with
    snapshots, ZFS) may accept the reserve and still refuse a write later: the reserve
    holds on ext4, xfs and tmpfs.
    """
    call = _fallocate()
    if call is None:
        raise OSError(errno.ENOSYS, "fallocate is not available on this platform")
    if call(descriptor, _KEEP_SIZE, os.fstat(descriptor).st_size, nbytes) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def release(descriptor: int) -> None:
    """Give back what :func:`reserve` allocated past the end of the file that is not used.

    Truncating a file to its own size frees the blocks past its end (ext4, xfs and tmpfs do
    so even when the size does not change)."""
    os.ftruncate(descriptor, os.fstat(descriptor).st_size)


def check_runs_dir(runs_dir: Path) -> CheckResult:
    """The runs directory (or the nearest existing parent, before the first run) has room for
    a run's journal reserve and records."""
    where = Path(runs_dir).expanduser()
    probe = where
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return CheckResult("runs_dir", False, f"{where}: cannot read its free space ({exc})",
                           {"path": str(where)})
    data = {"path": str(where), "free_bytes": free, "needs_bytes": RUNS_DIR_MIN_FREE_BYTES}
    if free < RUNS_DIR_MIN_FREE_BYTES:
        needs = _mib(RUNS_DIR_MIN_FREE_BYTES)
        return CheckResult("runs_dir", False, f"{where}: {_mib(free)} free, a run needs {needs} "
                                              "(room reserved for its journal, and its records)",
                           data)
    return CheckResult("runs_dir", True, f"{where}: {_mib(free)} free", data)


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f} MiB"
