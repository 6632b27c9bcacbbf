"""The remote checks of preflight: every host reachable with a known key, agreeing, with disk.

- ``hosts``: every host of the inventory connects over SSH with a host key
  found in known_hosts (an unknown or changed key is named with its
  fingerprint);
- ``deployed_revision``: the app hosts agree on the revision they run, and it
  is the plan's ``from``;
- ``free_disk``: each app and script host has ``[app] min_free_mb`` free;
- ``haproxy``: each app host has exactly one slot in service and none is left
  draining (a run that died, or someone by hand, would have the window start
  from a state nobody planned);
- ``haproxy_waits`` (hold mode): haproxy lets a held request wait out the
  window, and its health checks would not mark the held servers down first.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from orchestrator.check_result import CheckResult
from orchestrator.config import Config
from orchestrator.errors import FastdowntimeError
from orchestrator.remote import commands as C
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
        if config.window.mode == "hold":
            results.append(check_haproxy_waits(remote, config))
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


def check_haproxy_waits(remote: Remote, config: Config) -> CheckResult:
    """Hold mode: haproxy's ``timeout server`` and ``timeout queue`` outlast the window, as
    its configuration on the LB host says (``[lb] haproxy_config``, read over SSH), or else
    ``[lb] timeout_server_s`` / ``timeout_queue_s``; and its health checks, when they ask the
    app's own health page (``[app] health_url``, which waits for the database), would not
    mark the held servers down first."""
    from orchestrator.remote.haproxy_config import Backend, Timeouts, read_backend

    lb = config.need("lb")
    need = config.window.hold_needs_s
    where = "[lb] timeout_server_s / timeout_queue_s"
    backend: Backend | None = None
    unread = ""
    if lb.haproxy_config:
        host = config.role("lb")[0]
        read = remote.run(host, C.sh('cat -- "$1"', lb.haproxy_config,
                                     description="read haproxy's configuration"))
        if read.ok:
            try:
                backend = read_backend(read.stdout, lb.backend)
                where = f"{lb.haproxy_config} on {host.name}"
            except FastdowntimeError as exc:
                unread = f"{lb.haproxy_config}: {exc}"
        else:
            unread = f"{lb.haproxy_config} on {host.name}: {read.describe()}"
    if backend is not None:
        timeouts = backend.timeouts
    elif lb.timeout_server_s is None:
        why = f"could not read {unread}; " if unread else ""
        return CheckResult("haproxy_waits", False, f"{why}haproxy's timeout server is not "
                           "known: set [lb] haproxy_config (its path on the LB host) or "
                           "[lb] timeout_server_s")
    else:
        timeouts = Timeouts(lb.timeout_server_s, lb.timeout_queue_s)
    problems = [f"timeout {name} {value:g} s ({where}) would fail a held request before the "
                f"window could end ({need:g} s: [window] budget_s {config.window.budget_s:g} "
                "plus a margin)"
                for name, value in (("server", timeouts.server_s), ("queue", timeouts.queue_s))
                if value is not None and value < need]
    checks = backend.checks if backend is not None else None
    health_path = urlsplit(config.app.health_url).path if config.app else None
    if checks is not None and checks.path == health_path and checks.down_after_s < need:
        problems.append(
            f"haproxy's health checks ask {checks.path}, the app's health page ([app] "
            f"health_url), which waits for the database: {checks.describe()} ({where}) mark "
            f"every server down after about {checks.down_after_s:g} s of a held window, "
            f"which may last {need:g} s; check a page that answers without the database, "
            "or raise timeout check or fall")
    shown = ", ".join(f"timeout {name} " + ("unbounded" if value is None else f"{value:g} s")
                      for name, value in (("server", timeouts.server_s),
                                          ("queue", timeouts.queue_s)))
    return CheckResult("haproxy_waits", not problems,
                       "; ".join(problems) or f"{shown} ({where}): a request can wait "
                       f"{need:g} s", {"server_s": timeouts.server_s,
                                       "queue_s": timeouts.queue_s, "need_s": need,
                                       "check_path": checks.path if checks else None})
