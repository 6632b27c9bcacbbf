"""resume after COMMIT, on fake hosts: which steps it runs, and the restart that goes
host by host behind haproxy when the hosts are in rotation."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import HostSettings, load_config
from orchestrator.errors import BadInput
from orchestrator.remote import operations as ops
from orchestrator.remote.commands import Command
from orchestrator.remote.haproxy_wire import HaproxyError
from orchestrator.remote.operations import HealthResult
from orchestrator.remote.results import OK, GroupResult, HostResult
from orchestrator.runner import engine
from orchestrator.runner.actions.instances import RestartOnRelease, RestartParams, hosts_unserved
from orchestrator.runner.context import Run
from orchestrator.runner.playbook import PLAYBOOKS, parse_playbook
from orchestrator.runner.resume import UnknownSlots, _down, _finish_window, _JournaledSlots
from orchestrator.runner.runs import PLAYBOOK_NAME
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.fakes import make_run

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")
CUT, PREVIOUS = "c" * 40, "e" * 40
SERVING = SANDBOX.need("app").ports[0]


class Hosts:
    """What runs on each app host's serving slot; ``broken`` hosts never get the cut healthy."""

    def __init__(self, running: dict[str, str | None], broken: Sequence[str] = ()) -> None:
        self.running = running
        self.broken = set(broken)
        self.log: list[str] = []

    def ok(self, host: str, what: str) -> HostResult:
        self.log.append(f"{host} {what}")
        return HostResult(host, OK, 0, "", "", 0.0, what)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def wait_healthy(config: Any, host: HostSettings, port: int, expect: str,
                         timeout_s: float) -> HealthResult:
            assert port == SERVING
            serving = self.running[host.name]
            ok = serving == expect and not (expect == CUT and host.name in self.broken)
            return HealthResult(host.name, port, "url", expect, ok, serving,
                                "HTTP 200" if serving else "refused", 1, 0.0)

        def start(host: HostSettings, release: str) -> HostResult:
            assert self.running[host.name] in (None, release), "start on a busy slot"
            self.running[host.name] = release
            return self.ok(host.name, f"start {release[0]}")

        def stop(remote: Any, config: Any, host: HostSettings, port: int) -> HostResult:
            self.running[host.name] = None
            return self.ok(host.name, "stop")

        monkeypatch.setattr(ops, "wait_healthy", wait_healthy)
        monkeypatch.setattr(ops, "stop_instance", stop)
        monkeypatch.setattr(ops, "start_instance",
                            lambda remote, config, host, release, port: start(host, release))
        monkeypatch.setattr(ops, "start_instances",
                            lambda remote, config, hosts, release, port:
                            GroupResult.of(start(h, release) for h in hosts))
        monkeypatch.setattr(ops, "switch", lambda remote, config, sha, hosts: GroupResult.of(
            self.ok(h.name, f"switch {sha[0]}") for h in hosts))
        self.start, self.stop = start, stop

    def run(self, host: HostSettings, command: Command, **_: Any) -> HostResult:
        """The hosts as a Remote: ``[app] start``/``stop`` and the switch script."""
        argv = command.argv
        if argv[0] == "sh":
            return self.ok(host.name, f"switch {argv[-1][0]}")
        if argv[1] == "start":
            return self.start(host, argv[2].rsplit("/", 1)[1])
        return self.stop(None, None, host, int(argv[2]))

    def run_all(self, hosts: Sequence[HostSettings], command: Any, **_: Any) -> GroupResult:
        return GroupResult.of(self.run(h, command(h) if callable(command) else command)
                              for h in hosts)


class FakeHaproxy:
    """Records its calls, in one log with the hosts' actions (their order matters)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.calls: list[tuple[tuple[str, ...], str]] = []

    def set_state(self, servers: Sequence[str], state: str) -> None:
        self.calls.append((tuple(servers), state))
        self.log += [f"{s.split('_')[0]} {state}" for s in servers]

    def wait_drained(self, servers: Sequence[str], timeout_s: float) -> float:
        self.log += [f"{s.split('_')[0]} drained" for s in servers]
        return 0.0


def new_run(hosts: Hosts, mode: str = "hold") -> Run:
    slots = {h.name: (SERVING, SANDBOX.need("app").ports[1]) for h in SANDBOX.role("app")}
    config = dataclasses.replace(SANDBOX, window=dataclasses.replace(SANDBOX.window, mode=mode))
    return make_run(config, release=CUT, previous=PREVIOUS, remote=hosts,
                    haproxy=FakeHaproxy(hosts.log), slots=slots)


def server(run: Run, name: str) -> str:
    host = next(h for h in run.app_hosts if h.name == name)
    return run.server(host, SERVING)


def rolling() -> RestartOnRelease:
    return RestartOnRelease(RestartParams(rolling=True))


def test_hosts_left_stopped_or_on_the_previous_release_end_on_the_cut(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling restart (what resume runs once an undone window put the hosts back): one
    host at a time ([nodowntime] max_out_of_rotation), each drained and out of rotation
    before it stops, the one already on the cut too."""
    names = [h.name for h in SANDBOX.role("app")]
    assert len(names) >= 4 and SANDBOX.nodowntime.max_out_of_rotation == 1
    hosts = Hosts({names[0]: CUT, names[1]: None, **{n: PREVIOUS for n in names[2:]}})
    hosts.install(monkeypatch)
    run = new_run(hosts)
    rolling().do(run)
    assert hosts.running == dict.fromkeys(names, CUT)
    for name in names:
        mine = [line.split(" ", 1)[1] for line in hosts.log if line.startswith(f"{name} ")]
        assert mine == ["drain", "drained", "maint", "stop", f"switch {CUT[0]}",
                        f"start {CUT[0]}", "ready"], name
    out = [set(servers) for servers, state in run.haproxy.calls if state == "maint"]
    assert out == [{server(run, n)} for n in names]
    assert run.host_states == {n: f"serving {CUT[:12]}" for n in names}
    assert run.problems == []


def test_a_host_where_the_cut_fails_goes_back_and_the_run_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut never gets healthy on one host: it serves the previous release again, in
    rotation, and the run records it (resume then exits 4 naming it)."""
    names = [h.name for h in SANDBOX.role("app")]
    hosts = Hosts(dict.fromkeys(names, PREVIOUS), broken=[names[1]])
    hosts.install(monkeypatch)
    run = new_run(hosts)
    rolling().do(run)
    assert len(run.problems) == 1 and run.problems[0].startswith(
        f"{names[1]}: {CUT[:12]} failed")
    assert hosts.running == {**dict.fromkeys(names, CUT), names[1]: PREVIOUS}
    assert run.host_states[names[1]] == f"back on {PREVIOUS[:12]} and serving"
    assert {s for servers, state in run.haproxy.calls if state == "ready" for s in servers} \
        == {server(run, n) for n in names}


def test_the_drained_window_restart_goes_all_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a drained window (the hosts out of rotation) the restart does not batch; in
    hold mode (the hosts in rotation) it does, without being told."""
    names = [h.name for h in SANDBOX.role("app")]
    hosts = Hosts(dict.fromkeys(names))
    hosts.install(monkeypatch)
    run = new_run(hosts, mode="drain")
    RestartOnRelease().do(run)
    assert hosts.running == dict.fromkeys(names, CUT)
    assert run.haproxy.calls == []
    hosts = Hosts(dict.fromkeys(names, PREVIOUS))
    hosts.install(monkeypatch)
    run = new_run(hosts, mode="hold")
    RestartOnRelease().do(run)
    assert hosts.running == dict.fromkeys(names, CUT)
    assert [state for _, state in run.haproxy.calls] == ["drain", "maint", "ready"] * len(names)


# --- which steps resume runs after COMMIT ---------------------------------------------------


def events(playbook: str, done: Sequence[str], undone: Sequence[str] = ()) -> list[dict[str, Any]]:
    return [{"event": "run.start", "playbook": playbook},
            *({"event": "step.done", "stage": "fastdowntime", "step": s} for s in done),
            *({"event": "step.done", "stage": "fastdowntime", "step": f"undo {s}"}
              for s in undone),
            {"event": "step.done", "stage": "nodowntime", "step": "start_scripts"}]


def resumed_steps(monkeypatch: pytest.MonkeyPatch, journal: list[dict[str, Any]],
                  runs: Path | None = None) -> list[Any]:
    ran: list[Any] = []
    monkeypatch.setattr(engine, "run_steps", lambda playbook, run: ran.extend(playbook.steps))
    run = new_run(Hosts({}))
    if runs is not None:
        run.config = dataclasses.replace(run.config, runs=dataclasses.replace(
            run.config.runs, dir=str(runs)))
    _finish_window(run, journal)
    assert run.committed
    return ran


WINDOW = ["stage_code", "apply_live_patches", "stop_scripts", "check_fragile",
          "start_new_instances", "prepare_window", "open_window", "cut_connections",
          "apply_cold_patches"]


def test_resume_runs_the_steps_past_commit_that_did_not_finish(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ran = resumed_steps(monkeypatch, events("fastdowntime",
                                            [*WINDOW, "restore_connections", "close_window"]))
    assert [s.name for s in ran] == ["wait_standbys", "stop_old_instances", "switch_current",
                                     "start_scripts"]
    ran = resumed_steps(monkeypatch, events("fastdowntime", WINDOW))
    assert [s.name for s in ran][:2] == ["restore_connections", "close_window"]


def test_an_undone_window_starts_its_new_instances_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """commit-unknown undid the window: the new instances start again before traffic
    moves, the scripts stop again before they start on the cut."""
    undone = ["open_window", "prepare_window", "start_new_instances", "stop_scripts"]
    ran = resumed_steps(monkeypatch, events("fastdowntime", WINDOW[:-1], undone))
    assert [s.name for s in ran] == ["stop_scripts", "start_new_instances",
                                     "restore_connections", "close_window", "wait_standbys",
                                     "stop_old_instances", "switch_current", "start_scripts"]


def test_an_undone_restart_window_restarts_host_by_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The restart playbook's undo put the previous release back in rotation: resume
    restarts the hosts behind haproxy, a batch at a time, not all at once."""
    restart = [n for n in WINDOW if n != "start_new_instances"]
    ran = resumed_steps(monkeypatch, events("fastdowntime-restart", restart[:-1],
                                            ["open_window", "stop_scripts"]))
    step = next(s for s in ran if s.name == "restart_on_release")
    assert step.action.params.rolling
    ran = resumed_steps(monkeypatch, events("fastdowntime-restart", restart))
    step = next(s for s in ran if s.name == "restart_on_release")
    assert not step.action.params.rolling


def kept(runs: Path, text: str, journal: list[dict[str, Any]], file: Path) -> None:
    """What a run leaves of its playbook: the copy beside its journal, the hash in run.start."""
    (runs / "run-1").mkdir(parents=True)
    (runs / "run-1" / PLAYBOOK_NAME).write_text(text)
    journal[0].update(playbook_file=str(file),
                      playbook_sha256=hashlib.sha256(text.encode()).hexdigest())


def test_resume_runs_the_playbook_the_run_kept(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """A playbook of the operator's, since changed and still named like a shipped one:
    resume runs the steps the run ran, from the copy beside its journal (not the file, not
    the shipped playbook of that name); a step the playbook repeats is told apart by its
    line (the first wait_standbys finished, the second did not)."""
    text = (PLAYBOOKS / "fastdowntime.yaml").read_text()
    mine = text.replace("  - action: prepare_window", "  - action: wait_standbys\n"
                        "  - action: prepare_window", 1)
    assert mine != text
    path = tmp_path / "mine.yaml"
    path.write_text("name: fastdowntime\nsteps:\n  - action: stage_code\n")  # changed since
    book = parse_playbook(mine, path)
    line = {s.name: s.line for s in book.steps}  # the last of each name
    first_wait = next(s.line for s in book.steps if s.name == "wait_standbys")
    journal = [{"event": "run.start", "playbook": "fastdowntime"},
               *({"event": "step.done", "stage": "fastdowntime", "step": s, "line": line[s]}
                 for s in [*WINDOW, "restore_connections", "close_window"]),
               {"event": "step.done", "stage": "fastdowntime", "step": "wait_standbys",
                "line": first_wait}]
    kept(tmp_path / "runs", mine, journal, path)
    ran = resumed_steps(monkeypatch, journal, tmp_path / "runs")
    names = ["wait_standbys", "stop_old_instances", "switch_current", "start_scripts"]
    assert [(s.name, s.line) for s in ran] == [(name, line[name]) for name in names]


def test_resume_refuses_a_kept_playbook_changed_since(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """The copy beside the journal no longer has the hash the run recorded: resume says so
    (exit 2) rather than finish the run with other steps."""
    text = (PLAYBOOKS / "fastdowntime.yaml").read_text()
    journal = events("fastdowntime", WINDOW)
    kept(tmp_path / "runs", text, journal, tmp_path / "gone.yaml")
    (tmp_path / "runs" / "run-1" / PLAYBOOK_NAME).write_text(text + "# edited\n")
    with pytest.raises(BadInput, match="changed since the run"):
        resumed_steps(monkeypatch, journal, tmp_path / "runs")


def test_steps_after_one_that_failed_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """close_window failed and the run rolled forward past it: resume runs it again and
    every step after it, finished or not (close_window drains the old instances that
    stop_old_instances then stops)."""
    ran = resumed_steps(monkeypatch, events("fastdowntime", [
        *WINDOW, "restore_connections", "wait_standbys", "stop_old_instances",
        "switch_current", "start_scripts"]))
    assert [s.name for s in ran] == ["close_window", "wait_standbys", "stop_old_instances",
                                     "switch_current", "start_scripts"]


def test_resume_knows_the_window_the_dead_run_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold run closes its window at RESUME, before close_window: resume takes the close
    (and whether traffic settled) from the journal, so interrupts are not held again for
    a window that is over, nor released early for one that is not."""
    monkeypatch.setattr(engine, "run_steps", lambda playbook, run: None)
    window = [{**e, "stage": "fastdowntime"} for e in (
        {"event": "window.open", "at": 100.0}, {"event": "window.close", "at": 100.4})]
    journal = events("fastdowntime", [*WINDOW, "restore_connections"])
    run = new_run(Hosts({}))
    _finish_window(run, [*journal, *window])
    assert (run.window_closed, run.settled) == (100.4, False)
    assert engine._holding(run)  # committed, traffic not yet where the window hands it
    run = new_run(Hosts({}))
    _finish_window(run, [*events("fastdowntime", [*WINDOW, "restore_connections",
                                                  "close_window"]), *window])
    assert run.settled and not engine._holding(run)
    run = new_run(Hosts({}))
    _finish_window(run, [*journal, window[0]])
    assert (run.window_opened, run.window_closed) == (100.0, None)


def test_what_a_run_says_of_its_hosts_when_it_ends_after_commit() -> None:
    """The exit-4 message's ``hosts:``: per host when steps said, else what the window left."""
    from orchestrator.runner.deploy import _states

    run = make_run(committed=True, window_opened=1.0)
    assert _states(run).startswith("not confirmed: the window did not close")
    run = make_run(committed=True, window_opened=1.0, window_closed=1.2)
    # a held window closed at RESUME, and the swap after it did not get through
    assert _states(run).startswith("the old instances still serve, on the new schema")
    run = make_run(committed=True, window_opened=1.0, window_closed=1.2, settled=True)
    assert _states(run) == "unchanged"
    run.host_states = {"app1": "serving the cut"}
    assert _states(run) == "app1: serving the cut"


def test_a_step_asking_for_slots_a_cut_journal_lost_names_why(tmp_path: Path) -> None:
    """A journal cut short before it recorded the slots: a step that needs them fails naming
    the host, the journal and why, never with a bare KeyError; asking whether a host is
    known still answers no."""
    run = new_run(Hosts({}))
    run.slots = _JournaledSlots({}, tmp_path / "journal.jsonl")
    host = run.app_hosts[0]
    with pytest.raises(UnknownSlots) as lost:
        run.slots[host.name]
    assert str(lost.value).startswith(f"{host.name}: the journal {tmp_path / 'journal.jsonl'} "
                                      "names no instance slots for it (it was cut short)")
    assert host.name not in run.slots and run.slots.get(host.name) is None


def test_resume_leaves_alone_the_old_instance_a_host_fell_back_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """close_window found app2's new instance unhealthy and kept its old one serving, then
    the run died: resume runs stop_old_instances again knowing app2 kept its old instance
    (it would otherwise drain and stop the only one app2 serves from). When close_window
    runs again, it finds out for itself."""
    seen: list[set[str]] = []
    monkeypatch.setattr(engine, "run_steps", lambda playbook, run: seen.append(set(run.fallback)))
    journal = events("fastdowntime", [*WINDOW, "restore_connections", "close_window"])
    closed = next(e for e in journal if e.get("step") == "close_window")
    closed["unhealthy"] = {"app2": "port 8002: HTTP 500"}
    _finish_window(new_run(Hosts({})), journal)
    _finish_window(new_run(Hosts({})), events("fastdowntime", WINDOW))
    assert seen == [{"app2"}, set()]


class StatsHaproxy:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    def stats(self) -> dict[str, Any]:
        return {name: SimpleNamespace(admin_state=state) for name, state in self.states.items()}


def test_hosts_unserved_names_the_hosts_haproxy_routes_to_through_no_slot() -> None:
    """A host whose every slot is drained or in maintenance is down; one with a slot ready
    is served, a spare slot left draining beside it or not."""
    run = new_run(Hosts({}))
    ports = SANDBOX.need("app").ports
    states = {run.server(h, p): "maint" for h in run.app_hosts for p in ports}
    first, second = run.app_hosts[:2]
    states[run.server(first, ports[0])] = "drain"
    states[run.server(second, ports[0])] = "ready"
    states[run.server(second, ports[1])] = "drain"
    run.haproxy = StatsHaproxy(states)
    down = hosts_unserved(run)
    assert down[0] == (f"{first.name} ({run.server(first, ports[0])} drain, "
                       f"{run.server(first, ports[1])} maint)")
    assert [d.split()[0] for d in down] == [h.name for h in run.app_hosts if h != second]


class LostHaproxy:
    def stats(self) -> dict[str, Any]:
        raise HaproxyError("show stat", "channel closed", "could not send", host="lb1")


def test_resume_takes_an_unreadable_haproxy_for_not_serving() -> None:
    """resume confirms the hosts are served from haproxy itself: when it cannot be read,
    it says so, and the run is not called restored; when every host has a ready slot,
    nothing is said."""
    run = new_run(Hosts({}))
    run.haproxy = LostHaproxy()
    down = _down(run)
    assert down is not None and down.startswith(
        "haproxy could not be read to confirm that it serves every app host")
    ports = SANDBOX.need("app").ports
    run.haproxy = StatsHaproxy({run.server(h, p): "ready" if p == ports[0] else "maint"
                                for h in run.app_hosts for p in ports})
    assert _down(run) is None
