"""Standby state, lag and the wait for replay, on the sandbox's real streaming standby.

Writes go to a scratch table of this module's own (dropped at the end). The
test that pauses replay on the standby always resumes it, whatever happens.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from orchestrator.config import DatabaseSettings, load_config
from orchestrator.db.connect import Connection
from orchestrator.db.replication import Standbys, StandbysBehind, standbys, wait_replayed
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(sandbox: Context) -> DatabaseSettings:
    database = load_config(PROJECT_ROOT / "config" / "sandbox.toml").database
    assert database is not None and database.standby_dsns
    return database


@pytest.fixture
def write(primary: Connection) -> Iterator[Callable[[], None]]:
    """A function that commits one row into a scratch table (dropped afterwards)."""
    table = f"fdt_conn_test_{secrets.token_hex(4)}"
    with primary.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (n serial PRIMARY KEY, at timestamptz DEFAULT now())")

    def insert() -> None:
        with primary.cursor() as cur:
            cur.execute(f"INSERT INTO {table} DEFAULT VALUES")

    yield insert
    with primary.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")


def poll(check: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Wait until ``check()`` is true, polling every 10 ms, or fail after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {deadline_s} s"
        time.sleep(0.01)


def superuser_on_standby(ctx: Context, run: str | None = None) -> Connection:
    """A superuser connection to the standby (replay control needs one); runs ``run`` if given,
    then closes it (a fresh connection each time, so a broken one never skips a resume)."""
    conn = psycopg2.connect(host="127.0.0.1", port=L.STANDBY_PORT, dbname=L.DB_NAME,
                            user="postgres", password=ctx.passwords["postgres"],
                            connect_timeout=5)
    conn.autocommit = True
    if run is not None:
        with conn.cursor() as cur:
            cur.execute(run)
        conn.close()
    return conn


def test_standby_is_listed_streaming_with_small_lag(
        settings: DatabaseSettings, primary: Connection) -> None:
    """The sandbox's standby appears by its application_name, streaming, lag well under limits."""
    states = standbys(settings, primary)
    assert [(s.name, s.state) for s in states] == [("standby1", "streaming")]
    [state] = states
    assert state.lag_bytes is not None and state.lag_bytes < 16 * 1024 * 1024
    assert state.lag_s is not None and state.lag_s < settings.max_replay_lag_s


def test_wait_replayed_returns_quickly_after_a_write(
        settings: DatabaseSettings, primary: Connection, write: Callable[[], None]) -> None:
    """After a committed write every standby replays it well within a second."""
    write()
    waited = wait_replayed(settings, primary, timeout_s=5)
    with Standbys(settings, primary) as group:
        group.prepare()
        write()
        prepared = group.wait_replayed(timeout_s=5)
    print(f"\nwait_replayed {waited * 1000:.2f} ms one-shot, "
          f"{prepared * 1000:.2f} ms with prepared connections")
    assert waited < 1.0 and prepared < 1.0


def test_paused_replay_shows_lag_and_the_wait_times_out(
        request: pytest.FixtureRequest, sandbox: Context, settings: DatabaseSettings,
        primary: Connection, write: Callable[[], None]) -> None:
    """Replay paused: lag_bytes > 0, then lag_s > 0, and wait_replayed raises StandbysBehind."""
    write()
    wait_replayed(settings, primary, timeout_s=5)  # a recent replayed commit for lag_s
    request.addfinalizer(lambda: superuser_on_standby(sandbox, "SELECT pg_wal_replay_resume()"))
    standby = superuser_on_standby(sandbox)
    cur = standby.cursor()
    try:
        cur.execute("SELECT pg_wal_replay_pause()")

        def paused() -> bool:
            cur.execute("SELECT pg_get_wal_replay_pause_state()")
            row = cur.fetchone()
            return row is not None and row[0] == "paused"

        poll(paused, 5, "replay paused")
        write()
        with Standbys(settings, primary) as group:
            [state] = group.states()
            assert state.lag_bytes is not None and state.lag_bytes > 0
            poll(lambda: (group.states()[0].lag_s or 0) > 0, 5, "lag_s above 0")
            started = time.monotonic()
            with pytest.raises(StandbysBehind) as caught:
                group.wait_replayed(timeout_s=0.5)
            assert 0.5 <= time.monotonic() - started < 2.0
        [position] = caught.value.positions
        assert position.name == "standby1"
        assert position.behind_bytes is not None and position.behind_bytes > 0
    finally:
        standby.close()
        superuser_on_standby(sandbox, "SELECT pg_wal_replay_resume()")
    assert wait_replayed(settings, primary, timeout_s=5) < 5
