"""Host operations over :class:`~orchestrator.remote.ssh.Remote`: code staging, services, disk.

Each operation first builds its per-host commands as values (a
:class:`~orchestrator.remote.fanout.Fanout`, or a :class:`Staging` for
:func:`stage`), with the builders of :mod:`orchestrator.remote.commands`;
then it runs them. Actions hold the same values in their descriptions, so
``deploy --dry-run`` prints exactly what runs (``Fanout.lines``). Outcomes are
values: group operations return every host's :class:`HostResult`; callers
decide with ``raise_for_failures``. Only reading the deployed revision raises
when a host fails, since nothing can be planned without it. Bad input (a sha,
a port, a template) raises :class:`BadInput` before any host is touched.

Health is checked from the orchestrator over HTTP (:mod:`orchestrator.remote.health`,
re-exported here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.config import AppSettings, Config, HostSettings
from orchestrator.errors import BadInput, Refused
from orchestrator.history import git
from orchestrator.remote import commands as C
from orchestrator.remote.commands import Command
from orchestrator.remote.fanout import Exec, Fanout, Runner
from orchestrator.remote.health import (
    ANSWER_CHARS,
    POLL_S,
    REQUEST_TIMEOUT_S,
    HealthResult,
    health_url,
    wait_all_healthy,
    wait_healthy,
)
from orchestrator.remote.results import FAILED, GroupResult, HostResult

__all__ = [
    "ANSWER_CHARS", "POLL_S", "REQUEST_TIMEOUT_S", "RUNNING", "Archive", "DiskResult", "Exec",
    "Fanout", "HealthResult", "RevisionsDisagree", "Runner", "ServiceState", "StatusResult",
    "Staging", "agreed_revision", "archive", "deployed_revisions", "free_disk",
    "free_disk_commands", "health_url", "instance_status", "instances_status", "kept_releases",
    "parse_status", "revision_commands", "running_releases", "scripts_start_commands",
    "scripts_status", "scripts_status_commands", "scripts_stop_commands", "stage",
    "staging", "start_commands", "start_instance", "start_instances", "start_scripts",
    "status_commands", "stop_commands", "stop_instance", "stop_instances", "stop_scripts",
    "switch", "switch_commands", "wait_all_healthy", "wait_healthy",
]


# --- the deployed revision ----------------------------------------------------------------


class RevisionsDisagree(Refused):
    """The app hosts run different revisions; ``revisions`` maps each host to its sha."""

    def __init__(self, revisions: Mapping[str, str]) -> None:
        self.revisions = dict(revisions)
        listed = ", ".join(f"{host} {sha}" for host, sha in self.revisions.items())
        super().__init__(f"the app hosts do not agree on the deployed revision ({listed}); "
                         "switch them to one revision before deploying")


def revision_commands(config: Config, hosts: Sequence[HostSettings]) -> Fanout:
    """What :func:`deployed_revisions` runs: read ``current`` on every host."""
    return Fanout.each(hosts, lambda host: C.read_revision(config.app_root(host)))


def deployed_revisions(remote: Runner, config: Config,
                       hosts: Sequence[HostSettings]) -> dict[str, str]:
    """Host name -> the sha its ``current`` link points at, for every host in ``hosts``.

    A host that cannot be read (unreachable, no ``current``) raises
    :class:`RemoteFailed` naming it; a ``current`` that is not a release named
    by a sha is :class:`Refused`.
    """
    result = revision_commands(config, hosts).run(remote)
    result.raise_for_failures("reading the deployed revision")
    revisions = {r.host: r.stdout.strip() for r in result.results}
    odd = {host: sha for host, sha in revisions.items() if not C.is_sha(sha)}
    if odd:
        listed = ", ".join(f"{host}: {sha!r}" for host, sha in odd.items())
        raise Refused(f"current does not point at a release named by a full sha ({listed})")
    return revisions


def agreed_revision(remote: Runner, config: Config) -> str:
    """The revision every app host runs; :class:`RevisionsDisagree` if they differ."""
    hosts = config.role("app")
    if not hosts:
        raise BadInput(f"{config.path}: no host has the role app")
    revisions = deployed_revisions(remote, config, hosts)
    if len(set(revisions.values())) > 1:
        raise RevisionsDisagree(revisions)
    return next(iter(revisions.values()))


# --- staging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """A revision's tree as one tar archive (``git archive``), and its sha256."""

    sha: str
    data: bytes
    sha256: str


def archive(repo: str, sha: str) -> Archive:
    """``git -C repo archive --format=tar sha``, made once and shipped to every host."""
    C.check_sha(sha)
    try:
        data = git.archive(repo, sha)
    except git.GitError as exc:
        raise BadInput(f"git archive of revision {sha} failed: {exc}") from None
    return Archive(sha, data, hashlib.sha256(data).hexdigest())


def _status_command(config: Config, host: HostSettings) -> Command | None:
    if host.role == "app":
        return C.app_status(config, host)
    if host.role == "scripts" and config.scripts is not None:
        return C.scripts_status(config, host)
    return None


def _running(hosts: Sequence[HostSettings], status: Fanout, result: GroupResult
             ) -> tuple[GroupResult, dict[str, tuple[str, ...]]]:
    """The releases each host runs, from the answers of ``status`` (:func:`running_releases`)."""
    statuses = [_parsed(r) for r in result.results]
    asked = {h.name for h in status.hosts}
    running: dict[str, tuple[str, ...]] = {h.name: () for h in hosts if h.name not in asked}
    for parsed in statuses:
        if parsed.ok:
            running[parsed.result.host] = tuple(dict.fromkeys(
                svc.release for svc in parsed.services
                if svc.running and svc.release and C.is_sha(svc.release)))
    return GroupResult.of(s.result for s in statuses), running


def _status_commands(config: Config, hosts: Sequence[HostSettings]) -> Fanout:
    return Fanout(tuple(Exec(h, c) for h in hosts
                        if (c := _status_command(config, h)) is not None))


def running_releases(remote: Runner, config: Config, hosts: Sequence[HostSettings]
                     ) -> tuple[GroupResult, dict[str, tuple[str, ...]]]:
    """The releases each host's services run (by the role's status command), and the results.

    A host with no status command (an LB host) runs none. A host whose status
    failed or could not be parsed is a failed result and has no entry.
    """
    status = _status_commands(config, hosts)
    return _running(hosts, status, status.run(remote))


RUNNING = "<each release its status reports running>"
"""How a dry run shows the releases a prune protects that only the status answer names."""


@dataclass(frozen=True)
class Staging:
    """What :func:`stage` sends to each host, in order: receive (the archive on stdin),
    the role's status, prune. A host goes on only while its commands succeed.

    The prune keeps, besides ``current`` and the new release, every release the
    host's status reports running: those come from that answer, so ``prune`` builds
    the command from them, and :meth:`lines` shows them as :data:`RUNNING`.
    """

    sha: str
    receive: Fanout
    status: Fanout
    prune: Mapping[str, Callable[[Sequence[str]], Command]]

    def lines(self) -> list[str]:
        """Every host's commands in the order they run there (hosts in their order)."""
        status = {e.host.name: e for e in self.status.execs}
        out = []
        for got in self.receive.execs:
            name = got.host.name
            out.append(got.line())
            if name in status:
                out.append(status[name].line())
            out.append(f"{name}: {self.prune[name](()).render()}"
                       + (f" {RUNNING}" if name in status else ""))
        return out

    def run(self, remote: Runner, timeout_s: float | None = None) -> GroupResult:
        """Receive everywhere, then the status where that worked, then prune where both
        did. Per host the result is the first step that failed, else the receive
        result with the prune's output appended. ``timeout_s`` bounds each command."""
        hosts = self.receive.hosts
        received = self.receive.run(remote, timeout_s)
        ready = [h for h in hosts if received.by_host[h.name].ok]
        status_on = self.status.only(h.name for h in ready)
        status, running = _running(ready, status_on, status_on.run(remote, timeout_s))
        prunable = [h for h in ready if h.name in running]
        pruned = Fanout(tuple(Exec(h, self.prune[h.name](running[h.name]))
                              for h in prunable)).run(remote, timeout_s)
        out = []
        for host in hosts:
            got = received.by_host[host.name]
            step = status.by_host.get(host.name) if got.ok else None
            if step is not None and not step.ok:
                got = step
            elif got.ok:
                prune = pruned.by_host[host.name]
                got = prune if not prune.ok else dataclasses.replace(
                    got, stdout=got.stdout + prune.stdout,
                    duration_s=got.duration_s + prune.duration_s)
            out.append(got)
        return GroupResult.of(out)


def staging(config: Config, repo: str, sha: str, hosts: Sequence[HostSettings]) -> Staging:
    """The commands that ship revision ``sha`` of ``repo`` to ``hosts`` (see :func:`stage`).

    Makes the archive locally (``git archive``), once, for its bytes and checksum.
    """
    made = archive(repo, sha)
    app: AppSettings = config.need("app")

    def prune(host: HostSettings) -> Callable[[Sequence[str]], Command]:
        return lambda running: C.prune_releases(config.app_root(host), app.keep_releases,
                                                (sha, *running))
    return Staging(
        sha, Fanout.each(hosts, lambda h: C.receive_release(config.app_root(h), sha,
                                                             made.sha256), made.data),
        _status_commands(config, hosts), {h.name: prune(h) for h in hosts})


def stage(remote: Runner, config: Config, repo: str, sha: str,
          hosts: Sequence[HostSettings]) -> GroupResult:
    """Ship revision ``sha`` of ``repo`` to ``releases/<sha>`` on every host, then prune.

    The archive is made once, locally, and sent to all hosts in parallel;
    each host verifies its sha256 before unpacking (see
    :func:`~orchestrator.remote.commands.receive_release`). Hosts that
    received it then keep ``[app] keep_releases`` releases, never removing
    ``current``, ``sha`` or a release their status command reports running.
    Per host the result is the first step that failed (receive, status,
    prune), else the receive result with the prune's output appended.
    """
    return staging(config, repo, sha, hosts).run(remote)


def switch_commands(config: Config, sha: str, hosts: Sequence[HostSettings]) -> Fanout:
    """What :func:`switch` runs."""
    C.check_sha(sha)
    return Fanout.each(hosts, lambda host: C.switch_current(config.app_root(host), sha))


def switch(remote: Runner, config: Config, sha: str,
           hosts: Sequence[HostSettings]) -> GroupResult:
    """Point ``current`` at ``releases/<sha>`` on every host (refused where it is not staged)."""
    return switch_commands(config, sha, hosts).run(remote)


# --- services -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    """One service slot as a status command reports it (one JSON line).

    ``name`` is the line's ``name`` or ``app-<port>``; ``release`` the name of
    the release directory it was started from.
    """

    name: str
    port: int | None
    pid: int | None
    running: bool
    release: str | None


@dataclass(frozen=True)
class StatusResult:
    """A status command's result and the services it reported (none if it failed)."""

    result: HostResult
    services: tuple[ServiceState, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result.ok

    def on_port(self, port: int) -> ServiceState | None:
        """The app instance slot on ``port``, if the host reported one."""
        return next((s for s in self.services if s.port == port), None)


def parse_status(stdout: str) -> tuple[ServiceState, ...]:
    """The services of a status command's output: one JSON object per non-empty line.

    Each has ``running`` (bool) and optionally ``port``, ``name``, ``pid``,
    ``release``; anything else is a ValueError saying which line.
    """
    services = []
    for number, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"status line {number} is not JSON: {line[:120]!r}") from None
        if not isinstance(item, dict) or not isinstance(item.get("running"), bool):
            raise ValueError(f"status line {number} is not an object with a boolean "
                             f"'running': {line[:120]!r}")
        port, pid, release, name = (item.get(k) for k in ("port", "pid", "release", "name"))
        if not (_optional(port, int) and _optional(pid, int) and _optional(release, str)
                and _optional(name, str)):
            raise ValueError(f"status line {number} has a field of the wrong type: "
                             f"{line[:120]!r}")
        label = name or (f"app-{port}" if port is not None else f"service {number}")
        services.append(ServiceState(label, port, pid, item["running"], release))
    return tuple(services)


def _optional(value: Any, kind: type) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _parsed(result: HostResult) -> StatusResult:
    if not result.ok:
        return StatusResult(result)
    try:
        return StatusResult(result, parse_status(result.stdout))
    except ValueError as exc:
        return StatusResult(dataclasses.replace(
            result, status=FAILED, stderr_tail=f"unreadable status output: {exc}"))


def start_commands(config: Config, hosts: Sequence[HostSettings], release: str,
                   port: int) -> Fanout:
    """What :func:`start_instances` runs: ``[app] start`` of ``release`` on ``port``."""
    C.check_sha(release)
    C.check_port(port)
    return Fanout.each(hosts, lambda h: C.app_start(config, h, release, port))


def stop_commands(config: Config, hosts: Sequence[HostSettings], port: int) -> Fanout:
    """What :func:`stop_instances` runs: ``[app] stop`` of the instance on ``port``."""
    C.check_port(port)
    return Fanout.each(hosts, lambda h: C.app_stop(config, h, port))


def status_commands(config: Config, hosts: Sequence[HostSettings]) -> Fanout:
    """What :func:`instances_status` runs: ``[app] status``."""
    return Fanout.each(hosts, lambda h: C.app_status(config, h))


def start_instance(remote: Runner, config: Config, host: HostSettings, release: str,
                   port: int) -> HostResult:
    """Start release ``release`` (a sha) on ``port`` of ``host`` (``[app] start``)."""
    return start_commands(config, [host], release, port).run(remote).results[0]


def stop_instance(remote: Runner, config: Config, host: HostSettings, port: int) -> HostResult:
    """Stop the instance on ``port`` of ``host`` (``[app] stop``); ok if none ran."""
    return stop_commands(config, [host], port).run(remote).results[0]


def instance_status(remote: Runner, config: Config, host: HostSettings) -> StatusResult:
    """The app instance slots of ``host`` (``[app] status``), parsed."""
    return _parsed(status_commands(config, [host]).run(remote).results[0])


def start_instances(remote: Runner, config: Config, hosts: Sequence[HostSettings],
                    release: str, port: int) -> GroupResult:
    """:func:`start_instance` on every host in parallel."""
    return start_commands(config, hosts, release, port).run(remote)


def stop_instances(remote: Runner, config: Config, hosts: Sequence[HostSettings],
                   port: int) -> GroupResult:
    """:func:`stop_instance` on every host in parallel."""
    return stop_commands(config, hosts, port).run(remote)


def instances_status(remote: Runner, config: Config,
                     hosts: Sequence[HostSettings]) -> dict[str, StatusResult]:
    """:func:`instance_status` of every host in parallel, by host name."""
    return {r.host: _parsed(r) for r in status_commands(config, hosts).run(remote).results}


def _scripts_hosts(config: Config, hosts: Sequence[HostSettings] | None) -> Sequence[HostSettings]:
    return config.role("scripts") if hosts is None else hosts


def scripts_start_commands(config: Config, hosts: Sequence[HostSettings] | None = None,
                           release: str | None = None) -> Fanout:
    """What :func:`start_scripts` runs."""
    return Fanout.each(_scripts_hosts(config, hosts),
                       lambda h: C.scripts_start(config, h, release))


def scripts_stop_commands(config: Config,
                          hosts: Sequence[HostSettings] | None = None) -> Fanout:
    """What :func:`stop_scripts` runs."""
    return Fanout.each(_scripts_hosts(config, hosts), lambda h: C.scripts_stop(config, h))


def scripts_status_commands(config: Config,
                            hosts: Sequence[HostSettings] | None = None) -> Fanout:
    """What :func:`scripts_status` runs."""
    return Fanout.each(_scripts_hosts(config, hosts), lambda h: C.scripts_status(config, h))


def start_scripts(remote: Runner, config: Config, hosts: Sequence[HostSettings] | None = None,
                  release: str | None = None) -> GroupResult:
    """Start the fragile scripts (``[scripts] start``) on ``release`` (default ``current``).

    ``hosts`` defaults to the scripts hosts.
    """
    return scripts_start_commands(config, hosts, release).run(remote)


def stop_scripts(remote: Runner, config: Config,
                 hosts: Sequence[HostSettings] | None = None) -> GroupResult:
    """Stop the fragile scripts gracefully (``[scripts] stop``) on the scripts hosts."""
    return scripts_stop_commands(config, hosts).run(remote)


def scripts_status(remote: Runner, config: Config,
                   hosts: Sequence[HostSettings] | None = None) -> dict[str, StatusResult]:
    """The fragile scripts' state (``[scripts] status``) per scripts host, parsed."""
    result = scripts_status_commands(config, hosts).run(remote)
    return {r.host: _parsed(r) for r in result.results}


# --- disk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskResult:
    """Free disk per host: every command's result, MB free where known, and the minimum.

    A host with less than ``min_mb`` free is a failed result saying so, so
    :meth:`raise_for_failures` names it with the others.
    """

    group: GroupResult
    free_mb: dict[str, int]
    min_mb: int

    @property
    def ok(self) -> bool:
        return self.group.ok

    @property
    def results(self) -> tuple[HostResult, ...]:
        return self.group.results

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return self.group.failed

    @property
    def by_host(self) -> dict[str, HostResult]:
        return self.group.by_host

    @property
    def low(self) -> dict[str, int]:
        """Hosts that answered with less than ``min_mb`` free, and their MB."""
        return {h: mb for h, mb in self.free_mb.items() if mb < self.min_mb}

    def raise_for_failures(self, what: str) -> None:
        self.group.raise_for_failures(what)


def kept_releases(remote: Runner, config: Config,
                  hosts: Sequence[HostSettings]) -> dict[str, list[str]]:
    """Host name -> the releases it keeps, newest first; :class:`RemoteFailed` naming a host
    that cannot be read."""
    result = Fanout.each(hosts, lambda host: C.list_releases(config.app_root(host))).run(remote)
    result.raise_for_failures("listing the releases")
    return {r.host: r.stdout.split() for r in result.results}


def free_disk_commands(config: Config, hosts: Sequence[HostSettings]) -> Fanout:
    """What :func:`free_disk` runs."""
    return Fanout.each(hosts, lambda host: C.free_disk_mb(config.app_root(host)))


def free_disk(remote: Runner, config: Config, hosts: Sequence[HostSettings],
              min_mb: int | None = None) -> DiskResult:
    """MB free on each host's app root file system; below ``min_mb`` (default
    ``[app] min_free_mb``) or unreadable is a failed result."""
    limit: int = config.need("app").min_free_mb if min_mb is None else min_mb
    result = free_disk_commands(config, hosts).run(remote)
    free: dict[str, int] = {}
    out = []
    for r in result.results:
        if r.ok:
            text = r.stdout.strip()
            if not text.isdigit():
                r = dataclasses.replace(r, status=FAILED,
                                        stderr_tail=f"df printed no free space: {text!r}")
            else:
                free[r.host] = int(text)
                if free[r.host] < limit:
                    r = dataclasses.replace(
                        r, status=FAILED, stderr_tail=f"only {free[r.host]} MB free on "
                        f"{_root_of(config, hosts, r.host)}, {limit} MB needed")
        out.append(r)
    return DiskResult(GroupResult.of(out), free, limit)


def _root_of(config: Config, hosts: Sequence[HostSettings], name: str) -> str:
    return next(config.app_root(h) for h in hosts if h.name == name)

