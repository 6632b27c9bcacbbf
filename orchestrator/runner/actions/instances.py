"""Actions on the app's instance slots: read them from haproxy, start the release beside
the serving instance, stop the old one, restart in place (the restart playbook)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import FailedBeforeCommit
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, _failed, _lines, action
from orchestrator.runner.context import Run


@dataclass(frozen=True)
class HealthParams:
    health_timeout_s: float | None = None


def read_slots(run: Run) -> dict[str, tuple[int, int]]:
    """Each app host's (serving port, idle port) from haproxy's admin states."""
    ports = run.config.need("app").ports
    stats = run.haproxy.stats()
    slots = {}
    for host in run.app_hosts:
        ready = [p for p in ports if stats[run.server(host, p)].admin_state == "ready"]
        if len(ready) != 1:
            raise FailedBeforeCommit(f"{host.name}: expected exactly one instance slot ready "
                                     f"in haproxy, found {ready or 'none'}")
        old = ready[0]
        slots[host.name] = (old, next(p for p in ports if p != old))
    return slots


def _by_port(run: Run, index: int, hosts: Sequence[Any] | None = None
             ) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for host in run.app_hosts if hosts is None else hosts:
        groups.setdefault(run.slots[host.name][index], []).append(host)
    return groups


@action
class StartNewInstances(Action):
    """Start the release beside the serving instance on every app host; all must be healthy."""

    name = "start_new_instances"
    Params = HealthParams

    def do(self, run: Run) -> dict[str, Any]:
        run.slots = read_slots(run)
        app = run.config.need("app")
        timeout = self.params.health_timeout_s or app.health_timeout_s
        for port, hosts in _by_port(run, 1).items():
            _failed(ops.start_instances(run.remote, run.config, hosts, run.release, port),
                    f"starting {run.release[:12]} on port {port}")
        unhealthy = _check_instances(run, 1, timeout)
        if unhealthy:
            raise FailedBeforeCommit("new instances failed their health check: "
                                     + "; ".join(unhealthy.values()))
        return {"slots": run.slots}

    def undo(self, run: Run) -> None:
        if not run.slots:  # the slots were never read: nothing was started
            return
        for port, hosts in _by_port(run, 1).items():
            _failed(ops.stop_instances(run.remote, run.config, hosts, port),
                    "stopping the new instances")

    def render(self, run: Run) -> list[str]:
        app = run.config.need("app")
        lines = []
        for host in run.app_hosts:
            lines += _lines(ops.render_start_instances(run.config, [host], run.release,
                                                       run.port(host, 1)), run)
        return lines + [f"then poll {app.health_url} of each until it reports {run.release}"]


@action
class StopOldInstances(Action):
    """Stop the instances that served before (after traffic moved to the new ones)."""

    name = "stop_old_instances"

    def do(self, run: Run) -> dict[str, Any]:
        for port, hosts in _by_port(run, 0).items():
            hosts = [h for h in hosts if h.name not in run.fallback]
            if hosts:
                _failed(ops.stop_instances(run.remote, run.config, hosts, port),
                        f"stopping the old instances on port {port}")
        return {"kept": sorted(run.fallback)}

    def render(self, run: Run) -> list[str]:
        return [line for host in run.app_hosts for line in _lines(
            ops.render_stop_instances(run.config, [host], run.port(host, 0)), run)]



def instance_health(run: Run, index: int, timeout_s: float,
                    hosts: Sequence[Any] | None = None) -> list[ops.HealthResult]:
    """Health-check the ``index`` slot of every app host (or of ``hosts``) at once, in
    host order: each must answer with its expected release (the stage's, unless
    ``run.expected`` says otherwise) within ``timeout_s``."""
    hosts = run.app_hosts if hosts is None else hosts

    def one(host: Any) -> ops.HealthResult:
        return ops.wait_healthy(run.config, host, run.slots[host.name][index],
                                run.expected.get(host.name, run.release), timeout_s)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return list(pool.map(one, hosts))


def _check_instances(run: Run, index: int, timeout_s: float = 2.0,
                     hosts: Sequence[Any] | None = None) -> dict[str, str]:
    """:func:`instance_health`, as host -> why for the unhealthy ones only."""
    return {r.host: r.describe() for r in instance_health(run, index, timeout_s, hosts)
            if not r.ok}



@action
class RestartOnRelease(Action):
    """Restart playbook, after COMMIT: ``current`` -> the release, start it where the old
    instance ran, healthy before traffic returns. A host whose new code fails goes back to
    its previous release (old code works on the new schema by policy)."""

    name = "restart_on_release"
    Params = HealthParams

    def do(self, run: Run) -> dict[str, Any]:
        timeout = self.params.health_timeout_s or run.config.need("app").health_timeout_s
        restart_in_place(run, run.app_hosts, timeout)
        return {"hosts": dict(run.host_states)}

    def render(self, run: Run) -> list[str]:
        lines = _lines(ops.render_switch(run.config, run.release, run.app_hosts), run)
        for host in run.app_hosts:
            lines += _lines(ops.render_start_instances(run.config, [host], run.release,
                                                       run.port(host, 0)), run)
        return lines + ["then poll each health URL until it reports the release"]


def restart_in_place(run: Run, hosts: Sequence[Any], timeout_s: float) -> None:
    """``current`` -> the release on ``hosts``, started on their serving slot and healthy
    within ``timeout_s``; a host where it fails goes back to the previous release (old code
    works on the new schema by policy). Records each host's state, and a problem per
    host that went back (or is down)."""
    switched = ops.switch(run.remote, run.config, run.release, hosts)
    began = run.clock()
    failed: dict[str, str] = {r.host: r.describe() for r in switched.failed}
    for port, group in _by_port(run, 0, hosts).items():
        group = [h for h in group if h.name not in failed]
        started = ops.start_instances(run.remote, run.config, group, run.release, port)
        failed.update({r.host: r.describe() for r in started.failed})
    failed.update({h: why for h, why in _check_instances(run, 0, timeout_s, hosts).items()
                   if h not in failed})
    for host in hosts:
        if host.name not in failed:
            run.host_states[host.name] = f"serving {run.release[:12]}"
            run.journal.event("restart.healthy", host=host.name,
                              start_to_healthy_s=round(run.clock() - began, 6))
            continue
        port = run.slots[host.name][0]
        ops.stop_instance(run.remote, run.config, host, port)
        ops.switch(run.remote, run.config, run.previous, [host])
        back = ops.start_instance(run.remote, run.config, host, run.previous, port)
        healthy = back.ok and ops.wait_healthy(run.config, host, port, run.previous,
                                               timeout_s).ok
        run.expected[host.name] = run.previous
        state = (f"back on {run.previous[:12]} and serving" if healthy else
                 f"DOWN: neither {run.release[:12]} nor {run.previous[:12]} starts")
        run.host_states[host.name] = state
        run.problems.append(f"{host.name}: {run.release[:12]} failed "
                            f"({failed[host.name]}); {state}")
