"""``status``: what is deployed where, what the next deploy would do, the last run, the lock.

Read-only, like ``sqitch status`` or ``flyway info``. Each part is read on its own:

- every app and scripts host: the revision ``current`` points at (over SSH);
  for an app host, each instance slot's admin state in haproxy, so the slot
  that serves (the one ``ready``), and whether that instance answers its
  health check within :data:`HEALTH_TIMEOUT_S`;
- the database: its patch level (the revision table's newest row) and each
  standby's replay lag;
- what ``plan`` would do next, from the revision the app hosts agree on: the
  revisions and patches of each stage and the estimated window;
- the last run in ``[runs] dir``; every run that needs ``resume`` (an outcome
  :attr:`~orchestrator.runner.outcome.Outcome.needs_resume`, in the database's
  run records or in ``[runs] dir``); who holds the deploy lock.

A part that cannot be read (a host unreachable, the database down) keeps the
reason in its place (its ``errors``) and the others are read all the same;
:attr:`Status.complete` says whether every part was read. An unhealthy
instance, a lagging standby or a held lock is what was read, not a failure to
read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg2

from orchestrator.config import Config, DatabaseSettings, HostSettings
from orchestrator.db.connect import Connection, connect
from orchestrator.db.lock import Holder, UnresolvedRun, holder, unresolved_runs
from orchestrator.db.patchlevel import PatchLevel, patch_level
from orchestrator.db.replication import StandbyState, standbys
from orchestrator.errors import FastdowntimeError
from orchestrator.plan import Plan
from orchestrator.remote.commands import is_sha
from orchestrator.remote.haproxy import Haproxy
from orchestrator.remote.haproxy_wire import ServerStat
from orchestrator.remote.operations import (
    HealthResult,
    RevisionsDisagree,
    revision_commands,
    wait_healthy,
)
from orchestrator.remote.results import UNREACHABLE, GroupResult, HostKeyRejected, HostResult
from orchestrator.remote.ssh import Remote
from orchestrator.runner.context import server_name
from orchestrator.runner.journal import iso_ms
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.preflight import Rehearsed, plan_for, rehearsal_timings
from orchestrator.runner.runs import list_runs, load_run

READ_ERRORS: tuple[type[Exception], ...] = (FastdowntimeError, psycopg2.Error, OSError)
"""What reading a part raises when it cannot be read; anything else is a bug, and exits 70."""
HEALTH_TIMEOUT_S = 2.0
"""How long a serving instance has to answer its health check."""
COMMAND_TIMEOUT_S = 10.0
"""How long reading ``current`` may take on a host."""
PARALLEL = 16
"""Hosts asked at once (their revision, their instance's health)."""

_NEEDS_RESUME = frozenset(o.value for o in Outcome if o.needs_resume)
_RECORDED = tuple(sorted(o for o in _NEEDS_RESUME if o != Outcome.RUNNING))
"""The outcomes a run record needing ``resume`` holds (a dead ``running`` is found apart)."""


# --- what was read --------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    """One app or scripts host. ``errors``: part (``revision``, ``slots``, ``health``) -> why it
    could not be read."""

    name: str
    role: str
    revision: str | None = None
    slots: Mapping[int, str] = field(default_factory=dict)
    """App host: port -> haproxy's admin state of the instance slot (ready, drain, maint)."""
    health: HealthResult | None = None
    """The serving instance's health check (None: not checked)."""
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def serving(self) -> int | None:
        """The port of the one slot haproxy has ready (None: none, or more than one)."""
        return serving_port(self.slots)

    def to_json(self) -> dict[str, Any]:
        health = self.health
        return {"name": self.name, "role": self.role, "revision": self.revision,
                "slots": {str(port): state for port, state in self.slots.items()},
                "serving": self.serving,
                "health": None if health is None else {
                    "ok": health.ok, "port": health.port, "url": health.url,
                    "revision": health.revision, "answer": health.last_answer,
                    "elapsed_s": round(health.elapsed_s, 3)},
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class DatabaseStatus:
    """The primary's patch level and the standbys. ``errors``: ``patch_level`` or
    ``standbys`` -> why it could not be read."""

    connected: bool = False
    """Whether a session on the primary opened (the plan's estimate reads sizes on it)."""
    patch_level: PatchLevel | None = None
    standbys: tuple[StandbyState, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        level = self.patch_level
        return {"connected": self.connected, "patch_level": None if level is None else {
                    "version": str(level), "major": level.major, "minor": level.minor,
                    "patch": level.patch, "start_time": utc_instant(level.start_time),
                    "end_time": utc_instant(level.end_time), "applied": level.applied},
                "standbys": [vars(s) for s in self.standbys],
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class PendingStatus:
    """What ``plan`` would do next (None: it could not be made). ``errors``: ``plan`` or
    ``estimate`` -> why it could not be read."""

    plan: Plan | None = None
    budget_s: float | None = None
    errors: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        if plan is None:
            return {"from": None, "to": None, "cut": None, "revisions": None,
                    "fastdowntime": None, "nodowntime": None, "violations": None,
                    "source": None, "errors": dict(self.errors)}
        return {"from": plan.from_sha, "to": plan.to_sha, "cut": plan.cut,
                "revisions": len(plan.revisions),
                "fastdowntime": {
                    "revisions": len(plan.fastdowntime_revisions),
                    "cold_patches": list(plan.cold_patches),
                    "live_patches": list(plan.fastdowntime_live_patches),
                    "estimated_outage_s": plan.estimated_outage_s,
                    "budget_s": self.budget_s,
                    "estimate": None if plan.estimate is None else plan.estimate.to_json()},
                "nodowntime": {"revisions": len(plan.nodowntime_revisions),
                               "live_patches": list(plan.nodowntime_live_patches)},
                "violations": [v.to_json() for v in plan.violations],
                "source": None if plan.source is None else plan.source.to_json(),
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class RunsStatus:
    """The last run's summary (None: no run yet) and the runs that need ``resume``, each
    ``{"id", "who", "outcome", "started", "recorded"}`` (``recorded``: ``database`` or
    ``runs dir``). ``errors``: ``database`` or ``runs_dir`` -> why it could not be read."""

    last: Mapping[str, Any] | None = None
    needs_resume: tuple[Mapping[str, Any], ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"last": None if self.last is None else dict(self.last),
                "needs_resume": [dict(run) for run in self.needs_resume],
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class LockStatus:
    """Who holds the deploy lock (None: free, when read). ``errors``: ``holder`` -> why."""

    holder: Holder | None = None
    errors: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        held = self.holder
        return {"held": None if "holder" in self.errors else held is not None,
                "holder": None if held is None else holder_json(held),
                "errors": dict(self.errors)}


def holder_json(held: Holder) -> dict[str, Any]:
    """Who holds (or held) the deploy lock, as ``status --json`` and ``unlock --json`` say."""
    return {"run_id": held.run_id, "who": held.who, "started": utc_instant(held.started),
            "backend_pid": held.pid, "host": held.host, "process": held.process,
            "describe": held.describe()}


@dataclass(frozen=True)
class Status:
    """Everything ``status`` read, part by part."""

    hosts: tuple[HostStatus, ...]
    database: DatabaseStatus
    pending: PendingStatus
    runs: RunsStatus
    lock: LockStatus

    @property
    def unread(self) -> list[str]:
        """Every part that could not be read, as ``where part: why``, in the order shown."""
        parts: list[tuple[str, Mapping[str, str]]] = [(h.name, h.errors) for h in self.hosts]
        parts += [("database", self.database.errors), ("pending", self.pending.errors),
                  ("runs", self.runs.errors), ("lock", self.lock.errors)]
        return [f"{where} {part}: {why}" for where, errors in parts for part, why in errors.items()]

    @property
    def complete(self) -> bool:
        """True when every part was read."""
        return not self.unread

    def to_json(self) -> dict[str, Any]:
        return {"complete": self.complete, "unread": self.unread,
                "hosts": [h.to_json() for h in self.hosts],
                "database": self.database.to_json(), "pending": self.pending.to_json(),
                "runs": self.runs.to_json(), "lock": self.lock.to_json()}


# --- where it is read from ------------------------------------------------------------------


class DatabasePort(Protocol):
    """The database's parts, on one read-only session; each raises one of
    :data:`READ_ERRORS` when it cannot be read."""

    def patch_level(self) -> PatchLevel | None: ...

    def standbys(self) -> list[StandbyState]: ...

    def holder(self) -> Holder | None: ...

    def unresolved_runs(self, outcomes: Sequence[str]) -> list[UnresolvedRun]: ...


class Sources(Protocol):
    """Where :func:`gather` reads each part (:class:`LiveSources`: the real ones; the unit
    tests fake them). A method raises one of :data:`READ_ERRORS` when it cannot read."""

    def revisions(self, hosts: Sequence[HostSettings]) -> GroupResult:
        """Each host's answer to reading ``current`` (a sha on stdout), one result per host."""
        ...

    def servers(self) -> Mapping[str, ServerStat]:
        """haproxy's servers of ``[lb] backend``, by name."""
        ...

    def health(self, host: HostSettings, port: int, revision: str) -> HealthResult: ...

    def database(self) -> contextlib.AbstractContextManager[DatabasePort]: ...

    def timings(self) -> Rehearsed: ...

    def plan(self, from_sha: str, timings: Rehearsed | None, read_sizes: bool) -> Plan: ...


@dataclass(frozen=True)
class _Session:
    settings: DatabaseSettings
    conn: Connection

    def patch_level(self) -> PatchLevel | None:
        return patch_level(self.conn, self.settings.revision_table)

    def standbys(self) -> list[StandbyState]:
        return standbys(self.settings, self.conn)

    def holder(self) -> Holder | None:
        return holder(self.conn)

    def unresolved_runs(self, outcomes: Sequence[str]) -> list[UnresolvedRun]:
        return unresolved_runs(self.conn, outcomes)


class LiveSources:
    """The real sources: SSH to the hosts (opened on first use), haproxy's admin socket over
    it, a read-only session on the primary, git and the rehearsal timings. Close it after."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._remote: Remote | None = None
        self._haproxy: Haproxy | None = None

    def _ssh(self) -> Remote:
        if self._remote is None:
            self._remote = Remote(self.config)
        return self._remote

    def revisions(self, hosts: Sequence[HostSettings]) -> GroupResult:
        remote = self._ssh()

        def one(host: HostSettings) -> HostResult:
            try:
                return revision_commands(self.config, [host]).run(
                    remote, COMMAND_TIMEOUT_S).results[0]
            except HostKeyRejected as exc:  # that host's, not every host's
                return HostResult(host.name, UNREACHABLE, None, "", str(exc), 0.0, "connect")
        return GroupResult.of(_each(hosts, one))

    def servers(self) -> Mapping[str, ServerStat]:
        if self._haproxy is None:
            self._haproxy = Haproxy(self._ssh(), self.config)
        return self._haproxy.stats()

    def health(self, host: HostSettings, port: int, revision: str) -> HealthResult:
        return wait_healthy(self.config, host, port, revision, HEALTH_TIMEOUT_S)

    @contextlib.contextmanager
    def database(self) -> Iterator[DatabasePort]:
        settings = self.config.need("database")
        conn = connect(settings, what="primary", readonly=True, autocommit=True)
        try:
            yield _Session(settings, conn)
        finally:
            conn.close()

    def timings(self) -> Rehearsed:
        return rehearsal_timings(self.config)

    def plan(self, from_sha: str, timings: Rehearsed | None, read_sizes: bool) -> Plan:
        return plan_for(self.config, None, from_rev=from_sha, timings=timings,
                        read_sizes=read_sizes).plan

    def close(self) -> None:
        if self._haproxy is not None:
            self._haproxy.close()
        if self._remote is not None:
            self._remote.close()


# --- reading it -----------------------------------------------------------------------------


def status(config: Config) -> Status:
    """Read every part of the status of ``config``'s environment (see the module doc)."""
    sources = LiveSources(config)
    try:
        return gather(config, sources)
    finally:
        sources.close()


def gather(config: Config, sources: Sources) -> Status:
    """Read each part from ``sources``; a part that cannot be read says why in its place."""
    hosts = _hosts(config, sources)
    database, lock, recorded = _database(sources)
    pending = _pending(config, sources, hosts, read_sizes=database.connected)
    return Status(hosts, database, pending, _runs(config, lock, recorded), lock)


_T = TypeVar("_T")
_R = TypeVar("_R")


def _each(items: Sequence[_T], read: Callable[[_T], _R]) -> list[_R]:
    """``read`` of every item, at most :data:`PARALLEL` at once, in their order."""
    if len(items) <= 1:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(items)),
                            thread_name_prefix="status") as pool:
        return list(pool.map(read, items))


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _hosts(config: Config, sources: Sources) -> tuple[HostStatus, ...]:
    hosts = [h for h in config.hosts if h.role in ("app", "scripts")]
    errors: dict[str, dict[str, str]] = {h.name: {} for h in hosts}
    revisions = _revisions(sources, hosts, errors)
    slots = _slots(config, sources, errors)
    checked = [(h, port, revisions[h.name]) for h in config.role("app")
               if h.name in revisions and (port := serving_port(slots.get(h.name, {}))) is not None]

    def check(item: tuple[HostSettings, int, str]) -> HealthResult | str:
        try:
            return sources.health(*item)
        except READ_ERRORS as exc:
            return _why(exc)
    health: dict[str, HealthResult] = {}
    for (host, _, _), result in zip(checked, _each(checked, check), strict=True):
        if isinstance(result, str):
            errors[host.name]["health"] = result
        else:
            health[host.name] = result
    return tuple(HostStatus(h.name, h.role, revisions.get(h.name), slots.get(h.name, {}),
                            health.get(h.name), errors[h.name]) for h in hosts)


def _revisions(sources: Sources, hosts: Sequence[HostSettings],
               errors: dict[str, dict[str, str]]) -> dict[str, str]:
    """The sha each host's ``current`` points at; a host that cannot say gets an error."""
    if not hosts:
        return {}
    try:
        answers = sources.revisions(hosts).by_host
    except READ_ERRORS as exc:
        for host in hosts:
            errors[host.name]["revision"] = _why(exc)
        return {}
    revisions = {}
    for host in hosts:
        answer = answers.get(host.name)
        sha = answer.stdout.strip() if answer is not None else ""
        if answer is None:
            errors[host.name]["revision"] = "no answer"
        elif not answer.ok:
            errors[host.name]["revision"] = answer.describe().removeprefix(f"{host.name}: ")
        elif not is_sha(sha):
            errors[host.name]["revision"] = (f"current does not point at a release named by a "
                                             f"full sha: {sha[:80]!r}")
        else:
            revisions[host.name] = sha
    return revisions


def _slots(config: Config, sources: Sources,
           errors: dict[str, dict[str, str]]) -> dict[str, dict[int, str]]:
    """Each app host's slots and their admin states in haproxy (none without an ``[lb]``)."""
    app = config.role("app")
    if not app or config.lb is None or config.app is None or not config.role("lb"):
        return {}
    try:
        stats = sources.servers()
    except READ_ERRORS as exc:
        for host in app:
            errors[host.name]["slots"] = _why(exc)
        return {}
    slots: dict[str, dict[int, str]] = {}
    for host in app:
        names = {port: server_name(config, host, port) for port in config.app.ports}
        missing = [name for name in names.values() if name not in stats]
        if missing:
            errors[host.name]["slots"] = (f"haproxy's backend {config.lb.backend} has no "
                                          f"server {', '.join(missing)}")
        slots[host.name] = {port: stats[name].admin_state for port, name in names.items()
                            if name in stats}
    return slots


def serving_port(slots: Mapping[int, str]) -> int | None:
    """The port of the one slot of ``slots`` (port -> admin state) that is ``ready``; None
    when none is, or more than one."""
    ready = [port for port, state in slots.items() if state == "ready"]
    return ready[0] if len(ready) == 1 else None


def _database(sources: Sources) -> tuple[DatabaseStatus, LockStatus, RunsStatus]:
    """The database's parts on one session: the patch level and standbys, the lock's
    holder, and the run records that need ``resume`` (as a partial :class:`RunsStatus`)."""
    reads: dict[str, Callable[[DatabasePort], Any]] = {
        "patch_level": lambda db: db.patch_level(),
        "standbys": lambda db: tuple(db.standbys()),
        "holder": lambda db: db.holder(),
        "runs": lambda db: db.unresolved_runs(_RECORDED)}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    connected = False
    try:
        with sources.database() as db:
            connected = True
            for part, read in reads.items():
                try:
                    values[part] = read(db)
                except READ_ERRORS as exc:
                    errors[part] = _why(exc)
    except READ_ERRORS as exc:
        errors.update((part, _why(exc)) for part in reads
                      if part not in values and part not in errors)
    found: tuple[StandbyState, ...] = values.get("standbys", ())
    away = [f"{s.name}: {s.detail or s.state}" for s in found if s.state == "unreachable"]
    if away and "standbys" not in errors:
        errors["standbys"] = "; ".join(away)
    database = DatabaseStatus(connected, values.get("patch_level"), found,
                              {k: v for k, v in errors.items() if k in ("patch_level", "standbys")})
    lock = LockStatus(values.get("holder"),
                      {"holder": errors["holder"]} if "holder" in errors else {})
    recorded = RunsStatus(needs_resume=tuple(
        {"id": r.id, "who": r.who, "outcome": r.outcome, "started": utc_instant(r.started),
         "recorded": "database"} for r in values.get("runs", ())),
        errors={"database": errors["runs"]} if "runs" in errors else {})
    return database, lock, recorded


def _pending(config: Config, sources: Sources, hosts: Iterable[HostStatus], *,
             read_sizes: bool) -> PendingStatus:
    """The plan from the revision every app host runs to the tip, with its estimate."""
    budget = config.window.budget_s
    app = [h for h in hosts if h.role == "app"]
    unknown = [h.name for h in app if h.revision is None]
    if not app:
        return PendingStatus(None, budget, {"plan": "no app host to read the deployed "
                                                    "revision from"})
    if unknown:
        return PendingStatus(None, budget, {"plan": f"the deployed revision is unknown: "
                                                    f"{', '.join(unknown)} could not be read"})
    deployed = {h.name: str(h.revision) for h in app}
    if len(set(deployed.values())) > 1:
        return PendingStatus(None, budget, {"plan": str(RevisionsDisagree(deployed))})
    errors: dict[str, str] = {}
    timings: Rehearsed | None = None
    try:
        timings = sources.timings()
    except READ_ERRORS as exc:
        errors["estimate"] = f"the rehearsal timings could not be read: {_why(exc)}"
    try:
        plan: Plan | None = sources.plan(deployed[app[0].name], timings, read_sizes)
    except READ_ERRORS as exc:
        plan, errors["plan"] = None, _why(exc)
    return PendingStatus(plan, budget, errors)


def _runs(config: Config, lock: LockStatus, recorded: RunsStatus) -> RunsStatus:
    """The last run of ``[runs] dir`` and every run needing ``resume``: the database's
    records first, then the summaries it lacks (not the run that holds the lock now)."""
    errors = dict(recorded.errors)
    needs = list(recorded.needs_resume)
    runs_dir = Path(config.runs.dir).expanduser()
    last = None
    try:
        runs = list_runs(runs_dir)
        if runs:
            summary = load_run(runs_dir, str(runs[0]["id"]))
            last = {key: summary.get(key) for key in
                    ("id", "who", "started", "finished", "outcome", "from", "to", "cut",
                     "outage_s", "window_budget_s", "error")}
    except READ_ERRORS as exc:
        runs, errors["runs_dir"] = [], f"{runs_dir}: {_why(exc)}"
    live = lock.holder.run_id if lock.holder is not None else None
    known = {run["id"] for run in needs}
    needs += [{"id": run["id"], "who": run.get("who"), "outcome": run.get("outcome"),
               "started": run.get("started"), "recorded": "runs dir"}
              for run in reversed(runs)
              if run.get("outcome") in _NEEDS_RESUME and run["id"] not in known
              and run["id"] != live]
    return RunsStatus(last, tuple(needs), errors)


def utc_instant(moment: datetime | None) -> str | None:
    """A database timestamp as a UTC ISO instant to the ms (one without a zone is UTC, as
    Launchpad's revision table keeps it); None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_ms(moment.timestamp())


__all__ = ["COMMAND_TIMEOUT_S", "HEALTH_TIMEOUT_S", "READ_ERRORS", "DatabasePort",
           "DatabaseStatus", "HostStatus", "LiveSources", "LockStatus", "PendingStatus",
           "RunsStatus", "Sources", "Status", "gather", "holder_json", "serving_port", "status",
           "utc_instant"]
