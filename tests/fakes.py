"""Fakes the unit tests share, each standing in for one thing the code takes injected.

One clock for every test: the code under test takes ``clock=`` (and
``sleep=``) the way tenacity takes ``sleep=``; a test passes a
:class:`FakeClock` (its ``sleep`` for the sleeper) and time moves only when
the code sleeps or the test says so.
"""

from __future__ import annotations

from collections.abc import Callable


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
