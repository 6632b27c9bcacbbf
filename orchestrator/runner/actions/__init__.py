"""Built-in playbook actions, registered by name in :data:`ACTIONS` as their modules load.

:mod:`.base` has the :class:`Action` contract, :mod:`.script` the descriptions an action
is made of (run by ``do``, printed by ``--dry-run``); the actions live by what they act on:
:mod:`.code` (code and scripts), :mod:`.instances` (the app's instance slots),
:mod:`.window` (the window and the commit point), :mod:`.online` (live patches, the
nodowntime rollout).
"""

from orchestrator.runner.actions import code, instances, online, window
from orchestrator.runner.actions.base import ACTIONS, Action, NoParams, action
from orchestrator.runner.actions.instances import read_slots
from orchestrator.runner.actions.window import window_serves

__all__ = ["ACTIONS", "Action", "NoParams", "action", "code", "instances", "online",
           "read_slots", "window", "window_serves"]
