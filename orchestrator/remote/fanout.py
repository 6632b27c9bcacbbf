"""Commands for hosts as values: built first, then run over SSH or printed for ``--dry-run``.

pyinfra's model: an operation only produces its per-host commands; nothing
runs while they are built. A :class:`Fanout` is one command per host, run on
every host in parallel (at most ``[ssh] parallelism`` at once) by
:meth:`Fanout.run`, and shown, one ``host: command`` line each, by
:meth:`Fanout.lines`. Both read the same :class:`Exec` values, so what a dry
run prints is what a run sends (under the host's ``timeout``, see
:meth:`orchestrator.remote.ssh.Remote.wrapped`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.config import HostSettings
from orchestrator.remote.commands import Command
from orchestrator.remote.results import GroupResult, HostResult


class Runner(Protocol):
    """What running commands needs of :class:`~orchestrator.remote.ssh.Remote` (tests fake it)."""

    def run(self, host: HostSettings, command: Command, *, timeout_s: float | None = None,
            stdin: bytes | None = None) -> HostResult: ...

    def run_all(self, hosts: Sequence[HostSettings],
                command: Command | Callable[[HostSettings], Command], *,
                timeout_s: float | None = None,
                stdin: bytes | Callable[[HostSettings], bytes] | None = None) -> GroupResult: ...


@dataclass(frozen=True)
class Exec:
    """One command for one host, and the bytes it reads on stdin (if any)."""

    host: HostSettings
    command: Command
    stdin: bytes | None = None

    def line(self) -> str:
        """``host: command``, the command as the host's shell receives it."""
        return f"{self.host.name}: {self.command.render()}"


@dataclass(frozen=True)
class Fanout:
    """One command per host (each host at most once), run on all of them in parallel."""

    execs: tuple[Exec, ...]

    @classmethod
    def each(cls, hosts: Iterable[HostSettings], build: Callable[[HostSettings], Command],
             stdin: bytes | None = None) -> Fanout:
        """``build(host)`` for every host of ``hosts``, in their order."""
        return cls(tuple(Exec(h, build(h), stdin) for h in hosts))

    @property
    def hosts(self) -> tuple[HostSettings, ...]:
        return tuple(e.host for e in self.execs)

    def only(self, names: Iterable[str]) -> Fanout:
        """The same commands, on the hosts named in ``names`` only."""
        keep = set(names)
        return Fanout(tuple(e for e in self.execs if e.host.name in keep))

    def lines(self) -> list[str]:
        """What :meth:`run` sends, one ``host: command`` line each, in host order."""
        return [e.line() for e in self.execs]

    def run(self, remote: Runner, timeout_s: float | None = None) -> GroupResult:
        """Run every command on its host (in parallel); every host's result, in order.

        A single command runs straight on its host, without the thread pool.
        ``timeout_s`` bounds each command (default: ``[ssh] command_timeout_s``).
        """
        if not self.execs:
            return GroupResult()
        if len(self.execs) == 1:
            one = self.execs[0]
            return GroupResult.of([remote.run(one.host, one.command, stdin=one.stdin,
                                              timeout_s=timeout_s)])
        by_host = {e.host.name: e for e in self.execs}
        first = self.execs[0].stdin
        stdin: bytes | Callable[[HostSettings], bytes] | None = first
        if any(e.stdin is not first for e in self.execs):
            stdin = lambda h: by_host[h.name].stdin or b""  # noqa: E731
        return remote.run_all(self.hosts, lambda h: by_host[h.name].command, stdin=stdin,
                              timeout_s=timeout_s)
