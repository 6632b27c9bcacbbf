"""The probe: outages and waits users see, on a concurrent schedule, against a real server."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.errors import BadInput
from orchestrator.runner.probe import Outage, Probe, ProbeReport, find_outages, http_fetch
from tests.fakes import FakeClock


class ScriptedFetch:
    """Answers from a script, each taking ``latency`` of fake time; good answers once it ends."""

    def __init__(self, clock: FakeClock, script: list[bool], latency: float) -> None:
        self.clock = clock
        self.script = list(script)
        self.latency = latency
        self.exhausted = threading.Event()

    def __call__(self, url: str, timeout_s: float) -> bool:
        self.clock.now += self.latency
        if not self.script:
            self.exhausted.set()
            return True
        return self.script.pop(0)


class HeldFetch:
    """Answers good; the first ``held`` calls wait for ``release``; ``started(n)``: call n began."""

    def __init__(self, held: int) -> None:
        self.held = held
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._calls = 0
        self._started: dict[int, threading.Event] = {}

    def started(self, number: int) -> threading.Event:
        """Set once call ``number`` (from 1) has begun."""
        with self._lock:
            return self._started.setdefault(number, threading.Event())

    def __call__(self, url: str, timeout_s: float) -> bool:
        with self._lock:
            self._calls += 1
            number = self._calls
        self.started(number).set()
        if number <= self.held:
            self.release.wait(10)
        return True


class CountingFetch:
    """Answers good after ``latency`` real seconds; ``reached`` is set at call ``enough``."""

    def __init__(self, enough: int, latency: float = 0.0) -> None:
        self.enough = enough
        self.latency = latency
        self.reached = threading.Event()
        self._lock = threading.Lock()
        self.calls = 0

    def __call__(self, url: str, timeout_s: float) -> bool:
        with self._lock:
            self.calls += 1
            if self.calls >= self.enough:
                self.reached.set()
        if self.latency:
            time.sleep(self.latency)  # a slow answer, simulated
        return True


def gaps_between(starts: list[float]) -> list[float]:
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def test_a_down_period_is_exactly_one_outage_from_first_failure_to_first_good_answer() -> None:
    """Injected fetch and clock: one outage, first failed start to the next good end.

    The fake fetch moves one shared fake clock, so the instants are exact only
    one request at a time: max_in_flight=1 gives that (requests are concurrent
    by default).
    """
    clock = FakeClock(100.0)
    fetch = ScriptedFetch(clock, [True] * 3 + [False] * 5 + [True] * 3, latency=0.25)
    probe = Probe("http://lb.example/", interval_s=0.001, max_in_flight=1, clock=clock,
                  fetch=fetch)
    probe.start()
    assert fetch.exhausted.wait(5)
    report = probe.stop()
    assert report.outages == (Outage(start=100.75, end=102.25),)
    assert report.failures == 5 and report.requests >= 11
    assert report.longest_s == pytest.approx(1.5) and report.total_s == pytest.approx(1.5)
    samples = probe.samples()
    assert samples[3] == (100.75, 101.0, False) and samples[8] == (102.0, 102.25, True)
    assert report.longest_wait_s == pytest.approx(0.25)
    assert report.p50_s == pytest.approx(0.25) and report.p99_s == pytest.approx(0.25)


def test_flapping_and_still_down_answers() -> None:
    """Each run of failures is its own outage; one still open at the end has no end."""
    samples = [(0.0, 0.1, True), (1.0, 1.1, False), (2.0, 2.1, True), (3.0, 3.1, False),
               (4.0, 4.1, False)]
    assert find_outages(samples) == (Outage(1.0, 2.1), Outage(3.0, None))
    report = ProbeReport.from_samples(samples, interval_s=1.0)
    assert report.down_at_end
    assert report.outages[1].duration_s is None
    assert report.longest_s == pytest.approx(1.1)
    assert report.total_s == pytest.approx(2.2)


def test_report_json_carries_the_figures() -> None:
    """to_json(): requests, failures, longest/total to the ms, outages, waits to the µs."""
    report = ProbeReport.from_samples([(10.0, 10.001, False), (10.01, 10.0126, True)], 0.01)
    assert report.to_json() == {
        "requests": 2, "failures": 1, "interval_s": 0.01, "first": 10.0, "last": 10.0126,
        "longest_s": 0.013, "total_s": 0.013, "down_at_end": False,
        "outages": [{"start": 10.0, "end": 10.0126, "duration_s": 0.013}],
        "longest_wait_s": 0.0026, "p50_s": 0.001, "p99_s": 0.0026}


def test_no_requests_no_outage() -> None:
    """A probe stopped before any request reports nothing: longest_s and wait 0, no p50/p99."""
    report = Probe("http://lb.example/", fetch=lambda url, timeout: True).stop()
    assert (report.requests, report.outages, report.longest_s) == (0, (), 0.0)
    assert (report.longest_wait_s, report.p50_s, report.p99_s) == (0.0, None, None)
    figures = report.to_json()
    assert (figures["longest_wait_s"], figures["p50_s"], figures["p99_s"]) == (0.0, None, None)


def test_latency_figures_are_nearest_rank_over_every_request() -> None:
    """Waits of 1..100 ms: longest 100 ms (a failed request), p50 the 50th, p99 the 99th."""
    samples = [(float(i), i + (100 - i) / 1000, i % 10 != 0) for i in range(100)]
    report = ProbeReport.from_samples(samples, interval_s=1.0)
    assert report.longest_wait_s == pytest.approx(0.100)
    assert report.p50_s == pytest.approx(0.050) and report.p99_s == pytest.approx(0.099)
    three = ProbeReport.from_samples([(0.0, 0.003, True), (1.0, 1.001, True),
                                      (2.0, 2.002, True)], interval_s=1.0)
    assert (three.p50_s, three.p99_s) == (pytest.approx(0.002), pytest.approx(0.003))
    one = ProbeReport.from_samples([(5.0, 5.5, True)], interval_s=1.0)
    assert (one.longest_wait_s, one.p50_s, one.p99_s) == (0.5, 0.5, 0.5)


def test_within_keeps_the_requests_overlapping_an_interval() -> None:
    """within(open, close): requests that started by close and answered at or after open."""
    samples = [(0.0, 0.001, True), (0.5, 1.0, True), (0.9, 1.2, True), (1.5, 1.6, False),
               (1.7, 2.5, True), (2.6, 2.601, True), (3.0, 3.001, True)]
    window = ProbeReport.from_samples(samples, interval_s=0.1).within(1.0, 2.55)
    assert window.samples == tuple(samples[1:5])
    assert (window.requests, window.failures, window.first, window.last) == (4, 1, 0.5, 2.5)
    assert window.outages == (Outage(1.5, 2.5),) and window.interval_s == 0.1
    assert window.longest_wait_s == pytest.approx(0.8)
    assert window.p50_s == pytest.approx(0.3) and window.p99_s == pytest.approx(0.8)
    assert set(window.to_json()) == set(ProbeReport.from_samples(samples, 0.1).to_json())
    empty = ProbeReport.from_samples(samples, interval_s=0.1).within(10.0, 11.0)
    assert (empty.requests, empty.longest_wait_s, empty.p50_s) == (0, 0.0, None)


def test_slow_answers_do_not_stretch_the_interval() -> None:
    """Requests start on the schedule origin + k*interval, so latency below it is absorbed."""
    slow = CountingFetch(enough=25, latency=0.012)
    probe = Probe("http://lb.example/", interval_s=0.02, fetch=slow)
    probe.start()
    assert slow.reached.wait(5)
    probe.stop()
    starts = [start for start, _, _ in probe.samples()]
    assert statistics.median(gaps_between(starts)) == pytest.approx(0.02, abs=0.003)


def test_a_waiting_request_does_not_hold_back_the_next_ones() -> None:
    """While the first request waits, the next ones still start every interval and answer."""
    fetch = HeldFetch(held=1)
    probe = Probe("http://held.example/", interval_s=0.01, timeout_s=5.0, fetch=fetch)
    probe.start()
    try:
        assert fetch.started(20).wait(5), "later requests waited for the first answer"
        assert probe.report().requests >= 18, "later requests did not answer meanwhile"
    finally:
        fetch.release.set()
    report = probe.stop()
    samples = probe.samples()
    held_end = samples[0][1]
    assert all(start < held_end for start, _, _ in samples[1:20])
    assert statistics.median(gaps_between([s for s, _, _ in samples[:20]])) == pytest.approx(
        0.01, abs=0.003)
    assert report.longest_wait_s == pytest.approx(held_end - samples[0][0])
    assert report.longest_wait_s >= 0.15 and report.p50_s is not None and report.p50_s < 0.1


def test_when_every_worker_waits_the_next_request_waits_for_one() -> None:
    """max_in_flight=2 with both requests waiting: a third starts only once one has answered."""
    fetch = HeldFetch(held=2)
    probe = Probe("http://bound.example/", interval_s=0.005, timeout_s=5.0, max_in_flight=2,
                  fetch=fetch)
    probe.start()
    try:
        assert fetch.started(2).wait(5)
        assert not fetch.started(3).wait(0.1), "a third request started with no free worker"
    finally:
        fetch.release.set()
    assert fetch.started(3).wait(5)
    probe.stop()
    first, second, third = probe.samples()[:3]
    assert third[0] >= min(first[1], second[1])


def test_stop_waits_for_the_requests_in_flight() -> None:
    """stop() returns once the waiting request has answered, and reports it as a long good one."""
    fetch = HeldFetch(held=1)
    probe = Probe("http://inflight.example/", interval_s=0.005, timeout_s=5.0, fetch=fetch)
    probe.start()
    assert fetch.started(2).wait(5)
    reports: list[ProbeReport] = []
    stopper = threading.Thread(target=lambda: reports.append(probe.stop()))
    stopper.start()
    stopper.join(0.1)
    alive = stopper.is_alive()
    fetch.release.set()
    stopper.join(5)
    assert alive, "stop() returned with a request still in flight"
    (report,) = reports
    held = report.samples[0]
    assert held[2] is True and report.failures == 0 and report.longest_wait_s >= 0.1
    assert report.longest_wait_s == pytest.approx(held[1] - held[0])


def test_stop_gives_up_after_timeout_and_counts_the_user_still_waiting() -> None:
    """An answer not in timeout_s after stop() is a failure ending then; a late one is dropped."""
    url = "http://stuck.example/"
    fetch = HeldFetch(held=1)
    probe = Probe(url, interval_s=0.005, timeout_s=0.1, fetch=fetch)
    probe.start()
    assert fetch.started(2).wait(5)
    stopped = time.time()
    report = probe.stop()
    took = time.time() - stopped
    try:
        assert 0.09 <= took < 1.0
        stuck = report.samples[0]
        assert stuck[2] is False and stuck[1] >= stopped + 0.09 and report.failures == 1
        assert report.longest_wait_s == pytest.approx(stuck[1] - stuck[0])
    finally:
        fetch.release.set()
    for thread in threading.enumerate():
        if thread.name.startswith(f"probe {url}"):
            thread.join(5)  # the worker gets the late answer, then its stop signal
    assert probe.samples() == list(report.samples)



def test_after_a_late_answer_the_schedule_restarts_without_a_burst() -> None:
    """Every worker busy past the next slot: the next request starts as soon as one is free,
    then the normal spacing resumes (no burst of missed slots).

    Requests no longer wait for earlier answers, so max_in_flight=1 keeps the one
    worker busy: each of the three slow answers holds back the next request.
    """
    calls = 0
    enough = threading.Event()

    def sometimes_slow(url: str, timeout_s: float) -> bool:
        nonlocal calls
        calls += 1
        if calls <= 3:
            time.sleep(0.05)  # three answers slower than the interval
        if calls >= 23:
            enough.set()
        return True

    probe = Probe("http://lb.example/", interval_s=0.01, max_in_flight=1, fetch=sometimes_slow)
    probe.start()
    assert enough.wait(5)
    probe.stop()
    starts = [start for start, _, _ in probe.samples()]
    gaps = gaps_between(starts)
    assert all(gap >= 0.045 for gap in gaps[:3])
    fast = starts[3:]
    assert len(fast) - 1 <= (fast[-1] - fast[0]) / 0.01 + 1, "missed slots were caught up"
    assert statistics.median(gaps[3:]) == pytest.approx(0.01, abs=0.002)


def test_a_failing_fetch_is_reported_by_stop() -> None:
    """If the probe thread itself dies, stop() raises instead of reporting no outage."""
    called = threading.Event()

    def broken(url: str, timeout_s: float) -> bool:
        called.set()
        raise ZeroDivisionError("bug")

    probe = Probe("http://lb.example/", fetch=broken)
    probe.start()
    assert called.wait(2)
    with pytest.raises(RuntimeError, match="probe of http://lb.example/ failed: bug"):
        probe.stop()


def test_probe_url_must_be_http() -> None:
    """A URL without http(s) scheme and host is bad input naming it."""
    with pytest.raises(BadInput, match="ftp://x"):
        Probe("ftp://x/")
    with pytest.raises(BadInput, match="interval_s"):
        Probe("http://lb/", interval_s=0)
    with pytest.raises(BadInput, match="max_in_flight"):
        Probe("http://lb/", max_in_flight=0)


def test_defaults_are_200_requests_a_second_and_256_in_flight() -> None:
    """By default the probe asks every 5 ms with at most 256 requests waiting."""
    probe = Probe("http://lb/")
    assert (probe.interval_s, probe.max_in_flight) == (0.005, 256)


class Switchable:
    """A tiny HTTP server on 127.0.0.1 that answers 200, or 503 while ``down`` is set."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.served_up = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                code = 503 if owner.down.is_set() else 200
                body = b"ok\n" if code == 200 else b"down\n"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if code == 200:
                    owner.served_up.set()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Switchable]:
    running = Switchable()
    yield running
    running.close()


def test_http_fetch_tells_good_from_bad_answers(server: Switchable) -> None:
    """200 is good; 503 and a refused connection are bad."""
    assert http_fetch(server.url, 1.0) is True
    server.down.set()
    assert http_fetch(server.url, 1.0) is False
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert http_fetch(f"http://127.0.0.1:{port}/", 1.0) is False


def test_real_server_outage_is_measured_within_30_ms(server: Switchable) -> None:
    """Against a real local server switched to 503 for 0.2 s: one outage, ±30 ms, ~10 ms spacing."""
    probe = Probe(server.url, interval_s=0.01, timeout_s=1.0)
    probe.start()
    assert server.served_up.wait(2), "the probe never reached the server"
    time.sleep(0.1)  # a stretch of good answers before the switch
    went_down = time.time()
    server.down.set()
    time.sleep(0.2)  # the outage users will see
    server.served_up.clear()
    came_back = time.time()
    server.down.clear()
    assert server.served_up.wait(2), "no good answer after the switch back"
    time.sleep(0.1)
    report = probe.stop()
    assert len(report.outages) == 1, report.outages
    outage = report.outages[0]
    assert outage.end is not None
    assert outage.start == pytest.approx(went_down, abs=0.03)
    assert outage.end == pytest.approx(came_back, abs=0.03)
    assert outage.duration_s == pytest.approx(0.2, abs=0.03)
    starts = [start for start, _, _ in probe.samples()]
    assert statistics.median(gaps_between(starts)) == pytest.approx(0.01, abs=0.002)
    assert report.p50_s is not None and report.longest_wait_s < 1.0
    assert report.requests == pytest.approx((starts[-1] - starts[0]) / 0.01 + 1, rel=0.15)
