"""The CLI with the timing of a fault under a test's control: ``python -m tests.e2e.faulty
SPEC ARGS...`` runs ``fastdowntime ARGS...`` with the hooks SPEC (a JSON file) asks for.

Like :mod:`tests.e2e.recording` this wraps the orchestrator from outside, in the test's
own process tree; nothing of it is in the product. SPEC's keys (each optional):

- ``pause``: where the run stops itself, once: a step of the fastdowntime stage (just
  after its ``step.start`` is journaled, before its ``do`` acts), ``commit`` (inside
  COMMIT's signal hold, before COMMIT is sent) or ``committed`` (the server committed,
  the run has not heard yet). There the process writes ``state`` (JSON: its pid, the
  point, the database sessions it holds on the primary) and sends itself SIGSTOP. The test
  injects its fault while nothing moves, then sends SIGCONT (or SIGKILL): a signal sent in
  between lands exactly there.
- ``lose``: a step during whose ``do`` every write on haproxy's admin channel is acted on
  by haproxy and answered, and then the channel drops before the orchestrator reads the
  answer (the channel it opens again drops the same way until the step ends).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator import cli
from orchestrator.config import HostSettings
from orchestrator.db import cold
from orchestrator.remote.haproxy_wire import take_answer
from orchestrator.remote.ssh import Remote
from orchestrator.runner.actions import window
from orchestrator.runner.actions.base import Action
from orchestrator.runner.context import Run


class Hooks:
    """What SPEC asks for, and the run the steps are working on."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.pause_at: str | None = spec.get("pause")
        self.state = Path(spec["state"]) if spec.get("state") else None
        self.lose_in: str | None = spec.get("lose")
        self.losing = threading.Event()
        self.run: Run | None = None
        self._paused = False

    def pause(self, point: str) -> None:
        """Stop here, once, if SPEC says so: write the state file, then SIGSTOP ourselves."""
        if self._paused or point != self.pause_at:
            return
        self._paused = True
        assert self.state is not None
        partial = self.state.with_name(self.state.name + ".partial")
        partial.write_text(json.dumps({"pid": os.getpid(), "at": point,
                                       "sessions": self.sessions()}))
        os.replace(partial, self.state)
        os.kill(os.getpid(), signal.SIGSTOP)

    def sessions(self) -> dict[str, int | None]:
        """The backend pid of each database session the run holds on the primary."""
        run = self.run
        if run is None:
            return {}

        def pid(conn: Any) -> int | None:
            return None if conn is None or conn.closed else int(conn.info.backend_pid)
        lock = getattr(run.lock, "conn", None)
        return {"primary": pid(run.primary), "lock": pid(lock),
                "control": pid(run.control.primary) if run.control else None}


class LossyChannel:
    """haproxy's admin channel; while ``hooks.losing`` is set, a write is acted on and
    answered by haproxy, and the channel then drops with the answers unread."""

    def __init__(self, channel: Any, hooks: Hooks) -> None:
        self._channel = channel
        self._hooks = hooks
        self._lost = False

    def sendall(self, data: bytes) -> None:
        self._channel.sendall(data)
        if not self._hooks.losing.is_set():
            return
        expected, answers, buffer = data.count(b"\n"), 0, bytearray()
        self._channel.settimeout(5.0)
        while answers < expected:  # haproxy has acted on a line once its answer is back
            chunk = self._channel.recv(1 << 16)
            if not chunk:
                break
            buffer += chunk
            while take_answer(buffer) is not None:
                answers += 1
        self._lost = True
        self._channel.close()

    def recv(self, size: int) -> bytes:
        return b"" if self._lost else bytes(self._channel.recv(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def install(hooks: Hooks) -> None:
    """Wrap the actions' ``do``, COMMIT's signal hold, the run hearing of COMMIT and
    haproxy's channel, for ``hooks``."""
    do, open_process = Action.do, Remote.open_process
    held, committed = cold.interrupts_held, window._committed

    def hooked_do(self: Action, run: Run) -> dict[str, Any]:
        if run.stage != "fastdowntime":
            return do(self, run)
        hooks.run = run
        hooks.pause(self.name)
        if self.name == hooks.lose_in:
            hooks.losing.set()
        try:
            return do(self, run)
        finally:
            hooks.losing.clear()

    @contextmanager
    def hooked_held(what: str) -> Iterator[None]:
        with held(what):
            if what == "COMMIT":
                hooks.pause("commit")
            yield

    def hooked_committed(run: Run, result: Any) -> None:
        hooks.pause("committed")
        committed(run, result)

    def hooked_open(self: Remote, host: HostSettings, argv: Sequence[str]) -> Any:
        return LossyChannel(open_process(self, host, argv), hooks)

    Action.do = hooked_do  # type: ignore[method-assign]
    Remote.open_process = hooked_open  # type: ignore[method-assign]
    cold.interrupts_held = hooked_held
    window._committed = hooked_committed


def main(argv: Sequence[str]) -> int:
    """Run the CLI on ``argv[1:]`` with the hooks of the SPEC file ``argv[0]``."""
    install(Hooks(json.loads(Path(argv[0]).read_text())))
    return cli.main(list(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
