"""Steps as data: an action describes what it does once, as a :data:`Script`; a run
executes that description (:func:`execute`) and ``--dry-run`` prints it (:func:`script_lines`).

pyinfra's model: building a script runs nothing. A script is a tuple of nodes:
commands on hosts (:class:`Ssh`, holding the remote layer's own command values),
lines on haproxy's admin channel (:class:`SetState`, :class:`Swap`,
:class:`Drained`, :class:`ReadSlots`), health checks (:class:`Health`), database
work (:class:`Sql`), and the decisions the run takes on answers (:class:`If` with
a :class:`When`, :class:`Pick`, :class:`Fail`). Each decision carries the words a
dry run shows for it and the test the run applies, side by side in one object, so
the fallback a run takes is the fallback a dry run shows. :class:`Effect` changes
the run's own state (the journal, the window's instants) and is never shown.

Answers of earlier nodes are kept by ``key`` in the :data:`Answers` a decision reads.

Facts a script is built from (which slot of each host serves) are read by a
:class:`ReadSlots` node that an action puts in its ``reads``; executing it reads
haproxy, rendering it takes the slots a dry run read beforehand (its
:class:`Preview`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import HostSettings
from orchestrator.errors import FailedBeforeCommit, FastdowntimeError
from orchestrator.remote import haproxy_wire as wire
from orchestrator.remote import health
from orchestrator.remote import operations as ops
from orchestrator.remote.fanout import Fanout
from orchestrator.runner.context import Run

Answers = dict[str, Any]
"""Answers of the nodes run so far, by their ``key``."""
INDENT = "  "


@dataclass(frozen=True)
class When:
    """A decision the run takes on an answer or on its own state: ``label`` is what a dry
    run shows (``if <label>:``), ``test`` what the run asks."""

    label: str
    test: Callable[[Run, Answers], bool]


@dataclass(frozen=True)
class HostSkip:
    """Hosts a group of commands leaves out, decided when it runs (``label`` says which)."""

    label: str
    test: Callable[[Run, Answers, str], bool]


@dataclass(frozen=True)
class Ssh:
    """Commands on hosts over SSH, in parallel (one per host): a remote layer value.

    With ``fails`` a failed host fails the step (``raise_for_failures(fails)``);
    without it the results are only kept (``key``) for the decisions that follow.
    """

    commands: Fanout | ops.Staging
    fails: str | None = None
    key: str | None = None
    skip: HostSkip | None = None


@dataclass(frozen=True)
class Pick:
    """One server of a :class:`SetState`: ``server``, or ``instead`` (None: left out) when
    ``when`` holds."""

    server: str
    instead: str | None = None
    when: When | None = None


@dataclass(frozen=True)
class SetState:
    """The picked servers to ``state`` in haproxy, in one round trip (none picked: nothing);
    the servers it sent under ``key``."""

    picks: tuple[Pick, ...]
    state: str
    key: str | None = None


@dataclass(frozen=True)
class Swap:
    """``(old, new)`` pairs in one round trip: every new server ready, then every old one
    drains (:meth:`~orchestrator.remote.haproxy.Haproxy.swap`)."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Drained:
    """Poll haproxy's stats until ``servers`` have no session left; at most ``timeout_s``.
    A :class:`Pick` among them is decided when it runs (None: not waited for)."""

    servers: tuple[str | Pick, ...]
    timeout_s: float
    key: str | None = None


@dataclass(frozen=True)
class ReadSlots:
    """Read each app host's serving and idle slot from haproxy into ``run.slots``."""


@dataclass(frozen=True)
class Health:
    """Ask each ``(host, port, revision)`` instance's health URL, all at once, until it
    reports its revision or ``timeout_s`` passes; the results by host under ``key``."""

    targets: tuple[tuple[HostSettings, int, str], ...]
    timeout_s: float
    key: str


@dataclass(frozen=True)
class Sql:
    """Database work: ``run`` does it; ``shown(run)`` gives the statements it sends, as the
    database layer renders them (asked by a dry run only: a window does not pay for it)."""

    shown: Callable[[Run], Sequence[str]]
    run: Callable[[Run, Answers], Any]
    key: str | None = None


@dataclass(frozen=True)
class If:
    """``then`` runs only when ``when`` holds, else ``otherwise``."""

    when: When
    then: Script
    otherwise: Script = ()


@dataclass(frozen=True)
class Fail:
    """The step fails: ``error(message(run, answers))``; a dry run shows ``shown``."""

    shown: str
    message: Callable[[Run, Answers], str]
    error: Callable[[str], Exception] = FailedBeforeCommit


@dataclass(frozen=True)
class Effect:
    """A change to the run's own state or journal; nothing leaves the orchestrator."""

    apply: Callable[[Run, Answers], object]
    """Called for its effect; what it returns is ignored."""


@dataclass(frozen=True)
class Note:
    """Words for the reader of a dry run; the run does nothing."""

    text: str


@dataclass(frozen=True)
class Finally:
    """``body``, then ``then`` whatever happened in it."""

    body: Script
    then: Script


@dataclass(frozen=True)
class Wrap:
    """``body``, whose failure becomes ``error(failure)`` (``note`` says what that means)."""

    body: Script
    error: Callable[[FastdowntimeError], Exception]
    note: str


@dataclass(frozen=True)
class Background:
    """``body`` on a worker thread while the script goes on; the step waits for it at its end."""

    body: Script
    note: str = "in the background, while what follows goes on"


Node = (Ssh | SetState | Swap | Drained | ReadSlots | Health | Sql | If | Fail | Effect | Note
        | Finally | Wrap | Background)
Script = tuple[Node, ...]


@dataclass
class Preview:
    """What a dry run knows in place of a run's reads: the slots haproxy reported."""

    slots: dict[str, tuple[int, int]] = field(default_factory=dict)


# --- the run ------------------------------------------------------------------------------


def execute(script: Script, run: Run) -> Answers:
    """Run every node of ``script`` in order; return the answers kept by key.

    Background work is waited for before this returns (or raises).
    """
    execution = _Execution(run)
    try:
        execution.all(script)
    finally:
        execution.join()
    return execution.answers


class _Execution:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.answers: Answers = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def all(self, script: Script) -> None:
        for node in script:
            self.one(node)

    def one(self, node: Node) -> None:  # noqa: C901 - one branch per kind of node
        run, answers = self.run, self.answers
        if isinstance(node, Ssh):
            commands = node.commands
            if node.skip is not None and isinstance(commands, Fanout):
                skip = node.skip
                commands = commands.only(h.name for h in commands.hosts
                                         if not skip.test(run, answers, h.name))
            result = commands.run(run.remote, _bounded(run, None))
            if node.key is not None:
                answers[node.key] = result
            if node.fails is not None:
                result.raise_for_failures(node.fails)
        elif isinstance(node, SetState):
            servers = [s for s in (_picked(p, run, answers) for p in node.picks) if s]
            if servers:
                run.haproxy.set_state(servers, node.state)
            if node.key is not None:
                answers[node.key] = servers
        elif isinstance(node, Swap):
            run.haproxy.swap(list(node.pairs))
        elif isinstance(node, Drained):
            timeout = _bounded(run, node.timeout_s)
            servers = [s for s in (p if isinstance(p, str) else _picked(p, run, answers)
                                   for p in node.servers) if s]
            waited = run.haproxy.wait_drained(
                servers, node.timeout_s if timeout is None else timeout) if servers else 0.0
            if node.key is not None:
                answers[node.key] = waited
        elif isinstance(node, ReadSlots):
            from orchestrator.runner.actions.instances import read_slots

            run.slots = read_slots(run)
        elif isinstance(node, Health):
            timeout = _bounded(run, node.timeout_s)
            answers[node.key] = check_health(run, node.targets,
                                             node.timeout_s if timeout is None else timeout)
        elif isinstance(node, Sql):
            got = node.run(run, answers)
            if node.key is not None:
                answers[node.key] = got
        elif isinstance(node, If):
            self.all(node.then if node.when.test(run, answers) else node.otherwise)
        elif isinstance(node, Fail):
            raise node.error(node.message(run, answers))
        elif isinstance(node, Effect):
            node.apply(run, answers)
        elif isinstance(node, Finally):
            try:
                self.all(node.body)
            finally:
                self.all(node.then)
        elif isinstance(node, Wrap):
            try:
                self.all(node.body)
            except FastdowntimeError as exc:
                raise node.error(exc) from exc
        elif isinstance(node, Background):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
            self._pending.append(self._pool.submit(self.all, node.body))
        elif not isinstance(node, Note):
            raise TypeError(f"not a script node: {node!r}")

    def join(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def _picked(pick: Pick, run: Run, answers: Answers) -> str | None:
    if pick.when is not None and pick.when.test(run, answers):
        return pick.instead
    return pick.server


def check_health(run: Run, targets: tuple[tuple[HostSettings, int, str], ...],
                 timeout_s: float) -> dict[str, health.HealthResult]:
    """Every target's health check at once (one thread each); the results by host name."""
    if not targets:
        return {}

    def one(target: tuple[HostSettings, int, str]) -> health.HealthResult:
        host, port, revision = target
        return ops.wait_healthy(run.config, host, port, revision, timeout_s)
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return {r.host: r for r in pool.map(one, targets)}


# --- the dry run --------------------------------------------------------------------------


def script_lines(script: Script, run: Run, preview: Preview | None = None) -> list[str]:
    """The lines ``--dry-run`` prints for ``script``: ``host: command`` for SSH, ``lb: line``
    for haproxy's admin channel, ``check: ...`` for a health check, the database's
    statements, ``if <decision>:`` above what runs only then (indented), ``-- ...`` notes.
    """
    out: list[str] = []
    for node in script:
        out += _lines(node, run, preview)
    return out


def _block(head: str, body: list[str]) -> list[str]:
    return [head, *(INDENT + line for line in body)] if body else []


def _lines(node: Node, run: Run, preview: Preview | None) -> list[str]:  # noqa: C901
    backend = run.config.need("lb").backend if run.config.lb is not None else ""
    if isinstance(node, Ssh):
        lines = node.commands.lines()
        if node.skip is not None and lines:
            lines.append(f"-- not on a host where {node.skip.label}")
        return lines
    if isinstance(node, SetState):
        default = [p.server for p in node.picks]
        lines = [f"lb: {line}" for line in wire.set_state_request(backend, default,
                                                                   node.state).lines()]
        for pick in node.picks:
            if pick.when is not None:
                instead = (f"{pick.instead} instead of {pick.server}" if pick.instead
                           else f"{pick.server} left out")
                lines.append(f"if {pick.when.label}: {instead}")
        return lines
    if isinstance(node, Swap):
        lines = [f"lb: {line}" for line in wire.swap_request(backend, node.pairs).lines()]
        for old, new in node.pairs:
            lines += _block(f"if haproxy refuses {new}:", [
                f"lb: {line}" for line in wire.set_state_request(backend, [old], "ready").lines()])
        return lines
    if isinstance(node, Drained):
        from orchestrator.remote.haproxy import POLL_S

        names = [p if isinstance(p, str) else p.server for p in node.servers]
        return [*(f"lb: {line}" for line in wire.stats_request(backend).lines()),
                f"-- again every {POLL_S * 1000:g} ms until {', '.join(names)} have no "
                f"session or queued request (at most {node.timeout_s:g} s, else the step fails)",
                *(f"-- not {p.server} if {p.when.label}" for p in node.servers
                  if not isinstance(p, str) and p.when is not None)]
    if isinstance(node, ReadSlots):
        if preview is not None:
            run.slots = dict(preview.slots)
        return [*(f"lb: {line}" for line in wire.stats_request(backend).lines()),
                "-- which slot of each app host serves (ready) and which is idle"]
    if isinstance(node, Health):
        return [f"check: {host.name} port {port}: GET {ops.health_url(run.config, host, port)} "
                f"until it answers 200 with revision {revision[:12]} (within "
                f"{node.timeout_s:g} s)" for host, port, revision in node.targets]
    if isinstance(node, Sql):
        return list(node.shown(run))
    if isinstance(node, If):
        return [*_block(f"if {node.when.label}:", script_lines(node.then, run, preview)),
                *_block("otherwise:", script_lines(node.otherwise, run, preview))]
    if isinstance(node, Fail):
        return [f"fail: {node.shown}"]
    if isinstance(node, Note):
        return [f"-- {node.text}"]
    if isinstance(node, Finally):
        body, then = script_lines(node.body, run, preview), script_lines(node.then, run, preview)
        return [*body, *_block("then, whatever happened:", then)] if body else then
    if isinstance(node, Wrap):
        return [f"-- {node.note}", *script_lines(node.body, run, preview)]
    if isinstance(node, Background):
        return _block(f"{node.note}:", script_lines(node.body, run, preview))
    return []


def _bounded(run: Run, timeout_s: float | None) -> float | None:
    """The watchdog: inside the window and before COMMIT, no wait outlives what is left of
    ``[window] budget_s`` (a drain or a stop that overran it kept users out for longer);
    ``timeout_s`` (None: the command default) shortened to it. None outside the window."""
    if (run.window_deadline is None or run.window_opened is None
            or run.window_closed is not None or run.committed):
        return timeout_s
    left = max(0.05, run.window_deadline - run.clock())
    return left if timeout_s is None else min(timeout_s, left)


__all__ = ["Answers", "Background", "Drained", "Effect", "Fail", "Finally", "Health",
           "HostSkip", "If", "Node", "Note", "Pick", "Preview", "ReadSlots", "Script",
           "SetState", "Sql", "Ssh", "Swap", "When", "Wrap", "check_health", "execute",
           "script_lines"]
