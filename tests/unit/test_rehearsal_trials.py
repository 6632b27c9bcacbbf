"""A rehearsal's trials before its window: how many run, which failures are tried again,
which fail the rehearsal (the database side is tested in tests/integration)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from orchestrator.config import Config, load_config
from orchestrator.db.cold import ColdPatchFailed, ColdResult, PatchTiming
from orchestrator.db.trial import Trial, Vacuumed
from orchestrator.errors import FailedBeforeCommit
from orchestrator.runner.actions import window
from orchestrator.runner.actions.script import execute
from orchestrator.runner.actions.window import PrepareWindow
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.fakes import FakeClock, RecordingJournal, make_run

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")


class Primary:
    closed = False


def trials(config: Config = SANDBOX, **window_settings: Any) -> Config:
    return dataclasses.replace(config, window=dataclasses.replace(config.window,
                                                                  **window_settings))


def failure(sqlstate: str | None, *, deadline: bool = False) -> ColdPatchFailed:
    return ColdPatchFailed("patch-2200-09-0.sql", 2, "ALTER TABLE item ADD COLUMN n int",
                           0.1, f"boom (SQLSTATE {sqlstate})", sqlstate, deadline=deadline)


def scripted(monkeypatch: pytest.MonkeyPatch, outcomes: list[Any]) -> list[dict[str, Any]]:
    """``trial_cold`` answers each call with the next of ``outcomes`` (seconds: a trial
    that ran; an exception: raised); the calls' keyword arguments."""
    calls: list[dict[str, Any]] = []
    answers: Iterator[Any] = iter(outcomes)

    def fake(conn: Any, patches: Any, **kwargs: Any) -> Trial:
        calls.append(kwargs)
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        timing = PatchTiming("patch-2200-09-0.sql", answer, 1, (answer,))
        return Trial(ColdResult((timing,), answer, 0.0), Vacuumed(("public.item",)))

    monkeypatch.setattr(window, "trial_cold", fake)
    monkeypatch.setattr(window, "pause", lambda seconds: calls.append({"paused": seconds}))
    return calls


def attempts(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if "paused" not in c]


def test_a_rehearsal_runs_its_trials_and_a_deploy_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """rehearse: the configured number of trials, each journaled and kept for the median;
    its dry run shows them. deploy, or 0 trials: none, and nothing shown."""
    calls = scripted(monkeypatch, [0.5, 0.4])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary(),
                   clock=FakeClock(1000.0))
    assert window._rehearsal_trials(run, {}) == [0.5, 0.4]
    assert [c["deadline"] for c in calls] == [1000.0 + SANDBOX.window.budget_s] * 2
    assert "lock_timeout_s" not in calls[0]  # the trials' own short wait, not the live one
    assert [t[0]["duration_s"] for t in run.rehearsal_trials] == [0.5, 0.4]
    assert isinstance(run.journal, RecordingJournal)
    events = run.journal.named("rehearsal.trial")
    assert [(e["trial"], e["of"], e["vacuumed"]) for e in events] == [
        (1, 2, ["public.item"]), (2, 2, ["public.item"])]
    assert len(PrepareWindow().script(run)) == 1
    assert PrepareWindow().script(make_run(trials(rehearsal_trials=2), rehearse=False)) == ()
    assert PrepareWindow().script(make_run(trials(rehearsal_trials=0), rehearse=True)) == ()


@pytest.mark.parametrize("sqlstate", ["55P03", "40P01", "40001"])
def test_a_trial_users_got_in_the_way_of_is_tried_again(monkeypatch: pytest.MonkeyPatch,
                                                        sqlstate: str) -> None:
    """A lock users held, a deadlock with them: journaled with where and why, tried again;
    at most twice as many attempts as trials, then the rehearsal goes on with fewer."""
    calls = scripted(monkeypatch, [failure(sqlstate), 0.3, failure(sqlstate),
                                   failure(sqlstate)])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary())
    assert window._rehearsal_trials(run, {}) == [0.3]
    assert len(attempts(calls)) == 4
    assert [c["paused"] for c in calls if "paused" in c] == [0.5, 1.5]  # none after the last
    assert isinstance(run.journal, RecordingJournal)
    assert run.journal.named("rehearsal.trials_short") == [{"ran": 1, "of": 2}]
    skipped = [e for e in run.journal.named("rehearsal.trial") if "skipped" in e]
    assert skipped[0]["sqlstate"] == sqlstate and skipped[0]["line"] == 2
    assert skipped[0]["file"] == "patch-2200-09-0.sql"


def test_attempts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two trials wanted, every attempt meets a lock: four attempts, then on with none."""
    calls = scripted(monkeypatch, [failure("55P03")] * 5)
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary())
    assert window._rehearsal_trials(run, {}) == []
    assert len(attempts(calls)) == 4 and run.rehearsal_trials == []
    assert isinstance(run.journal, RecordingJournal)
    assert run.journal.named("rehearsal.trials_short") == [{"ran": 0, "of": 2}]


def test_retries_then_the_wanted_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock, then two trials: two kept, three attempts."""
    calls = scripted(monkeypatch, [failure("55P03"), 0.3, 0.2])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary())
    assert window._rehearsal_trials(run, {}) == [0.3, 0.2]
    assert len(attempts(calls)) == 3
    assert isinstance(run.journal, RecordingJournal)
    assert run.journal.named("rehearsal.trials_short") == []


@pytest.mark.parametrize(("error", "closed", "says"), [
    (failure("42P01"), False, "rehearsal trial 1 of 2 failed before the window: "),
    (failure("57014", deadline=True), False, "took longer than [window] budget_s = 30 s"),
    (failure(None), True, "(the connection to the primary was lost)"),
    (failure("55P03"), True, "(the connection to the primary was lost)"),
])
def test_a_trial_failing_otherwise_fails_the_rehearsal_before_its_window(
        monkeypatch: pytest.MonkeyPatch, error: ColdPatchFailed, closed: bool,
        says: str) -> None:
    """A patch error, the budget passed, the connection lost: the rehearsal fails here,
    saying which trial and that nothing is held; the error it came from is kept."""
    scripted(monkeypatch, [error])
    primary = Primary()
    primary.closed = closed
    run = make_run(trials(rehearsal_trials=2, budget_s=30.0), rehearse=True, primary=primary)
    with pytest.raises(FailedBeforeCommit) as caught:
        window._rehearsal_trials(run, {})
    assert says in str(caught.value) and "nothing is held" in str(caught.value)
    assert caught.value.__cause__ is error


def test_a_connection_lost_vacuuming_after_a_trial_names_the_trial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The VACUUM after a trial losing the connection fails the rehearsal saying so."""
    lost = psycopg2.OperationalError("server closed the connection unexpectedly")
    scripted(monkeypatch, [0.5, lost])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary())
    with pytest.raises(FailedBeforeCommit, match="rehearsal trial 2 of 2: the connection to "
                       "the primary was lost vacuuming after it .*nothing is held"):
        window._rehearsal_trials(run, {})


def test_no_trial_runs_inside_an_open_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A playbook that prepares after opening its window: no trial holds the users up."""
    calls = scripted(monkeypatch, [0.5, 0.4])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary(),
                   window_opened=1.0)
    assert window._rehearsal_trials(run, {}) == [] and calls == []
    assert isinstance(run.journal, RecordingJournal)
    assert run.journal.named("rehearsal.trials_short")[0]["ran"] == 0


def test_the_step_outcome_keeps_the_trials_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_window's journaled outcome: the slots and each trial's seconds."""
    scripted(monkeypatch, [0.5, 0.4])
    run = make_run(trials(rehearsal_trials=2), rehearse=True, primary=Primary())
    answers = execute(PrepareWindow().script(run), run)
    assert PrepareWindow().outcome(run, answers) == {"slots": {}, "trials_s": [0.5, 0.4]}
