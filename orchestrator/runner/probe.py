"""The outage as users see it: requests to the public URL every few milliseconds.

Each request is a fresh TCP connection (a user arriving), with a timeout and
no proxy; an answer is good when it is HTTP 200. A run of bad answers is one
:class:`Outage`, from the start of the first failed request to the end of the
first good answer after it. Requests start on a fixed schedule whether or not
earlier ones have answered, so a window that makes users *wait* (the database
paused) shows as long requests (``longest_wait_s``, ``p50_s``, ``p99_s``)
rather than as failures. The journal's window (load balancer closed to open)
is what the orchestrator did; the probe is what users saw.
"""

from __future__ import annotations

import http.client
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
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
    """What the probe saw: requests made, failed ones, the outages they form, how long they took.

    ``first`` is the first request's start and ``last`` the last answer's end
    (None without requests); an outage still open counts up to ``last``.
    ``samples`` are the requests the figures come from, in request order
    (:meth:`from_samples` keeps them; :meth:`within` filters them).
    """

    requests: int
    failures: int
    outages: tuple[Outage, ...]
    interval_s: float
    first: float | None = None
    last: float | None = None
    samples: tuple[Sample, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], interval_s: float) -> ProbeReport:
        """The report of ``samples`` (in request order)."""
        ordered = tuple(samples)
        return cls(requests=len(ordered),
                   failures=sum(1 for _, _, ok in ordered if not ok),
                   outages=find_outages(ordered),
                   interval_s=interval_s,
                   first=ordered[0][0] if ordered else None,
                   last=max(end for _, end, _ in ordered) if ordered else None,
                   samples=ordered)

    def within(self, start: float, end: float) -> ProbeReport:
        """The report of the requests that overlap ``start``..``end`` (epoch seconds, inclusive).

        A request overlaps when it started by ``end`` and answered at or after
        ``start``: a user who arrived before the window opened and was still
        waiting in it counts. Outages are those of these requests alone.
        """
        return ProbeReport.from_samples(
            (sample for sample in self.samples if sample[0] <= end and sample[1] >= start),
            self.interval_s)

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

    @cached_property
    def _waits(self) -> list[float]:
        return sorted(max(0.0, end - start) for start, end, _ in self.samples)

    @property
    def longest_wait_s(self) -> float:
        """The longest request (end - start, failed ones included); 0.0 without requests."""
        return self._waits[-1] if self._waits else 0.0

    @property
    def p50_s(self) -> float | None:
        """Median request time (nearest rank, failed requests included); None without requests."""
        return _nearest_rank(self._waits, 50)

    @property
    def p99_s(self) -> float | None:
        """99th percentile request time (nearest rank); None without requests."""
        return _nearest_rank(self._waits, 99)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data for the run summary and the journal."""
        p50, p99 = self.p50_s, self.p99_s
        return {"requests": self.requests, "failures": self.failures,
                "interval_s": self.interval_s,
                "first": None if self.first is None else round(self.first, 6),
                "last": None if self.last is None else round(self.last, 6),
                "longest_s": round(self.longest_s, 3), "total_s": round(self.total_s, 3),
                "down_at_end": self.down_at_end,
                "outages": [outage.to_json() for outage in self.outages],
                "longest_wait_s": round(self.longest_wait_s, 6),
                "p50_s": None if p50 is None else round(p50, 6),
                "p99_s": None if p99 is None else round(p99, 6)}


def _nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank ``percent`` percentile of ``ordered`` (ascending); None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent * len(ordered) / 100))  # integers first: no 7.000...01
    return ordered[rank - 1]


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


STOP_GRACE_S = 2.0
"""How long :meth:`Probe.stop` waits for the requests in flight (at most ``timeout_s``): at
the end of a run nothing holds them, and a request still unanswered then is one users
would count as failed."""
_POLL_S = 0.05
"""How often a scheduler waiting for a free worker looks whether the probe is stopping."""


class Probe:
    """Requests ``url`` every ``interval_s``, each on a worker thread, and reports what users saw.

    Requests start on a fixed schedule (origin + k * interval) whether or not
    earlier ones have answered: a request held for a second does not delay
    the ones after it. At most ``max_in_flight`` requests are in flight; when
    that many are waiting, the next request waits for a free worker, starts
    as soon as one answers, and the schedule restarts there (missed slots
    are skipped, not made up in a burst). Workers are started as needed and
    kept for the probe's life.

    ``clock`` stamps the samples (epoch seconds, to compare with the
    journal); ``timer`` paces them. ``fetch(url, timeout_s) -> bool`` is
    :func:`http_fetch` unless injected, and is called from the worker threads.
    """

    def __init__(self, url: str, *, interval_s: float = 0.005, timeout_s: float = 1.0,
                 max_in_flight: int = 256,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic,
                 fetch: Fetch | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"probe url {url!r}: expected http://HOST[:PORT]/PATH or https://...")
        if interval_s <= 0 or timeout_s <= 0 or max_in_flight < 1:
            raise BadInput(f"probe of {url}: interval_s and timeout_s must be positive and "
                           f"max_in_flight at least 1 (got {interval_s}, {timeout_s}, "
                           f"{max_in_flight})")
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._timer = timer
        self._fetch: Fetch = fetch if fetch is not None else http_fetch
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when a request ends
        self._free = threading.BoundedSemaphore(max_in_flight)
        self._tasks: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._in_flight = 0  # handed to a worker, not yet answered
        self._waiting: dict[int, float] = {}  # request number -> start, while in flight
        self._workers: list[threading.Thread] = []
        self._closed = False  # stop() has reported: late answers are dropped
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
        """Stop issuing requests, wait for those in flight, and return the final report.

        The wait lasts at most :data:`STOP_GRACE_S` (or ``timeout_s`` when shorter);
        a request still unanswered then is reported as a
        failure ending at that instant (a user still waiting), and its answer,
        should it come later, is dropped. Raises RuntimeError (chained) when a
        request itself raised, which only an injected ``fetch`` can make happen.
        """
        self._stopping.set()
        grace = min(self.timeout_s, STOP_GRACE_S)
        deadline = time.monotonic() + grace
        if self._thread is not None:
            self._thread.join(grace)
        with self._lock:
            self._settled.wait_for(lambda: self._in_flight == 0,
                                   max(0.0, deadline - time.monotonic()))
            if self._waiting:
                given_up = self._clock()
                self._samples += [(start, given_up, False) for start in self._waiting.values()]
                self._waiting.clear()
            self._closed = True
            workers = len(self._workers)
        for _ in range(workers):
            self._tasks.put(None)
        if self._error is not None:
            raise RuntimeError(f"probe of {self.url} failed: {self._error}") from self._error
        return self.report()

    def report(self) -> ProbeReport:
        """The report of the requests answered so far (the probe keeps running)."""
        return ProbeReport.from_samples(self.samples(), self.interval_s)

    def samples(self) -> list[Sample]:
        """Every answered request so far as (start, end, ok), in start order."""
        with self._lock:
            return sorted(self._samples, key=lambda sample: sample[0])

    @property
    def running(self) -> bool:
        """Whether requests are still being issued (started and not stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._schedule()
        except Exception as exc:  # noqa: BLE001 - kept and raised again by stop()
            self._error = exc

    def _schedule(self) -> None:
        origin = self._timer()
        slot = 0
        number = 0
        while self._wait_for_worker():
            self._hand_over(number)
            number += 1
            slot += 1
            now = self._timer()
            wait = origin + slot * self.interval_s - now
            if wait <= 0:
                origin, slot = now, 0  # late (every worker was busy): no burst
                continue
            self._stopping.wait(wait)

    def _wait_for_worker(self) -> bool:
        """Take a free worker; False (none taken) once the probe is stopping."""
        while not self._free.acquire(timeout=_POLL_S):
            if self._stopping.is_set():
                return False
        if self._stopping.is_set():
            self._free.release()
            return False
        return True

    def _hand_over(self, number: int) -> None:
        with self._lock:
            self._in_flight += 1
            if self._in_flight > len(self._workers):
                worker = threading.Thread(target=self._work, daemon=True,
                                          name=f"probe {self.url} #{len(self._workers)}")
                self._workers.append(worker)
                worker.start()
        self._tasks.put(number)

    def _work(self) -> None:
        while (number := self._tasks.get()) is not None:
            try:
                self._request(number)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._settled.notify_all()
                self._free.release()

    def _request(self, number: int) -> None:
        with self._lock:
            if self._closed:  # handed over just before stop() reported: never sent
                return
            start = self._clock()
            self._waiting[number] = start
        try:
            ok = bool(self._fetch(self.url, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - kept and raised again by stop()
            with self._lock:
                self._waiting.pop(number, None)
                if self._error is None:
                    self._error = exc
            self._stopping.set()
            return
        end = self._clock()
        with self._lock:
            if self._waiting.pop(number, None) is not None:  # stop() has not given up on it
                self._samples.append((start, end, ok))

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


__all__ = ["Fetch", "Outage", "Probe", "ProbeReport", "Sample", "find_outages", "http_fetch"]
