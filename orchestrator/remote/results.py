"""Per-host outcomes as values: every host's result is kept, failures say which and why.

Like Fabric's ``GroupResult``: a group operation returns all results, and
:meth:`GroupResult.raise_for_failures` raises :class:`RemoteFailed` carrying
them, with each failed host's command, exit code and last lines of stderr.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import FailedBeforeCommit, Refused

OK, FAILED, TIMEOUT, UNREACHABLE = "ok", "failed", "timeout", "unreachable"
STDERR_LINES = 8


@dataclass(frozen=True)
class HostResult:
    """One command on one host: status ``ok``, ``failed``, ``timeout`` or ``unreachable``."""

    host: str
    status: str
    exit_code: int | None
    stdout: str
    stderr_tail: str
    duration_s: float
    command: str

    @property
    def ok(self) -> bool:
        return self.status == OK

    def describe(self) -> str:
        """One line: host, status, exit code and the tail of stderr."""
        code = "" if self.exit_code is None else f" (exit {self.exit_code})"
        tail = " | ".join(self.stderr_tail.strip().splitlines()[-3:])
        return f"{self.host}: {self.status}{code}{': ' + tail if tail else ''}"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "status": self.status, "exit_code": self.exit_code,
                "stderr_tail": self.stderr_tail, "duration_s": round(self.duration_s, 6),
                "command": self.command}


def tail(text: str, lines: int = STDERR_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class GroupResult:
    """The results of one operation on many hosts, in host order."""

    results: tuple[HostResult, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, results: Iterable[HostResult]) -> GroupResult:
        return cls(tuple(results))

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def by_host(self) -> dict[str, HostResult]:
        return {r.host: r for r in self.results}

    def raise_for_failures(self, what: str) -> None:
        """Raise RemoteFailed naming each failed host, keeping every result."""
        if not self.ok:
            raise RemoteFailed(what, self)


class RemoteFailed(FailedBeforeCommit):
    """An operation failed on some hosts; ``result`` holds every host's outcome."""

    def __init__(self, what: str, result: GroupResult) -> None:
        self.what = what
        self.result = result
        failed = "; ".join(r.describe() for r in result.failed)
        ok = len(result.results) - len(result.failed)
        super().__init__(f"{what} failed on {len(result.failed)} of {len(result.results)} "
                         f"hosts ({ok} ok): {failed}")


class HostKeyRejected(Refused):
    """A host's key is unknown or differs from known_hosts: refused, naming the fingerprint."""

    def __init__(self, host: str, address: str, fingerprint: str, problem: str) -> None:
        self.host = host
        self.fingerprint = fingerprint
        super().__init__(f"host {host} ({address}) {problem}: key {fingerprint}; refused "
                         "(check the host and update known_hosts if the change is expected)")
