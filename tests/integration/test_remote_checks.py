"""Remote preflight checks and the deployed revision as plan's default --from."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import Config
from orchestrator.remote.checks import run_checks
from orchestrator.remote.ssh import Remote
from orchestrator.sandbox.component import Context

pytestmark = pytest.mark.integration


def first_revision(ctx: Context) -> str:
    return json.loads((ctx.layout.base / "layout.json").read_text())["first"]


def test_healthy_hosts_pass(sandbox: Context, config: Config) -> None:
    """Every host is reachable, the app hosts agree on the plan's from, disks have room."""
    with Remote(config) as remote:
        results = {r.name: r for r in run_checks(remote, config, first_revision(sandbox))}
    assert {n: r.ok for n, r in results.items()} == {"hosts": True, "deployed_revision": True,
                                                     "haproxy": True, "haproxy_waits": True,
                                                     "free_disk": True}
    # read from the LB host's real haproxy.cfg: its checked servers ask /+alive
    assert results["haproxy_waits"].data["check_path"] == "/+alive"


def test_wrong_from_and_unknown_keys_are_named(sandbox: Context, config: Config,
                                               tmp_path: Path) -> None:
    """A plan starting elsewhere than the hosts fails; a host with an unknown key is named."""
    with Remote(config) as remote:
        results = {r.name: r for r in run_checks(remote, config, "f" * 40)}
    assert not results["deployed_revision"].ok and "plan starts at ffffffffffff" in \
        results["deployed_revision"].detail
    known = tmp_path / "known_hosts"
    known.write_text("".join(line for line in Path(config.ssh.known_hosts).read_text()  # type: ignore[union-attr]
                             .splitlines(keepends=True) if "127.0.0.13" not in line))
    strict = dataclasses.replace(config, ssh=dataclasses.replace(config.ssh,  # type: ignore[type-var]
                                                                 known_hosts=str(known)))
    with Remote(strict) as remote:
        results = {r.name: r for r in run_checks(remote, strict, None)}
    assert list(results) == ["hosts"] and not results["hosts"].ok
    assert "app3" in results["hosts"].detail and "SHA256:" in results["hosts"].detail


def test_plan_reads_from_from_the_hosts(sandbox: Context,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --from, plan starts at the revision every app host runs."""
    assert main(["plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["from"] == first_revision(sandbox)


def test_a_server_left_draining_or_out_is_refused(sandbox: Context, config: Config) -> None:
    """A server someone left draining, or a host with no slot in service, fails the haproxy
    check by name; once put back it passes again."""
    from orchestrator.remote.haproxy import Haproxy

    with Remote(config) as remote, Haproxy(remote, config) as haproxy:
        try:
            haproxy.set_state(["app2_8001"], "drain")
            results = {r.name: r for r in run_checks(remote, config, None)}
            assert not results["haproxy"].ok
            assert "app2_8001 left draining" in results["haproxy"].detail
            haproxy.set_state(["app2_8001"], "maint")
            results = {r.name: r for r in run_checks(remote, config, None)}
            assert "app2 should serve from exactly one slot" in results["haproxy"].detail
        finally:
            haproxy.set_state(["app2_8001"], "ready")
        results = {r.name: r for r in run_checks(remote, config, None)}
        assert results["haproxy"].ok, results["haproxy"].detail
