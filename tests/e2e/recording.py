"""The CLI with every command it sends to a host recorded: ``python -m tests.e2e.recording
OUT ARGS...`` runs ``fastdowntime ARGS...`` and appends one JSON line to OUT per command.

Recorded at the SSH layer: each :meth:`Remote.run` (the command as the host's shell gets
it, before the ``timeout`` wrapper), each :meth:`Remote.open_process` (haproxy's admin
channel) and every line written on such a channel. Each record names the step running
when it was sent (``stage/action``, or ``undo stage/action``; null outside the steps).
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from orchestrator import cli
from orchestrator.config import HostSettings
from orchestrator.remote.commands import Command
from orchestrator.remote.results import HostResult
from orchestrator.remote.ssh import Remote
from orchestrator.runner.actions.base import Action
from orchestrator.runner.context import Run


class Recorder:
    """Appends records to ``out``, each tagged with the step running now."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step: str | None = None
        self._lock = threading.Lock()

    def __call__(self, **fields: Any) -> None:
        with self._lock:
            self.out.write(json.dumps({"step": self.step, **fields}) + "\n")
            self.out.flush()


class RecordingChannel:
    """A paramiko channel whose writes are recorded, one record per line (the first write
    of a channel is its session setup)."""

    def __init__(self, channel: Any, host: str, record: Recorder) -> None:
        self._channel = channel
        self._host = host
        self._record = record
        self._writes = 0

    def sendall(self, data: bytes) -> None:
        kind = "lb-setup" if self._writes == 0 else "lb"
        self._writes += 1
        for line in data.decode().splitlines():
            self._record(kind=kind, host=self._host, command=line)
        self._channel.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def install(record: Recorder) -> None:
    """Wrap Remote's exec calls and the actions' ``do``/``undo`` for ``record``."""
    run, open_process = Remote.run, Remote.open_process
    do, undo = Action.do, Action.undo

    def recorded_run(self: Remote, host: HostSettings, command: Command, *,
                     timeout_s: float | None = None, stdin: bytes | None = None) -> HostResult:
        record(kind="ssh", host=host.name, command=command.render())
        return run(self, host, command, timeout_s=timeout_s, stdin=stdin)

    def recorded_open(self: Remote, host: HostSettings, argv: Sequence[str]) -> Any:
        record(kind="open", host=host.name, command=shlex.join(argv))
        return RecordingChannel(open_process(self, host, argv), host.name, record)

    def recorded_do(self: Action, run: Run) -> dict[str, Any]:
        record.step = f"{run.stage}/{self.name}"
        try:
            return do(self, run)
        finally:
            record.step = None

    def recorded_undo(self: Action, run: Run) -> None:
        record.step = f"undo {run.stage}/{self.name}"
        try:
            undo(self, run)
        finally:
            record.step = None

    Remote.run = recorded_run  # type: ignore[method-assign]
    Remote.open_process = recorded_open  # type: ignore[method-assign]
    Action.do = recorded_do  # type: ignore[method-assign]
    Action.undo = recorded_undo  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> int:
    """Record into ``argv[0]`` while the CLI runs ``argv[1:]``; the CLI's exit code."""
    with open(argv[0], "a") as out:
        install(Recorder(out))
        return cli.main(list(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
