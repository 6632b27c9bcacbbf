"""Where a deploy fires its [hooks]: the run's own sequence, its hosts and database faked."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import Config, HooksSettings, LbSettings, RunsSettings, SourceSettings
from orchestrator.errors import ExitCode, FailedBeforeCommit, Refused
from orchestrator.runner import deploy as deploy_module
from orchestrator.runner.context import Run
from orchestrator.runner.deploy import Options
from orchestrator.runner.journal import read_journal
from orchestrator.runner.probe import ProbeReport


class FakeLock:
    """The deploy lock: records when the run's outcome was written and the lock released."""

    who = "rm@orchestrator"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def alive(self) -> bool:
        return True

    def finish(self, outcome: str, detail: str | None = None) -> bool:
        self.order.append(f"lock.finish {outcome}")
        return True


class FakeProbe:
    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> ProbeReport:
        return ProbeReport.from_samples([], 0.005)


class FakeHaproxy:
    def __init__(self, *_args: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No probe, no haproxy: what runs is the steps given to :func:`execute`."""
    monkeypatch.setattr("orchestrator.runner.probe.Probe", FakeProbe)
    monkeypatch.setattr("orchestrator.remote.haproxy.Haproxy", FakeHaproxy)
    return []


def config_for(tmp_path: Path) -> Config:
    """Every hook appends its event, outcome and exit code to ``hooks.log`` in ``tmp_path``."""
    def logger(event: str) -> tuple[str, ...]:
        return ("sh", "-c", f'echo "{event} $FASTDOWNTIME_OUTCOME $FASTDOWNTIME_EXIT_CODE" '
                            '>> hooks.log')
    return Config(path=tmp_path / "env.toml", source=SourceSettings(tag_cuts=False),
                  lb=LbSettings(admin_socket="/run/haproxy.sock",
                                public_url="http://127.0.0.1:9/"),
                  runs=RunsSettings(dir=str(tmp_path / "runs")),
                  hooks=HooksSettings(before_window=logger("before_window"),
                                      after_window=logger("after_window"),
                                      on_failure=logger("on_failure"), on_done=logger("on_done")))


def execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: list[str],
            steps: Any, config: Config | None = None) -> dict[str, Any]:
    """``execute`` of a one-stage run with a cut, the playbook's steps replaced by ``steps``
    (called with the stage's Run)."""
    def run_steps(_playbook: Any, run: Run) -> None:
        order.append("steps")
        steps(run)

    monkeypatch.setattr(deploy_module, "run_steps", run_steps)
    plan = SimpleNamespace(from_sha="a" * 40, to_sha="c" * 40, cut="c" * 40, estimate=None,
                           nodowntime_revisions=(), to_json=lambda: {})
    playbook = SimpleNamespace(name="fastdowntime", steps=(), path=Path("fastdowntime.yaml"),
                               text="name: fastdowntime\n")
    return deploy_module.execute(config or config_for(tmp_path), plan,  # type: ignore[arg-type]
                                  {}, object(), Options(yes=True), "run-1", FakeLock(order),
                                  {}, None, playbook)  # type: ignore[arg-type]


def hooks_fired(tmp_path: Path) -> list[str]:
    log = tmp_path / "hooks.log"
    return log.read_text().splitlines() if log.exists() else []


def committed(run: Run) -> None:
    run.window_opened, run.committed, run.window_closed = 1.0, True, 2.0


def test_a_done_deploy_fires_before_after_and_on_done_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str]) -> None:
    """before_window, the steps, after_window, then on_done once the run record is final
    (after run.end, the lock released); the summary's outcome is done."""
    summary = execute(tmp_path, monkeypatch, faked, committed)
    assert summary["outcome"] == "done"
    assert hooks_fired(tmp_path) == ["before_window running ", "after_window running ",
                                     "on_done done 0"]
    events = [(e["event"], e.get("hook")) for e in
              read_journal(tmp_path / "runs" / "run-1" / "journal.jsonl")]
    hook_events = [e for e in events if e[0].startswith("hook.") or e[0] in ("run.end",)]
    assert hook_events == [
        ("hook.start", "before_window"), ("hook.done", "before_window"),
        ("hook.start", "after_window"), ("hook.done", "after_window"), ("run.end", None),
        ("hook.start", "on_done"), ("hook.done", "on_done")]
    assert faked == ["steps", "lock.finish done"]
    saved = json.loads((tmp_path / "runs" / "run-1" / "run.json").read_text())
    assert saved["outcome"] == "done"


def test_the_summary_window_is_rounded_to_the_millisecond_as_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str]) -> None:
    """A window from ...26.7993 to ...26.8529 (53.6 ms) is saved as .799 to .853, the 54 ms
    the journal says; truncating showed .852, a millisecond short."""
    def window(run: Run) -> None:
        run.window_opened, run.committed = 1796290406.7993283, True
        run.window_closed = 1796290406.8529265

    execute(tmp_path, monkeypatch, faked, window)
    saved = json.loads((tmp_path / "runs" / "run-1" / "run.json").read_text())
    assert saved["window"]["opened"] == "2026-12-03T09:33:26.799Z"
    assert saved["window"]["closed"] == "2026-12-03T09:33:26.853Z"
    assert saved["started"].endswith("Z") and len(saved["started"]) == 24


def test_a_refusing_before_window_stops_the_run_before_its_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str]) -> None:
    """before_window exiting 1: Refused (exit 3) naming it, the steps never ran, no
    after_window; on_failure runs with exit code 3."""
    config = config_for(tmp_path)
    refusing = ("sh", "-c", "echo 'freeze in effect' >&2; exit 1")
    config = replace(config, hooks=replace(config.hooks, before_window=refusing))
    with pytest.raises(Refused) as caught:
        execute(tmp_path, monkeypatch, faked, committed, config)
    assert caught.value.exit_code == ExitCode.REFUSED
    assert "before_window" in str(caught.value) and "freeze in effect" in str(caught.value)
    assert "steps" not in faked
    assert hooks_fired(tmp_path) == ["on_failure failed 3"]


def test_a_window_rolled_back_fires_after_window_then_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str]) -> None:
    """A stage failing before COMMIT: after_window (outcome rolled-back), then on_failure
    with exit code 1; the run's error is the stage's."""
    def rolled_back(run: Run) -> None:
        run.window_opened, run.window_closed = 1.0, 2.0
        raise FailedBeforeCommit("fastdowntime step apply_cold_patches failed: boom")

    with pytest.raises(FailedBeforeCommit, match="boom"):
        execute(tmp_path, monkeypatch, faked, rolled_back)
    assert hooks_fired(tmp_path) == ["before_window running ", "after_window rolled-back ",
                                     "on_failure rolled-back 1"]


def test_a_rollback_is_told_as_haproxy_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str]) -> None:
    """A stage failing before COMMIT whose undo said all was put back, while haproxy (read
    after it) routes to no slot of a host: undo-failed (exit 1, left for resume) naming
    the host, and after_window already hears it; with every host served, rolled-back;
    with haproxy unreadable, rolled-back as the undo said, journaled."""
    from orchestrator.errors import UndoFailed
    from orchestrator.remote.haproxy_wire import HaproxyError

    down = "app1 (app1_8001 drain, app1_8002 maint)"
    lost = HaproxyError("show stat", "channel closed", "could not send", host="lb1")
    answers: list[Any] = [[down], [], lost]

    def hosts_unserved(run: Run) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    monkeypatch.setattr("orchestrator.runner.actions.instances.hosts_unserved",
                        hosts_unserved)

    def rolled_back(run: Run) -> None:
        raise FailedBeforeCommit("fastdowntime step apply_cold_patches failed: boom; the old "
                                 "state is restored")

    with pytest.raises(UndoFailed, match=f"routes to no slot of {re.escape(down)}: run "
                                         "`fastdowntime resume run-1`"):
        execute(tmp_path, monkeypatch, faked, rolled_back)
    saved = json.loads((tmp_path / "runs" / "run-1" / "run.json").read_text())
    assert saved["outcome"] == "undo-failed"
    assert hooks_fired(tmp_path) == ["before_window running ", "after_window undo-failed ",
                                     "on_failure undo-failed 1"]
    for _ in range(2):
        with pytest.raises(FailedBeforeCommit) as caught:
            execute(tmp_path, monkeypatch, faked, rolled_back)
        assert not isinstance(caught.value, UndoFailed)
        assert json.loads((tmp_path / "runs" / "run-1" / "run.json").read_text())[
            "outcome"] == "rolled-back"
    assert not answers
    events = [e["event"] for e in read_journal(tmp_path / "runs" / "run-1" / "journal.jsonl")]
    assert events.count("restore.unserved") == 1 and events.count("restore.unconfirmed") == 1


def test_failing_hooks_after_the_window_leave_the_exit_code_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faked: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """after_window and on_done exiting 1: the run is still done (exit 0), each warned on
    stderr."""
    failing = ("sh", "-c", "exit 1")
    config = replace(config_for(tmp_path), hooks=HooksSettings(after_window=failing,
                                                               on_done=failing))
    summary = execute(tmp_path, monkeypatch, faked, committed, config)
    assert summary["outcome"] == "done" and summary["error"] is None
    err = capsys.readouterr().err
    assert "warning: [hooks] after_window `sh -c 'exit 1'` exited 1" in err
    assert "warning: [hooks] on_done `sh -c 'exit 1'` exited 1" in err
