"""Host operations over :class:`~orchestrator.remote.ssh.Remote`: code staging, services, health.

Each operation builds its per-host commands with one function (from
:mod:`orchestrator.remote.commands`) that both runs them and renders them for
``deploy --dry-run`` (the ``render_*`` functions: host name -> the commands,
as :meth:`Command.render` gives them, in the order they run). Outcomes are
values: group operations return every host's :class:`HostResult`; callers
decide with ``raise_for_failures``. Only reading the deployed revision raises
when a host fails, since nothing can be planned without it. Bad input (a sha,
a port, a template) raises :class:`BadInput` before any host is touched.

Health is checked from the orchestrator over HTTP (``[app] health_url``),
polled with a deadline on an injectable clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.config import AppSettings, Config, HostSettings
from orchestrator.errors import BadInput, Refused
from orchestrator.remote import commands as C
from orchestrator.remote.commands import Command
from orchestrator.remote.results import FAILED, GroupResult, HostResult

POLL_S = 0.02
"""Pause between two health requests to an instance that is not healthy yet."""
REQUEST_TIMEOUT_S = 1.0
"""Longest wait for one health answer (less when the deadline is nearer)."""
ANSWER_CHARS = 300
"""How much of a health answer a failure quotes."""

Rendered = dict[str, tuple[str, ...]]
"""Host name -> the exact commands an operation would run there, in order."""


class Runner(Protocol):
    """What operations need of :class:`~orchestrator.remote.ssh.Remote` (tests pass a fake)."""

    def run(self, host: HostSettings, command: Command, *, timeout_s: float | None = None,
            stdin: bytes | None = None) -> HostResult: ...

    def run_all(self, hosts: Sequence[HostSettings],
                command: Command | Callable[[HostSettings], Command], *,
                timeout_s: float | None = None,
                stdin: bytes | Callable[[HostSettings], bytes] | None = None) -> GroupResult: ...


def _render(hosts: Sequence[HostSettings],
            *builders: Callable[[HostSettings], Command]) -> Rendered:
    return {h.name: tuple(build(h).render() for build in builders) for h in hosts}


# --- the deployed revision ----------------------------------------------------------------


class RevisionsDisagree(Refused):
    """The app hosts run different revisions; ``revisions`` maps each host to its sha."""

    def __init__(self, revisions: Mapping[str, str]) -> None:
        self.revisions = dict(revisions)
        listed = ", ".join(f"{host} {sha}" for host, sha in self.revisions.items())
        super().__init__(f"the app hosts do not agree on the deployed revision ({listed}); "
                         "switch them to one revision before deploying")


def _read_revision(config: Config) -> Callable[[HostSettings], Command]:
    return lambda host: C.read_revision(config.app_root(host))


def deployed_revisions(remote: Runner, config: Config,
                       hosts: Sequence[HostSettings]) -> dict[str, str]:
    """Host name -> the sha its ``current`` link points at, for every host in ``hosts``.

    A host that cannot be read (unreachable, no ``current``) raises
    :class:`RemoteFailed` naming it; a ``current`` that is not a release named
    by a sha is :class:`Refused`.
    """
    result = remote.run_all(hosts, _read_revision(config))
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


def render_deployed_revisions(config: Config, hosts: Sequence[HostSettings]) -> Rendered:
    """The commands :func:`deployed_revisions` runs."""
    return _render(hosts, _read_revision(config))


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
        made = subprocess.run(["git", "-C", repo, "archive", "--format=tar", sha],
                              capture_output=True, check=False)
    except OSError as exc:
        raise BadInput(f"cannot run git archive in {repo}: {exc}") from None
    if made.returncode != 0:
        why = made.stderr.decode(errors="replace").strip()
        raise BadInput(f"git archive of revision {sha} in {repo} failed: {why}")
    return Archive(sha, made.stdout, hashlib.sha256(made.stdout).hexdigest())


def _status_command(config: Config, host: HostSettings) -> Command | None:
    if host.role == "app":
        return C.app_status(config, host)
    if host.role == "scripts" and config.scripts is not None:
        return C.scripts_status(config, host)
    return None


def running_releases(remote: Runner, config: Config, hosts: Sequence[HostSettings]
                     ) -> tuple[GroupResult, dict[str, tuple[str, ...]]]:
    """The releases each host's services run (by the role's status command), and the results.

    A host with no status command (an LB host) runs none. A host whose status
    failed or could not be parsed is a failed result and has no entry.
    """
    commands = {h.name: c for h in hosts if (c := _status_command(config, h)) is not None}
    result = remote.run_all([h for h in hosts if h.name in commands],
                            lambda h: commands[h.name])
    statuses = [_parsed(r) for r in result.results]
    running: dict[str, tuple[str, ...]] = {h.name: () for h in hosts if h.name not in commands}
    for status in statuses:
        if status.ok:
            running[status.result.host] = tuple(dict.fromkeys(
                svc.release for svc in status.services
                if svc.running and svc.release and C.is_sha(svc.release)))
    return GroupResult.of(s.result for s in statuses), running


def _stage_commands(config: Config, archive_sha256: str, sha: str, host: HostSettings,
                    protect: Sequence[str]) -> tuple[Command, Command]:
    app: AppSettings = config.need("app")
    root = config.app_root(host)
    return (C.receive_release(root, sha, archive_sha256),
            C.prune_releases(root, app.keep_releases, (sha, *protect)))


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
    made = archive(repo, sha)
    received = remote.run_all(
        hosts, lambda h: _stage_commands(config, made.sha256, sha, h, ())[0], stdin=made.data)
    ready = [h for h in hosts if received.by_host[h.name].ok]
    status, running = running_releases(remote, config, ready)
    prunable = [h for h in ready if h.name in running]
    pruned = remote.run_all(
        prunable, lambda h: _stage_commands(config, made.sha256, sha, h, running[h.name])[1])
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


def render_stage(config: Config, repo: str, sha: str, hosts: Sequence[HostSettings],
                 running: Mapping[str, Sequence[str]] | None = None) -> Rendered:
    """The commands :func:`stage` runs: receive (the archive on stdin), status, prune.

    Makes the archive locally for its checksum. ``running`` (host -> shas, as
    :func:`running_releases` reports) fills the prune's protected releases;
    without it the prune is shown protecting only ``sha`` (and ``current``).
    """
    made = archive(repo, sha)
    running = running or {}
    out: Rendered = {}
    for host in hosts:
        receive, prune = _stage_commands(config, made.sha256, sha, host,
                                         tuple(running.get(host.name, ())))
        status = _status_command(config, host)
        out[host.name] = tuple(c.render() for c in (receive, status, prune) if c is not None)
    return out


def _switch(config: Config, sha: str) -> Callable[[HostSettings], Command]:
    C.check_sha(sha)
    return lambda host: C.switch_current(config.app_root(host), sha)


def switch(remote: Runner, config: Config, sha: str,
           hosts: Sequence[HostSettings]) -> GroupResult:
    """Point ``current`` at ``releases/<sha>`` on every host (refused where it is not staged)."""
    return remote.run_all(hosts, _switch(config, sha))


def render_switch(config: Config, sha: str, hosts: Sequence[HostSettings]) -> Rendered:
    """The commands :func:`switch` runs."""
    return _render(hosts, _switch(config, sha))


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


def start_instance(remote: Runner, config: Config, host: HostSettings, release: str,
                   port: int) -> HostResult:
    """Start release ``release`` (a sha) on ``port`` of ``host`` (``[app] start``)."""
    return remote.run(host, C.app_start(config, host, release, port))


def stop_instance(remote: Runner, config: Config, host: HostSettings, port: int) -> HostResult:
    """Stop the instance on ``port`` of ``host`` (``[app] stop``); ok if none ran."""
    return remote.run(host, C.app_stop(config, host, port))


def instance_status(remote: Runner, config: Config, host: HostSettings) -> StatusResult:
    """The app instance slots of ``host`` (``[app] status``), parsed."""
    return _parsed(remote.run(host, C.app_status(config, host)))


def start_instances(remote: Runner, config: Config, hosts: Sequence[HostSettings],
                    release: str, port: int) -> GroupResult:
    """:func:`start_instance` on every host in parallel."""
    C.check_sha(release)
    C.check_port(port)
    return remote.run_all(hosts, lambda h: C.app_start(config, h, release, port))


def stop_instances(remote: Runner, config: Config, hosts: Sequence[HostSettings],
                   port: int) -> GroupResult:
    """:func:`stop_instance` on every host in parallel."""
    C.check_port(port)
    return remote.run_all(hosts, lambda h: C.app_stop(config, h, port))


def instances_status(remote: Runner, config: Config,
                     hosts: Sequence[HostSettings]) -> dict[str, StatusResult]:
    """:func:`instance_status` of every host in parallel, by host name."""
    result = remote.run_all(hosts, lambda h: C.app_status(config, h))
    return {r.host: _parsed(r) for r in result.results}


def render_start_instances(config: Config, hosts: Sequence[HostSettings], release: str,
                           port: int) -> Rendered:
    """The commands :func:`start_instance` / :func:`start_instances` run."""
    return _render(hosts, lambda h: C.app_start(config, h, release, port))


def render_stop_instances(config: Config, hosts: Sequence[HostSettings],
                          port: int) -> Rendered:
    """The commands :func:`stop_instance` / :func:`stop_instances` run."""
    return _render(hosts, lambda h: C.app_stop(config, h, port))


def render_instance_status(config: Config, hosts: Sequence[HostSettings]) -> Rendered:
    """The commands :func:`instance_status` / :func:`instances_status` run."""
    return _render(hosts, lambda h: C.app_status(config, h))


def _scripts_hosts(config: Config, hosts: Sequence[HostSettings] | None) -> Sequence[HostSettings]:
    return config.role("scripts") if hosts is None else hosts


def start_scripts(remote: Runner, config: Config, hosts: Sequence[HostSettings] | None = None,
                  release: str | None = None) -> GroupResult:
    """Start the fragile scripts (``[scripts] start``) on ``release`` (default ``current``).

    ``hosts`` defaults to the scripts hosts.
    """
    return remote.run_all(_scripts_hosts(config, hosts),
                          lambda h: C.scripts_start(config, h, release))


def stop_scripts(remote: Runner, config: Config,
                 hosts: Sequence[HostSettings] | None = None) -> GroupResult:
    """Stop the fragile scripts gracefully (``[scripts] stop``) on the scripts hosts."""
    return remote.run_all(_scripts_hosts(config, hosts), lambda h: C.scripts_stop(config, h))


def scripts_status(remote: Runner, config: Config,
                   hosts: Sequence[HostSettings] | None = None) -> dict[str, StatusResult]:
    """The fragile scripts' state (``[scripts] status``) per scripts host, parsed."""
    result = remote.run_all(_scripts_hosts(config, hosts),
                            lambda h: C.scripts_status(config, h))
    return {r.host: _parsed(r) for r in result.results}


def render_start_scripts(config: Config, hosts: Sequence[HostSettings] | None = None,
                         release: str | None = None) -> Rendered:
    """The commands :func:`start_scripts` runs."""
    return _render(_scripts_hosts(config, hosts), lambda h: C.scripts_start(config, h, release))


def render_stop_scripts(config: Config,
                        hosts: Sequence[HostSettings] | None = None) -> Rendered:
    """The commands :func:`stop_scripts` runs."""
    return _render(_scripts_hosts(config, hosts), lambda h: C.scripts_stop(config, h))


def render_scripts_status(config: Config,
                          hosts: Sequence[HostSettings] | None = None) -> Rendered:
    """The commands :func:`scripts_status` runs."""
    return _render(_scripts_hosts(config, hosts), lambda h: C.scripts_status(config, h))


# --- health -------------------------------------------------------------------------------


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


def _free_disk(config: Config) -> Callable[[HostSettings], Command]:
    return lambda host: C.free_disk_mb(config.app_root(host))


def free_disk(remote: Runner, config: Config, hosts: Sequence[HostSettings],
              min_mb: int | None = None) -> DiskResult:
    """MB free on each host's app root file system; below ``min_mb`` (default
    ``[app] min_free_mb``) or unreadable is a failed result."""
    limit: int = config.need("app").min_free_mb if min_mb is None else min_mb
    result = remote.run_all(hosts, _free_disk(config))
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


def render_free_disk(config: Config, hosts: Sequence[HostSettings]) -> Rendered:
    """The commands :func:`free_disk` runs."""
    return _render(hosts, _free_disk(config))
