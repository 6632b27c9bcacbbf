"""Hold mode on the sandbox: a whole deploy under 200 requests a second fails none of them.

An outside probe (the orchestrator's own :class:`Probe`, in this process) asks the public
URL every 5 ms through haproxy, with a user's patience (the window's budget and a margin),
while a real deploy runs: the fastdowntime window with a cold patch that takes a known
time, then the nodowntime rollout. Every request must be answered; those that came during
the window must have waited for it (the patch's time), and not much longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runner.probe import Probe, ProbeReport
from tests.e2e.conftest import Sandbox, approvals
from tests.e2e.test_deploy import (
    FAILING_PATCH,
    PATCH_07,
    assert_old_state,
    assert_serving,
    slow_patch,
    window_events,
)

pytestmark = pytest.mark.e2e

PATCH_S = 0.3
"""How long the cold patch of these tests takes (pg_sleep)."""
SLACK_S = 1.0
"""How much longer than the patch a held request may take here. The issue's 50 ms is
measured by ``make bench`` on a quiet machine; on 2 shared cores under CI, scheduling
alone can cost a few hundred ms, so this test bounds it loosely and asserts the counts."""


def probe(sandbox: Sandbox) -> Probe:
    return Probe(sandbox.layout.public_url + "+health", interval_s=0.005, timeout_s=35.0)


def slowest(report: ProbeReport, opened: float, closed: float) -> list[str]:
    """The five slowest requests, their start and end from the window's opening, and the
    window's close: where the time went when a wait is too long."""
    ranked = sorted(report.samples, key=lambda s: s[0] - s[1])[:5]
    return [f"+{start - opened:.3f}..+{end - opened:.3f} s (window closed "
            f"+{closed - opened:.3f} s) {'ok' if good else 'failed'}"
            for start, end, good in ranked]


def rate(report: ProbeReport) -> float:
    assert report.first is not None and report.last is not None
    return report.requests / (report.last - report.first)


@pytest.mark.parametrize("playbook", ["fastdowntime", "fastdowntime-restart"])
def test_a_held_deploy_fails_no_request(fresh: Sandbox, tmp_path: Path, playbook: str) -> None:
    fresh.commit("Add a patch that takes a while (cold)", {PATCH_07: slow_patch(PATCH_S)})
    config = fresh.write_config(tmp_path, playbook=f'"{playbook}"')
    with probe(fresh) as outside:
        done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config,
                         timeout=180)
    report = outside.stop()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert report.failures == 0, report.to_json()
    assert rate(report) >= 150, rate(report)  # 200 asked; 2 shared cores answer most
    run = fresh.show()
    opened, closed = window_events(fresh, run["id"])
    held = report.within(opened, closed)
    assert held.requests > 0 and held.failures == 0, held.to_json()
    # the requests of the window waited for the patch, and not much longer
    cold_s = sum(p["duration_s"] for p in run["cold_patches"])
    assert cold_s >= PATCH_S
    assert PATCH_S <= held.longest_wait_s <= cold_s + SLACK_S, \
        (held.longest_wait_s, cold_s, slowest(held, opened, closed))
    # the run's own probe and summary say the same
    assert run["window_mode"] == "hold"
    assert run["failed_requests"] == 0 and run["probe_window"]["failures"] == 0
    assert run["longest_wait_s"] >= PATCH_S
    assert_serving(fresh, fresh.tip())


def test_a_held_window_that_fails_fails_no_request(fresh: Sandbox) -> None:
    """A patch that raises: rolled back, RESUME, the held queries run on the old schema."""
    fresh.commit("Add a patch that fails (cold)", {PATCH_07: FAILING_PATCH})
    with probe(fresh) as outside:
        done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"))
    report = outside.stop()
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nosuchtable" in done.stderr
    assert report.failures == 0, report.to_json()
    assert_old_state(fresh)
    run = fresh.show()
    assert run["outcome"] == "rolled-back" and run["failed_requests"] == 0
