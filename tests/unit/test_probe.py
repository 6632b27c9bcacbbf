"""The probe: outages as users see them, paced on a deadline schedule, against a real server."""

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


def test_a_down_period_is_exactly_one_outage_from_first_failure_to_first_good_answer() -> None:
    """Injected fetch and clock: one outage, first failed start to the next good end."""
    clock = FakeClock(100.0)
    fetch = ScriptedFetch(clock, [True] * 3 + [False] * 5 + [True] * 3, latency=0.25)
    probe = Probe("http://lb.example/", interval_s=0.001, clock=clock, fetch=fetch)
    probe.start()
    assert fetch.exhausted.wait(5)
    report = probe.stop()
    assert report.outages == (Outage(start=100.75, end=102.25),)
    assert report.failures == 5 and report.requests >= 11
    assert report.longest_s == pytest.approx(1.5) and report.total_s == pytest.approx(1.5)
    samples = probe.samples()
    assert samples[3] == (100.75, 101.0, False) and samples[8] == (102.0, 102.25, True)


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
    """to_json() gives requests, failures, longest/total to the ms and each outage's instants."""
    report = ProbeReport.from_samples([(10.0, 10.001, False), (10.01, 10.0126, True)], 0.01)
    assert report.to_json() == {
        "requests": 2, "failures": 1, "interval_s": 0.01, "first": 10.0, "last": 10.0126,
        "longest_s": 0.013, "total_s": 0.013, "down_at_end": False,
        "outages": [{"start": 10.0, "end": 10.0126, "duration_s": 0.013}]}


def test_no_requests_no_outage() -> None:
    """A probe stopped before any request reports nothing, and longest_s is 0."""
    report = Probe("http://lb.example/", fetch=lambda url, timeout: True).stop()
    assert (report.requests, report.outages, report.longest_s) == (0, (), 0.0)


def test_slow_answers_do_not_stretch_the_interval() -> None:
    """Requests start on the schedule origin + k*interval, so latency below it is absorbed."""
    def slow(url: str, timeout_s: float) -> bool:
        time.sleep(0.012)  # a slow answer, simulated
        return True

    probe = Probe("http://lb.example/", interval_s=0.02, fetch=slow)
    probe.start()
    time.sleep(0.5)  # let it make ~25 requests
    probe.stop()
    starts = [start for start, _, _ in probe.samples()]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.02, abs=0.003)


def test_after_a_late_answer_the_schedule_restarts_without_a_burst() -> None:
    """An answer later than the next slot is followed at once, then the normal spacing resumes."""
    calls = 0

    def sometimes_slow(url: str, timeout_s: float) -> bool:
        nonlocal calls
        calls += 1
        if calls <= 3:
            time.sleep(0.05)  # three answers slower than the interval
        return True

    probe = Probe("http://lb.example/", interval_s=0.01, fetch=sometimes_slow)
    probe.start()
    time.sleep(0.35)
    probe.stop()
    starts = [start for start, _, _ in probe.samples()]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
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
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.01, abs=0.002)
    assert report.requests == pytest.approx((starts[-1] - starts[0]) / 0.01 + 1, rel=0.15)
