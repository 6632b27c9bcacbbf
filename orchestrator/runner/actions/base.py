"""Built-in playbook actions: each a small object that describes its steps once.

An action reads and updates the shared :class:`~orchestrator.runner.context.Run`.
It describes what it does as a :data:`~orchestrator.runner.actions.script.Script`:
``reads`` (facts the rest is built from, read first), ``script`` (the step) and
``undo_script`` (what puts back what the step changed, when it can: steps are
undone in reverse before the commit point). ``do`` and ``undo`` execute those
descriptions; ``--dry-run`` renders the very same ones, so it shows what runs,
with every decision the run takes on an answer. ``outcome`` turns the answers
into the data the journal keeps. Actions know nothing of stages: the playbooks
order them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator.runner.actions.script import Answers, Script, execute
from orchestrator.runner.context import Run

ACTIONS: dict[str, type[Action]] = {}


@dataclass(frozen=True)
class NoParams:
    """An action without parameters."""


class Action:
    """A step's behaviour; subclasses set ``name``, ``Params`` and describe their steps."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    commit_point: ClassVar[bool] = False
    """True for the step whose success is the commit point."""
    opens_window: ClassVar[bool] = False
    """True for the step that opens the window (what comes before it prepares it)."""
    needs: ClassVar[tuple[tuple[str, str], ...]] = ()
    """``(action, why)``: actions an earlier step of the same playbook must have run, and
    no step since ended (loading the playbook refuses it otherwise, naming ``why``)."""
    ends: ClassVar[tuple[str, ...]] = ()
    """Actions whose effect this one ends (``restore_connections`` ends the cut): a later
    step that needs them needs them again."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def reads(self, run: Run) -> Script:
        """What the step reads before its script can be built (facts such as the slots)."""
        return ()

    def script(self, run: Run) -> Script:
        """The step, from the run's facts; building it runs nothing."""
        return ()

    def undo_script(self, run: Run) -> Script:
        """What puts back what the step changed (it tolerates a partial ``do``)."""
        return ()

    @property
    def can_undo(self) -> bool:
        """True when the action has an undo (its undo may still be empty for a run)."""
        return type(self).undo_script is not Action.undo_script

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        """The data the journal keeps for a step that succeeded, from its answers."""
        return {}

    def do(self, run: Run) -> dict[str, Any]:
        """Execute ``reads``, then ``script``; return :meth:`outcome`."""
        execute(self.reads(run), run)
        return self.outcome(run, execute(self.script(run), run))

    def undo(self, run: Run) -> None:
        """Execute ``undo_script``."""
        execute(self.undo_script(run), run)


def action(cls: type[Action]) -> type[Action]:
    """Register an action class under its ``name``."""
    ACTIONS[cls.name] = cls
    return cls
