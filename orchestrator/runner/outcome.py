"""How a run ended: one :class:`Outcome` for the journal, the run record and ``resume``.

Values are the words the run summaries, the journal and ``fastdowntime.run``
have always held, so older records read the same.
"""

from __future__ import annotations

from enum import StrEnum

from orchestrator.errors import (
    CommitUnknown,
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
    InternalError,
    UndoFailed,
)


class Outcome(StrEnum):
    """The outcome of a run (a ``str``: it serialises as its value)."""

    RUNNING = "running"
    DONE = "done"
    DRY_RUN = "dry-run"
    ROLLED_BACK = "rolled-back"
    """Failed before COMMIT; everything restored (exit 1)."""
    UNDO_FAILED = "undo-failed"
    """Failed before COMMIT, and putting something back failed too."""
    FAILED_AFTER_COMMIT = "failed-after-commit"
    """The schema is new; the run rolled forward past a problem (exit 4)."""
    COMMIT_UNKNOWN = "commit-unknown"
    """The connection was lost at COMMIT; ``resume`` asks the database."""
    CRASHED = "crashed"
    """The orchestrator died; its journal says how far it got."""
    ABANDONED = "abandoned"
    """Its orchestrator died holding the deploy lock (found by the next run)."""
    FAILED = "failed"
    """Any other failure."""

    @property
    def needs_resume(self) -> bool:
        """True when the service may be left between two states until ``resume`` runs."""
        return self in _UNSETTLED

    @classmethod
    def of(cls, error: FastdowntimeError | None) -> Outcome:
        """The outcome a run ends with when it raised ``error`` (None: it succeeded)."""
        if error is None:
            return cls.DONE
        for kind, outcome in _BY_ERROR:
            if isinstance(error, kind):
                return outcome
        return cls.FAILED


_UNSETTLED = frozenset({Outcome.RUNNING, Outcome.CRASHED, Outcome.UNDO_FAILED,
                        Outcome.FAILED_AFTER_COMMIT, Outcome.COMMIT_UNKNOWN})
_BY_ERROR: tuple[tuple[type[FastdowntimeError], Outcome], ...] = (
    (InternalError, Outcome.CRASHED),
    (UndoFailed, Outcome.UNDO_FAILED),  # before FailedBeforeCommit: it may be one
    (CommitUnknown, Outcome.COMMIT_UNKNOWN),
    (FailedAfterCommit, Outcome.FAILED_AFTER_COMMIT),
    (FailedBeforeCommit, Outcome.ROLLED_BACK),
)
