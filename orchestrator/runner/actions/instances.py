"""Actions on the app's instance slots: read them from haproxy, start the release beside
the serving instance, stop the old one, restart in place (the restart playbook)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.config import HostSettings
from orchestrator.errors import FailedBeforeCommit
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, action
from orchestrator.runner.actions.script import (
    Answers,
    Drained,
    Effect,
    Fail,
    Health,
    HostSkip,
    If,
    Pick,
    ReadSlots,
    Script,
    SetState,
    Ssh,
    When,
)
from orchestrator.runner.context import Run


@dataclass(frozen=True)
class HealthParams:
    health_timeout_s: float | None = None


@dataclass(frozen=True)
class RestartParams:
    health_timeout_s: float | None = None
    rolling: bool = False
    """The hosts are in rotation (an undone window put them back; always so in ``[window]
    mode = "hold"``, where the window held the database alone): they restart
    ``[nodowntime] max_out_of_rotation`` at a time, each batch drained and out of rotation
    first, so the others keep serving. Otherwise (the window drained them) all at once."""


def read_slots(run: Run) -> dict[str, tuple[int, int]]:
    """Each app host's (serving port, idle port) from haproxy's admin states."""
    ports = run.config.need("app").ports
    stats = run.haproxy.stats()
    slots = {}
    for host in run.app_hosts:
        ready = [p for p, (_, state) in _admin_states(run, stats, host).items()
                 if state == "ready"]
        if len(ready) != 1:
            raise FailedBeforeCommit(f"{host.name}: expected exactly one instance slot ready "
                                     f"in haproxy, found {ready or 'none'}")
        old = ready[0]
        slots[host.name] = (old, next(p for p in ports if p != old))
    return slots


def hosts_unserved(run: Run) -> list[str]:
    """The app hosts haproxy routes to through no slot (none ``ready``), each with its
    slots' admin states, read now: what a run reads before it calls the hosts restored or
    done. A slot left draining beside a ready one is not named (the host is served).
    Empty without app or LB hosts; haproxy's errors propagate."""
    if not run.app_hosts or not run.config.role("lb"):
        return []
    stats = run.haproxy.stats()
    down = []
    for host in run.app_hosts:
        states = _admin_states(run, stats, host).values()
        if all(state != "ready" for _, state in states):
            down.append(f"{host.name} ({', '.join(f'{s} {st}' for s, st in states)})")
    return down


def _admin_states(run: Run, stats: dict[str, Any], host: HostSettings
                  ) -> dict[int, tuple[str, str]]:
    """Each slot port of ``host``: its haproxy server and that server's admin state
    (``missing`` when haproxy lists no such server)."""
    servers = {port: run.server(host, port) for port in run.config.need("app").ports}
    return {port: (s, stats[s].admin_state if s in stats else "missing")
            for port, s in servers.items()}


def _by_port(run: Run, index: int, hosts: Sequence[Any] | None = None
             ) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for host in run.app_hosts if hosts is None else hosts:
        groups.setdefault(run.slots[host.name][index], []).append(host)
    return groups


def targets(run: Run, index: int, hosts: Sequence[HostSettings] | None = None
            ) -> tuple[tuple[HostSettings, int, str], ...]:
    """The ``index`` slot of every app host (or of ``hosts``) with the revision it should
    report: the stage's, unless ``run.expected`` says otherwise."""
    return tuple((h, run.slots[h.name][index], run.expected.get(h.name, run.release))
                 for h in (run.app_hosts if hosts is None else hosts))


def unhealthy(key: str, label: str) -> When:
    """``label`` holds when a health check kept under ``key`` failed on any host."""
    return When(label, lambda run, answers: any(not r.ok for r in answers[key].values()))


def why_unhealthy(key: str, lead: str) -> Fail:
    """Fail the step naming every instance the health check under ``key`` found unhealthy."""
    return Fail(lead, lambda run, answers: f"{lead}: " + "; ".join(
        r.describe() for r in answers[key].values() if not r.ok))


@action
class StartNewInstances(Action):
    """Start the release beside the serving instance on every app host; all must be healthy."""

    name = "start_new_instances"
    Params = HealthParams

    def reads(self, run: Run) -> Script:
        return (ReadSlots(),)

    def script(self, run: Run) -> Script:
        timeout = self.params.health_timeout_s or run.config.need("app").health_timeout_s
        return (*(Ssh(ops.start_commands(run.config, hosts, run.release, port),
                      fails=f"starting {run.release[:12]} on port {port}")
                  for port, hosts in _by_port(run, 1).items()),
                Health(targets(run, 1), timeout, "health"),
                If(unhealthy("health", "a new instance is unhealthy"),
                   (why_unhealthy("health", "new instances failed their health check"),)))

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"slots": run.slots}

    def undo_script(self, run: Run) -> Script:
        if not run.slots:  # the slots were never read: nothing was started
            return ()
        return tuple(Ssh(ops.stop_commands(run.config, hosts, port),
                         fails="stopping the new instances")
                     for port, hosts in _by_port(run, 1).items())


def _kept_old(name: str) -> When:
    return When(f"{name} kept its old instance serving",
                lambda run, answers: name in run.fallback)


@action
class StopOldInstances(Action):
    """Stop the instances that served before (after traffic moved to the new ones)."""

    name = "stop_old_instances"
    needs = (("close_window", "the old instances stop once the window handed traffic to the "
                              "new ones"),)

    def script(self, run: Run) -> Script:
        kept = HostSkip("close_window kept its old instance serving",
                        lambda run, answers, host: host in run.fallback)
        timeout = run.config.need("lb").drain_timeout_s
        retired = tuple(Pick(run.server(h, run.slots[h.name][0]), None, _kept_old(h.name))
                        for h in run.app_hosts)
        # the old instances finish what they hold, then leave rotation before they stop
        return (Drained(retired, timeout), SetState(retired, "maint"),
                *(Ssh(ops.stop_commands(run.config, hosts, port), skip=kept,
                      fails=f"stopping the old instances on port {port}")
                  for port, hosts in _by_port(run, 0).items()))

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"kept": sorted(run.fallback)}


@action
class RestartOnRelease(Action):
    """Restart playbook, after COMMIT: ``current`` -> the release, start it where the old
    instance ran, healthy before traffic returns. A host whose new code fails goes back to
    its previous release (old code works on the new schema by policy)."""

    name = "restart_on_release"
    needs = (("apply_cold_patches", "the hosts restart on the cut once its cold patches are "
                                    "committed"),)
    Params = RestartParams

    def script(self, run: Run) -> Script:
        timeout = self.params.health_timeout_s or run.config.need("app").health_timeout_s
        if not (self.params.rolling or run.config.window.mode == "hold"):
            return restart_script(run, run.app_hosts, timeout)
        size = max(1, run.config.nodowntime.max_out_of_rotation)
        hosts = run.app_hosts
        return tuple(node for i in range(0, len(hosts), size)
                     for node in _restart_batch(run, hosts[i:i + size], timeout,
                                                f"#{i // size + 1}"))

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"hosts": dict(run.host_states)}


def _restart_batch(run: Run, batch: Sequence[HostSettings], timeout_s: float,
                   tag: str) -> Script:
    """One batch of a rolling restart: out of rotation (drained), stopped, restarted on the
    release (or back on the previous one), in rotation again unless it is down. A host that
    already serves the release (a resumed run's) restarts too: harmless, and the same for
    every host."""
    servers = tuple(run.server(h, run.slots[h.name][0]) for h in batch)
    timeout = run.config.need("lb").drain_timeout_s

    def down(name: str) -> When:
        return When(f"{name} is down", lambda run, answers:
                    run.host_states.get(name, "").startswith("DOWN"))
    return (SetState(tuple(Pick(s) for s in servers), "drain"), Drained(servers, timeout),
            SetState(tuple(Pick(s) for s in servers), "maint"),
            *(Ssh(ops.stop_commands(run.config, hosts, port), fails="stopping the app")
              for port, hosts in _by_port(run, 0, batch).items()),
            *restart_script(run, batch, timeout_s, tag),
            SetState(tuple(Pick(run.server(h, run.slots[h.name][0]), None, down(h.name))
                           for h in batch), "ready"))


def _restart_failures(answers: Answers, hosts: Sequence[HostSettings],
                      tag: str = "") -> dict[str, str]:
    """Host -> the first thing that failed there: the switch, the start, the health check."""
    failed = {r.host: r.describe() for r in answers[f"switched{tag}"].failed}
    for key, result in answers.items():
        if key.startswith(f"started{tag}:"):
            failed.update({r.host: r.describe() for r in result.failed})
    failed.update({h: r.describe() for h, r in answers[f"health{tag}"].items()
                   if not r.ok and h not in failed})
    return failed


def restart_script(run: Run, hosts: Sequence[HostSettings], timeout_s: float,
                   tag: str = "") -> Script:
    """``current`` -> the release on ``hosts``, started on their serving slot and healthy
    within ``timeout_s``; a host where it fails goes back to the previous release (old code
    works on the new schema by policy). Records each host's state, and a problem per host
    that went back (or is down). ``tag`` keeps one batch's answers apart from another's."""
    config, release = run.config, run.release
    nodes: list[Any] = [
        Ssh(ops.switch_commands(config, release, hosts), key=f"switched{tag}"),
        Effect(lambda run, answers: answers.update(began=run.clock()))]
    switch_failed = HostSkip("switching current failed",
                             lambda run, answers, host:
                             not answers[f"switched{tag}"].by_host[host].ok)
    nodes += [Ssh(ops.start_commands(config, group, release, port),
                  key=f"started{tag}:{port}", skip=switch_failed)
              for port, group in _by_port(run, 0, hosts).items()]
    nodes.append(Health(targets(run, 0, hosts), timeout_s, f"health{tag}"))
    for host in hosts:
        nodes.append(_restart_or_back(run, host, hosts, timeout_s, tag))
    return tuple(nodes)


def _restart_or_back(run: Run, host: HostSettings, hosts: Sequence[HostSettings],
                     timeout_s: float, tag: str) -> If:
    """``host`` serves the release, or, where it did not switch, start or get healthy,
    goes back to the previous release on the same slot."""
    config, release, previous, name = run.config, run.release, run.previous, host.name
    port = run.slots[name][0]
    return If(
        When(f"{name} did not switch, start or get healthy on {release[:12]}",
             lambda run, answers: name in _restart_failures(answers, hosts, tag)),
        (Ssh(ops.stop_commands(config, [host], port)),
         Ssh(ops.switch_commands(config, previous, [host])),
         Ssh(ops.start_commands(config, [host], previous, port), key=f"back:{name}"),
         If(When(f"{previous[:12]} started again on {name}",
                 lambda run, answers: bool(answers[f"back:{name}"].ok)),
            (Health(((host, port, previous),), timeout_s, f"back-health:{name}"),)),
         Effect(lambda run, answers: _went_back(run, answers, name, hosts, tag))),
        (Effect(lambda run, answers: _serving(run, answers, name)),))


def _serving(run: Run, answers: Answers, name: str) -> None:
    run.host_states[name] = f"serving {run.release[:12]}"
    run.journal.event("restart.healthy", host=name,
                      start_to_healthy_s=round(run.clock() - answers["began"], 6))


def _went_back(run: Run, answers: Answers, name: str, hosts: Sequence[HostSettings],
               tag: str) -> None:
    back = answers.get(f"back-health:{name}")
    healthy = answers[f"back:{name}"].ok and back is not None and back[name].ok
    run.expected[name] = run.previous
    state = (f"back on {run.previous[:12]} and serving" if healthy else
             f"DOWN: neither {run.release[:12]} nor {run.previous[:12]} starts")
    run.host_states[name] = state
    run.problems.append(f"{name}: {run.release[:12]} failed "
                        f"({_restart_failures(answers, hosts, tag)[name]}); {state}")
