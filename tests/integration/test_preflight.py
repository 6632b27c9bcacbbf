"""Each preflight check passes on the healthy sandbox and trips when its condition is real."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from orchestrator.check_result import CheckResult
from orchestrator.config import Config, load_config
from orchestrator.db import preflight
from orchestrator.db.lock import DeployLock, new_run_id
from orchestrator.plan import Plan, parse_approvals
from orchestrator.runner.planning import build_plan, rules_for
from orchestrator.runner.preflight import patch_facts
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context

pytestmark = pytest.mark.integration


def run_checks(config: Config, plan: Plan, timings: Any, approvals: Any,
               **options: Any) -> list[Any]:
    """The database checks of ``plan`` with ``timings``, as the runner's preflight runs them."""
    return preflight.run_checks(config, patch_facts(plan, timings), approvals, **options)


@pytest.fixture
def config(sandbox: Context) -> Config:
    return load_config(L.PROJECT_ROOT / "config" / "sandbox.toml")


@pytest.fixture
def plan(sandbox: Context, config: Config) -> Plan:
    first = (sandbox.layout.role("app")[0].app_root / "current").resolve().name
    return build_plan(config.source.repo, config.source.branch, first, None, rules_for(config))


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def with_db(config: Config, **changes: object) -> Config:
    assert config.database is not None
    return dataclasses.replace(config, database=dataclasses.replace(config.database, **changes))


def superuser(ctx: Context, port: int = L.PRIMARY_PORT) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=L.DB_NAME,
                            password=ctx.passwords["postgres"])
    conn.autocommit = True
    return conn


def test_healthy_sandbox_passes_with_approvals(config: Config, plan: Plan) -> None:
    """On the sandbox at its first revision every check passes once cold patches are approved."""
    approvals = parse_approvals([f"{p}:rm" for p in plan.cold_patches], plan)
    results = by_name(run_checks(config, plan, {}, approvals))
    assert {n for n, r in results.items() if not r.ok} == set(), results
    assert "approved by rm" in results["patch_timings"].detail
    assert results["fragile_connections"].ok and "deploy stops the scripts" in \
        results["fragile_connections"].detail


def test_unrehearsed_cold_patches_are_refused(config: Config, plan: Plan) -> None:
    """Without timings or approvals, every cold patch is named as never rehearsed."""
    result = by_name(run_checks(config, plan, {}, {}))["patch_timings"]
    assert not result.ok
    assert all(f"{p} never rehearsed" in result.detail for p in plan.cold_patches)


def test_slow_rehearsal_is_refused_and_timings_estimate(config: Config, plan: Plan) -> None:
    """A cold patch slower than the budget is refused; the outage estimate sums the timings."""
    timings = {(name, blob): 0.5 for name, blob in plan.tree_patches.items()}
    slow = plan.cold_patches[0]
    timings[(slow, plan.tree_patches[slow])] = 40.0
    results = by_name(run_checks(config, plan, timings, {}))
    assert not results["patch_timings"].ok and f"{slow} took 40.000 s" in \
        results["patch_timings"].detail
    assert not results["window_budget"].ok
    fine = {k: 0.5 for k in timings}
    results = by_name(run_checks(config, plan, fine, {}))
    assert results["patch_timings"].ok and results["window_budget"].ok
    assert results["window_budget"].data["estimate_s"] == pytest.approx(
        0.5 * len(plan.cold_patches) + 0.1)


def test_missing_standby(config: Config, plan: Plan) -> None:
    """Expecting two streaming standbys when one streams fails the standbys check."""
    result = by_name(run_checks(with_db(config, standbys=2), plan, {}, {}))["standbys"]
    assert not result.ok and "1 streaming, 2 expected" in result.detail


def test_long_transaction_trips(sandbox: Context, config: Config, plan: Plan) -> None:
    """A transaction older than the limit is named; an exempt user's is tolerated."""
    conn = psycopg2.connect(host="127.0.0.1", port=L.PRIMARY_PORT, user="app",
                            dbname=L.DB_NAME, password=sandbox.passwords["app"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        started = time.monotonic()
        while time.monotonic() - started < 0.6:  # the transaction must age past the limit
            time.sleep(0.05)
        result = by_name(run_checks(with_db(config, max_transaction_age_s=0.5), plan, {},
                                    {}))["long_transactions"]
        assert not result.ok and "(app," in result.detail
        result = by_name(run_checks(with_db(config, max_transaction_age_s=0.5,
                                            long_transaction_users=("app",)), plan, {},
                                    {}))["long_transactions"]
        assert result.ok
    finally:
        conn.close()


def test_fragile_connection_trips_once_scripts_are_stopped(config: Config, plan: Plan) -> None:
    """The running fragile script's connection fails the check when scripts should be stopped."""
    result = by_name(run_checks(config, plan, {}, {}, scripts_stopped=True))
    assert not result["fragile_connections"].ok
    assert "fragile connected" in result["fragile_connections"].detail


@pytest.fixture
def paused_standby(sandbox: Context) -> Iterator[None]:
    standby = superuser(sandbox, L.STANDBY_PORT)
    primary = superuser(sandbox)
    try:
        standby.cursor().execute("SELECT pg_wal_replay_pause()")
        with primary.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS fdt_preflight_lag (x int)")
            cur.execute("INSERT INTO fdt_preflight_lag VALUES (1)")
        yield
    finally:
        standby.cursor().execute("SELECT pg_wal_replay_resume()")
        primary.cursor().execute("DROP TABLE IF EXISTS fdt_preflight_lag")
        standby.close()
        primary.close()


def test_replication_lag_trips_when_replay_is_paused(paused_standby: None, config: Config,
                                                     plan: Plan) -> None:
    """With replay paused and fresh WAL on the primary, the lag check fails naming the standby."""
    lagging = with_db(config, max_replay_lag_s=0.3)
    deadline = time.monotonic() + 10
    while True:
        result = by_name(run_checks(lagging, plan, {}, {}))["replication_lag"]
        if not result.ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not result.ok and "limit 0.3 s" in result.detail


def test_pending_patches_must_match_the_plan(sandbox: Context, config: Config) -> None:
    """Planning from a revision the database has not reached names the unapplied patch."""
    repo = config.source.repo
    import subprocess

    revs = subprocess.run(["git", "-C", repo, "rev-list", "--first-parent", "--reverse",
                           "db-stable"], capture_output=True, text=True,
                          check=True).stdout.split()
    later = build_plan(repo, "db-stable", revs[3], None, rules_for(config))
    result = by_name(run_checks(config, later, {}, {}))["pending_patches"]
    assert not result.ok
    assert "patch-2200-01-0.sql is not applied and not in the plan" in result.detail


def test_changed_applied_patch_trips(config: Config, plan: Plan, scratch_db) -> None:  # type: ignore[no-untyped-def]
    """An applied patch whose file changed since (checksum differs) is named."""
    from orchestrator.db.connect import connect
    from orchestrator.db.schema import ensure_schema

    conn = connect(scratch_db)
    ensure_schema(conn)
    name = plan.cold_patches[0]
    with conn.cursor() as cur:
        cur.execute("INSERT INTO fastdowntime.applied_patch (filename, major, minor, point, "
                    "checksum) VALUES (%s, 2200, 1, 0, %s)", (name, "0" * 40))
    conn.commit()
    conn.close()
    cfg = dataclasses.replace(config, database=scratch_db)
    result = by_name(run_checks(cfg, plan, {}, {}))["applied_unchanged"]
    assert not result.ok and f"{name} changed since it was applied" in result.detail


def test_missing_revision_table_and_role(config: Config, plan: Plan, scratch_db) -> None:  # type: ignore[no-untyped-def]
    """A missing revision table is named; a role that may not change the schema is refused."""
    cfg = with_db(dataclasses.replace(config, database=scratch_db),
                  revision_table="NoSuchRevisionTable")
    results = by_name(run_checks(cfg, plan, {}, {}))
    assert not results["revision_table"].ok and "NoSuchRevisionTable" in \
        results["revision_table"].detail
    app = with_db(config, dsn=f"host=127.0.0.1 port={L.PGBOUNCER_PORT} dbname=app user=app")
    # the orchestrator's pgpass holds app's password for pgbouncer: connect through it
    results = by_name(run_checks(app, plan, {}, {}))
    assert not results["role"].ok and "app is neither superuser nor owner" in \
        results["role"].detail


def test_deploy_lock_holder_is_named(config: Config, plan: Plan) -> None:
    """While a run holds the deploy lock, preflight names it."""
    assert config.database is not None
    with DeployLock(config.database, new_run_id(), "carol@test"):
        result = by_name(run_checks(config, plan, {}, {}))["deploy_lock"]
    assert not result.ok and "carol@test" in result.detail


def test_cli_preflight_exit_codes(sandbox: Context, plan: Plan,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """preflight exits 3 naming the failed checks, 0 once they pass, 2 for a bad approval."""
    from orchestrator.cli import main

    assert main(["preflight", "--from", plan.from_sha]) == 3
    assert "preflight failed: patch_timings, window_budget" in capsys.readouterr().err
    approvals = [f"--approve={p.removesuffix('.sql')}:rm" for p in plan.cold_patches]
    assert main(["preflight", "--from", plan.from_sha, "--json", *approvals]) == 0
    out = capsys.readouterr().out
    assert '"ok": true' in out and '"name": "runs_dir"' in out
    assert main(["preflight", "--from", plan.from_sha, "--approve", "patch-2200-02-0:x"]) == 2


def test_unresolved_runs_are_refused_until_resumed(config: Config, plan: Plan,
                                                   scratch_db) -> None:  # type: ignore[no-untyped-def]
    """A run left crashed (running, its session gone), undo-failed or commit-unknown refuses
    the next deploy, naming the run and `fastdowntime resume RUN`; settled runs do not."""
    from orchestrator.db.connect import connect
    from orchestrator.db.schema import ensure_schema

    conn = connect(scratch_db)
    ensure_schema(conn)
    with conn.cursor() as cur:
        for run_id, outcome, backend in (("r-dead", "running", 999999),
                                         ("r-undo", "undo-failed", None),
                                         ("r-unknown", "commit-unknown", None),
                                         ("r-done", "done", None),
                                         ("r-back", "rolled-back", None)):
            cur.execute("INSERT INTO fastdowntime.run (id, who, outcome, backend_pid) "
                        "VALUES (%s, 'alice@laptop', %s, %s)", (run_id, outcome, backend))
    conn.commit()
    conn.close()
    cfg = dataclasses.replace(config, database=scratch_db)
    result = by_name(run_checks(cfg, plan, {}, {}))["unresolved_runs"]
    assert not result.ok
    assert [r["id"] for r in result.data["runs"]] == ["r-dead", "r-undo", "r-unknown"]
    assert "run r-dead by alice@laptop ended crashed: `fastdowntime resume r-dead`" in \
        result.detail


def test_a_paused_pgbouncer_is_refused(config: Config, plan: Plan) -> None:
    """A database pgbouncer was left paused (by a dead run, or by hand) fails preflight by
    name; resumed, it passes."""
    from orchestrator.db.connect import admin_console
    from orchestrator.db.connections import pgbouncer_closed

    settings = config.need("database")
    console = admin_console(settings)
    try:
        with console.cursor() as cur:
            cur.execute(f"PAUSE {L.DB_NAME}")
        result = by_name(run_checks(config, plan, {}, {}))["pgbouncer"]
        assert not result.ok and f"{L.DB_NAME} is paused" in result.detail
    finally:
        with console.cursor() as cur:
            cur.execute(f"RESUME {L.DB_NAME}")
        console.close()
    assert pgbouncer_closed(settings, L.DB_NAME) == {}
    assert by_name(run_checks(config, plan, {}, {}))["pgbouncer"].ok


def test_hold_reads_pgbouncer_and_trips_on_a_short_query_wait(config: Config,
                                                               plan: Plan) -> None:
    """The sandbox's pgbouncer (query_wait_timeout 120 s, max_client_conn 500) can hold a
    request for the window; with query_wait_timeout set below the window on its console,
    preflight names it; set back, it passes."""
    from orchestrator.db.connect import admin_console
    from orchestrator.db.connections import pgbouncer_limits

    settings = config.need("database")
    limits = pgbouncer_limits(settings, L.DB_NAME)
    assert limits.max_client_conn == 500 and limits.query_wait_timeout_s == 120
    hold = by_name(run_checks(config, plan, {}, {}))["hold"]
    assert hold.ok, hold.detail
    console = admin_console(settings)
    try:
        with console.cursor() as cur:
            cur.execute("SET query_wait_timeout = 5")
        hold = by_name(run_checks(config, plan, {}, {}))["hold"]
        assert not hold.ok and "query_wait_timeout = 5 s" in hold.detail, hold.detail
    finally:
        with console.cursor() as cur:
            cur.execute("SET query_wait_timeout = 120")
        console.close()
    assert by_name(run_checks(config, plan, {}, {}))["hold"].ok


def test_haproxy_timeouts_are_read_on_the_lb_host(config: Config) -> None:
    """Over SSH, from the LB host's haproxy.cfg: 60 s each, enough for a 30 s window; a
    budget longer than them is refused naming the file."""
    from orchestrator.remote.checks import check_haproxy_waits
    from orchestrator.remote.ssh import Remote

    with Remote(config) as remote:
        result = check_haproxy_waits(remote, config)
        assert result.ok, result.detail
        assert result.data["server_s"] == 60 and result.data["queue_s"] == 60
        longer = dataclasses.replace(config, window=dataclasses.replace(config.window,
                                                                        budget_s=90))
        result = check_haproxy_waits(remote, longer)
    assert not result.ok and "timeout server 60 s" in result.detail
    assert "haproxy.cfg on lb1" in result.detail
