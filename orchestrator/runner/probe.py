"""The outage as users see it: a thread requesting the public URL every few milliseconds.

Each request is a fresh TCP connection (a user arriving), with a short timeout
and no proxy; an answer is good when it is HTTP 200. A run of bad answers is
one :class:`Outage`, from the start of the first failed request to the end of
the first good answer after it. The journal's window (load balancer closed to
open) is what the orchestrator did; the probe is what users saw.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import BadInput

Sample = tuple[float, float, bool]
"""One request: (start, end, good answer), instants in epoch seconds."""

Fetch = Callable[[str, float], bool]


@dataclass(frozen=True)
class Outage:
    """Users got no good answer from ``start`` (first failed request's start) to ``end``.

    ``end`` is the end of the first good answer after it, or None when the
    service was still down when the probe stopped.
    """

    start: float
    end: float | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from ``start`` to ``end``; None while still down."""
        return None if self.end is None else self.end - self.start

    def to_json(self) -> dict[str, Any]:
        duration = self.duration_s
        return {"start": round(self.start, 6),
                "end": None if self.end is None else round(self.end, 6),
                "duration_s": None if duration is None else round(duration, 3)}


@dataclass(frozen=True)
class ProbeReport:
    """What the probe saw: requests made, failed ones, and the outages they form.

    ``first`` is the first request's start and ``last`` the last answer's end
    (None without requests); an outage still open counts up to ``last``.
    """

    requests: int
    failures: int
    outages: tuple[Outage, ...]
    interval_s: float
    first: float | None = None
    last: float | None = None

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], interval_s: float) -> ProbeReport:
        """The report of ``samples`` (in request order)."""
        ordered = list(samples)
        return cls(requests=len(ordered),
                   failures=sum(1 for _, _, ok in ordered if not ok),
                   outages=find_outages(ordered),
                   interval_s=interval_s,
                   first=ordered[0][0] if ordered else None,
                   last=max(end for _, end, _ in ordered) if ordered else None)

    def _durations(self) -> list[float]:
        durations = []
        for outage in self.outages:
            end = outage.end if outage.end is not None else self.last
            durations.append(max(0.0, (end if end is not None else outage.start) - outage.start))
        return durations

    @property
    def longest_s(self) -> float:
        """The longest outage in seconds (0.0 when users never saw one)."""
        return max(self._durations(), default=0.0)

    @property
    def total_s(self) -> float:
        """All outages together, in seconds."""
        return sum(self._durations())

    @property
    def down_at_end(self) -> bool:
        """Whether the last answer was a bad one (an outage still open)."""
        return bool(self.outages) and self.outages[-1].end is None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data for the run summary and the journal."""
        return {"requests": self.requests, "failures": self.failures,
                "interval_s": self.interval_s,
                "first": None if self.first is None else round(self.first, 6),
                "last": None if self.last is None else round(self.last, 6),
                "longest_s": round(self.longest_s, 3), "total_s": round(self.total_s, 3),
                "down_at_end": self.down_at_end,
                "outages": [outage.to_json() for outage in self.outages]}


def find_outages(samples: Iterable[Sample]) -> tuple[Outage, ...]:
    """Runs of bad answers as outages: first bad request's start to next good answer's end."""
    outages = []
    down_since: float | None = None
    for start, end, ok in samples:
        if not ok:
            if down_since is None:
                down_since = start
        elif down_since is not None:
            outages.append(Outage(down_since, end))
            down_since = None
    if down_since is not None:
        outages.append(Outage(down_since, None))
    return tuple(outages)


def http_fetch(url: str, timeout_s: float) -> bool:
    """One GET of ``url`` on a fresh connection, no proxy; True for an HTTP 200 answer.

    Connection refused or reset, a timeout, or a malformed answer is a bad
    answer (False); the body is read to its end.
    """
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", target, headers={"Connection": "close",
                                                   "Cache-Control": "no-cache",
                                                   "User-Agent": "fastdowntime-probe"})
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class Probe:
    """A thread that requests ``url`` every ``interval_s`` and turns the answers into outages.

    Requests start on a fixed schedule (origin + k * interval), so a slow
    answer does not stretch the spacing; when an answer comes back after the
    next slot, the next request starts at once and the schedule restarts
    there. ``clock`` stamps the samples (epoch seconds, to compare with the
    journal); ``timer`` paces them. ``fetch(url, timeout_s) -> bool`` is
    :func:`http_fetch` unless injected.
    """

    def __init__(self, url: str, *, interval_s: float = 0.01, timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic,
                 fetch: Fetch | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"probe url {url!r}: expected http://HOST[:PORT]/PATH or https://...")
        if interval_s <= 0 or timeout_s <= 0:
            raise BadInput(f"probe of {url}: interval_s and timeout_s must be positive "
                           f"(got {interval_s}, {timeout_s})")
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._timer = timer
        self._fetch: Fetch = fetch if fetch is not None else http_fetch
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    def start(self) -> None:
        """Start requesting (once per probe)."""
        if self._thread is not None:
            raise RuntimeError(f"probe of {self.url} was already started")
        self._thread = threading.Thread(target=self._run, name=f"probe {self.url}", daemon=True)
        self._thread.start()

    def stop(self) -> ProbeReport:
        """Stop after the request in flight and return the final report.

        Raises RuntimeError (chained) when the probe thread itself failed,
        which only an injected ``fetch`` can make happen.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(3 * self.timeout_s + 1.0)
        if self._error is not None:
            raise RuntimeError(f"probe of {self.url} failed: {self._error}") from self._error
        return self.report()

    def report(self) -> ProbeReport:
        """The report of the samples so far (the probe keeps running)."""
        return ProbeReport.from_samples(self.samples(), self.interval_s)

    def samples(self) -> list[tuple[float, float, bool]]:
        """Every request so far as (start, end, ok), in order."""
        with self._lock:
            return list(self._samples)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - kept and raised again by stop()
            self._error = exc

    def _loop(self) -> None:
        origin = self._timer()
        slot = 0
        while not self._stopping.is_set():
            start = self._clock()
            ok = bool(self._fetch(self.url, self.timeout_s))
            end = self._clock()
            with self._lock:
                self._samples.append((start, end, ok))
            slot += 1
            now = self._timer()
            wait = origin + slot * self.interval_s - now
            if wait <= 0:
                origin, slot = now, 0
                continue
            self._stopping.wait(wait)

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


__all__ = ["Fetch", "Outage", "Probe", "ProbeReport", "Sample", "find_outages", "http_fetch"]
