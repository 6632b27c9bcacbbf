"""The small commands that act on the database outside a run: release a dead run's lock,
export the rehearsal timings. The CLI calls these; it never reaches db/ itself."""

from __future__ import annotations

from orchestrator.config import Config
from orchestrator.db.lock import Holder, force_unlock
from orchestrator.db.timings import export, read_rehearsals
from orchestrator.runner.preflight import Rehearsed


def unlock(config: Config) -> Holder | None:
    """End the session holding the deploy lock and mark its run; None when it was free."""
    return force_unlock(config.need("database"))


def timings(config: Config) -> list[dict[str, object]]:
    """The rehearsal timings this environment reads, in their export form (with each
    timing's statement records, so production can scale them to its sizes)."""
    rehearsed = Rehearsed.of(read_rehearsals(config.need("database")))
    return export(rehearsed.seconds, rehearsed.statements)


__all__ = ["timings", "unlock"]
