"""Instance health, asked from the orchestrator over HTTP (``[app] health_url``).

Polled with a deadline on an injectable clock: an instance is healthy once it
answers 200 with the revision it should run. Nothing here touches a host over
SSH; a health check is a decision the run takes on an answer, which
``--dry-run`` shows as a check, not a command.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.config import AppSettings, Config, HostSettings
from orchestrator.remote import commands as C

POLL_S = 0.02
"""Pause between two health requests to an instance that is not healthy yet."""
REQUEST_TIMEOUT_S = 1.0
"""Longest wait for one health answer (less when the deadline is nearer)."""
ANSWER_CHARS = 300
"""How much of a health answer a failure quotes."""


@dataclass(frozen=True)
class HealthResult:
    """How an instance answered its health check until it was healthy or the deadline passed.

    ``last_answer`` is the last HTTP status and body (or why there was none),
    ``revision`` the last revision it reported.
    """

    host: str
    port: int
    url: str
    expected: str
    ok: bool
    revision: str | None
    last_answer: str
    attempts: int
    elapsed_s: float

    def describe(self) -> str:
        """One line for a release manager: host, port, outcome and the last answer."""
        if self.ok:
            return (f"{self.host} port {self.port}: healthy on {self.expected} after "
                    f"{self.elapsed_s:.3f} s ({self.attempts} checks)")
        return (f"{self.host} port {self.port}: not healthy on {self.expected} within "
                f"{self.elapsed_s:.3f} s ({self.attempts} checks of {self.url}); "
                f"last answer: {self.last_answer}")


def health_url(config: Config, host: HostSettings, port: int) -> str:
    """``[app] health_url`` filled with the host's address, name and ``port``."""
    app: AppSettings = config.need("app")
    return C.fill(app.health_url, address=host.address, host=host.name,
                  port=str(C.check_port(port)))


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Straight to the host: a proxy in the environment must not answer for an instance."""


def _ask(url: str, timeout_s: float) -> tuple[int | None, str]:
    try:
        with _OPENER.open(url, timeout=timeout_s) as answer:
            return answer.status, answer.read(64 * 1024).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(64 * 1024).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, f"no answer: {getattr(exc, 'reason', exc)}"


def _revision(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if isinstance(revision, str) else None


def wait_healthy(config: Config, host: HostSettings, port: int, expect_revision: str,
                 timeout_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep,
                 ask: Callable[[str, float], tuple[int | None, str]] = _ask) -> HealthResult:
    """Poll the instance's health URL until it answers 200 with ``revision == expect_revision``.

    Asks at least once, then every :data:`POLL_S` until ``timeout_s`` has
    passed on ``clock``; each request waits at most :data:`REQUEST_TIMEOUT_S`
    (less near the deadline). ``ask(url, timeout)`` returns (HTTP status or
    None, body or reason); tests may replace it and ``sleep``.
    """
    C.check_sha(expect_revision)
    url = health_url(config, host, port)
    started = clock()
    deadline = started + timeout_s
    attempts = 0
    revision: str | None = None
    last = "never asked"
    while True:
        attempts += 1
        remaining = deadline - clock()
        code, body = ask(url, max(0.05, min(REQUEST_TIMEOUT_S, remaining)))
        revision = _revision(body) if code is not None else revision
        last = body[:ANSWER_CHARS] if code is None else f"HTTP {code} {body[:ANSWER_CHARS]}"
        if code == 200 and revision == expect_revision:
            return HealthResult(host.name, port, url, expect_revision, True, revision,
                                last.strip(), attempts, clock() - started)
        remaining = deadline - clock()
        if remaining <= 0:
            return HealthResult(host.name, port, url, expect_revision, False, revision,
                                last.strip(), attempts, clock() - started)
        sleep(min(POLL_S, remaining))


def wait_all_healthy(config: Config, hosts: Sequence[HostSettings], port: int,
                     expect_revision: str, timeout_s: float, *,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], object] = time.sleep) -> tuple[HealthResult, ...]:
    """:func:`wait_healthy` for every host against one shared deadline, in host order."""
    deadline = clock() + timeout_s
    return tuple(wait_healthy(config, host, port, expect_revision,
                              max(0.0, deadline - clock()), clock=clock, sleep=sleep)
                 for host in hosts)
