"""Process plumbing for the sandbox: run, wait with a deadline, check and stop by pid file.

PID 1 on these machines does not reap orphans, so a daemon that exits can
linger as a zombie that ``kill -0`` still reports alive: :func:`alive` reads
``/proc/PID/stat`` and counts state ``Z`` as dead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.errors import SandboxError
from orchestrator.sandbox.layout import DEPLOY_USER, PG_OS_USER, sandbox_dir

POLL_S = 0.02

SANDBOX_OWNERS = ("root", PG_OS_USER, DEPLOY_USER)
"""The OS users the sandbox's daemons run as."""


def run(argv: Sequence[str], *, component: str, user: str | None = None,
        log: Path | None = None, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``argv`` (as ``user`` via runuser when given) and return its stdout.

    A non-zero exit raises SandboxError naming the component, the command and
    the last lines of its stderr.
    """
    full = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    try:
        done = subprocess.run(full, input=input, capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SandboxError(component, f"{argv[0]} did not finish within {timeout:g} s",
                           str(log) if log else None) from None
    except FileNotFoundError:
        raise SandboxError(component, f"{argv[0]} is not installed") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        raise SandboxError(component, f"{' '.join(argv[:3])} ... exited {done.returncode}: {tail}",
                           str(log) if log else None)
    return done.stdout


def wait_until(check: Callable[[], bool], *, deadline_s: float, component: str, what: str,
               log: Path | None = None, gave_up: Callable[[], bool] | None = None) -> None:
    """Poll ``check`` until it is true; raise SandboxError after ``deadline_s``.

    ``gave_up`` is asked on every poll: when it says true (the daemon died),
    waiting stops at once instead of running out the deadline.
    """
    end = time.monotonic() + deadline_s
    while True:
        if check():
            return
        if gave_up is not None and gave_up():
            raise SandboxError(component, f"exited before {what}", str(log) if log else None)
        if time.monotonic() >= end:
            raise SandboxError(component, f"not {what} within {deadline_s:g} s",
                               str(log) if log else None)
        time.sleep(POLL_S)


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` (first line), or None when absent or unreadable."""
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def pid_alive(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` when that process is alive, else None."""
    pid = read_pid(pidfile)
    return pid if pid is not None and alive(pid) else None


def stop_pid(pidfile: Path, *, component: str, timeout_s: float = 10,
             expect: str | None = None, owners: Sequence[str] = SANDBOX_OWNERS) -> bool:
    """SIGTERM the process of ``pidfile``, SIGKILL after ``timeout_s``; True if one ran.

    Only a process that is the sandbox's is signalled: its command line holds
    ``expect`` (default: the sandbox directory) and it runs as one of
    ``owners``. A pid file whose pid now belongs to another process (the
    daemon died and the pid was reused) is left alone and reported False.
    """
    pid = pid_alive(pidfile)
    if pid is None:
        return False
    if not _ours(pid, expect if expect is not None else str(sandbox_dir()), owners):
        return False
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not alive(pid), deadline_s=timeout_s, component=component,
                   what="stopped after SIGTERM")
    except SandboxError:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), deadline_s=5, component=component,
                   what="stopped after SIGKILL")
    return True


def _ours(pid: int, expect: str, owners: Sequence[str]) -> bool:
    """True when process ``pid``'s command line holds ``expect`` and it runs as ``owners``."""
    import pwd

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return expect in cmdline and owner in owners


def port_open(address: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(address: str, port: int) -> bool:
    """True when ``address:port`` can be bound (nobody listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything under it to OS ``user``."""
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
