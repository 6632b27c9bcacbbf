"""Cutting and restoring connections on the real sandbox: pgbouncer, the primary, haproxy.

The sandbox is shared with other test sessions, so every settings object here
counts ``fragile`` as a system user: a real window stops the fragile scripts
before it, and the sandbox's own script must survive these tests. Every test
restores pgbouncer, whatever happened.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from collections.abc import Iterator

import psycopg2
import pytest

from orchestrator.config import DatabaseSettings, load_config
from orchestrator.db.connect import Connection
from orchestrator.db.connections import ConnectionControl, ConnectionsNotCut
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT

pytestmark = pytest.mark.integration

DROPPED = (psycopg2.OperationalError, psycopg2.InterfaceError)


@pytest.fixture
def settings(sandbox: Context) -> DatabaseSettings:
    """The sandbox's database settings, with the fragile script's user left alone."""
    database = load_config(PROJECT_ROOT / "config" / "sandbox.toml").database
    assert database is not None
    return dataclasses.replace(database, system_users=(*database.system_users, "fragile"),
                               cut_method="kill")


@pytest.fixture
def control(sandbox: Context, settings: DatabaseSettings,
            primary: Connection) -> Iterator[ConnectionControl]:
    """A prepared ConnectionControl with pgbouncer; pgbouncer is restored at the end regardless."""
    ctl = ConnectionControl(settings, primary)
    ctl.prepare()
    yield ctl
    ctl.restore()
    ctl.close()
    serving_again(sandbox)


def serving_again(ctx: Context, timeout_s: float = 20) -> None:
    """Leave the sandbox as found: a KILL can make pgbouncer refuse logins for
    server_login_retry; wait until a client gets through pgbouncer again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = client(ctx)
        except psycopg2.OperationalError:
            assert time.monotonic() < deadline, "pgbouncer still refuses clients"
            time.sleep(0.05)
            continue
        ok = answers(conn)
        conn.close()
        if ok:
            return
        assert time.monotonic() < deadline, "pgbouncer still refuses queries"
        time.sleep(0.05)


def client(ctx: Context, *, port: int = L.PGBOUNCER_PORT, user: str = "app",
           name: str = "fdt_conn_test") -> Connection:
    """A client connection as the application makes them (autocommit)."""
    conn = psycopg2.connect(host="127.0.0.1", port=port, dbname=L.DB_NAME, user=user,
                            password=ctx.passwords[user], connect_timeout=2,
                            application_name=name)
    conn.autocommit = True
    return conn


def answers(conn: Connection) -> bool:
    """True when ``conn`` still runs a query; False when it was cut."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except DROPPED:
        return False


def test_pgbouncer_cut_drops_clients_refuses_new_ones_and_restore_reopens(
        sandbox: Context, control: ConnectionControl) -> None:
    """DISABLE+KILL drop idle, in-transaction and direct clients; RESUME+ENABLE let new ones in."""
    idle = [client(sandbox) for _ in range(3)]
    for conn in idle:
        assert answers(conn)
    in_transaction = client(sandbox)
    in_transaction.autocommit = False
    with in_transaction.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class")
    direct = client(sandbox, port=L.PRIMARY_PORT, name="fdt_conn_test_direct")
    assert answers(direct)

    started = time.perf_counter()
    result = control.cut(time.monotonic() + 5)
    cut_s = time.perf_counter() - started
    try:
        assert result.method == "pgbouncer"
        assert [answers(conn) for conn in [*idle, in_transaction, direct]] == [False] * 5
        assert [c for c in control.app_connections() if c["usename"] == "app"] == []
        with pytest.raises(psycopg2.OperationalError, match='database "app" is disabled'):
            client(sandbox)
    finally:
        started = time.perf_counter()
        control.restore()
        restore_s = time.perf_counter() - started
    fresh = client(sandbox)
    assert answers(fresh)
    print(f"\npgbouncer cut {cut_s * 1000:.2f} ms ({result.remaining_checks} checks, "
          f"{result.terminated} terminated), restore {restore_s * 1000:.2f} ms")
    assert cut_s < 1.0 and restore_s < 1.0
    for conn in [*idle, in_transaction, direct, fresh]:
        conn.close()


def test_terminate_method_ends_direct_app_backends_and_spares_system_users(
        sandbox: Context, settings: DatabaseSettings, primary: Connection) -> None:
    """Without pgbouncer, app backends on the primary are terminated; fdt_admin's are untouched."""
    plain = dataclasses.replace(settings, pgbouncer_admin_dsn=None)
    direct = [client(sandbox, port=L.PRIMARY_PORT, name=f"fdt_conn_test_{i}") for i in range(3)]
    system = client(sandbox, port=L.PRIMARY_PORT, user="fdt_admin", name="fdt_conn_test_sys")
    pids = {conn.get_backend_pid() for conn in direct}
    ctl = ConnectionControl(plain, primary)

    started = time.perf_counter()
    result = ctl.cut(time.monotonic() + 5)
    cut_s = time.perf_counter() - started
    ctl.restore()

    assert result.method == "terminate" and result.terminated >= len(direct)
    assert [answers(conn) for conn in direct] == [False] * 3
    assert answers(system)
    assert pids.isdisjoint(c["pid"] for c in ctl.app_connections())
    print(f"\nterminate cut {cut_s * 1000:.2f} ms ({result.remaining_checks} checks, "
          f"{result.terminated} terminated)")
    for conn in [*direct, system]:
        conn.close()


def test_connection_that_cannot_be_cut_fails_at_the_deadline_and_restore_reopens(
        sandbox: Context, settings: DatabaseSettings, primary: Connection) -> None:
    """A superuser backend outside system_users survives; the cut names it; restore reopens."""
    strict = dataclasses.replace(settings, system_users=tuple(
        u for u in settings.system_users if u != "postgres"))
    stuck = client(sandbox, port=L.PRIMARY_PORT, user="postgres", name="fdt_conn_test_stuck")
    ctl = ConnectionControl(strict, primary)
    ctl.prepare()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionsNotCut) as caught:
            ctl.cut(started + 0.2)
        elapsed = time.monotonic() - started
    finally:
        ctl.restore()
        ctl.close()
    assert 0.2 <= elapsed < 1.0
    assert stuck.get_backend_pid() in [c["pid"] for c in caught.value.remaining]
    assert "user postgres application_name 'fdt_conn_test_stuck'" in str(caught.value)
    assert answers(stuck)
    fresh = client(sandbox)
    assert answers(fresh)
    for conn in (stuck, fresh):
        conn.close()


def test_app_servers_answer_after_a_cut_and_restore(
        sandbox: Context, control: ConnectionControl) -> None:
    """Through haproxy every app server answers 200 after the cycle (one retry on a cut pool)."""
    url = sandbox.layout.public_url
    servers = len(sandbox.layout.role("app"))
    for _ in range(2 * servers):  # every server holds a pooled connection through pgbouncer
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200

    started = time.perf_counter()
    result = control.cut(time.monotonic() + 5)
    control.restore()
    cycle_s = time.perf_counter() - started

    statuses = []
    for _ in range(2 * servers):
        with urllib.request.urlopen(url, timeout=5) as response:
            statuses.append(response.status)
    assert statuses == [200] * (2 * servers)
    print(f"\ncut+restore {cycle_s * 1000:.2f} ms back to back "
          f"({result.remaining_checks} checks, {result.terminated} terminated)")


@pytest.fixture
def pausing(sandbox: Context, settings: DatabaseSettings,
            primary: Connection) -> Iterator[ConnectionControl]:
    """A prepared ConnectionControl in pause mode; pgbouncer is restored at the end."""
    ctl = ConnectionControl(dataclasses.replace(settings, cut_method="pause"), primary)
    ctl.prepare()
    yield ctl
    ctl.restore()
    ctl.close()
    serving_again(sandbox)


def test_pause_keeps_clients_connected_and_waiting(sandbox: Context,
                                                   pausing: ConnectionControl) -> None:
    """PAUSE closes pgbouncer's server connections, keeps clients; their queries wait, then run."""
    import threading

    idle = [client(sandbox) for _ in range(3)]
    for conn in idle:
        assert answers(conn)
    result = pausing.cut(time.monotonic() + 5)
    done = threading.Event()
    try:
        assert [c for c in pausing.app_connections() if c["usename"] == "app"] == []
        waiter = threading.Thread(target=lambda: (answers(idle[0]), done.set()))
        waiter.start()
        assert not done.wait(0.3), "a query ran while pgbouncer was paused"
    finally:
        pausing.restore()
    assert done.wait(5), "the waiting query did not run after RESUME"
    waiter.join()
    assert all(answers(conn) for conn in idle), "a client was dropped by PAUSE"
    assert result.duration_s < 1.0
    for conn in idle:
        conn.close()


def test_served_sees_held_clients_wait_and_be_served(sandbox: Context,
                                                     pausing: ConnectionControl) -> None:
    """SHOW POOLS counts the clients PAUSE holds; after RESUME, served() returns once
    pgbouncer has given each of them a server."""
    import threading

    held = [client(sandbox) for _ in range(3)]
    pausing.cut(time.monotonic() + 5)
    done = [threading.Event() for _ in held]
    waiters = [threading.Thread(target=lambda c=conn, d=event: (answers(c), d.set()))
               for conn, event in zip(held, done, strict=True)]
    try:
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 5
        while pausing.served(0.0) < len(held):  # one poll each: how many wait now
            assert time.monotonic() < deadline, "pgbouncer never counted the held clients"
        assert not any(event.is_set() for event in done)
    finally:
        pausing.restore()
    assert pausing.served(5.0) == 0
    assert all(event.wait(5) for event in done), "a held query did not run after RESUME"
    for waiter, conn in zip(waiters, held, strict=True):
        waiter.join()
        conn.close()


def test_pause_that_cannot_finish_falls_back_to_kill(sandbox: Context,
                                                     pausing: ConnectionControl) -> None:
    """A transaction that does not end by the deadline is killed; the cut still completes."""
    stuck = client(sandbox)
    stuck.autocommit = False
    with stuck.cursor() as cur:
        cur.execute("SELECT 1")
    started = time.monotonic()
    result = pausing.cut(started + 0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
    assert result.method == "pgbouncer"
    assert not answers(stuck), "the stuck transaction survived the cut"
    assert [c for c in pausing.app_connections() if c["usename"] == "app"] == []
    stuck.close()
