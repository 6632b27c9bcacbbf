"""The sample app keeps the Launchpad rule: every revision's code works on every schema.

Needs a PostgreSQL where it may create and drop databases and roles:
``FDT_TEST_DSN`` (a libpq DSN) when set, otherwise the sandbox primary as its
``postgres`` superuser. The servers run under the
hosts' interpreter (``/usr/bin/python3`` with python3-psycopg2, or
``$FDT_SAMPLE_PYTHON``) as role ``app`` (``options=-c role=app``), so the
grants of security.sql are exercised too.

The test starts the app server of every db-stable revision at once, then
takes the database from the baseline through every patch. After each step
it cuts all their connections, as a deploy window does, and asks every
server for ``/`` and ``/+health``: all must answer 200.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pglast
import psycopg2
import psycopg2.extensions
import pytest

from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PRIMARY_PORT
from orchestrator.sandbox.samplerepo import SampleRepo, build_sample_repo

pytestmark = pytest.mark.integration

ADMIN_DSN = os.environ.get("FDT_TEST_DSN")
PYTHON = os.environ.get("FDT_SAMPLE_PYTHON", "/usr/bin/python3")
SCHEMA = "database/schema"
START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 10.0


def _python_has_psycopg2() -> bool:
    if not Path(PYTHON).exists():
        return False
    return subprocess.run([PYTHON, "-c", "import psycopg2"], capture_output=True).returncode == 0


if not _python_has_psycopg2():
    pytest.skip(f"{PYTHON} cannot import psycopg2", allow_module_level=True)


@dataclass
class Instance:
    sha: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    started_s: float

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRepo:
    return build_sample_repo(tmp_path_factory.mktemp("compat") / "repo")


@pytest.fixture(scope="module")
def admin_dsn(request: pytest.FixtureRequest) -> str:
    """FDT_TEST_DSN, or the sandbox primary's superuser."""
    if ADMIN_DSN:
        return ADMIN_DSN
    ctx = Context.load(request.getfixturevalue("sandbox_layout"))
    return psycopg2.extensions.make_dsn(host="127.0.0.1", port=PRIMARY_PORT, user="postgres",
                                        dbname="postgres", password=ctx.passwords["postgres"])


@pytest.fixture(scope="module")
def database(sample: SampleRepo, admin_dsn: str) -> Iterator[str]:
    """A fresh database at the baseline (first revision's baseline.sql + security.sql)."""
    name = f"fdt_compat_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        for role in ("app", "fragile"):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE ROLE {role} NOLOGIN")
        cur.execute(f"CREATE DATABASE {name}")
    dsn = psycopg2.extensions.make_dsn(admin_dsn, dbname=name)
    try:
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            for file in ("baseline.sql", "security.sql"):
                cur.execute(_show(sample, sample.first, f"{SCHEMA}/{file}"))
        conn.close()
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _show(sample: SampleRepo, sha: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{sha}:{path}"],
        cwd=sample.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while not _listening(port):
        assert time.monotonic() < deadline, f"port {port} not listening after {START_DEADLINE_S} s"
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def instances(
    sample: SampleRepo, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    """The app server of every first-parent revision, each from its own releases/<sha>."""
    root = tmp_path_factory.mktemp("hosts")
    etc = root / "app.json"
    app_dsn = psycopg2.extensions.make_dsn(database, options="-c role=app")
    etc.write_text(json.dumps({"dsn": app_dsn, "passfile": ""}))
    running: list[Instance] = []
    try:
        for sha in sample.revisions:
            release = root / "releases" / sha
            release.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "archive", sha], cwd=sample.path, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(release)], input=archive, check=True)
            port = _free_port()
            log = root / f"app-{sha[:12]}.log"
            argv = [PYTHON, str(release / "app/server.py"), "--bind", "127.0.0.1"]
            argv += ["--port", str(port), "--config", str(etc)]
            began = time.monotonic()
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            _wait_listening(proc, port, log)
            running.append(Instance(sha, port, proc, log, time.monotonic() - began))
        yield running
    finally:
        for instance in running:
            if instance.proc.poll() is None:
                instance.proc.kill()
                instance.proc.wait()


def _apply_patch(conn: psycopg2.extensions.connection, sql: str, security: str, key: tuple) -> None:
    """Apply one patch the way a deploy does: a live one statement by statement in autocommit,
    a cold one in one transaction; then the permissions, and the revision row if missing."""
    if "CONCURRENTLY" in sql:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in pglast.split(sql):
                cur.execute(statement)
        conn.autocommit = False
    with conn, conn.cursor() as cur:
        if "CONCURRENTLY" not in sql:
            cur.execute(sql)
        cur.execute(security)
        cur.execute(
            "INSERT INTO LaunchpadDatabaseRevision (major, minor, patch) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            key,
        )


def _cut_connections(conn: psycopg2.extensions.connection) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'sample-app'"
        )
        return int(cur.fetchone()[0])


def _check_all(instances: list[Instance], patch: list[int]) -> None:
    for instance in instances:
        status, body = instance.get("/")
        assert status == 200, (instance.sha, patch, body[:500])
        assert b"<h1>Items" in body
        status, body = instance.get("/+health")
        assert status == 200, (instance.sha, patch, body)
        assert json.loads(body) == {"ok": True, "revision": instance.sha, "patch": patch}


def test_every_revision_serves_on_every_schema(
    sample: SampleRepo, database: str, instances: list[Instance]
) -> None:
    """Code of each revision answers / and /+health with 200 before and after every patch."""
    assert max(i.started_s for i in instances) < 2.0, [i.started_s for i in instances]
    _check_all(instances, [2200, 0, 0])
    schema = sample.path / SCHEMA
    security = (schema / "security.sql").read_text()
    patches = sorted(
        schema.glob("patch-*.sql"), key=lambda p: [int(n) for n in p.stem.split("-")[1:]]
    )
    assert len(patches) == 6
    conn = psycopg2.connect(database)
    try:
        for patch in patches:
            key = tuple(int(n) for n in patch.stem.split("-")[1:])
            _apply_patch(conn, patch.read_text(), security, key)
            assert _cut_connections(conn) > 0
            _check_all(instances, list(key))
        with conn, conn.cursor() as cur:
            cur.execute((schema / "comments.sql").read_text())
    finally:
        conn.close()
    status, body = instances[-1].get("/?q=tube")
    assert status == 200 and b"Vacuum tube" in body and b"Slide rule" not in body
    for label in (b"Note", b"Tag", b"Price", b"In stock"):
        assert b"<th>" + label + b"</th>" in body


def test_servers_exit_zero_on_sigterm(instances: list[Instance]) -> None:
    """SIGTERM makes every revision's server finish and exit with status 0."""
    for instance in instances:
        instance.proc.send_signal(signal.SIGTERM)
    for instance in instances:
        assert instance.proc.wait(timeout=STOP_DEADLINE_S) == 0, instance.log.read_text()


def test_fragile_script_holds_one_connection_and_stops_cleanly(
    sample: SampleRepo, database: str, tmp_path: Path
) -> None:
    """fragile.py connects as application 'fragile', signals readiness, exits 0 on SIGTERM."""
    release = tmp_path / "release"
    shutil.copytree(sample.path / "scripts", release / "scripts")
    etc = tmp_path / "app.json"
    etc.write_text(
        json.dumps({"dsn": psycopg2.extensions.make_dsn(database, options="-c role=fragile")})
    )
    ready = tmp_path / "fragile.ready"
    argv = [PYTHON, str(release / "scripts/fragile.py"), "--config", str(etc)]
    log = tmp_path / "fragile.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, "--ready-file", str(ready)], stdout=out)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            try:
                proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
        conn = psycopg2.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'fragile'"
                )
                assert cur.fetchone()[0] == 1
        finally:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_DEADLINE_S) == 0
        assert not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _serve(sample: SampleRepo, root: Path, etc: dict[str, object]) -> Instance:
    """The tip's app server, started with ``etc`` as its host config, listening."""
    release = root / "release"
    if not release.exists():
        archive = subprocess.run(["git", "archive", sample.revisions[-1]], cwd=sample.path,
                                 capture_output=True, check=True).stdout
        release.mkdir()
        subprocess.run(["tar", "-x", "-C", str(release)], input=archive, check=True)
    config = root / f"app-{uuid.uuid4().hex[:6]}.json"
    config.write_text(json.dumps(etc))
    port = _free_port()
    log = root / f"{config.stem}.log"
    argv = [PYTHON, str(release / "app/server.py"), "--bind", "127.0.0.1", "--port", str(port),
            "--config", str(config)]
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(proc, port, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Instance(sample.revisions[-1], port, proc, log, time.monotonic() - began)


def _stop(instance: Instance) -> None:
    instance.proc.send_signal(signal.SIGTERM)
    assert instance.proc.wait(timeout=STOP_DEADLINE_S) == 0, instance.log.read_text()


def test_pool_is_warm_before_the_server_listens(
    sample: SampleRepo, database: str, tmp_path: Path
) -> None:
    """Traffic moved to a new instance finds its connections open: no login on the way."""
    counted = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    conn = psycopg2.connect(database)
    conn.autocommit = True
    try:
        for etc, expected in (({"pool_size": 3}, 3), ({"pool_size": 3, "pool_warm": 1}, 1),
                              ({"pool_size": 2, "pool_warm": 5}, 2),
                              ({"pool_size": 2, "pool_warm": None}, 2)):
            name = f"warm-{uuid.uuid4().hex[:8]}"  # a stopped instance's backends may linger
            dsn = psycopg2.extensions.make_dsn(database, options="-c role=app",
                                               application_name=name)
            instance = _serve(sample, tmp_path, {"dsn": dsn, "passfile": "", **etc})
            try:
                with conn.cursor() as cur:  # before any request
                    cur.execute(counted, (name,))
                    assert cur.fetchone()[0] == expected, (etc, instance.log.read_text())
                assert instance.get("/+health")[0] == 200
            finally:
                _stop(instance)
    finally:
        conn.close()


def test_server_listens_when_the_database_cannot_be_reached(
    sample: SampleRepo, tmp_path: Path
) -> None:
    """A pool that cannot warm is said in the log; the server listens and connects on demand."""
    dsn = psycopg2.extensions.make_dsn(host="127.0.0.1", port=_free_port(), dbname="app",
                                       user="app", connect_timeout=2)
    instance = _serve(sample, tmp_path, {"dsn": dsn, "passfile": ""})
    try:
        status, body = instance.get("/+health")
        assert status == 503 and b'"ok": false' in body, body
        assert instance.get("/+alive")[0] == 200
    finally:
        _stop(instance)
    assert "warming the pool:" in instance.log.read_text()


def _forward(port: int, to: dict[str, str]) -> subprocess.Popen[bytes]:
    """socat on ``port`` forwarding each connection to the database ``to`` names: the
    database "coming back" (its own session, so stopping it drops every connection)."""
    proc = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                             f"TCP:{to['host']}:{to['port']}"], start_new_session=True)
    deadline = time.monotonic() + START_DEADLINE_S
    while not _listening(port):
        assert proc.poll() is None and time.monotonic() < deadline, "socat did not listen"
        time.sleep(0.01)  # polling readiness, bounded by the deadline above
    return proc


def _drop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_server_serves_once_the_database_returns(
    sample: SampleRepo, database: str, tmp_path: Path
) -> None:
    """Started while the database is unreachable, the server answers 503, then 200 once it
    is back, without a restart; when every connection then drops (the database restarted),
    the next request is retried once on a fresh connection and answers 200."""
    port = _free_port()
    target = psycopg2.extensions.parse_dsn(database)
    dsn = psycopg2.extensions.make_dsn(database, host="127.0.0.1", port=port,
                                       options="-c role=app", connect_timeout=2)
    instance = _serve(sample, tmp_path, {"dsn": dsn, "passfile": "", "pool_size": 2})
    forwarder = None
    try:
        assert instance.get("/+health")[0] == 503
        forwarder = _forward(port, target)
        status, body = instance.get("/+health")
        assert status == 200 and json.loads(body)["ok"] is True, body
        _drop(forwarder)
        forwarder = _forward(port, target)
        status, body = instance.get("/+health")
        assert status == 200, (body, instance.log.read_text())
    finally:
        if forwarder is not None:
            _drop(forwarder)
        _stop(instance)
    assert "warming the pool:" in instance.log.read_text()
