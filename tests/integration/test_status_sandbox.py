"""``status`` on the real sandbox: what every host runs and serves, the patch level, the
standby, what a deploy would do next, the lock; and a host or the database that cannot be
reached, reported in its place while the rest is read. Read-only: nothing is changed."""

from __future__ import annotations

import dataclasses
import json

import psycopg2
import pytest

from orchestrator import cli
from orchestrator.config import Config
from orchestrator.db.schema import LOCK_KEY
from orchestrator.errors import ExitCode
from orchestrator.runner.planning import build_plan, rules_for
from orchestrator.runner.status import Status, status
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.haproxy import server_states

pytestmark = pytest.mark.integration


def superuser(sandbox: Context) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host="127.0.0.1", port=L.PRIMARY_PORT, user="postgres",
                            dbname=L.DB_NAME, password=sandbox.passwords["postgres"])
    conn.autocommit = True
    return conn


@pytest.fixture
def found(config: Config) -> Status:
    return status(config)


@pytest.fixture
def deployed(sandbox: Context) -> str:
    """The revision app1's ``current`` points at, read on its disk."""
    return (sandbox.layout.role("app")[0].app_root / "current").resolve().name


def test_every_part_of_the_sandbox_is_read(found: Status) -> None:
    """Nothing in the healthy sandbox is left unread."""
    assert found.complete, found.unread


def test_the_app_hosts_run_one_revision_and_serve_one_healthy_slot(
        sandbox: Context, found: Status, deployed: str) -> None:
    """Four app hosts on the revision their ``current`` points at, and the scripts host too;
    each app host's serving slot is the one haproxy has UP, and it answers its health check
    on that revision."""
    apps = [h for h in found.hosts if h.role == "app"]
    assert [h.name for h in apps] == [h.name for h in sandbox.layout.role("app")]
    assert len(apps) == 4
    assert {h.revision for h in found.hosts} == {deployed}
    states = server_states(sandbox.layout.haproxy_socket)
    for host in apps:
        assert host.serving in L.APP_PORTS, host
        assert states[L.Layout.server_name(host.name, host.serving)] == "UP"
        idle = next(p for p in L.APP_PORTS if p != host.serving)
        assert host.slots[idle] != "ready"
        assert host.health is not None and host.health.ok, host.health
        assert host.health.port == host.serving and host.health.revision == deployed


def test_the_patch_level_and_the_standby(sandbox: Context, found: Status) -> None:
    """The patch level is the revision table's newest row; the one standby streams, its
    replay lag known and small."""
    conn = superuser(sandbox)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT major, minor, patch, count(*) OVER () FROM {L.REVISION_TABLE} "
                        "ORDER BY major DESC, minor DESC, patch DESC LIMIT 1")
            major, minor, patch, rows = cur.fetchone()
    finally:
        conn.close()
    level = found.database.patch_level
    assert level is not None and level.key == (major, minor, patch) and level.applied == rows
    assert str(level) == f"{major}-{minor:02d}-{patch}"
    assert len(found.database.standbys) == 1
    standby = found.database.standbys[0]
    assert standby.state == "streaming" and standby.lag_s is not None and standby.lag_s < 60


def test_what_a_deploy_would_do_next(config: Config, found: Status, deployed: str) -> None:
    """The next deploy is the plan from the deployed revision to the tip: the same stages,
    revisions and patches, with an estimate (or the reason it has none)."""
    expected = build_plan(config.source.repo, config.source.branch, deployed, None,
                          rules_for(config))
    plan = found.pending.plan
    assert plan is not None and found.pending.errors == {}
    assert (plan.from_sha, plan.to_sha, plan.cut) == (expected.from_sha, expected.to_sha,
                                                      expected.cut)
    assert len(plan.revisions) == len(expected.revisions)
    assert len(plan.fastdowntime_revisions) == len(expected.fastdowntime_revisions)
    assert plan.cold_patches == expected.cold_patches
    assert plan.fastdowntime_live_patches == expected.fastdowntime_live_patches
    assert plan.nodowntime_live_patches == expected.nodowntime_live_patches
    pending = found.to_json()["pending"]
    assert pending["revisions"] == len(expected.revisions)
    if expected.cut is not None:
        assert plan.estimate is not None  # the estimate was attempted with timings and sizes


def test_no_lock_is_held(found: Status) -> None:
    """Nobody deploys: the lock reads free."""
    assert found.lock.errors == {} and found.lock.holder is None
    assert found.to_json()["lock"] == {"held": False, "holder": None, "errors": {}}


def test_a_session_holding_the_lock_is_named(sandbox: Context, config: Config) -> None:
    """A session that holds the deploy lock (here without a run record) is named by its
    backend; the lock is released after."""
    conn = superuser(sandbox)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (LOCK_KEY,))
            taken, pid = cur.fetchone()
        assert taken
        held = status(config).lock
        assert held.holder is not None and held.holder.pid == pid
        assert held.holder.run_id is None
    finally:
        conn.close()  # the session lock ends with it


@pytest.fixture
def one_host_away(config: Config) -> Config:
    """The sandbox's config with app2's SSH at a port where nothing listens."""
    hosts = tuple(dataclasses.replace(h, port=1) if h.name == "app2" else h
                  for h in config.hosts)
    return dataclasses.replace(config, hosts=hosts)


def test_an_unreachable_host_is_reported_in_its_place(one_host_away: Config,
                                                      deployed: str) -> None:
    """app2 cannot be reached: its revision says why, the plan cannot start; the other hosts,
    haproxy's slots, the database and the lock are read all the same."""
    found = status(one_host_away)
    away = next(h for h in found.hosts if h.name == "app2")
    assert away.revision is None and "unreachable" in away.errors["revision"]
    assert away.serving in L.APP_PORTS  # haproxy still says which slot serves it
    assert all(h.revision == deployed for h in found.hosts if h.name != "app2")
    assert "app2 could not be read" in found.pending.errors["plan"]
    assert found.database.errors == {} and found.lock.errors == {}
    assert [line.split(":")[0] for line in found.unread] == ["app2 revision", "pending plan"]


def test_the_database_down_is_reported_in_its_place(config: Config, deployed: str) -> None:
    """The primary at a port where nothing listens: the patch level, the standbys, the lock
    and the run records say why; the hosts, the slots and the plan are read all the same."""
    settings = config.need("database")
    down = dataclasses.replace(config, database=dataclasses.replace(
        settings, dsn=settings.dsn.replace(f"port={L.PRIMARY_PORT}", "port=1"),
        timings_file=None, timings_dsn=None))
    found = status(down)
    assert set(found.database.errors) == {"patch_level", "standbys"}
    assert set(found.lock.errors) == {"holder"} and "database" in found.runs.errors
    assert all(h.revision == deployed and not h.errors for h in found.hosts)
    assert found.pending.plan is not None and "estimate" in found.pending.errors


def test_the_command_prints_one_json_document(config: Config,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``fastdowntime status --json`` on the sandbox: one JSON document, exit 0."""
    code = cli.main(["-c", str(L.PROJECT_ROOT / "config" / "sandbox.toml"), "status", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK, data["unread"]
    assert data["complete"] is True and len(data["hosts"]) == 5
