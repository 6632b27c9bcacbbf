"""``status`` on fake sources: the healthy picture, each part that cannot be read reported in
its place (never hiding the rest), the lock, runs that need resume, the text view, the JSON
shape and the exit code."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cliparser
from orchestrator.commands import checks
from orchestrator.config import Config, HostSettings, load_config
from orchestrator.db.connect import DatabaseUnreachable
from orchestrator.db.lock import Holder, UnresolvedRun
from orchestrator.db.patchlevel import PatchLevel
from orchestrator.db.replication import StandbyState
from orchestrator.errors import ExitCode
from orchestrator.estimate import Estimate, Overhead, PatchEstimate
from orchestrator.plan import COLD, LIVE, Plan, PlannedRevision
from orchestrator.remote.haproxy_wire import HaproxyError, ServerStat
from orchestrator.remote.operations import HealthResult
from orchestrator.remote.results import OK, UNREACHABLE, GroupResult, HostResult
from orchestrator.runner.preflight import Rehearsed
from orchestrator.runner.runs import write_summary
from orchestrator.runner.status import DatabasePort, Status, gather
from orchestrator.sandbox.layout import PROJECT_ROOT
from orchestrator.views.status import print_status

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")
APPS = [h.name for h in SANDBOX.role("app")]
SCRIPTS = [h.name for h in SANDBOX.role("scripts")]
OLD, NEW = SANDBOX.need("app").ports
DEPLOYED, TIP, CUT = "d" * 40, "f" * 40, "c" * 40


def make_plan(from_sha: str) -> Plan:
    """Four revisions: live, cold (the cut), code, live; a window estimated at 1.6 s."""
    revisions = (PlannedRevision("1" * 40, LIVE, ("patch-2200-01-0.sql",), "index"),
                 PlannedRevision(CUT, COLD, ("patch-2200-02-0.sql",), "column"),
                 PlannedRevision("3" * 40, "code", (), "show it"),
                 PlannedRevision(TIP, LIVE, ("patch-2200-03-0.sql",), "another index"))
    plan = Plan("db-stable", from_sha, TIP, CUT, revisions, ("patch-2200-02-0.sql",),
                ("patch-2200-01-0.sql",), ("patch-2200-03-0.sql",), None, (), (), {})
    estimate = Estimate((PatchEstimate("patch-2200-02-0.sql", 1.5, 1.0, 1.5),),
                        Overhead(0.1, "median of 3 runs"), True)
    return plan.with_estimate(estimate)


class FakeDatabase:
    """The database's parts; a part named in ``broken`` raises as a failing query would."""

    def __init__(self, *, holder: Holder | None = None,
                 unresolved: Sequence[UnresolvedRun] = (), broken: Sequence[str] = ()) -> None:
        self.level = PatchLevel(2200, 0, 0, datetime(2026, 12, 1, 10, 0), None, 1)
        self.holder_ = holder
        self.unresolved = list(unresolved)
        self.broken = set(broken)
        self.asked: list[Sequence[str]] = []

    def _check(self, part: str) -> None:
        if part in self.broken:
            raise DatabaseUnreachable("primary", {"host": "db", "port": "5432"},
                                      f"{part} query failed")

    def patch_level(self) -> PatchLevel | None:
        self._check("patch_level")
        return self.level

    def standbys(self) -> list[StandbyState]:
        self._check("standbys")
        return [StandbyState("walreceiver", "streaming", 0, 0.0, "0/3000060")]

    def holder(self) -> Holder | None:
        self._check("holder")
        return self.holder_

    def unresolved_runs(self, outcomes: Sequence[str]) -> list[UnresolvedRun]:
        self._check("runs")
        self.asked.append(outcomes)
        return self.unresolved


class FakeSources:
    """Every app host on DEPLOYED serving on OLD, healthy; the scripts host on DEPLOYED.

    ``unreachable`` hosts do not answer over SSH; ``database`` None is a database that
    refuses connections; ``haproxy`` False an LB host that cannot be reached.
    """

    def __init__(self, *, unreachable: Sequence[str] = (), revisions: Mapping[str, str] = {},
                 database: FakeDatabase | None = None, haproxy: bool = True,
                 unhealthy: Sequence[str] = ()) -> None:
        self.unreachable = set(unreachable)
        self.deployed = {name: revisions.get(name, DEPLOYED) for name in APPS + SCRIPTS}
        self.db = database
        self.haproxy = haproxy
        self.unhealthy = set(unhealthy)
        self.health_asked: list[tuple[str, int, str]] = []
        self.planned: list[tuple[str, Rehearsed | None, bool]] = []
        self._lock = threading.Lock()

    def revisions(self, hosts: Sequence[HostSettings]) -> GroupResult:
        return GroupResult.of(
            HostResult(h.name, UNREACHABLE, None, "", f"{h.name} ({h.address}:2222): cannot "
                       "connect within 5 s: [Errno 111] Connection refused", 0.0, "connect")
            if h.name in self.unreachable else
            HostResult(h.name, OK, 0, self.deployed[h.name] + "\n", "", 0.01, "readlink")
            for h in hosts)

    def servers(self) -> Mapping[str, ServerStat]:
        if not self.haproxy:
            raise HaproxyError("socat stdio unix-connect:haproxy.sock", "lb1 unreachable",
                               "could not start:", host="lb1")
        stats = {}
        for name in APPS:
            for port, state in ((OLD, "ready"), (NEW, "maint")):
                server = f"{name}_{port}"
                stats[server] = ServerStat(server, "UP" if state == "ready" else "MAINT",
                                           state, 0, 0, 5, 10, "L7OK")
        return stats

    def health(self, host: HostSettings, port: int, revision: str) -> HealthResult:
        with self._lock:
            self.health_asked.append((host.name, port, revision))
        ok = host.name not in self.unhealthy
        answer = (f'HTTP 200 {{"revision": "{revision}"}}' if ok
                  else "no answer: [Errno 111] Connection refused")
        return HealthResult(host.name, port, f"http://{host.address}:{port}/+health", revision,
                            ok, revision if ok else None, answer, 1, 0.004)

    @contextlib.contextmanager
    def database(self) -> Iterator[DatabasePort]:
        if self.db is None:
            raise DatabaseUnreachable("primary", {"host": "127.0.0.1", "port": "15432",
                                                  "dbname": "app", "user": "fdt_admin"},
                                      "connection refused")
        yield self.db

    def timings(self) -> Rehearsed:
        if self.db is None:
            raise DatabaseUnreachable("timings database", {"host": "127.0.0.1"},
                                      "connection refused")
        return Rehearsed()

    def plan(self, from_sha: str, timings: Rehearsed | None, read_sizes: bool) -> Plan:
        self.planned.append((from_sha, timings, read_sizes))
        return make_plan(from_sha)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The sandbox's config with its runs kept under ``tmp_path``."""
    return dataclasses.replace(SANDBOX, runs=dataclasses.replace(SANDBOX.runs,
                                                                 dir=str(tmp_path / "runs")))


def write_run(config: Config, run_id: str, outcome: str, started: str) -> None:
    write_summary(Path(config.runs.dir), run_id, {
        "id": run_id, "who": "rm@laptop", "started": started, "finished": None,
        "outcome": outcome, "from": DEPLOYED, "to": TIP, "cut": CUT, "outage_s": 1.234,
        "window_budget_s": 30, "error": None if outcome == "done" else "it broke"})


def words(line: str) -> list[str]:
    """A line of the view split on blanks and table rules."""
    return line.replace("│", " ").split()


def render(status: Status) -> str:
    console = Console(width=200, record=True, force_terminal=False, color_system=None)
    print_status(status, console)
    return console.export_text()


def test_a_healthy_environment_is_read_whole(config: Config) -> None:
    """Every host on one revision, serving its first slot, healthy; the patch level, the
    standby, the plan from that revision with its estimate; the last run; the lock free."""
    write_run(config, "20261201-100000-aaaa", "done", "2026-12-01T10:00:00.000Z")
    db = FakeDatabase()
    sources = FakeSources(database=db)
    status = gather(config, sources)
    assert status.complete and status.unread == []
    assert [h.name for h in status.hosts] == APPS + SCRIPTS
    assert {h.revision for h in status.hosts} == {DEPLOYED}
    apps = [h for h in status.hosts if h.role == "app"]
    assert all(h.serving == OLD and h.slots == {OLD: "ready", NEW: "maint"} for h in apps)
    assert all(h.health is not None and h.health.ok for h in apps)
    assert sorted(sources.health_asked) == [(name, OLD, DEPLOYED) for name in APPS]
    scripts = status.hosts[-1]
    assert scripts.slots == {} and scripts.health is None and scripts.serving is None
    assert str(status.database.patch_level) == "2200-00-0"
    assert [s.state for s in status.database.standbys] == ["streaming"]
    assert sources.planned == [(DEPLOYED, Rehearsed(), True)]
    plan = status.pending.plan
    assert plan is not None and plan.from_sha == DEPLOYED and plan.estimated_outage_s == 1.6
    assert status.runs.last is not None and status.runs.last["outcome"] == "done"
    assert status.runs.needs_resume == () and status.lock.holder is None
    assert status.lock.errors == {}
    assert db.asked and "crashed" in db.asked[0] and "running" not in db.asked[0]


def test_an_unreachable_host_is_reported_in_its_place(config: Config) -> None:
    """One app host does not answer over SSH: its revision says why, it is not health
    checked, the plan cannot say where it starts; every other part is still read."""
    sources = FakeSources(unreachable=[APPS[1]], database=FakeDatabase())
    status = gather(config, sources)
    assert not status.complete
    host = status.hosts[1]
    assert host.revision is None and host.health is None
    assert host.errors["revision"].startswith("unreachable: ") and "refused" in \
        host.errors["revision"]
    assert host.serving == OLD  # haproxy still said which slot serves
    assert all(h.revision == DEPLOYED and not h.errors
               for h in status.hosts if h.name != APPS[1])
    assert APPS[1] not in {name for name, _, _ in sources.health_asked}
    assert status.pending.plan is None and sources.planned == []
    assert status.pending.errors == {"plan": f"the deployed revision is unknown: {APPS[1]} "
                                             "could not be read"}
    assert str(status.database.patch_level) == "2200-00-0"
    assert [u.split(":")[0] for u in status.unread] == [f"{APPS[1]} revision", "pending plan"]


def test_hosts_that_disagree_leave_no_plan_and_say_so(config: Config) -> None:
    """The app hosts run different revisions: each is shown, and the plan says they
    disagree (nothing can be planned from two revisions)."""
    status = gather(config, FakeSources(revisions={APPS[0]: TIP}, database=FakeDatabase()))
    assert status.hosts[0].revision == TIP and status.hosts[1].revision == DEPLOYED
    assert "do not agree on the deployed revision" in status.pending.errors["plan"]
    assert not status.complete


def test_haproxy_unreachable_leaves_slots_and_health_unread(config: Config) -> None:
    """Without haproxy no slot is known to serve, so no instance is health checked; the
    hosts' revisions and the rest are read all the same."""
    sources = FakeSources(haproxy=False, database=FakeDatabase())
    status = gather(config, sources)
    apps = [h for h in status.hosts if h.role == "app"]
    assert all("lb1 unreachable" in h.errors["slots"] and h.serving is None for h in apps)
    assert sources.health_asked == []
    assert all(h.revision == DEPLOYED for h in status.hosts)
    assert status.pending.plan is not None


def test_an_unhealthy_instance_is_what_was_read(config: Config) -> None:
    """An instance that does not answer its health check is shown unhealthy; that is a state
    read, not a part left unread."""
    status = gather(config, FakeSources(unhealthy=[APPS[2]], database=FakeDatabase()))
    health = status.hosts[2].health
    assert health is not None and not health.ok
    assert status.complete
    assert "unhealthy: no answer" in render(status)


def test_the_database_down_is_reported_in_every_part_it_holds(config: Config) -> None:
    """The primary refuses connections: the patch level, the standbys, the lock and the
    database's run records each say so; hosts, the plan (without an estimate) and the
    runs dir are read all the same."""
    write_run(config, "20261201-100000-aaaa", "done", "2026-12-01T10:00:00.000Z")
    sources = FakeSources(database=None)
    status = gather(config, sources)
    why = "primary (127.0.0.1:15432 database app as fdt_admin): connection refused"
    assert status.database.errors == {"patch_level": why, "standbys": why}
    assert status.lock.errors == {"holder": why}
    assert status.runs.errors == {"database": why}
    assert status.pending.plan is not None
    assert sources.planned == [(DEPLOYED, None, False)]  # no timings, no table sizes
    assert status.pending.errors["estimate"].startswith("the rehearsal timings could not")
    assert all(h.revision == DEPLOYED for h in status.hosts)
    assert status.runs.last is not None
    assert status.to_json()["lock"]["held"] is None
    assert len(status.unread) == 5


def test_one_failing_query_leaves_the_others(config: Config) -> None:
    """A query that fails (the revision table missing, say) is that part's error only."""
    status = gather(config, FakeSources(database=FakeDatabase(broken=["patch_level"])))
    assert list(status.database.errors) == ["patch_level"] and status.database.connected
    assert status.database.standbys and status.lock.errors == {}
    assert status.unread == ["database patch_level: primary (db:5432 database ? as ?): "
                             "patch_level query failed"]


def test_a_held_lock_names_its_holder(config: Config) -> None:
    """A run holds the deploy lock: status names it, and its run (``running`` in the runs
    dir) is not taken for one that needs resume."""
    started = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    write_run(config, "20261202-093000-bbbb", "running", "2026-12-02T09:30:00.000Z")
    holder = Holder(4242, "20261202-093000-bbbb", "rm@laptop", started, "laptop", 777)
    status = gather(config, FakeSources(database=FakeDatabase(holder=holder)))
    assert status.complete and status.lock.holder == holder
    assert status.runs.needs_resume == ()
    assert status.runs.last is not None and status.runs.last["outcome"] == "running"
    held = status.to_json()["lock"]
    assert held["held"] is True and held["holder"]["run_id"] == "20261202-093000-bbbb"
    assert held["holder"]["started"] == "2026-12-02T09:30:00.000Z"
    assert "deploy lock held by run 20261202-093000-bbbb by rm@laptop" in render(status)


def test_unresolved_runs_from_the_database_and_the_runs_dir(config: Config) -> None:
    """Runs that need resume: the database's records first, then those only the runs dir
    knows (a ``running`` one whose lock is gone, a failed-after-commit); a settled run and
    one the database already named are not repeated."""
    write_run(config, "20261130-080000-aaaa", "done", "2026-11-30T08:00:00.000Z")
    write_run(config, "20261201-080000-cccc", "crashed", "2026-12-01T08:00:00.000Z")
    write_run(config, "20261201-090000-dddd", "failed-after-commit", "2026-12-01T09:00:00.000Z")
    write_run(config, "20261201-100000-eeee", "running", "2026-12-01T10:00:00.000Z")
    recorded = UnresolvedRun("20261201-080000-cccc", "rm@laptop", "crashed",
                             datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    status = gather(config, FakeSources(database=FakeDatabase(unresolved=[recorded])))
    assert status.complete
    assert [(r["id"], r["outcome"], r["recorded"]) for r in status.runs.needs_resume] == [
        ("20261201-080000-cccc", "crashed", "database"),
        ("20261201-090000-dddd", "failed-after-commit", "runs dir"),
        ("20261201-100000-eeee", "running", "runs dir")]
    assert status.runs.last is not None and status.runs.last["id"] == "20261201-100000-eeee"
    text = render(status)
    assert "`fastdowntime resume 20261201-080000-cccc`" in text
    assert "`fastdowntime resume 20261201-090000-dddd`" in text


def test_the_text_view_of_a_healthy_environment(config: Config) -> None:
    """The text view: a row per host with its revision, serving slot and health; the patch
    level and the standby; the next deploy per stage with its estimate; runs; the lock."""
    write_run(config, "20261201-100000-aaaa", "done", "2026-12-01T10:00:00.000Z")
    text = render(gather(config, FakeSources(database=FakeDatabase())))
    for name in APPS:
        assert any(words(line)[:6] == [name, "app", DEPLOYED[:12], str(OLD), f"({NEW}",
                                       "maint)"]
                   and "healthy (4 ms)" in line for line in text.splitlines()), text
    assert any(words(line)[:3] == [SCRIPTS[0], "scripts", DEPLOYED[:12]]
               for line in text.splitlines())
    assert "database patch level 2200-00-0 (applied 2026-12-01T10:00:00.000Z; 1 patch " in text
    assert "standby walreceiver streaming, replay lag 0.000 s (0 bytes)" in text
    assert f"next deploy db-stable {DEPLOYED[:12]}..{TIP[:12]}: 4 revisions" in text
    assert (f"fastdowntime: 2 revisions up to the cut {CUT[:12]}; cold 1 "
            "(patch-2200-02-0.sql); live 1 (patch-2200-01-0.sql)") in text
    assert "estimated window: 1.600 s (overhead 100 ms, median of 3 runs;" in text
    assert "of 30 s budget" in text
    assert "nodowntime: 2 revisions; live 1 (patch-2200-03-0.sql)" in text
    assert "last run 20261201-100000-aaaa done, by rm@laptop" in text
    assert "needs resume none" in text and "deploy lock free" in text
    assert "could not be read" not in text


def test_the_text_view_shows_each_unread_part_in_its_place(config: Config) -> None:
    """Unreadable parts read ``unread: why`` where their value would be (a reason already
    given reads ``as above``), and a last line counts them."""
    text = render(gather(config, FakeSources(unreachable=[APPS[0]], database=None)))
    row = next(line for line in text.splitlines() if words(line)[:1] == [APPS[0]])
    assert "unread: unreachable: " in row
    assert "database patch level unread: primary (127.0.0.1:15432" in text
    assert "next deploy unread: the deployed revision is unknown: app1" in text
    assert "deploy lock unread (as above)" in text  # the database's reason, said once
    assert text.lower().count("connection refused") == 2  # app1's own, the database's
    assert text.rstrip().endswith("6 part(s) could not be read (exit 3)")


def test_the_json_shape(config: Config) -> None:
    """``to_json``: complete, unread, hosts, database, pending, runs, lock, each part with
    its errors; it is one JSON document."""
    write_run(config, "20261201-100000-aaaa", "done", "2026-12-01T10:00:00.000Z")
    data = json.loads(json.dumps(gather(config, FakeSources(database=FakeDatabase())).to_json()))
    assert list(data) == ["complete", "unread", "hosts", "database", "pending", "runs", "lock"]
    assert data["complete"] is True and data["unread"] == []
    assert data["hosts"][0] == {
        "name": APPS[0], "role": "app", "revision": DEPLOYED,
        "slots": {str(OLD): "ready", str(NEW): "maint"}, "serving": OLD,
        "health": {"ok": True, "port": OLD, "url": f"http://127.0.0.11:{OLD}/+health",
                   "revision": DEPLOYED, "answer": f'HTTP 200 {{"revision": "{DEPLOYED}"}}',
                   "elapsed_s": 0.004},
        "errors": {}}
    assert data["hosts"][-1] == {"name": SCRIPTS[0], "role": "scripts", "revision": DEPLOYED,
                                 "slots": {}, "serving": None, "health": None, "errors": {}}
    assert data["database"] == {
        "connected": True,
        "patch_level": {"version": "2200-00-0", "major": 2200, "minor": 0, "patch": 0,
                        "start_time": "2026-12-01T10:00:00.000Z", "end_time": None,
                        "applied": 1},
        "standbys": [{"name": "walreceiver", "state": "streaming", "lag_bytes": 0,
                      "lag_s": 0.0, "replay_lsn": "0/3000060", "detail": None}],
        "errors": {}}
    pending = data["pending"]
    assert pending["from"] == DEPLOYED and pending["to"] == TIP and pending["cut"] == CUT
    assert pending["revisions"] == 4 and pending["violations"] == [] and pending["errors"] == {}
    assert pending["fastdowntime"] | {"estimate": None} == {
        "revisions": 2, "cold_patches": ["patch-2200-02-0.sql"],
        "live_patches": ["patch-2200-01-0.sql"], "estimated_outage_s": 1.6, "budget_s": 30,
        "estimate": None}
    assert pending["fastdowntime"]["estimate"]["total_s"] == 1.6
    assert pending["nodowntime"] == {"revisions": 2, "live_patches": ["patch-2200-03-0.sql"]}
    assert data["runs"]["last"]["id"] == "20261201-100000-aaaa"
    assert set(data["runs"]["last"]) == {"id", "who", "started", "finished", "outcome", "from",
                                         "to", "cut", "outage_s", "window_budget_s", "error"}
    assert data["runs"]["needs_resume"] == [] and data["runs"]["errors"] == {}
    assert data["lock"] == {"held": False, "holder": None, "errors": {}}


def test_the_json_shape_when_nothing_can_be_read(config: Config) -> None:
    """Every host unreachable and the database down: the same keys, nulls where nothing was
    read, and every reason in ``unread``."""
    everyone = APPS + SCRIPTS
    data = gather(config, FakeSources(unreachable=everyone, haproxy=False,
                                      database=None)).to_json()
    assert data["complete"] is False
    assert data["pending"] == {"from": None, "to": None, "cut": None, "revisions": None,
                               "fastdowntime": None, "nodowntime": None, "violations": None,
                               "source": None, "errors": data["pending"]["errors"]}
    assert all(h["revision"] is None and h["errors"]["revision"] for h in data["hosts"])
    assert data["database"]["patch_level"] is None and data["database"]["connected"] is False
    assert len(data["unread"]) == len(everyone) + len(APPS) + 5


def test_status_exits_3_when_a_part_could_not_be_read(
        monkeypatch: pytest.MonkeyPatch, config: Config,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``status --json`` prints one document whatever could be read; exit 0 when everything
    was read, 3 (naming what was not on stderr) when a part could not be."""
    from orchestrator.runner import status as module

    sources = FakeSources(database=FakeDatabase())
    monkeypatch.setattr(module, "status", lambda config: gather(config, sources))
    monkeypatch.setattr(checks, "load", lambda args: config)
    assert checks.cmd_status(argparse.Namespace(json=True)) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["complete"] is True
    sources.unreachable = {APPS[0]}
    assert checks.cmd_status(argparse.Namespace(json=True)) == ExitCode.REFUSED
    out, err = capsys.readouterr()
    assert json.loads(out)["complete"] is False
    assert err == ("fastdowntime: status: 2 part(s) could not be read (each says why in its "
                   "place)\n")
    assert checks.cmd_status(argparse.Namespace(json=False)) == ExitCode.REFUSED
    assert "could not be read" in capsys.readouterr().out


def test_status_is_a_command_that_parses() -> None:
    """``fastdowntime status [--json]`` parses; its help says what the exit codes mean."""
    parser = cliparser.build_parser()
    args = parser.parse_args(["status", "--json"])
    assert args.func is checks.cmd_status and args.json
    status = next(a for a in parser._subparsers._group_actions  # type: ignore[union-attr]
                  if isinstance(a, argparse._SubParsersAction)).choices["status"]
    assert "Exit 0 when every part was read, 3 when one could not be" in " ".join(
        status.format_help().split())
