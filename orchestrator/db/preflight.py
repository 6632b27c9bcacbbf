"""The database checks of preflight: each a named result with its threshold and its data.

Every check runs on a read-only session and changes nothing. Checks
(Launchpad's defaults, all configurable in ``[database]`` and ``[window]``):

- ``role``: the connected role may change the schema (superuser, or owner of
  the database and of the revision table);
- ``standbys``: the expected number of standbys present and streaming;
- ``replication_lag``: every standby's replay lag under ``max_replay_lag_s``
  (by LSN and by replay timestamp);
- ``long_transactions``: no transaction older than ``max_transaction_age_s``
  except ``long_transaction_users``;
- ``fragile_connections``: no connection from ``fragile_users`` (once the
  deploy has stopped the scripts);
- ``revision_table``: it exists;
- ``pending_patches``: the patches the database lacks are exactly the plan's;
- ``applied_unchanged``: no applied patch file changed since it was applied;
- ``patch_timings``: every cold patch rehearsed under ``patch_budget_s``, or approved
  (a rehearsal, which is how timings come to exist, does not need them);
- ``window_budget``: the estimated outage fits ``budget_s``;
- ``unresolved_runs``: no earlier run was left ``crashed`` (its orchestrator
  died: still ``running`` with its session gone), ``undo-failed`` or
  ``commit-unknown``: ``resume`` settles it first;
- ``pgbouncer``: no database of the primary is left paused or disabled in
  pgbouncer (by a run that died, or by hand);
- ``hold``: in ``[window] mode = "hold"``, a request can wait the whole window at
  pgbouncer and in the app (the host checks add haproxy's timeouts);
- ``deploy_lock``: nobody else is deploying.

The checks know the plan only as plain values (:class:`Patches`): which
patch files the target has, which the deploy applies, the cold ones, their
rehearsed seconds and the outage estimate. The runner computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg2

from orchestrator.check_result import CheckResult
from orchestrator.config import Config
from orchestrator.db import replication
from orchestrator.db.connect import Connection, connect
from orchestrator.db.lock import UNRESOLVED, holder, unresolved_runs
from orchestrator.db.schema import identifier, schema_exists
from orchestrator.errors import FastdowntimeError
from orchestrator.patches import parse_name


@dataclass(frozen=True)
class Patches:
    """What the database checks need of a plan, as plain values.

    ``tree``: every patch file of the target tree -> its checksum (git blob
    id); ``planned``: the patches the deploy applies; ``cold``: those the
    window applies; ``seconds``: rehearsed seconds of the tree's versions that
    have a timing; ``estimate_s``: the outage estimate (None when a cold patch
    has no timing; 0 when there is no window); ``need_timings``: False for a
    rehearsal, which records timings and never needs them.
    """

    tree: Mapping[str, str] = field(default_factory=dict)
    planned: tuple[str, ...] = ()
    cold: tuple[str, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    estimate_s: float | None = 0.0
    estimate_note: str = ""
    """Where the estimate comes from, in words (the overhead's source, the scaling)."""
    need_timings: bool = True

    @property
    def unknown(self) -> tuple[str, ...]:
        """The cold patches with no rehearsal timing."""
        return tuple(name for name in self.cold if name not in self.seconds)


@dataclass(frozen=True)
class Context:
    """What the checks look at: config, an open read-only session, the patches and gates."""

    config: Config
    conn: Connection
    patches: Patches | None
    approvals: Mapping[str, str]
    scripts_stopped: bool = False
    """True once the deploy has stopped the scripts: a fragile connection then fails."""

    @cached_property
    def applied(self) -> set[tuple[int, int, int]] | None:
        """The revision table's (major, minor, patch) rows, read once; None if it is missing."""
        table = identifier(self.config.need("database").revision_table)
        [(exists,)] = _rows(self.conn, "SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not exists:
            return None
        return {(r[0], r[1], r[2])
                for r in _rows(self.conn, f"SELECT major, minor, patch FROM {table}")}

    @cached_property
    def standbys(self) -> list[replication.StandbyState]:
        """The standbys' states, sampled once for both replication checks."""
        return replication.standbys(self.config.need("database"), self.conn)


Check = Callable[[Context], CheckResult]


def run_checks(config: Config, patches: Patches | None, approvals: Mapping[str, str], *,
               scripts_stopped: bool = False) -> list[CheckResult]:
    """Run every database check; a check that errors is a failed check, not a crash.

    Before the deploy has stopped the fragile scripts (``scripts_stopped``
    False, with a scripts host configured), their connections are reported
    but do not fail: the deploy checks again once they are stopped.
    """
    settings = config.need("database")
    conn = connect(settings, what="primary", readonly=True, autocommit=True)
    try:
        ctx = Context(config, conn, patches, approvals, scripts_stopped)
        results = []
        for check in CHECKS:
            try:
                results.append(check(ctx))
            except (psycopg2.Error, FastdowntimeError) as exc:
                name = check.__name__.removeprefix("check_")
                results.append(CheckResult(name, False, f"could not check: "
                                           f"{' '.join(str(exc).split())}"))
        return results
    finally:
        conn.close()


def _rows(conn: Connection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def check_role(ctx: Context) -> CheckResult:
    table = ctx.config.need("database").revision_table
    [(user, superuser, owns_db, owns_table)] = _rows(ctx.conn, """
        SELECT current_user, r.rolsuper,
               pg_has_role(current_user, d.datdba, 'USAGE'),
               COALESCE(pg_has_role(current_user, c.relowner, 'USAGE'), false)
          FROM pg_roles r, pg_database d
          LEFT JOIN pg_class c ON c.oid = to_regclass(%s)
         WHERE r.rolname = current_user AND d.datname = current_database()""", (table,))
    ok = superuser or (owns_db and owns_table)
    detail = (f"{user} may change the schema" if ok else
              f"{user} is neither superuser nor owner of the database and of {table}")
    if ok and user not in ctx.config.need("database").system_users:
        # the window cuts every connection of a non-system user: it would cut our own
        ok = False
        detail = (f"{user} is not in [database] system_users: the window would cut the "
                  "orchestrator's own connections")
    return CheckResult("role", ok, detail, {"user": user, "superuser": superuser})


def check_standbys(ctx: Context) -> CheckResult:
    expected = ctx.config.need("database").standbys
    states = ctx.standbys
    streaming = [s.name for s in states if s.state == "streaming"]
    ok = len(streaming) >= expected
    return CheckResult("standbys", ok, f"{len(streaming)} streaming, {expected} expected",
                       {"standbys": [vars(s) for s in states]})


def check_replication_lag(ctx: Context) -> CheckResult:
    limit = ctx.config.need("database").max_replay_lag_s
    states = ctx.standbys
    behind = [s for s in states if s.lag_s is None or s.lag_s >= limit]
    worst = max((s.lag_s or 0.0 for s in states), default=0.0)
    detail = (f"replay lag {worst:.3f} s, under {limit:g} s" if not behind else
              "; ".join(f"{s.name} lags {_seconds(s.lag_s)} ({s.lag_bytes} bytes), "
                        f"limit {limit:g} s" for s in behind))
    return CheckResult("replication_lag", not behind, detail,
                       {"limit_s": limit, "standbys": [vars(s) for s in states]})


def _seconds(value: float | None) -> str:
    return "an unknown time" if value is None else f"{value:.3f} s"


def check_long_transactions(ctx: Context) -> CheckResult:
    settings = ctx.config.need("database")
    rows = _rows(ctx.conn, """
        SELECT pid, usename, application_name,
               extract(epoch FROM clock_timestamp() - xact_start)::float8
          FROM pg_stat_activity
         WHERE xact_start < clock_timestamp() - make_interval(secs => %s)
           AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           AND NOT (usename = ANY(%s))""",
                 (settings.max_transaction_age_s, list(settings.long_transaction_users)))
    detail = (f"no transaction older than {settings.max_transaction_age_s:g} s" if not rows else
              "; ".join(f"pid {pid} ({user}, {app or '-'}) open for {age:.0f} s"
                        for pid, user, app, age in rows))
    return CheckResult("long_transactions", not rows, detail,
                       {"transactions": [{"pid": r[0], "user": r[1], "age_s": r[3]}
                                         for r in rows]})


def check_fragile_connections(ctx: Context) -> CheckResult:
    users = list(ctx.config.need("database").fragile_users)
    rows = _rows(ctx.conn, "SELECT pid, usename, application_name, client_addr::text "
                           "FROM pg_stat_activity WHERE usename = ANY(%s)", (users,))
    data = {"connections": [{"pid": r[0], "user": r[1]} for r in rows]}
    if not rows:
        return CheckResult("fragile_connections", True, "no connection from a fragile user", data)
    listed = "; ".join(f"{user} connected (pid {pid}, {app or '-'}, from {addr or 'socket'})"
                       for pid, user, app, addr in rows)
    if not ctx.scripts_stopped and ctx.config.scripts is not None and ctx.config.role("scripts"):
        return CheckResult("fragile_connections", True,
                           f"{listed}: the deploy stops the scripts, then checks again", data)
    return CheckResult("fragile_connections", False, f"{listed}: stop those scripts first", data)


def check_revision_table(ctx: Context) -> CheckResult:
    table = ctx.config.need("database").revision_table
    applied = ctx.applied
    if applied is None:
        return CheckResult("revision_table", False, f"the revision table {table} is missing")
    return CheckResult("revision_table", True, f"{table}: {len(applied)} patches applied")


def check_pending_patches(ctx: Context) -> CheckResult:
    applied = ctx.applied
    if ctx.patches is None or applied is None:
        return CheckResult("pending_patches", applied is not None, "no plan to compare")
    planned = set(ctx.patches.planned)
    missing = {n for n in ctx.patches.tree if parse_name(n).key not in applied}
    unplanned = sorted(missing - planned, key=lambda n: parse_name(n).key)
    redone = sorted((n for n in planned if parse_name(n).key in applied
                     and n in ctx.patches.cold), key=lambda n: parse_name(n).key)
    problems = ([f"{n} is not applied and not in the plan (is the database at --from?)"
                 for n in unplanned] +
                [f"{n} is in the plan but already applied" for n in redone])
    detail = "; ".join(problems) or (f"{len(missing)} pending patches, all in the plan")
    return CheckResult("pending_patches", not problems, detail,
                       {"pending": sorted(missing), "unplanned": unplanned, "applied": redone})


def check_applied_unchanged(ctx: Context) -> CheckResult:
    if ctx.patches is None or not schema_exists(ctx.conn):
        return CheckResult("applied_unchanged", True, "no checksums recorded yet")
    rows = _rows(ctx.conn, "SELECT filename, checksum FROM fastdowntime.applied_patch")
    changed = [f"{name} changed since it was applied ({old[:12]} then, {new[:12]} now)"
               for name, old in rows
               if (new := ctx.patches.tree.get(name)) and new != old]
    return CheckResult("applied_unchanged", not changed,
                       "; ".join(changed) or f"{len(rows)} applied patch files unchanged",
                       {"changed": changed})


def check_patch_timings(ctx: Context) -> CheckResult:
    if ctx.patches is None:
        return CheckResult("patch_timings", True, "no plan")
    budget = ctx.config.window.patch_budget_s
    known = ctx.patches.seconds
    if not ctx.patches.need_timings:
        return CheckResult("patch_timings", True,
                           f"a rehearsal records the timings of {len(ctx.patches.cold)} cold "
                           "patches; it does not need them", {"timings": dict(known)})
    problems, notes = [], []
    for name in ctx.patches.cold:
        seconds = known.get(name)
        if seconds is not None and seconds < budget:
            continue
        why = "never rehearsed" if seconds is None else f"took {seconds:.3f} s on staging"
        if name in ctx.approvals:
            notes.append(f"{name} {why}, approved by {ctx.approvals[name]}")
        else:
            problems.append(f"{name} {why} (budget {budget:g} s): rehearse it or "
                            f"--approve {name}:WHO")
    detail = "; ".join(problems + notes) or f"every cold patch rehearsed under {budget:g} s"
    return CheckResult("patch_timings", not problems, detail,
                       {"timings": dict(known), "approved": dict(ctx.approvals)})


def check_window_budget(ctx: Context) -> CheckResult:
    budget = ctx.config.window.budget_s
    if ctx.patches is None or not ctx.patches.cold:
        return CheckResult("window_budget", True, "no window")
    estimate, unknown = ctx.patches.estimate_s, ctx.patches.unknown
    if estimate is None or unknown:
        known = sum(ctx.patches.seconds.get(n, 0.0) for n in ctx.patches.cold)
        ok = not ctx.patches.need_timings or all(n in ctx.approvals for n in unknown)
        return CheckResult("window_budget", ok,
                           f"estimate at least {known:.3f} s of {budget:g} s; unknown for "
                           f"{', '.join(unknown)}", {"estimate_s": None, "budget_s": budget})
    note = f" ({ctx.patches.estimate_note})" if ctx.patches.estimate_note else ""
    return CheckResult("window_budget", estimate <= budget,
                       f"estimated outage {estimate:.3f} s{note}, budget {budget:g} s",
                       {"estimate_s": estimate, "budget_s": budget})


def check_unresolved_runs(ctx: Context) -> CheckResult:
    if not schema_exists(ctx.conn):
        return CheckResult("unresolved_runs", True, "no run recorded yet")
    runs = [{"id": r.id, "who": r.who, "outcome": r.outcome}
            for r in unresolved_runs(ctx.conn, UNRESOLVED)]
    detail = ("; ".join(f"run {r['id']} by {r['who']} ended {r['outcome']}: "
                        f"`fastdowntime resume {r['id']}` settles it" for r in runs)
              or "every earlier run ended settled")
    return CheckResult("unresolved_runs", not runs, detail, {"runs": runs})


def check_pgbouncer(ctx: Context) -> CheckResult:
    settings = ctx.config.need("database")
    if not settings.pgbouncer_admin_dsn:
        return CheckResult("pgbouncer", True, "no pgbouncer configured")
    from orchestrator.db.connections import pgbouncer_closed

    closed = pgbouncer_closed(settings, str(ctx.conn.info.dbname))
    detail = ("; ".join(f"{name} is {' and '.join(flags)}: RESUME/ENABLE it on pgbouncer's "
                        "console, or `fastdowntime resume RUN` if a run left it so"
                        for name, flags in closed.items())
              or "every database of the primary is open")
    return CheckResult("pgbouncer", not closed, detail, {"closed": closed})


def check_hold(ctx: Context) -> CheckResult:
    """In hold mode, the database side can hold a request for the whole window: pgbouncer
    PAUSEs (not KILL), its ``query_wait_timeout`` and the app's pool wait outlast the
    budget, and ``max_client_conn`` has room for the new instances' clients too."""
    config = ctx.config
    if config.window.mode != "hold":
        return CheckResult("hold", True, "window mode drain: requests are turned away, not held")
    settings = config.need("database")
    need = config.window.hold_needs_s
    if not settings.pgbouncer_admin_dsn:
        return CheckResult("hold", False, "[window] mode = \"hold\" holds queries at "
                           "pgbouncer, and no [database] pgbouncer_admin_dsn is set: set it, "
                           "or [window] mode = \"drain\"")
    if settings.cut_method != "pause":
        return CheckResult("hold", False, f"[database] cut_method = "
                           f"\"{settings.cut_method}\" drops the clients a hold must keep: "
                           "set it to \"pause\", or [window] mode = \"drain\"")
    from orchestrator.db.connections import pgbouncer_limits

    limits = pgbouncer_limits(settings, str(ctx.conn.info.dbname))
    problems, notes = [], []
    wait = limits.query_wait_timeout_s
    if 0 < wait < need:
        problems.append(f"pgbouncer query_wait_timeout = {wait:g} s would fail a held query "
                        f"before the window could end ({need:g} s: [window] budget_s "
                        f"{config.window.budget_s:g} plus a margin); raise it or set it to 0")
    if 2 * limits.clients > limits.max_client_conn:
        problems.append(f"pgbouncer max_client_conn = {limits.max_client_conn} leaves no room: "
                        f"{limits.clients} clients now, up to {2 * limits.clients} with the "
                        "new instances beside the old ones in the window")
    pool_wait = config.app.pool_wait_s if config.app is not None else None
    if pool_wait is None:
        notes.append("[app] pool_wait_s not set: the app's own wait for a connection is "
                     "not checked")
    elif pool_wait < need:
        problems.append(f"[app] pool_wait_s = {pool_wait:g} s: the app would fail a request "
                        f"waiting for a connection before the window could end ({need:g} s)")
    shown = "for ever" if wait == 0 else f"{wait:g} s"
    detail = "; ".join(problems + notes) or (
        f"a request can wait {need:g} s: pgbouncer query_wait_timeout {shown}, "
        f"max_client_conn {limits.max_client_conn} for {limits.clients} clients, "
        f"app pool wait {pool_wait:g} s")
    return CheckResult("hold", not problems, detail,
                       {"need_s": need, "query_wait_timeout_s": wait,
                        "max_client_conn": limits.max_client_conn, "clients": limits.clients,
                        "pool_wait_s": pool_wait})


def check_deploy_lock(ctx: Context) -> CheckResult:
    current = holder(ctx.conn)
    return CheckResult("deploy_lock", current is None,
                       "free" if current is None else f"held by {current.describe()}")


CHECKS: tuple[Check, ...] = (
    check_role, check_standbys, check_replication_lag, check_long_transactions,
    check_fragile_connections, check_revision_table, check_pending_patches,
    check_applied_unchanged, check_patch_timings, check_window_budget, check_unresolved_runs,
    check_pgbouncer, check_hold, check_deploy_lock,
)
