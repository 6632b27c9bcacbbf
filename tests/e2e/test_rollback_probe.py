"""rollback on the sandbox: code only, host by host, under 200 requests a second, none failing.

After a whole deploy (window, then the code-only tail), roll back to the release that
served between the stages, with an outside probe asking the public URL every 5 ms: no
request fails, every host serves that release, the schema is untouched. Then the refusals
on real hosts: a release that is not an ancestor, and one a host no longer keeps.
"""

from __future__ import annotations

import shutil

import pytest

from orchestrator.runner.probe import Probe
from tests.e2e.conftest import Sandbox, approvals
from tests.e2e.test_deploy import assert_serving

pytestmark = pytest.mark.e2e


def test_rollback_fails_no_request_and_refuses_what_it_cannot_do(fresh: Sandbox) -> None:
    done = fresh.cli("deploy", "--yes", *approvals())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    deployed = fresh.show()
    tip, cut = deployed["to"], deployed["cut"]
    assert cut and cut != tip
    schema = fresh.patches()

    with Probe(fresh.layout.public_url + "+health", interval_s=0.005, timeout_s=35.0) as probe:
        back = fresh.cli("rollback", "--yes", timeout=180)
    report = probe.stop()
    assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    assert report.failures == 0 and report.requests > 100, report.to_json()
    assert_serving(fresh, cut)
    assert fresh.patches() == schema
    run = fresh.show()
    assert run["outcome"] == "done" and run["to"] == cut and run["failed_requests"] == 0
    assert [s["name"] for s in run["steps"] if s["stage"] == "rollback"][0] == "rolling_update"

    forward = fresh.cli("rollback", "--yes", "--to", tip)
    assert forward.returncode == 3 and "not an ancestor" in forward.stderr, forward.stderr
    app2 = fresh.layout.role("app")[1]
    shutil.rmtree(app2.app_root / "releases" / fresh.first)
    gone = fresh.cli("rollback", "--yes", "--to", fresh.first)
    assert gone.returncode == 3 and "no longer kept on app2" in gone.stderr, gone.stderr
    assert_serving(fresh, cut)
