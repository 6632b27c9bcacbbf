"""haproxy control against the sandbox's real haproxy, over SSH to the LB host.

A client thread sends ``GET /`` through haproxy back to back while servers are
drained and swapped; a request fails when it raises or when haproxy answers
itself (no app instance did: no ``server: sample-app`` header). Every test puts
haproxy's states back as it found them, and stops the instances it started.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from types import TracebackType
from urllib.parse import urlsplit

import pytest
import structlog
from structlog.testing import LogCapture

from orchestrator.config import Config, HostSettings
from orchestrator.remote.commands import app_start, app_stop, read_revision
from orchestrator.remote.haproxy import Haproxy
from orchestrator.remote.haproxy_wire import HaproxyError, ServerStat
from orchestrator.remote.ssh import Remote

pytestmark = pytest.mark.integration

OLD_PORT, NEW_PORT = 8001, 8002


class Client:
    """``GET`` one URL back to back in a thread; counts answers, keeps every failure."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self.count = 0
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client", daemon=True)
        self.started = self.stopped = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            status, failure = self._one()
            with self._cond:
                self.count += 1
                if failure:
                    self.failures.append(failure)
                else:
                    self.statuses[status] += 1
                self._cond.notify_all()

    def _one(self) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            return 0, f"request {self.count}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if not (response.getheader("server") or "").startswith("sample-app"):
            return response.status, f"request {self.count}: {response.status} from haproxy"
        return response.status, None

    def wait_for(self, requests: int, timeout_s: float = 30.0) -> None:
        """Block until ``requests`` more requests have completed."""
        with self._cond:
            target = self.count + requests
            assert self._cond.wait_for(lambda: self.count >= target, timeout_s), \
                f"the client made {self.count} of {target} requests in {timeout_s} s"

    def __enter__(self) -> Client:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.stopped = time.monotonic()

    def report(self) -> str:
        seconds = self.stopped - self.started
        return (f"{self.count} requests in {seconds:.2f} s, app statuses "
                f"{dict(self.statuses)}, {len(self.failures)} failed")


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Call ``check`` every 20 ms until it is true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.02)


def healthy(host: HostSettings, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host.address}:{port}/+health", timeout=1) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def restore(haproxy: Haproxy, found: dict[str, ServerStat]) -> None:
    """Put every server back in its found state: ready ones first, so capacity never drops."""
    now = haproxy.stats()
    for state in ("ready", "drain", "maint"):
        names = [n for n, s in found.items() if s.admin_state == state
                 and now[n].admin_state != state]
        haproxy.set_state(names, state)


@pytest.fixture
def events() -> LogCapture:
    return LogCapture()


@pytest.fixture
def haproxy(config: Config, remote: Remote, events: LogCapture) -> Iterator[Haproxy]:
    # its own wrapper class: a test that configured structlog to drop debug events (the CLI's
    # do) must not hide the round trips this module counts
    log = structlog.wrap_logger(structlog.PrintLogger(), processors=[events],
                                wrapper_class=structlog.make_filtering_bound_logger(0))
    haproxy = Haproxy(remote, config, log=log)
    # an earlier test may have cut the apps' database connections (pgbouncer KILL can
    # refuse logins for server_login_retry): start once haproxy sees every ready server UP
    poll(lambda: all(s.status == "UP" for s in haproxy.stats().values()
                     if s.admin_state == "ready"), 20, "every ready server UP in haproxy")
    found = haproxy.stats()
    try:
        yield haproxy
    finally:
        restore(haproxy, found)
        haproxy.close()


def test_persistent_channel_costs_well_under_a_millisecond_per_command(
        haproxy: Haproxy) -> None:
    """200 commands reuse one socat channel and average well under 1 ms each."""
    haproxy.open()
    count = 200
    started = time.perf_counter()
    for _ in range(count):
        assert haproxy.command("show info").startswith("Name: HAProxy")
    per_command_ms = (time.perf_counter() - started) / count * 1000
    print(f"\npersistent channel: {per_command_ms:.3f} ms per command ({count} x show info)")
    assert haproxy.opens == 1
    assert per_command_ms < 1.0


def test_draining_moves_every_request_to_the_others(config: Config, haproxy: Haproxy) -> None:
    """A drained server gets no new request and none fails; back ready it gets traffic again."""
    server = haproxy.server_name(config.role("app")[0], OLD_PORT)
    lb = config.need("lb")
    with Client(lb.public_url) as client:
        client.wait_for(200)
        haproxy.set_state([server], "drain")
        waited = haproxy.wait_drained([server], timeout_s=lb.drain_timeout_s)
        drained = haproxy.stats()
        assert drained[server].admin_state == "drain" and drained[server].busy == 0
        client.wait_for(500)
        after = haproxy.stats()
        assert after[server].total_sessions == drained[server].total_sessions
        others = [n for n, s in after.items() if n != server and s.admin_state == "ready"]
        # One request may have been in flight (and counted) at the first snapshot.
        assert sum(after[n].total_sessions - drained[n].total_sessions for n in others) >= 499
        haproxy.set_state([server], "ready")
        back = haproxy.stats()[server].total_sessions

        def served_again() -> bool:
            client.wait_for(10)
            return haproxy.stats()[server].total_sessions > back
        poll(served_again, 10, f"{server} serving again")
    print(f"\ndrain of {server}: drained in {waited * 1000:.1f} ms; {client.report()}")
    assert client.failures == []
    assert haproxy.stats()[server].admin_state == "ready"


@pytest.fixture
def new_instances(config: Config, remote: Remote) -> Iterator[list[HostSettings]]:
    """A second instance on every app host's second port, healthy; stopped afterwards."""
    hosts = list(config.role("app"))
    app = config.need("app")
    running = [h for h in hosts if healthy(h, NEW_PORT)]
    revisions = remote.run_all(hosts, lambda h: read_revision(config.app_root(h)))
    revisions.raise_for_failures("read the deployed revision")
    sha = {r.host: r.stdout.strip() for r in revisions.results}
    started = [h for h in hosts if h not in running]
    try:
        remote.run_all(started, lambda h: app_start(config, h, sha[h.name], NEW_PORT)) \
            .raise_for_failures(f"start a second instance on port {NEW_PORT}")
        poll(lambda: all(healthy(h, NEW_PORT) for h in hosts), app.health_timeout_s,
             f"every app host healthy on port {NEW_PORT}")
        yield hosts
    finally:
        remote.run_all(started, lambda h: app_stop(config, h, NEW_PORT)) \
            .raise_for_failures(f"stop the instances on port {NEW_PORT}")


def test_swap_of_every_host_is_one_round_trip_with_no_failed_request(
        config: Config, haproxy: Haproxy, events: LogCapture,
        new_instances: list[HostSettings]) -> None:
    """Swapping all 4 hosts to their new instance and back is one round trip each, no failure."""
    old = [haproxy.server_name(h, OLD_PORT) for h in new_instances]
    new = [haproxy.server_name(h, NEW_PORT) for h in new_instances]
    lb = config.need("lb")
    haproxy.open()
    with Client(lb.public_url) as client:
        client.wait_for(200)
        events.entries.clear()
        started = time.perf_counter()
        haproxy.swap(list(zip(old, new, strict=True)))
        swap_ms = (time.perf_counter() - started) * 1000
        trips = [e for e in events.entries if e["event"] == "haproxy.round_trip"]
        assert [e["commands"] for e in trips] == [2 * len(old)]
        stats = haproxy.stats()
        assert [stats[n].admin_state for n in new] == ["ready"] * len(new)
        assert [stats[n].admin_state for n in old] == ["drain"] * len(old)
        haproxy.wait_drained(old, timeout_s=lb.drain_timeout_s)
        at_drain = haproxy.stats()
        client.wait_for(400)
        after = haproxy.stats()
        assert [after[n].total_sessions for n in old] == [at_drain[n].total_sessions
                                                           for n in old]
        assert all(after[n].total_sessions > at_drain[n].total_sessions for n in new)

        events.entries.clear()
        haproxy.swap(list(zip(new, old, strict=True)))
        assert len([e for e in events.entries if e["event"] == "haproxy.round_trip"]) == 1
        haproxy.wait_drained(new, timeout_s=lb.drain_timeout_s)
        haproxy.set_state(new, "maint")
        client.wait_for(200)
    print(f"\nswap of {len(old)} hosts: {swap_ms:.3f} ms, one round trip; {client.report()}")
    assert client.failures == []
    stats = haproxy.stats()
    assert {n: stats[n].admin_state for n in old + new} == {
        **{n: "ready" for n in old}, **{n: "maint" for n in new}}


def test_unknown_server_raises_with_haproxys_answer(haproxy: Haproxy) -> None:
    """haproxy's error text for an unknown server comes back in a HaproxyError."""
    with pytest.raises(HaproxyError) as caught:
        haproxy.set_state(["app9_8001"], "drain")
    assert caught.value.command == "set server app/app9_8001 state drain"
    assert caught.value.answer.strip() == "No such server."
    assert "No such server." in str(caught.value)
    assert haproxy.command("show info").startswith("Name: HAProxy")
    assert haproxy.opens == 1


def test_channel_closed_by_haproxy_is_reopened(haproxy: Haproxy) -> None:
    """When haproxy closes the idle CLI session, the next command runs on a new channel."""
    haproxy.command("set timeout cli 1")
    poll(lambda: not haproxy.is_open, 10, "closed by haproxy's CLI timeout")
    assert haproxy.command("show info").startswith("Name: HAProxy")
    assert haproxy.opens == 2 and haproxy.is_open
