"""What the runner needs of the things it drives, as small Protocols.

A :class:`~orchestrator.runner.context.Run` holds these, not concrete
classes, so the engine, the actions and ``resume`` depend on what they use;
the real parts (:class:`~orchestrator.runner.journal.Journal`,
:class:`~orchestrator.remote.ssh.Remote`, :class:`~orchestrator.remote.haproxy.Haproxy`,
:class:`~orchestrator.db.connections.ConnectionControl`) fit them, and the
unit tests fake the same Protocols (``tests/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from orchestrator.db.connect import Connection
from orchestrator.remote.fanout import Runner

Clock = Callable[[], float]
"""Seconds, monotonic (deadlines) or epoch (the journal's instants)."""

RemotePort = Runner
"""Commands on the hosts, one host or many at once."""


class StepPort(Protocol):
    """One journaled step: notes for its closing event, events inside it."""

    def note(self, **fields: Any) -> None: ...

    def event(self, event: str, **fields: Any) -> dict[str, Any]: ...


class JournalPort(Protocol):
    """The run's journal: events with bound context, steps, and a durable checkpoint."""

    def bind(self, **context: Any) -> JournalPort: ...

    def event(self, event: str, **fields: Any) -> dict[str, Any]: ...

    def step(self, name: str, **fields: Any) -> AbstractContextManager[Any]: ...

    def checkpoint(self) -> None: ...


class HaproxyPort(Protocol):
    """haproxy's admin socket on the LB host: server states, swaps, drains."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def set_state(self, servers: Sequence[str], state: str) -> None: ...

    def swap(self, pairs: Sequence[tuple[str, str]]) -> None: ...

    def wait_drained(self, servers: Sequence[str], timeout_s: float) -> float: ...


class ControlPort(Protocol):
    """Holding and giving back the application's database connections (pgbouncer or the
    primary), around the cold transaction."""

    primary: Connection

    def prepare(self) -> None: ...

    def cut(self, deadline: float) -> Any: ...

    def restore(self) -> None: ...

    def served(self, within_s: float) -> int: ...

    def close(self) -> None: ...

    def render(self) -> list[str]: ...

    def render_served(self) -> list[str]: ...


class LockPort(Protocol):
    """The deploy lock the run holds: whether its session still answers."""

    def alive(self) -> bool: ...


class NullJournal:
    """A journal that keeps nothing: what a dry run, which changes nothing, journals to."""

    def bind(self, **_context: Any) -> NullJournal:
        return self

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"event": event, **fields}

    def step(self, name: str, **_fields: Any) -> AbstractContextManager[Any]:
        return nullcontext(_NullStep())

    def checkpoint(self) -> None:
        return None


class _NullStep:
    def note(self, **_fields: Any) -> None:
        return None

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"event": event, **fields}


class AbsentPart(AttributeError):
    """A run used a part it was built without (an AttributeError: ``getattr(part, name,
    default)`` and ``hasattr`` treat it as missing)."""


class _Absent:
    """Stands for a part a run was built without: using it says which, by name."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AbsentPart(f"this run has no {self._what} (asked for .{name}): it was built "
                         "without one")

    def __bool__(self) -> bool:
        return False


def absent(what: str) -> Any:
    """A placeholder for a part a run does not have (no haproxy in a unit test, say): falsy,
    and any use of it raises naming ``what``."""
    return _Absent(what)


__all__ = ["AbsentPart", "Clock", "ControlPort", "HaproxyPort", "JournalPort", "LockPort",
           "NullJournal", "RemotePort", "StepPort", "absent"]
