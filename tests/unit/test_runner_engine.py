"""The generic runner: playbooks validated with file and line; undo before commit, roll on after."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchestrator.errors import BadInput, FailedBeforeCommit
from orchestrator.runner.actions import ACTIONS, Action
from orchestrator.runner.context import Run
from orchestrator.runner.engine import render_steps, run_steps
from orchestrator.runner.playbook import PLAYBOOKS, Playbook, Step, load_playbook
from tests.fakes import RecordingJournal, make_run


class Recorder(Action):
    """Records what it does and undoes."""

    name: ClassVar[str] = "recorder"
    fail = False
    commits = False

    def __init__(self, label: str, fail: bool = False, commits: bool = False) -> None:
        super().__init__()
        self.label, self.fail, self.commits = label, fail, commits

    @property
    def commit_point(self) -> bool:  # type: ignore[override]
        return self.commits

    def do(self, run: Any) -> dict[str, Any]:
        run.journal.event("recorder", what=f"do {self.label}")
        if self.fail:
            raise FailedBeforeCommit(f"{self.label} broke")
        if self.commits:
            run.committed = True
        return {}

    def undo(self, run: Any) -> None:
        run.journal.event("recorder", what=f"undo {self.label}")


def book(*actions: Action) -> Playbook:
    return Playbook("test", "", tuple(Step(a, i + 1) for i, a in enumerate(actions)),
                    Path("test.yaml"))


def new_run() -> Run:
    return make_run()


def log(run: Run) -> list[str]:
    """What the recorders did and undid, in order."""
    assert isinstance(run.journal, RecordingJournal)
    return [fields["what"] for fields in run.journal.named("recorder")]


def test_failure_before_commit_undoes_in_reverse() -> None:
    """A failing step before the commit point is undone, then every completed step, newest
    first (its ``do`` may have done part of its work)."""
    run = new_run()
    with pytest.raises(FailedBeforeCommit, match="c broke; the old state is restored"):
        run_steps(book(Recorder("a"), Recorder("b"), Recorder("c", fail=True)), run)
    assert log(run) == ["do a", "do b", "do c", "undo c", "undo b", "undo a"]


def test_failure_after_commit_rolls_forward() -> None:
    """After the commit point a failing step is recorded and the next steps still run."""
    run = new_run()
    run_steps(book(Recorder("a"), Recorder("cold", commits=True), Recorder("x", fail=True),
                   Recorder("y")), run)
    assert log(run) == ["do a", "do cold", "do x", "do y"]
    assert run.problems and "x broke" in run.problems[0]
    assert ("checkpoint", {}) in run.journal.events


def test_every_failure_is_journaled() -> None:
    """Start, failure and each undo appear in the journal."""
    run = new_run()
    with pytest.raises(FailedBeforeCommit):
        run_steps(book(Recorder("a"), Recorder("b", fail=True)), run)
    names = [(e, f.get("step")) for e, f in run.journal.events if e != "recorder"]
    assert names == [("step.start", "recorder"), ("step.done", "recorder"),
                     ("step.start", "recorder"), ("step.failed", "recorder"),
                     ("step.start", "undo recorder"), ("step.done", "undo recorder"),
                     ("step.start", "undo recorder"), ("step.done", "undo recorder")]


def test_failed_undo_is_reported_as_such() -> None:
    """When an undo fails too, the error says so (UndoFailed) instead of claiming a restore."""
    from orchestrator.errors import UndoFailed

    class BadUndo(Recorder):
        """Its undo fails."""

        def undo(self, run: Any) -> None:
            raise FailedBeforeCommit("haproxy unreachable")

    run = new_run()
    with pytest.raises(UndoFailed, match="undo failed: undo recorder: haproxy unreachable"):
        run_steps(book(BadUndo("a"), Recorder("b", fail=True)), run)


def test_commit_of_unknown_outcome_restores_the_hosts_and_says_so() -> None:
    """COMMIT whose outcome nobody can tell: the hosts are restored (old code works on either
    schema), but the error is exit 4, never "nothing changed", and names the resume."""
    from orchestrator.errors import CommitUnknown, ExitCode

    class LostCommit(Recorder):
        """Its COMMIT's outcome is unknown."""

        def do(self, run: Any) -> dict[str, Any]:
            run.journal.event("recorder", what=f"do {self.label}")
            raise CommitUnknown("connection lost during COMMIT")

    run = new_run()
    with pytest.raises(CommitUnknown) as raised:
        run_steps(book(Recorder("a"), LostCommit("cold", commits=True), Recorder("b")), run)
    assert log(run) == ["do a", "do cold", "undo cold", "undo a"]
    message = str(raised.value)
    assert "connection lost during COMMIT" in message and "previous release again" in message
    assert "`fastdowntime resume run-1`" in message and "nothing changed" not in message
    assert raised.value.exit_code == ExitCode.FAILED_AFTER_COMMIT


class Window(Recorder):
    """A recorder that may open or close the window as it does its part."""

    def __init__(self, label: str, opens: bool = False, closes: bool = False, **kw: Any) -> None:
        super().__init__(label, **kw)
        self.opens, self.closes = opens, closes

    def do(self, run: Any) -> dict[str, Any]:
        data = super().do(run)
        if self.opens:
            run.window_opened = 1.0
        if self.closes:
            run.window_closed = 2.0
        return data


def journaled(run: Run) -> list[str]:
    """The recorders' doings and the journal's fsyncs, in order."""
    assert isinstance(run.journal, RecordingJournal)
    return [fields.get("what", name) for name, fields in run.journal.events
            if name in ("recorder", "checkpoint")]


def test_the_journal_is_synced_after_commit_once_users_no_longer_wait() -> None:
    """COMMIT inside an open window: the journal's fsync waits until the step that closes
    the window (users wait on the window, not on our bookkeeping), and happens once; with
    no window open it follows the commit point at once."""
    run = new_run()
    run_steps(book(Window("open", opens=True), Window("cold", commits=True),
                   Window("restore", closes=True), Window("after")), run)
    assert journaled(run) == ["do open", "do cold", "do restore", "checkpoint", "do after"]
    run = new_run()
    run_steps(book(Window("cold", commits=True), Window("after")), run)
    assert journaled(run) == ["do cold", "checkpoint", "do after"]


def test_a_window_that_never_closes_still_syncs_the_journal_at_the_end() -> None:
    """After COMMIT a step fails and the window stays open: the run rolls forward and the
    journal is synced once, when the steps end."""
    run = new_run()
    run_steps(book(Window("open", opens=True), Window("cold", commits=True),
                   Window("restore", fail=True), Window("after")), run)
    assert journaled(run) == ["do open", "do cold", "do restore", "do after", "checkpoint"]
    assert run.problems and "restore broke" in run.problems[0]


def test_shipped_playbooks_load() -> None:
    """The three shipped playbooks are valid and use only built-in actions."""
    for name in ("fastdowntime", "fastdowntime-restart", "nodowntime"):
        playbook = load_playbook(name)
        assert playbook.steps and all(s.name in ACTIONS for s in playbook.steps)
    default = [s.name for s in load_playbook("fastdowntime").steps]
    window = default[default.index("open_window"):default.index("close_window") + 1]
    assert window == ["open_window", "cut_connections", "apply_cold_patches",
                      "restore_connections", "close_window"]
    assert (PLAYBOOKS / "fastdowntime.yaml").exists()


_OPENED = "steps:\n  - action: prepare_window\n  - action: open_window\n"


@pytest.mark.parametrize(("text", "message"), [
    ("steps:\n  - action: stage_code\n  - action: teleport\n", "line 3: unknown action 'teleport'"),
    ("steps:\n  - action: open_window\n    drain_timeout: 5\n",
     "line 3: action 'open_window' has no parameter 'drain_timeout'"),
    ("steps:\n  - action: open_window\n    drain_timeout_s: soon\n",
     "line 3: open_window.drain_timeout_s: must be float"),
    ("name: x\nstepz: []\n", "line 2: unknown key 'stepz'"),
    ("steps: []\n", "steps must be a non-empty list"),
    ("steps:\n  - stage_code\n", "line 2: a step is a mapping"),
    ("steps:\n  - action: open_window\n  - action: cut_connections\n",
     "line 3: action 'cut_connections' needs 'prepare_window' in an earlier step"),
    ("steps:\n  - action: prepare_window\n  - action: cut_connections\n",
     "line 3: action 'cut_connections' needs 'open_window' in an earlier step"),
    (f"{_OPENED}  - action: apply_cold_patches\n  - action: cut_connections\n",
     "line 4: action 'apply_cold_patches' needs 'cut_connections' in an earlier step, not "
     "ended since: a cold patch runs with no application connection left"),
    (f"{_OPENED}  - action: cut_connections\n  - action: restore_connections\n"
     "  - action: apply_cold_patches\n", "line 6: action 'apply_cold_patches' needs "
     "'cut_connections' in an earlier step, not ended since"),
    (f"{_OPENED}  - action: restore_connections\n", "line 4: action 'restore_connections' "
     "needs 'cut_connections'"),
    ("steps:\n  - action: prepare_window\n  - action: close_window\n",
     "line 3: action 'close_window' needs 'open_window'"),
    (f"{_OPENED}  - action: close_window\n  - action: cut_connections\n",
     "line 5: action 'cut_connections' needs 'open_window' in an earlier step, not ended"),
    (f"{_OPENED}  - action: cut_connections\n  - action: close_window\n"
     "  - action: apply_cold_patches\n",
     "line 6: action 'apply_cold_patches' needs 'open_window' in an earlier step, not ended"),
    (f"{_OPENED}  - action: cut_connections\n  - action: close_window\n"
     "  - action: restore_connections\n",
     "line 6: action 'restore_connections' needs 'cut_connections' in an earlier step, not "
     "ended"),
    (f"{_OPENED}  - action: stop_old_instances\n  - action: close_window\n",
     "line 4: action 'stop_old_instances' needs 'close_window'"),
    (f"{_OPENED}  - action: restart_on_release\n", "line 4: action 'restart_on_release' "
     "needs 'apply_cold_patches'"),
])
def test_bad_playbooks_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    """Unknown actions, parameters, wrong types, bad shapes and window steps without the
    steps they need before them are exit 2 with file and line."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as caught:
        load_playbook(str(path))
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_playbook_may_prepare_inside_its_window(tmp_path: Path) -> None:
    """open_window needs nothing before it: a playbook that prepares its connections inside
    the window loads (its rehearsal runs no trial there)."""
    path = tmp_path / "late.yaml"
    path.write_text("steps:\n  - action: open_window\n  - action: prepare_window\n"
                    "  - action: cut_connections\n  - action: apply_cold_patches\n"
                    "  - action: restore_connections\n  - action: close_window\n")
    assert [s.line for s in load_playbook(str(path)).steps] == [2, 3, 4, 5, 6, 7]


def test_render_lists_every_step() -> None:
    """The dry-run rendering numbers every step with its description."""
    run = new_run()
    lines = render_steps(book(Recorder("a"), Recorder("b")), run)
    assert lines[0].startswith("== test") and lines[1].startswith(" 1. recorder")


class Lock:
    """A deploy lock whose session answers until ``lost`` is set."""

    def __init__(self) -> None:
        self.lost = False

    def alive(self) -> bool:
        return not self.lost


def test_a_lost_lock_stops_the_run_before_commit() -> None:
    """Before each step the lock's session is checked: gone before COMMIT, the run stops and
    undoes what it did (another run could start beside it)."""
    lock = Lock()
    run = make_run(lock=lock)

    class LoseLock(Recorder):
        def do(self, run: Any) -> dict[str, Any]:
            lock.lost = True
            return super().do(run)

    with pytest.raises(FailedBeforeCommit, match="deploy lock's session is gone before"):
        run_steps(book(Recorder("a"), LoseLock("b"), Recorder("c")), run)
    assert log(run) == ["do a", "do b", "undo c", "undo b", "undo a"]
    [lost] = run.journal.named("lock.lost")
    assert "gone before recorder" in lost["error"]


def test_after_commit_a_lost_lock_does_not_stop_the_roll_forward() -> None:
    """After COMMIT the schema is new: a lost lock no longer stops the remaining steps."""
    lock = Lock()
    run = make_run(lock=lock)

    class CommitAndLose(Recorder):
        def do(self, run: Any) -> dict[str, Any]:
            lock.lost = True
            return super().do(run)

    run_steps(book(Recorder("a"), CommitAndLose("cold", commits=True), Recorder("b")), run)
    assert log(run) == ["do a", "do cold", "do b"]


class Interrupted(Recorder):
    """Sends its own process SIGINT while it works (as a Ctrl-C would land there)."""

    def do(self, run: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        return super().do(run)


class Closes(Recorder):
    """Closes the window and hands the traffic over (as close_window does)."""

    def do(self, run: Any) -> dict[str, Any]:
        run.window_closed = 1.0
        run.settled = True
        return super().do(run)


class Resumes(Recorder):
    """Closes the window without handing the traffic over (hold mode's RESUME)."""

    def do(self, run: Any) -> dict[str, Any]:
        run.window_closed = 1.0
        return super().do(run)


def test_an_interrupt_before_commit_stops_and_undoes() -> None:
    """Ctrl-C before COMMIT fails the step it lands in; everything done is undone."""
    run = new_run()
    with pytest.raises(FailedBeforeCommit, match="SIGINT|KeyboardInterrupt"):
        run_steps(book(Recorder("a"), Interrupted("b"), Recorder("cold", commits=True)), run)
    assert log(run) == ["do a", "undo b", "undo a"]


def test_an_interrupt_after_commit_is_held_until_the_window_closes() -> None:
    """Ctrl-C after COMMIT, before the window closed, skips nothing: the connections and the
    traffic come back, and only then is it reported (exit 4)."""
    run = new_run()
    run_steps(book(Recorder("cold", commits=True), Interrupted("restore"), Closes("close"),
                   Recorder("after")), run)
    assert log(run) == ["do cold", "do restore", "do close", "do after"]
    assert len(run.problems) == 1 and "SIGINT received after COMMIT" in run.problems[0]
    assert [f["error"] for e, f in run.journal.events if e == "rollforward"] == [
        "SIGINT received after COMMIT: held until the window closed, then the run rolled "
        "forward"]


def test_after_the_window_an_interrupt_takes_its_usual_path() -> None:
    """Once the window closed, Ctrl-C fails the step it lands in; the run rolls forward."""
    run = new_run()
    run_steps(book(Recorder("cold", commits=True), Closes("close"), Interrupted("stop"),
                   Recorder("after")), run)
    assert log(run) == ["do cold", "do close", "do after"]
    assert len(run.problems) == 1 and "step recorder" in run.problems[0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_in_hold_mode_an_interrupt_waits_for_the_swap_too() -> None:
    """The window closed at RESUME, the traffic not yet moved: Ctrl-C waits until it has."""
    run = new_run()
    run_steps(book(Recorder("cold", commits=True), Resumes("restore"), Interrupted("swap"),
                   Closes("close"), Recorder("after")), run)
    assert log(run) == ["do cold", "do restore", "do swap", "do close", "do after"]
    assert len(run.problems) == 1 and "SIGINT received after COMMIT" in run.problems[0]
