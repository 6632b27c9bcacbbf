"""The remote checks of preflight: every host reachable with a known key, agreeing, with disk.

- ``hosts``: every host of the inventory connects over SSH with a host key
  found in known_hosts (an unknown or changed key is named with its
  fingerprint);
- ``deployed_revision``: the app hosts agree on the revision they run, and it
  is the plan's ``from``;
- ``free_disk``: each app and script host has ``[app] min_free_mb`` free;
- ``haproxy``: each app host has exactly one slot in service and none is left
  draining (a run that died, or someone by hand, would have the window start
  from a state nobody planned).
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.check_result import CheckResult
from orchestrator.config import Config
from orchestrator.errors import FastdowntimeError
from orchestrator.remote import operations
from orchestrator.remote.results import HostKeyRejected, HostResult
from orchestrator.remote.ssh import Remote, Unreachable


def run_checks(remote: Remote, config: Config, from_sha: str | None,
               revisions: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Run the remote checks; the later ones only when every host could be reached.

    ``revisions`` are the app hosts' deployed revisions when the caller has
    read them already (they are read once per run).
    """
    results = [check_hosts(remote, config)]
    if not results[0].ok:
        return results
    results.append(check_deployed_revision(remote, config, from_sha, revisions))
    if config.lb is not None and config.role("lb") and config.app is not None:
        results.append(check_haproxy(remote, config))
    results.append(check_free_disk(remote, config))
    return results


def check_hosts(remote: Remote, config: Config) -> CheckResult:
    """Connect to every host; name each that is unreachable or whose key is refused."""
    problems = []
    for host in config.hosts:
        try:
            remote.connection(host)
        except (HostKeyRejected, Unreachable) as exc:
            problems.append(str(exc))
    detail = "; ".join(problems) or f"{len(config.hosts)} hosts reachable with known host keys"
    return CheckResult("hosts", not problems, detail, {"hosts": [h.name for h in config.hosts]})


def check_deployed_revision(remote: Remote, config: Config, from_sha: str | None,
                            revisions: Mapping[str, str] | None = None) -> CheckResult:
    """The app hosts agree, and on the plan's ``from`` (read now unless ``revisions``)."""
    if revisions is None:
        try:
            revisions = operations.deployed_revisions(remote, config, config.role("app"))
        except FastdowntimeError as exc:
            return CheckResult("deployed_revision", False, str(exc))
    revisions = dict(revisions)
    agreed = set(revisions.values())
    if len(agreed) != 1:
        listed = ", ".join(f"{h} {s[:12]}" for h, s in revisions.items())
        return CheckResult("deployed_revision", False, f"the app hosts disagree: {listed}",
                           {"revisions": revisions})
    sha = agreed.pop()
    if from_sha is not None and sha != from_sha:
        return CheckResult("deployed_revision", False,
                           f"the hosts run {sha[:12]}, but the plan starts at {from_sha[:12]}",
                           {"revisions": revisions})
    return CheckResult("deployed_revision", True, f"every app host runs {sha[:12]}",
                       {"revisions": revisions})


def check_free_disk(remote: Remote, config: Config) -> CheckResult:
    """Enough free disk on every app and script host for a new release."""
    hosts = config.role("app") + config.role("scripts")
    result = operations.free_disk(remote, config, hosts)
    failed: list[HostResult] = list(result.failed)
    detail = ("; ".join(r.describe() for r in failed) or
              f"at least {result.min_mb} MB free on {len(hosts)} hosts")
    return CheckResult("free_disk", not failed, detail, {"free_mb": result.free_mb})


def check_haproxy(remote: Remote, config: Config) -> CheckResult:
    """Every app host serves from exactly one slot, and no server is left draining."""
    from orchestrator.remote.haproxy import Haproxy

    try:
        with Haproxy(remote, config) as haproxy:
            stats = haproxy.stats()
            names = {host.name: [haproxy.server_name(host, port)
                                 for port in config.need("app").ports]
                     for host in config.role("app")}
    except FastdowntimeError as exc:
        return CheckResult("haproxy", False, f"could not read haproxy's servers: {exc}")
    problems = []
    for host, servers in names.items():
        states = {s: stats[s].admin_state if s in stats else "missing" for s in servers}
        draining = [s for s, state in states.items() if state == "drain"]
        ready = [s for s, state in states.items() if state == "ready"]
        if draining:
            problems.append(f"{', '.join(draining)} left draining")
        elif len(ready) != 1:
            listed = ", ".join(f"{s} {state}" for s, state in states.items())
            problems.append(f"{host} should serve from exactly one slot ({listed})")
    detail = ("; ".join(problems) + ": set them as they should be (`set server ... state "
              "ready|maint` on haproxy's admin socket), or `fastdowntime resume RUN` if a run "
              "left them so") if problems else f"{len(names)} app hosts, one slot in service each"
    return CheckResult("haproxy", not problems, detail,
                       {"servers": {s: stats[s].admin_state for s in stats}})
