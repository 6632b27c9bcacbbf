"""Daemon bookkeeping shared by ``appctl`` and ``scriptctl`` (installed beside them in bin/).

Runs under the host's /usr/bin/python3, stdlib only. A *slot* is one daemon
the host may run (``app-8001``, ``fragile``): ``run/<slot>.pid`` holds its
pid, ``run/<slot>.release`` the release directory it was started from, and
``log/<slot>.log`` collects its output.

PID 1 on the sandbox hosts does not reap orphans, so a daemon that exited
lingers as a zombie that ``kill -0`` still reports; :func:`alive` reads
``/proc/PID/stat`` and counts a zombie (or no entry) as dead.
"""

import fcntl
import json
import os
import select
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

PYTHON = "/usr/bin/python3"
POLL_S = 0.05
LOG_TAIL_LINES = 20


class Failure(Exception):
    """What went wrong, in words for the operator; the command exits 1 with it."""


def alive(pid):
    """True if ``pid`` is a process that has not exited (zombies count as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]  # the command name may hold spaces and parens
    return state not in ("Z", "X")


def cmdline(pid):
    """The argv of ``pid`` (empty for a zombie or a vanished process)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def load_config(app_root):
    """The host's ``etc/app.json``."""
    path = app_root / "etc" / "app.json"
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read {path}: {error}") from None


def resolve_release(app_root, given):
    """``given`` (absolute, or relative to ``app_root``, e.g. ``current``) as its real directory."""
    path = Path(given)
    path = (path if path.is_absolute() else app_root / path).resolve()
    if not path.is_dir():
        raise Failure(f"release directory {given} does not exist (resolved to {path})")
    return path


class Slot:
    """The files of one daemon slot under ``app_root``.

    ``is_ours(argv)`` tells whether a process is this slot's daemon, so a pid
    file left behind never makes a recycled pid count as running.
    """

    def __init__(self, app_root, name, is_ours):
        self.name = name
        self.is_ours = is_ours
        self.pidfile = app_root / "run" / f"{name}.pid"
        self.releasefile = app_root / "run" / f"{name}.release"
        self.logfile = app_root / "log" / f"{name}.log"
        self._lockfile = app_root / "run" / f"{name}.lock"

    @contextmanager
    def locked(self):
        """Hold the slot's lock, so two commands never start or stop it at once."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with self._lockfile.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def pid(self):
        """The recorded pid, or None when there is no readable pid file."""
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running_pid(self):
        """The recorded pid if that process still runs and is this slot's daemon, else None."""
        pid = self.pid()
        if pid is None or not alive(pid):
            return None
        return pid if self.is_ours(cmdline(pid)) else None

    def release(self):
        """The release directory recorded at start, or None."""
        try:
            return self.releasefile.read_text().strip() or None
        except FileNotFoundError:
            return None

    def status(self, **extra):
        """A JSON-ready dict: the slot's pid, whether it runs, and its release's name."""
        release = self.release()
        return {
            **extra,
            "pid": self.pid(),
            "running": self.running_pid() is not None,
            "release": Path(release).name if release else None,
        }

    def spawn(self, argv, cwd):
        """Start ``argv`` as a daemon (own session, output to the log) and record its pid."""
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        with self.logfile.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                raise Failure(f"cannot start {argv[0]}: {error}") from None
        _write_atomically(self.pidfile, f"{proc.pid}\n")
        return proc

    def record_release(self, release_dir):
        _write_atomically(self.releasefile, f"{release_dir}\n")

    def forget(self):
        """Remove the pid file and the release record."""
        self.pidfile.unlink(missing_ok=True)
        self.releasefile.unlink(missing_ok=True)

    def log_size(self):
        try:
            return self.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, since=0):
        """The last lines the daemon wrote to its log after byte offset ``since``."""
        try:
            with self.logfile.open("rb") as f:
                f.seek(since)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(log is empty)"


def wait_until(ready, proc, deadline_s, what, slot, log_from):
    """Return once ``ready()`` is true.

    Raises Failure with the log tail (from byte ``log_from``) if ``proc`` exits
    first, or after stopping it if ``deadline_s`` passes.
    """
    deadline = time.monotonic() + deadline_s
    while not ready():
        if proc.poll() is not None:
            slot.forget()
            raise Failure(
                f"{slot.name} exited with status {proc.returncode} before it was {what}; "
                f"{slot.logfile}:\n{slot.log_tail(log_from)}"
            )
        if time.monotonic() >= deadline:
            stop(proc.pid, timeout_s=5)
            slot.forget()
            raise Failure(
                f"{slot.name} was not {what} within {deadline_s:.0f} s, so it was stopped; "
                f"{slot.logfile}:\n{slot.log_tail(log_from)}"
            )
        try:
            proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            continue


def stop(pid, timeout_s):
    """SIGTERM ``pid``, wait up to ``timeout_s`` for it to exit, else SIGKILL it.

    Returns True if it exited on SIGTERM (or was already gone), False if it
    had to be killed; Failure if it outlives SIGKILL by 5 s.
    """
    if not _signal(pid, signal.SIGTERM) or _wait_dead(pid, timeout_s):
        return True
    if _signal(pid, signal.SIGKILL) and not _wait_dead(pid, 5):
        raise Failure(f"process {pid} survived SIGKILL")
    return False


def _signal(pid, signum):
    """Send ``signum``; False if the process is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _wait_dead(pid, timeout_s):
    """Wait up to ``timeout_s`` for ``pid`` to exit; True if it did.

    Waits on a pidfd (readable once the process exits), or polls /proc where
    the kernel has no pidfd_open.
    """
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        pidfd = None
    try:
        while alive(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is None:
                time.sleep(min(POLL_S, remaining))
            else:
                select.select([pidfd], [], [], remaining)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)
        _reap(pid)


def _reap(pid):
    """Collect ``pid`` if it is our own child (it is when start gave up on it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return


def _write_atomically(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def print_json(obj):
    print(json.dumps(obj), flush=True)
