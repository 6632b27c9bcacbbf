"""The deploy lock: one run at a time, named holders, and a lock that dies with its process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import connect
from orchestrator.db.lock import DeployLock, force_unlock, holder, new_run_id
from orchestrator.errors import ExitCode, Locked, Refused
from orchestrator.sandbox.layout import PRIMARY_PORT

pytestmark = pytest.mark.integration

HOLD = """
import dataclasses, json, sys
from orchestrator.config import DatabaseSettings
from orchestrator.db.lock import DeployLock
settings = DatabaseSettings(**json.loads(sys.argv[1]))
lock = DeployLock(settings, sys.argv[2], "holder@test")
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def spawn_holder(settings: DatabaseSettings, run_id: str) -> subprocess.Popen[str]:
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, json.dumps(fields), run_id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def outcome(settings: DatabaseSettings, run_id: str) -> str:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT outcome FROM fastdowntime.run WHERE id = %s", (run_id,))
        row = cur.fetchone()
    conn.close()
    return row[0]


def test_second_run_is_refused_naming_the_holder(scratch_db: DatabaseSettings) -> None:
    """While one run holds the lock, another gets exit 5 naming run, user and start."""
    first = DeployLock(scratch_db, new_run_id(), "alice@laptop", plan={"cut": None})
    first.acquire()
    try:
        second = DeployLock(scratch_db, new_run_id(), "bob@laptop")
        with pytest.raises(Locked) as caught:
            second.acquire()
        message = str(caught.value)
        assert caught.value.exit_code == ExitCode.LOCKED
        assert first.run_id in message and "alice@laptop" in message and "started" in message
    finally:
        first.finish("done")
    assert outcome(scratch_db, first.run_id) == "done"
    with DeployLock(scratch_db, new_run_id(), "bob@laptop"):
        pass


def test_lock_dies_with_its_process(scratch_db: DatabaseSettings) -> None:
    """A holder killed with SIGKILL frees the lock; its run stays unsettled ("running" with
    its session gone) for preflight to refuse until resume settles it."""
    run_id = new_run_id()
    proc = spawn_holder(scratch_db, run_id)
    try:
        with pytest.raises(Locked, match=run_id):
            DeployLock(scratch_db, new_run_id(), "bob@laptop").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = connect(scratch_db, autocommit=True)
    try:
        deadline_polls = 500
        while holder(conn) is not None and deadline_polls:
            deadline_polls -= 1
            conn.cursor().execute("SELECT pg_sleep(0.01)")
        assert holder(conn) is None, "the lock outlived its process"
    finally:
        conn.close()
    with DeployLock(scratch_db, new_run_id(), "bob@laptop"):
        assert outcome(scratch_db, run_id) == "running", "never marked abandoned silently"


def test_unlock_force_refuses_a_live_orchestrator(scratch_db: DatabaseSettings) -> None:
    """unlock --force will not end the lock of an orchestrator whose process is alive on this
    machine: it names the process to stop instead."""
    run_id = new_run_id()
    proc = spawn_holder(scratch_db, run_id)
    try:
        with pytest.raises(Refused, match=f"process {proc.pid}"):
            force_unlock(scratch_db)
        assert outcome(scratch_db, run_id) == "running"
    finally:
        proc.kill()
        proc.wait()


def test_unlock_force_ends_a_dead_orchestrators_session(scratch_db: DatabaseSettings) -> None:
    """When the orchestrator is dead but its session lingers (a half-open connection),
    unlock --force terminates the session and marks the run abandoned."""
    run_id = new_run_id()
    proc = spawn_holder(scratch_db, run_id)
    try:
        released = force_unlock(scratch_db, is_running=lambda pid: False)
        assert released is not None and released.run_id == run_id
        assert released.process == proc.pid
        assert outcome(scratch_db, run_id) == "abandoned"
        assert force_unlock(scratch_db) is None
        with DeployLock(scratch_db, new_run_id(), "bob@laptop"):
            pass
    finally:
        proc.kill()
        proc.wait()


def _lose_session(settings: DatabaseSettings, lock: DeployLock) -> None:
    assert lock.conn is not None
    backend = lock.conn.get_backend_pid()
    admin = connect(settings, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (backend,))
    admin.close()


def test_finish_on_a_lost_session_records_on_a_new_one(scratch_db: DatabaseSettings,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """finish() on a lock whose session was terminated records the outcome on a new session
    (a record left ``running`` would read as a crash that preflight refuses to deploy over,
    with nothing for ``resume`` to settle), and says so on stderr."""
    lock = DeployLock(scratch_db, new_run_id(), "alice@laptop")
    lock.acquire()
    assert lock.alive()
    _lose_session(scratch_db, lock)
    assert not lock.alive()
    assert lock.finish("rolled-back", "x") is True
    assert outcome(scratch_db, lock.run_id) == "rolled-back"
    assert "recorded on a new session" in capsys.readouterr().err
    conn = connect(scratch_db, autocommit=True)
    try:
        assert holder(conn) is None
    finally:
        conn.close()


def test_finish_without_any_session_is_best_effort(scratch_db: DatabaseSettings,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """When no new session can be had either, finish() says so on stderr and returns False:
    it never turns a run's exit code into a traceback."""
    import dataclasses

    lock = DeployLock(scratch_db, new_run_id(), "alice@laptop")
    lock.acquire()
    _lose_session(scratch_db, lock)
    unreachable = scratch_db.dsn.replace(f"port={PRIMARY_PORT}", "port=1")
    assert unreachable != scratch_db.dsn
    lock.settings = dataclasses.replace(scratch_db, dsn=unreachable)
    assert lock.finish("failed-after-commit", "x") is False
    assert "could not record" in capsys.readouterr().err
