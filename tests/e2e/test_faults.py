"""The fault matrix: a fault at every step of the window playbook, and at COMMIT itself.

One sandbox serves the whole module (rebuilt only when a cell leaves it unsettled):
it is first deployed to the sample repository's tip, then every cell commits one more cold
patch (a new column of ``item``) and deploys it with one fault. The deploy runs under
:mod:`tests.e2e.faulty`, which stops the orchestrator at the cell's point (just after the
journal's ``step.start``, or inside COMMIT's signal hold, or just after the server
committed); the test waits for that stop (the state file, the journal event, the process
stopped), injects the fault while nothing moves, and lets the run go on (SIGCONT).

The faults:

- ``SIGINT``, ``SIGTERM``: the signal lands at the point;
- ``SIGKILL``: the orchestrator dies there; ``resume RUN`` settles the run;
- ``sshd``: a host's sshd stops, with every session it served (the orchestrator's warm
  connection drops); it comes back once the deploy has exited;
- ``hang``: the next ``appctl``/``scriptctl`` call on a host hangs (its remote ``timeout``
  kills it; the cells use ``command_timeout_s = 4``);
- ``backend``: every session the run holds on the primary is terminated (the cold
  transaction's, the connection control's, the deploy lock's), as an admin or a failover
  would;
- ``disk``: the filesystem of the runs directory and of the deploy's output fills up (a
  4 MB tmpfs filled at the point; where mounting is not allowed, RLIMIT_FSIZE on the
  process: its writes past the journal's size fail with EFBIG);
- ``lost answer``: during the step, haproxy acts on every line of its admin channel and
  the channel drops before the orchestrator reads the answer.

After each: the schema is exactly the old or exactly the new one and the revision table
agrees; exit code and outcome (``show RUN`` and the database's run record) say which; a run
left unsettled is resumed and settles; then every app host serves through haproxy (each
host's serving slot UP, its idle slot in MAINT, nothing in DRAIN), pgbouncer is neither
paused nor disabled, the deploy lock is free, and the next deploy (or preflight, when the
schema is already new) succeeds.

Why these cells (40 of the 8 x 16; all of them would not fit 10 minutes on 2 cores):
every point has at least one fault and every fault at least two points, COMMIT included
wherever the fault can land there (a hang or a lost haproxy answer cannot: nothing remote
runs at COMMIT). By fault:

- signals on both sides of COMMIT and at the window's edges: as it opens (``open_window``,
  ``cut_connections``), at COMMIT (held until the run knows it committed), and where the
  window closes after COMMIT (``restore_connections``, ``close_window``), the places where
  an interrupt left half-done keeps users out with the schema already new; plus a step
  before the window and one after it, for each of SIGINT and SIGTERM;
- SIGKILL where ``resume`` has the most to find out: code staged only (live patches),
  new instances started (prepare_window), old instances drained (cut_connections),
  pgbouncer cut with the transaction open (``commit``), the server committed but the
  journal silent (``committed``), committed with pgbouncer still cut (restore_connections),
  the window closed (wait_standbys);
- a stopped sshd on each kind of host: the scripts host (stop), an app host (start, and
  after COMMIT the stop and the switch), the LB host as the window opens;
- a hang before the window and after it, on an app host and on the scripts host;
- terminated sessions before the window (the lock alone: the run must stop), as the window
  is prepared, before the cold transaction, at COMMIT (the run must ask the database
  whether it committed) and after it;
- a full disk before, at and after COMMIT, the deploy's own output on it too;
- a lost answer in the three steps that talk to haproxy: reading the slots, the drain and
  the swap back.

Besides, every journal must still read back whole (``resume`` appends to it).

The matrix runs a drained window (``mode = "drain"``), whose steps talk to haproxy inside
it. :data:`HOLD_CELLS` add the held window (the default) where it differs: signals as PAUSE
opens it, at COMMIT and as RESUME closes it, deaths inside it, after COMMIT and in the swap
that follows the window, a terminated cold transaction, and the LB lost during the swap;
a held run that lives to its end must have failed none of its probe's requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from orchestrator.runner.journal import read_journal
from orchestrator.runner.playbook import load_playbook
from orchestrator.sandbox import manager
from orchestrator.sandbox.layout import DB_NAME, PGBOUNCER_PORT, PROJECT_ROOT, SSH_PORT, Host
from tests.e2e.conftest import (
    CONFIG,
    Sandbox,
    approvals,
    get,
    get_direct,
    read_events,
    wait_for_event,
    wait_until,
)

pytestmark = pytest.mark.e2e

WINDOW = load_playbook("fastdowntime")
STEPS = tuple(step.name for step in WINDOW.steps)
_AT_COMMIT = 1 + next(i for i, step in enumerate(WINDOW.steps) if step.action.commit_point)
COMMIT = "COMMIT"
POINTS = (*STEPS[:_AT_COMMIT], COMMIT, *STEPS[_AT_COMMIT:])
"""The matrix's columns: every step of the window playbook, COMMIT after the commit point."""
FAULTS = ("SIGINT", "SIGTERM", "SIGKILL", "sshd", "hang", "backend", "disk", "lost answer")
HANG_TIMEOUT_S = 4
DISK_BYTES = 4 << 20
SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Cell:
    """One fault at one point: a step of the window playbook, ``commit`` (COMMIT not sent
    yet, signals held) or ``committed`` (the server committed, the run has not heard)."""

    fault: str
    at: str
    host: str | None = None
    """sshd, hang: the host it hits."""
    command: str = "appctl"
    """hang: which host command hangs (``appctl`` or ``scriptctl``)."""
    mode: str = "drain"
    """The window's mode: the matrix is a drained window's; :data:`HOLD_CELLS` hold."""

    @property
    def point(self) -> str:
        return COMMIT if self.at in ("commit", "committed") else self.at

    @property
    def new_schema(self) -> bool:
        """Whether the schema is new once the fault has played out."""
        if self.fault == "disk":  # a journal that cannot be written never steers a run
            return True
        if self.at == "committed":
            return True
        if self.at == "commit":
            # a signal at COMMIT is held until the run knows it committed; a death or a lost
            # connection comes before the server could commit
            return self.fault in ("SIGINT", "SIGTERM", "sshd")
        return POINTS.index(self.at) > POINTS.index(COMMIT)

    @property
    def id(self) -> str:
        return (f"{self.fault.replace(' ', '_')}-{self.at}" + (f"-{self.host}" if self.host
                                                               else "")
                + ("-hold" if self.mode == "hold" else ""))


CELLS = (
    Cell("SIGINT", "stage_code"),
    Cell("SIGINT", "start_new_instances"),
    Cell("SIGINT", "open_window"),
    Cell("SIGINT", "apply_cold_patches"),
    Cell("SIGINT", "commit"),
    Cell("SIGINT", "restore_connections"),
    Cell("SIGINT", "stop_old_instances"),
    Cell("SIGTERM", "stop_scripts"),
    Cell("SIGTERM", "cut_connections"),
    Cell("SIGTERM", "commit"),
    Cell("SIGTERM", "close_window"),
    Cell("SIGTERM", "start_scripts"),
    Cell("SIGKILL", "apply_live_patches"),
    Cell("SIGKILL", "prepare_window"),
    Cell("SIGKILL", "cut_connections"),
    Cell("SIGKILL", "commit"),
    Cell("SIGKILL", "committed"),
    Cell("SIGKILL", "restore_connections"),
    Cell("SIGKILL", "wait_standbys"),
    Cell("sshd", "stop_scripts", host="scripts1"),
    Cell("sshd", "start_new_instances", host="app2"),
    Cell("sshd", "open_window", host="lb1"),
    Cell("sshd", "commit", host="app3"),
    Cell("sshd", "switch_current", host="app1"),
    Cell("hang", "stop_scripts", host="scripts1", command="scriptctl"),
    Cell("hang", "start_new_instances", host="app2"),
    Cell("hang", "stop_old_instances", host="app1"),
    Cell("hang", "start_scripts", host="scripts1", command="scriptctl"),
    Cell("backend", "check_fragile"),
    Cell("backend", "prepare_window"),
    Cell("backend", "apply_cold_patches"),
    Cell("backend", "commit"),
    Cell("backend", "close_window"),
    Cell("disk", "stage_code"),
    Cell("disk", "open_window"),
    Cell("disk", "commit"),
    Cell("disk", "wait_standbys"),
    Cell("lost answer", "start_new_instances"),
    Cell("lost answer", "open_window"),
    Cell("lost answer", "close_window"),
)
HOLD_CELLS = (
    Cell("SIGINT", "cut_connections", mode="hold"),
    Cell("SIGTERM", "commit", mode="hold"),
    Cell("SIGINT", "restore_connections", mode="hold"),
    Cell("SIGKILL", "apply_cold_patches", mode="hold"),
    Cell("SIGKILL", "committed", mode="hold"),
    Cell("SIGKILL", "close_window", mode="hold"),
    Cell("backend", "apply_cold_patches", mode="hold"),
    Cell("sshd", "close_window", host="lb1", mode="hold"),
)
"""The held window (the default mode) where it differs from the drained one: PAUSE opens
it and RESUME closes it, before haproxy hears of the swap. Users only wait there: a run
that lives to its end (every cell but SIGKILL's) fails no request of its probe."""


# --- the bench: one sandbox for the module, and the matrix it fills ------------------------


@dataclass
class Bench:
    """The module's sandbox, where its runs directory on a small filesystem is, and the
    matrix the cells fill (``(fault, point) -> [what happened]``)."""

    sandbox: Sandbox
    disk: Path | None
    """A mounted tmpfs for the ``disk`` cells, or None (RLIMIT_FSIZE is used instead)."""
    numbers: Iterator[int]
    matrix: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def runs_dir(self, cell: Cell) -> Path:
        if cell.fault == "disk" and self.disk is not None:
            return self.disk / "runs"
        return self.sandbox.runs


def _fresh_and_deployed() -> Sandbox:
    """A rebuilt sandbox, deployed to the sample repository's tip."""
    manager.down()
    layout = manager.up()
    first = json.loads((layout.base / "layout.json").read_text())["first"]
    sandbox = Sandbox(layout, CONFIG, first)
    done = sandbox.cli("deploy", "--yes", *approvals())
    assert done.returncode == 0, done.stderr[-2000:]
    return sandbox


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700",
                              "fdt-faults", str(where)], capture_output=True, check=False)
    return mounted.returncode == 0


@pytest.fixture(scope="module")
def bench(_leave_fresh: None, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """The module's sandbox; at the end, the matrix printed on the terminal."""
    where = tmp_path_factory.mktemp("disk")
    disk = where if _mount_tmpfs(where) else None
    made: Bench | None = None
    try:
        made = Bench(_fresh_and_deployed(), disk, iter(range(1, 100)))
        yield made
    finally:
        if disk is not None:  # also when the sandbox could not be built
            subprocess.run(["umount", str(disk)], check=False)
        plugins = request.config.pluginmanager
        reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin(
            "capturemanager")
        if made is not None and reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write("\n")
                reporter.section("fault matrix: what each deploy exited with (then resume)")
                for line in render_matrix(made.matrix):
                    reporter.write_line(line)


def render_matrix(matrix: dict[tuple[str, str], list[str]]) -> list[str]:
    """Points down, faults across; each cell what happened (``.``: not injected there)."""
    width = max(len(p) for p in POINTS)
    cells = {key: " ".join(found) for key, found in matrix.items()}
    columns = [max([len(f), *(len(cells.get((f, p), "")) for p in POINTS)]) for f in FAULTS]
    lines = [" " * width + "  " + "  ".join(f.ljust(w) for f, w in zip(FAULTS, columns,
                                                                         strict=True))]
    for point in POINTS:
        row = [cells.get((f, point), ".").ljust(w) for f, w in zip(FAULTS, columns,
                                                                      strict=True)]
        lines.append(point.ljust(width) + "  " + "  ".join(row))
    lines += ["", "0 done, 1 rolled back, 4 rolled forward (failed after COMMIT), 1u undo "
                  "failed, K killed (SIGKILL); '>N': then `resume` exited N; FAILED: a check "
                  "failed; h: in a held window (mode = \"hold\")"]
    return lines


# --- the state the checks read ---------------------------------------------------------------


def pgbouncer_databases(sandbox: Sandbox) -> dict[str, dict[str, int]]:
    """``{name: {"paused", "disabled"}}`` from SHOW DATABASES on pgbouncer's admin console."""
    conn = psycopg2.connect(host="127.0.0.1", port=PGBOUNCER_PORT, dbname="pgbouncer",
                            user="pgbouncer_admin", passfile=str(sandbox.layout.pgpass),
                            connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            names = [c[0] for c in cur.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
    return {r["name"]: {"paused": int(r["paused"]), "disabled": int(r["disabled"])}
            for r in rows if r["database"] == DB_NAME}


def lock_holder(sandbox: Sandbox) -> list[tuple[Any, ...]]:
    """Sessions holding an advisory lock on the primary (the deploy lock is the only one)."""
    return sandbox.query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")


def show(sandbox: Sandbox, run_id: str, config: Path) -> dict[str, Any]:
    """``show RUN --json`` with the cell's config (its runs directory)."""
    done = sandbox.cli("show", run_id, "--json", config=config)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def db_outcome(sandbox: Sandbox, run_id: str) -> str:
    rows = sandbox.query("SELECT outcome FROM fastdowntime.run WHERE id = %s", (run_id,))
    assert rows, f"no run record {run_id} in the database"
    return str(rows[0][0])


def unsettled_runs(sandbox: Sandbox) -> list[tuple[Any, ...]]:
    """Run records preflight would refuse to deploy over."""
    return sandbox.query("""
        SELECT id, outcome FROM fastdowntime.run r
         WHERE outcome IN ('crashed', 'undo-failed', 'commit-unknown')
            OR (outcome = 'running' AND NOT EXISTS (
                    SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid))""")


def schema(sandbox: Sandbox) -> tuple[frozenset[str], frozenset[tuple[int, int, int]]]:
    """The columns of ``item`` and the rows of the revision table."""
    return frozenset(sandbox.item_columns()), frozenset(sandbox.patches())


def serving_slots(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    """Each app host's (serving, idle) haproxy server: exactly one of its two is not MAINT."""
    states = sandbox.haproxy()
    slots = {}
    for host in sandbox.app_hosts:
        mine = {name: state for name, state in states.items() if name.startswith(f"{host}_")}
        idle = [name for name, state in mine.items() if state == "MAINT"]
        serving = [name for name, state in mine.items() if state != "MAINT"]
        assert len(idle) == 1 and len(serving) == 1, f"{host}: {mine}"
        slots[host] = (serving[0], idle[0])
    return slots


def settled_problems(sandbox: Sandbox) -> list[str]:
    """What keeps the sandbox from being settled (empty: settled), for a cell to start from."""
    problems = []
    try:
        slots = serving_slots(sandbox)
        if any(sandbox.haproxy()[serving] != "UP" for serving, _ in slots.values()):
            problems.append(f"haproxy: {sandbox.haproxy()}")
        closed = {n: f for n, f in pgbouncer_databases(sandbox).items() if any(f.values())}
        if closed:
            problems.append(f"pgbouncer: {closed}")
        if lock_holder(sandbox):
            problems.append("the deploy lock is held")
        if unsettled_runs(sandbox):
            problems.append(f"unsettled runs: {unsettled_runs(sandbox)}")
    except (AssertionError, OSError, psycopg2.Error) as exc:
        problems.append(str(exc))
    return problems


def assert_settled(sandbox: Sandbox) -> str:
    """Every app host serves the same release through haproxy from its one serving slot (UP,
    the idle one in MAINT, none in DRAIN), pgbouncer is open, the lock is free; the
    release."""
    want = {f"{h}_{p}" for h in sandbox.app_hosts for p in (8001, 8002)}
    assert set(sandbox.haproxy()) == want
    # haproxy's own checks may still count a restarted instance down (downinter 500 ms)
    wait_until("each serving slot UP in haproxy", lambda: all(
        sandbox.haproxy()[s] == "UP" for s, _ in serving_slots(sandbox).values()), 10)
    assert not [s for s in sandbox.haproxy().values() if "DRAIN" in s], sandbox.haproxy()
    releases = set()
    for host in sandbox.layout.role("app"):
        serving, idle = serving_slots(sandbox)[host.name]
        port, idle_port = int(serving.rpartition("_")[2]), int(idle.rpartition("_")[2])
        answer = get_direct(host.address, port)
        assert answer.ok, f"{host.name}:{port}: {answer.body}"
        assert get_direct(host.address, idle_port).status is None, \
            f"{host.name}: its idle slot {idle_port} still runs"
        assert answer.revision == sandbox.current(host.name), host.name
        releases.add(answer.revision)
    assert len(releases) == 1, releases
    revision = releases.pop()
    answers = [get() for _ in range(8)]
    assert [(a.status, a.revision) for a in answers] == [(200, revision)] * 8, \
        [a.body for a in answers if not a.ok][:3]
    assert pgbouncer_databases(sandbox) == {DB_NAME: {"paused": 0, "disabled": 0}}
    assert lock_holder(sandbox) == []
    assert unsettled_runs(sandbox) == []
    assert revision is not None
    return revision


# --- the faults --------------------------------------------------------------------------------


def _host(sandbox: Sandbox, name: str) -> Host:
    return next(h for h in sandbox.layout.hosts if h.name == name)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], list(parents.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue += parents.get(child, [])
    return found


def stop_sshd(host: Host) -> None:
    """Stop the host's sshd and every session it serves: its connections drop."""
    master = int((host.root / "sshd" / "sshd.pid").read_text())
    sessions = _children(master)
    os.kill(master, signal.SIGTERM)
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(f"{host.name}'s sshd gone", lambda: not Path(f"/proc/{master}").exists()
               or _state(master) == "Z", 5)


def start_sshd(sandbox: Sandbox, host: Host) -> None:
    """Start the host's sshd again, as the sandbox did; return once it greets."""
    directory = host.root / "sshd"
    subprocess.run([SSHD, "-f", str(directory / "sshd_config"),
                    "-E", str(sandbox.layout.logs / f"sshd-{host.name}.log")], check=True)

    def greets() -> bool:
        import socket

        try:
            with socket.create_connection((host.address, SSH_PORT), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False
    wait_until(f"{host.name}'s sshd", greets, 10)


def hang_next_call(host: Host, command: str) -> Callable[[], None]:
    """The next call of ``bin/COMMAND`` on the host hangs (until its remote timeout kills
    it); later calls run it. Returns what puts the command back."""
    path = host.app_root / "bin" / command
    real = path.with_name(command + ".real")
    marker = path.with_name(command + ".hung")
    shutil.move(path, real)
    path.write_text(f"#!/bin/sh\nif mkdir {marker} 2>/dev/null; then exec sleep 600; fi\n"
                    f'exec /usr/bin/python3 {real} "$@"\n')
    path.chmod(0o755)
    shutil.chown(path, "deploy", "deploy")

    def restore() -> None:
        shutil.move(real, path)
        if marker.exists():
            marker.rmdir()
    return restore


def fill(directory: Path) -> Callable[[], None]:
    """Fill the filesystem of ``directory`` to the last byte; return what frees it."""
    filler = directory / "filler"
    out = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 4096, 1):  # a smaller write fits where a bigger one no longer did
            with contextlib.suppress(OSError):
                while os.write(out, b"\0" * size):
                    pass
    finally:
        os.close(out)
    return lambda: filler.unlink()


def limit_file_size(pid: int, journal: Path) -> Callable[[], None]:
    """RLIMIT_FSIZE of ``pid`` at the journal's size: every write past it fails (EFBIG).
    The limit dies with the process; nothing to undo."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (journal.stat().st_size, hard))
    return lambda: None


def terminate(sandbox: Sandbox, pids: list[int]) -> None:
    sandbox.query("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


# --- one cell --------------------------------------------------------------------------------


@dataclass
class Deploy:
    """One faulted deploy: the process, its run, and what lifts the fault."""

    proc: subprocess.Popen[str]
    log: Path
    runs: Path
    run_id: str = ""
    lifts: list[Callable[[], None]] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text()[-3000:]


def new_run(runs: Path, before: set[str], proc: subprocess.Popen[str]) -> str:
    def one() -> str | None:
        ids = [j.parent.name for j in runs.glob("*/journal.jsonl") if j.parent.name not in before]
        return ids[0] if len(ids) == 1 else None
    return str(wait_until("the run's journal", one, 60, proc))


def inject(bench: Bench, cell: Cell, deploy: Deploy, state: Path) -> None:
    """Wait for the run to stop at the cell's point, inject the fault, let it go on."""
    sandbox, proc = bench.sandbox, deploy.proc
    paused = wait_until("the pause", lambda: state.exists() and json.loads(state.read_text()),
                        60, proc)
    wait_until("the process stopped", lambda: _state(proc.pid) == "T", 10, proc)
    journal = deploy.runs / deploy.run_id / "journal.jsonl"
    if cell.at == "commit":
        event = wait_for_event(journal, lambda e: e.get("event") == "cold.backend", 1)
    elif cell.at == "committed":
        event = wait_for_event(journal, lambda e: e.get("event") == "cold.backend", 1)
        assert not [e for e in read_events(journal) if e.get("event") == "commit"]
    else:
        event = wait_for_event(journal, lambda e: e.get("event") == "step.start"
                               and e.get("step") == cell.at, 1)
    assert event
    if cell.fault == "SIGKILL":
        os.kill(proc.pid, signal.SIGKILL)
        return
    if cell.fault in ("SIGINT", "SIGTERM"):
        os.kill(proc.pid, signal.Signals[cell.fault])
    elif cell.fault == "sshd":
        assert cell.host is not None
        host = _host(sandbox, cell.host)
        stop_sshd(host)
        deploy.lifts.append(lambda: start_sshd(sandbox, host))
    elif cell.fault == "hang":
        assert cell.host is not None
        deploy.lifts.append(hang_next_call(_host(sandbox, cell.host), cell.command))
    elif cell.fault == "backend":
        pids = [pid for pid in paused["sessions"].values() if pid]
        assert pids, paused
        terminate(sandbox, pids)
    elif cell.fault == "disk":
        if bench.disk is not None:
            deploy.lifts.append(fill(bench.disk))
        else:
            deploy.lifts.append(limit_file_size(proc.pid, journal))
    os.kill(proc.pid, signal.SIGCONT)


def cold_patch(number: int) -> tuple[str, str]:
    return (f"database/schema/patch-2201-{number:02d}-0.sql",
            f"ALTER TABLE item ADD COLUMN fault_{number} integer;\n"
            f"INSERT INTO LaunchpadDatabaseRevision VALUES (2201, {number}, 0);\n")


def pending_approvals(sandbox: Sandbox) -> list[str]:
    """``--approve`` for every cold patch of the cells that the database lacks."""
    applied = sandbox.patches()
    numbers = sorted(int(p.stem.split("-")[2])
                     for p in (sandbox.repo / "database" / "schema").glob("patch-2201-*.sql"))
    return [arg for n in numbers if (2201, n, 0) not in applied
            for arg in ("--approve", f"patch-2201-{n:02d}-0:e2e")]


@pytest.fixture
def cell_bench(bench: Bench) -> Bench:
    """The bench, settled: rebuilt when an earlier cell left it otherwise."""
    if settled_problems(bench.sandbox):
        bench.sandbox = _fresh_and_deployed()
    return bench


@pytest.mark.parametrize("cell", CELLS + HOLD_CELLS, ids=[c.id for c in CELLS + HOLD_CELLS])
def test_fault(cell_bench: Bench, cell: Cell, tmp_path: Path) -> None:
    """The fault at its point leaves the old or the new schema, never a mix; the exit code and
    the run record say which; resume settles what the run could not; then everything
    serves, nothing is left drained, paused or locked, and the next deploy succeeds."""
    bench, sandbox = cell_bench, cell_bench.sandbox
    number = next(bench.numbers)
    name, text = cold_patch(number)
    sandbox.commit(f"Add column fault_{number} to item (cold)", {name: text})
    # the matrix's points are those of a drained window (the drain and the swap back talk to
    # haproxy inside it); HOLD_CELLS are where a held window differs
    edits: dict[str, str] = {"mode": json.dumps(cell.mode)}
    runs = bench.runs_dir(cell)
    if runs != sandbox.runs:
        edits["dir"] = json.dumps(str(runs))
    if cell.fault == "hang":
        edits["command_timeout_s"] = str(HANG_TIMEOUT_S)
    config = sandbox.write_config(tmp_path, **edits)
    args = ("deploy", "--yes", *pending_approvals(sandbox))
    old = schema(sandbox)
    old_release = assert_settled(sandbox)
    state = tmp_path / "state.json"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"state": str(state), "lose": cell.at} if cell.fault ==
                               "lost answer" else {"state": str(state), "pause": cell.at}))
    runs.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in runs.iterdir()}
    # a full disk is the deploy's output's too: a log line or the report that cannot be
    # written must not steer the run nor its exit code
    log = (bench.disk if cell.fault == "disk" and bench.disk else tmp_path) / "deploy.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.faulty", str(spec), "-c",
                                 str(config), *args], stdout=out, stderr=subprocess.STDOUT,
                                text=True, cwd=PROJECT_ROOT)
    deploy = Deploy(proc, log, runs)
    try:
        deploy.run_id = new_run(runs, before, proc)
        if cell.fault != "lost answer":
            inject(bench, cell, deploy, state)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for lift in reversed(deploy.lifts):
            lift()
    if log.parent != tmp_path:
        shutil.move(log, tmp_path / "deploy.log")
        deploy.log = tmp_path / "deploy.log"
    found = "FAILED"
    try:
        found = check_fault(bench, cell, config, deploy, code, old, old_release)
    finally:
        bench.matrix.setdefault((cell.fault, cell.point), []).append(
            f"h{found}" if cell.mode == "hold" else found)


def check_fault(bench: Bench, cell: Cell, config: Path, deploy: Deploy, code: int,
                old: tuple[frozenset[str], frozenset[tuple[int, int, int]]],
                old_release: str) -> str:
    """Every check of a cell after the faulted deploy exited; what happened, for the matrix."""
    sandbox, run_id, output = bench.sandbox, deploy.run_id, deploy.output()
    assert "Traceback" not in output, output
    columns, rows = schema(sandbox)
    new = {f"fault_{n}" for n in range(1, 100) if (2201, n, 0) in rows} - old[0]
    committed = (columns, rows) != old
    # exactly the old schema, or exactly the new one, and the revision table agrees with it
    if committed:
        assert new and columns == old[0] | new, (columns, old[0])
        assert rows == old[1] | {(2201, int(c.split("_")[1]), 0) for c in new}
    assert committed == cell.new_schema, (cell, output)
    record = show(sandbox, run_id, config)
    if cell.fault == "SIGKILL":
        assert code == -signal.SIGKILL
        found = "K"
    else:
        want = 4 if committed and cell.fault != "disk" else 0 if committed else 1
        assert code == want, (code, output)
        settled_as = db_outcome(sandbox, run_id)
        expected = {0: {"done"}, 1: {"rolled-back", "undo-failed"},
                    4: {"failed-after-commit", "commit-unknown"}}[code]
        assert settled_as in expected, (settled_as, output)
        if cell.fault != "disk":  # a full disk keeps the summary of the run's start
            assert record.get("outcome") == settled_as, (record.get("outcome"), settled_as)
            probe = record.get("probe") or {}
            assert probe.get("down_at_end") is False, probe
            if cell.mode == "hold":  # the held window turned nobody away
                assert record.get("failed_requests") == 0, probe
        if settled_as != "done" and settled_as != "rolled-back":
            # the advice is a command that settles this very run
            assert f"`fastdowntime resume {run_id}`" in output, output
        if committed:
            assert "hosts: unchanged" not in output, output
        found = f"{code}{'u' if settled_as == 'undo-failed' else ''}"
    if cell.fault == "disk" and bench.disk is not None:
        # the journal wrote into room it reserved: the disk filled around it, resume reads
        # the whole run (an RLIMIT_FSIZE stands in for a full disk where tmpfs cannot be
        # mounted, and no reserve gets past that)
        ended = read_events(deploy.runs / run_id / "journal.jsonl")[-1]
        assert ended.get("event") == "run.end", ended
    if cell.fault in ("SIGINT", "SIGTERM", "backend", "hang", "sshd", "lost answer"):
        journal = read_events(deploy.runs / run_id / "journal.jsonl")
        hit = [e for e in journal if e.get("event") in ("step.failed", "rollforward",
                                                         "lock.lost")]
        assert hit, f"{cell.id}: no step failed"
    unsettled = cell.fault == "SIGKILL" or record.get("outcome") in (
        "running", "crashed", "undo-failed", "failed-after-commit", "commit-unknown")
    if unsettled:
        resumed = sandbox.cli("resume", run_id, config=config)
        assert "Traceback" not in resumed.stderr, resumed.stderr
        assert resumed.returncode == (0 if committed else 1), \
            resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert show(sandbox, run_id, config)["outcome"] == ("done" if committed else "rolled-back")
        assert db_outcome(sandbox, run_id) == ("done" if committed else "rolled-back")
        found += f">{resumed.returncode}"
    assert schema(sandbox) == (columns, rows), "resume changed the schema"
    read_journal(deploy.runs / run_id / "journal.jsonl")  # whole lines, whatever happened
    release = assert_settled(sandbox)
    assert release == (sandbox.tip() if committed else old_release)
    if committed:
        checked = sandbox.cli("preflight", config=config)
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    else:
        again = sandbox.cli("deploy", "--yes", *pending_approvals(sandbox))
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert assert_settled(sandbox) == sandbox.tip()
    return found
