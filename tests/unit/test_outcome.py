"""One Outcome for every run: from the error a run raised, and which outcomes need resume."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import (
    BadInput,
    CommitUnknown,
    FailedAfterCommit,
    FailedBeforeCommit,
    UndoFailed,
)
from orchestrator.runner.outcome import Outcome


@pytest.mark.parametrize(("error", "outcome"), [
    (None, Outcome.DONE),
    (FailedBeforeCommit("x"), Outcome.ROLLED_BACK),
    (UndoFailed("x"), Outcome.UNDO_FAILED),
    (FailedAfterCommit("x"), Outcome.FAILED_AFTER_COMMIT),
    (CommitUnknown("x"), Outcome.COMMIT_UNKNOWN),
    (BadInput("x"), Outcome.FAILED),
])
def test_outcome_of_the_error(error: Exception | None, outcome: Outcome) -> None:
    """Each error class ends a run with its own outcome; subclasses win over their parents."""
    assert Outcome.of(error) is outcome  # type: ignore[arg-type]


def test_what_needs_resume() -> None:
    """Only outcomes that may leave the service between two states need resume."""
    assert {o for o in Outcome if o.needs_resume} == {
        Outcome.RUNNING, Outcome.CRASHED, Outcome.UNDO_FAILED, Outcome.FAILED_AFTER_COMMIT,
        Outcome.COMMIT_UNKNOWN}


def test_outcomes_are_the_words_records_hold() -> None:
    """An outcome is written and compared as the plain word older records hold."""
    assert json.dumps({"outcome": Outcome.ROLLED_BACK}) == '{"outcome": "rolled-back"}'
    assert Outcome.DONE == "done"
