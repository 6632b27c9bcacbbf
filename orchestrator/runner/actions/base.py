"""Built-in playbook actions: each a small object with ``do``, ``undo`` and ``render``.

An action reads and updates the shared :class:`~orchestrator.runner.context.Run`.
``do`` returns data for the journal; ``undo`` puts back what ``do`` changed,
when it can (steps are undone in reverse before the commit point);
``render`` gives the exact commands and SQL for ``--dry-run``. Actions know
nothing of stages: the playbooks order them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator.runner.context import Run

ACTIONS: dict[str, type[Action]] = {}


@dataclass(frozen=True)
class NoParams:
    """An action without parameters."""


class Action:
    """A step's behaviour; subclasses set ``name``, ``Params`` and override the hooks."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    commit_point: ClassVar[bool] = False
    """True for the step whose success is the commit point."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def do(self, run: Run) -> dict[str, Any]:
        raise NotImplementedError

    def undo(self, run: Run) -> None:
        """Put back what ``do`` changed; the default has nothing to put back."""

    def render(self, run: Run) -> list[str]:
        return []


def action(cls: type[Action]) -> type[Action]:
    """Register an action class under its ``name``."""
    ACTIONS[cls.name] = cls
    return cls


def _lines(rendered: dict[str, tuple[str, ...]], run: Run) -> list[str]:
    """``host: command`` lines, in host order (each runs under ``timeout`` on the host)."""
    return [f"{host}: {command}" for host, commands in rendered.items() for command in commands]


def _failed(result: Any, what: str) -> None:
    result.raise_for_failures(what)
