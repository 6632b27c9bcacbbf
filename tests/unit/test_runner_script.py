"""Steps as data: one description, executed by a run and printed by a dry run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import HostSettings, load_config
from orchestrator.errors import FailedAfterCommit, FailedBeforeCommit
from orchestrator.remote import operations as ops
from orchestrator.remote.commands import Command
from orchestrator.remote.results import GroupResult, HostResult
from orchestrator.runner.actions.base import Action
from orchestrator.runner.actions.script import (
    Background,
    Effect,
    Fail,
    HostSkip,
    If,
    Pick,
    Script,
    SetState,
    Ssh,
    Swap,
    When,
    execute,
    script_lines,
)
from orchestrator.runner.context import Run
from orchestrator.runner.engine import render_steps
from orchestrator.runner.playbook import Playbook, Step
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.fakes import make_run

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")
DRAIN = dataclasses.replace(SANDBOX, window=dataclasses.replace(SANDBOX.window, mode="drain"))
APPS = SANDBOX.role("app")
RELEASE, PREVIOUS = "c" * 40, "e" * 40


class FakeRemote:
    """Runs nothing; records ``host: command`` lines; ``fails`` names hosts that fail."""

    def __init__(self, fails: Sequence[str] = ()) -> None:
        self.fails = set(fails)
        self.sent: list[str] = []

    def run(self, host: HostSettings, command: Command, **_: Any) -> HostResult:
        self.sent.append(f"{host.name}: {command.render()}")
        code = 1 if host.name in self.fails else 0
        return HostResult(host.name, "failed" if code else "ok", code, "", "", 0.0,
                          command.render())

    def run_all(self, hosts: Sequence[HostSettings], command: Callable[[HostSettings], Command],
                **_: Any) -> GroupResult:
        return GroupResult.of(self.run(h, command(h)) for h in hosts)


class FakeHaproxy:
    def __init__(self) -> None:
        self.sent: list[tuple[tuple[str, ...], str]] = []

    def set_state(self, servers: Sequence[str], state: str) -> None:
        self.sent.append((tuple(servers), state))

    def swap(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.sent.append((tuple(n for pair in pairs for n in pair), "swap"))


def new_run(remote: FakeRemote | None = None) -> Run:
    slots = {h.name: (8001, 8002) for h in APPS}
    return make_run(SANDBOX, release=RELEASE, previous=PREVIOUS,
                    remote=remote or FakeRemote(), haproxy=FakeHaproxy(), slots=slots)


def stop(hosts: Sequence[HostSettings], port: int = 8001) -> ops.Fanout:
    return ops.stop_commands(SANDBOX, hosts, port)


def test_a_run_sends_the_lines_a_dry_run_shows() -> None:
    """Executing commands sends exactly the ``host: command`` lines that rendering shows."""
    run = new_run()
    script: Script = (Ssh(stop(APPS), fails="stopping"), Ssh(stop(APPS[:1], 8002)))
    execute(script, run)
    assert run.remote.sent == script_lines(script, run)


def test_a_decision_runs_one_branch_and_a_dry_run_shows_both() -> None:
    """An If runs its branch on the answer; the dry run shows each branch under its words."""
    run = new_run(FakeRemote(fails=["app2"]))
    script: Script = (Ssh(stop(APPS[1:2]), key="stopped"),
                      If(When("app2 did not stop", lambda run, a: not a["stopped"].ok),
                         (Ssh(stop(APPS[1:2], 8002)),), (Ssh(stop(APPS[2:3])),)))
    execute(script, run)
    lines = script_lines(script, run)
    assert run.remote.sent == [lines[0], lines[2].strip()]
    assert lines[1] == "if app2 did not stop:" and lines[3] == "otherwise:"
    assert lines[4] == "  " + stop(APPS[2:3]).lines()[0]


def test_a_failing_group_fails_the_step_only_when_it_says_so() -> None:
    """``fails`` raises RemoteFailed naming the host; without it the answer is only kept."""
    run = new_run(FakeRemote(fails=["app3"]))
    assert not execute((Ssh(stop(APPS), key="s"),), run)["s"].ok
    with pytest.raises(FailedBeforeCommit, match="stopping failed on 1 of 4 hosts.*app3"):
        execute((Ssh(stop(APPS), fails="stopping"),), run)


def test_skipped_hosts_are_decided_when_the_group_runs() -> None:
    """A HostSkip leaves out the hosts its test names at run time; the dry run says so."""
    run = new_run()
    run.fallback.add("app1")
    node = Ssh(stop(APPS), skip=HostSkip("it is kept", lambda run, a, h: h in run.fallback))
    execute((node,), run)
    assert [line.split(":")[0] for line in run.remote.sent] == ["app2", "app3", "app4"]
    assert script_lines((node,), run)[-1] == "-- not on a host where it is kept"


def test_a_pick_sends_the_fallback_server_on_its_answer() -> None:
    """A Pick sends its ``instead`` server when its decision holds; the dry run shows the
    usual line and the alternative."""
    run = new_run()
    bad = When("app1 is unhealthy", lambda run, a: True)
    node = SetState((Pick("app1_8002", "app1_8001", bad), Pick("app2_8002")), "ready", key="r")
    answers = execute((node,), run)
    assert run.haproxy.sent == [(("app1_8001", "app2_8002"), "ready")]
    assert answers["r"] == ["app1_8001", "app2_8002"]
    assert script_lines((node,), run) == [
        "lb: set server app/app1_8002 state ready;set server app/app2_8002 state ready",
        "if app1 is unhealthy: app1_8001 instead of app1_8002"]


def test_a_swap_shows_what_a_refused_pair_gets_back() -> None:
    """A swap is one line; a dry run shows the restore haproxy.swap makes on a refusal."""
    lines = script_lines((Swap((("app1_8001", "app1_8002"),)),), new_run())
    assert lines == ["lb: set server app/app1_8002 state ready;set server app/app1_8001 "
                     "state drain", "if haproxy refuses app1_8002:",
                     "  lb: set server app/app1_8001 state ready"]


def test_background_work_is_waited_for_and_its_failure_raised() -> None:
    """Background work overlaps what follows; execute waits for it and raises its failure."""
    run = new_run()
    done: list[str] = []
    script: Script = (Background((Effect(lambda run, a: done.append("late")),
                                  Fail("it broke", lambda run, a: "it broke",
                                       FailedAfterCommit))),
                      Effect(lambda run, a: done.append("next")))
    with pytest.raises(FailedAfterCommit, match="it broke"):
        execute(script, run)
    assert sorted(done) == ["late", "next"]
    assert script_lines(script, run)[0].startswith("in the background")


class Undoable(Action):
    """Stops and starts again."""

    name = "undoable"

    def __init__(self, commit: bool = False) -> None:
        super().__init__()
        self.commits = commit

    @property
    def commit_point(self) -> bool:  # type: ignore[override]
        return self.commits

    def script(self, run: Run) -> Script:
        return (Ssh(stop(APPS[:1])),)

    def undo_script(self, run: Run) -> Script:
        return (Ssh(ops.start_commands(SANDBOX, APPS[:1], PREVIOUS, 8001)),)


def test_dry_run_shows_each_undo_only_where_a_failure_undoes() -> None:
    """Steps up to the commit point show their undo; steps after it (rolled forward) do not."""
    book = Playbook("test", "", tuple(Step(a, i + 1) for i, a in enumerate(
        [Undoable(), Undoable(commit=True), Undoable()])), Path("test.yaml"))
    lines = render_steps(book, new_run())
    undo = [i for i, line in enumerate(lines) if line.strip().endswith("undo:")]
    third = next(i for i, line in enumerate(lines) if line.startswith(" 3."))
    assert len(undo) == 2 and undo[-1] < third
    assert {lines[i].strip() for i in undo} == {
        "if this step or a later one fails before COMMIT, undo:"}
    assert all("appctl start" in lines[i + 1] for i in undo)


class LostAnswer(FakeHaproxy):
    """haproxy applies the drain, but its answer never arrives."""

    def set_state(self, servers: Sequence[str], state: str) -> None:
        super().set_state(servers, state)
        if state == "drain":
            raise TimeoutError("no answer from haproxy's admin socket within 2 s")


def test_a_drain_whose_answer_is_lost_is_undone() -> None:
    """The drain reached haproxy but its answer was lost: the step fails, and its undo sets
    every old server ready again, so no server is left drained."""
    from orchestrator.errors import FailedBeforeCommit
    from orchestrator.runner.actions import ACTIONS
    from orchestrator.runner.engine import run_steps
    from orchestrator.runner.playbook import Playbook, Step

    run = new_run()
    run.config = DRAIN
    haproxy = LostAnswer()
    run.haproxy = haproxy
    opener = ACTIONS["open_window"]()
    playbook = Playbook("test", "", (Step(opener, 1),), Path("test.yaml"))
    with pytest.raises(FailedBeforeCommit, match="no answer"):
        run_steps(playbook, run)
    old = tuple(run.server(h, 8001) for h in APPS)
    assert haproxy.sent == [(old, "drain"), (old, "ready")]
    assert run.window_opened is not None and run.window_closed is not None


def test_inside_the_window_no_wait_outlives_the_budget() -> None:
    """Before COMMIT, with the window open, a drain wait, a command and a health check are cut
    to what is left of the budget; outside the window and after COMMIT they keep theirs."""
    from orchestrator.runner.actions.script import _bounded

    clock = [100.0]
    run = new_run()
    run.clock = lambda: clock[0]
    assert _bounded(run, 10.0) == 10.0 and _bounded(run, None) is None
    run.window_opened, run.window_deadline = 1795625226.0, 103.0
    assert _bounded(run, 10.0) == pytest.approx(3.0)
    assert _bounded(run, None) == pytest.approx(3.0)
    assert _bounded(run, 1.0) == 1.0
    clock[0] = 104.0
    assert _bounded(run, 10.0) == pytest.approx(0.05)
    run.committed = True
    assert _bounded(run, 10.0) == 10.0
