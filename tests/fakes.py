"""Fakes the unit tests share, each standing in for one thing the code takes injected, and
the real :class:`~orchestrator.runner.context.Run` built around them (``make_run``).

One clock for every test: the code under test takes ``clock=`` (and
``sleep=``) the way tenacity takes ``sleep=``; a test passes a
:class:`FakeClock` (its ``sleep`` for the sleeper) and time moves only when
the code sleeps or the test says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.config import Config
from orchestrator.runner.context import Run


class FakeClock:
    """A clock that moves only when slept on, advanced, or by ``step`` at each reading.

    ``sleeps`` lists every sleep asked for; ``on_sleep`` runs after each one
    (a test makes the world change while the code waits).
    """

    def __init__(self, now: float = 1000.0, *, step: float = 0.0,
                 on_sleep: Callable[[], object] | None = None) -> None:
        self.now = now
        self.step = step
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def slept(self) -> list[float]:
        """The sleeps, by the name some tests read them."""
        return self.sleeps


class RecordingJournal:
    """A journal (``JournalPort``) that keeps ``(event, fields)`` pairs in ``events``; steps
    record ``step.start``, then ``step.done`` or ``step.failed``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def bind(self, **_context: Any) -> RecordingJournal:
        return self

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        self.events.append((event, fields))
        return {"event": event, **fields}

    def checkpoint(self) -> None:
        self.events.append(("checkpoint", {}))

    @contextlib.contextmanager
    def step(self, name: str, **_fields: Any) -> Iterator[Any]:
        self.events.append(("step.start", {"step": name}))
        try:
            yield _Notes()
        except BaseException:
            self.events.append(("step.failed", {"step": name}))
            raise
        self.events.append(("step.done", {"step": name}))

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every ``event`` written, in order."""
        return [fields for name, fields in self.events if name == event]


class _Notes:
    def note(self, **_fields: Any) -> None:
        return None


def make_run(config: Config | None = None, **fields: Any) -> Run:
    """A real :class:`~orchestrator.runner.context.Run` for unit tests: an empty plan, a
    :class:`RecordingJournal`, the release and previous revisions, and ``fields``."""
    from orchestrator.history import History
    from orchestrator.plan import make_plan

    empty = make_plan(History("repo", "db-stable", "f" * 40, "f" * 40, ()), {}, [])
    values: dict[str, Any] = {"config": config or Config(path=None), "plan": empty,
                              "run_id": "run-1", "journal": RecordingJournal(),
                              "stage": "fastdowntime", "release": "c" * 40,
                              "previous": "e" * 40, "texts": {}}
    values.update(fields)
    return Run(**values)
