"""The state one run's steps share: settings, the plan, open connections, the window clock.

Built by :mod:`orchestrator.runner.deploy`; actions read and update it. The
window's instants are wall-clock (journal) and monotonic (deadlines) at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import Config, HostSettings
from orchestrator.db.connect import Connection
from orchestrator.plan import Plan
from orchestrator.runner.ports import (
    Clock,
    ControlPort,
    HaproxyPort,
    JournalPort,
    LockPort,
    RemotePort,
    absent,
)


@dataclass
class Run:
    """Everything a step may need; mutable, owned by one run."""

    config: Config
    plan: Plan
    run_id: str
    journal: JournalPort
    """A dry run's journal keeps nothing (:class:`~orchestrator.runner.ports.NullJournal`)."""
    stage: str
    release: str
    """The revision this stage deploys: the cut (fastdowntime) or the target (nodowntime)."""
    previous: str
    """The revision the hosts ran before this stage."""
    texts: Mapping[str, str]
    """Patch file name -> its text at the target revision."""
    remote: RemotePort = field(default_factory=lambda: absent("remote hosts"))
    dry_run: bool = False
    rehearse: bool = False
    clock: Clock = time.monotonic
    wall: Clock = time.time
    haproxy: HaproxyPort = field(default_factory=lambda: absent("haproxy"))
    primary: Connection | None = None
    control: ControlPort = field(default_factory=lambda: absent("connection control"))
    lock: LockPort | None = None
    """The deploy lock this run holds, checked before every step (None: not checked)."""
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)
    """App host -> (port serving now, idle port the new release starts on)."""
    committed: bool = False
    window_opened: float | None = None
    window_closed: float | None = None
    window_deadline: float | None = None
    window_opened_at: float | None = None
    """The window's opening and closing on the monotonic ``clock``: what ``outage_s``
    measures (the wall-clock instants above are for the journal; NTP may step them)."""
    window_closed_at: float | None = None
    settled: bool = False
    """True once ``close_window`` sent the traffic where the window hands it: in hold mode the
    window closes before (at RESUME), and an interrupt between would leave the swap undone."""
    cold_timings: list[dict[str, Any]] = field(default_factory=list)
    rehearsal_trials: list[list[dict[str, Any]]] = field(default_factory=list)
    """A rehearsal's trials before its window: each run's ``cold_timings``."""
    problems: list[str] = field(default_factory=list)
    """Failures after the commit point: the run rolled forward past them."""
    host_states: dict[str, str] = field(default_factory=dict)
    fallback: set[str] = field(default_factory=set)
    """App hosts whose new instance failed after COMMIT: their old instance keeps serving."""
    expected: dict[str, str] = field(default_factory=dict)
    """Host -> the revision it should serve, where it differs from ``release``."""
    rendered: list[str] = field(default_factory=list)

    @property
    def app_hosts(self) -> tuple[HostSettings, ...]:
        return self.config.role("app")

    @property
    def window_open(self) -> bool:
        """The window opened and has not closed: users wait on it (held or turned away)."""
        return self.window_opened is not None and self.window_closed is None

    @property
    def outage_s(self) -> float | None:
        """The window's length, on the monotonic clock."""
        if self.window_opened_at is not None and self.window_closed_at is not None:
            return round(self.window_closed_at - self.window_opened_at, 3)
        if self.window_opened is None or self.window_closed is None:
            return None
        return round(self.window_closed - self.window_opened, 3)

    def port(self, host: HostSettings, index: int) -> int:
        """Port of ``host``'s serving (0) or idle (1) slot: as read from haproxy, else the
        config's order (what a dry run shows before it has read the slots)."""
        if host.name in self.slots:
            return self.slots[host.name][index]
        return self.config.need("app").ports[index]

    def server(self, host: HostSettings, port: int) -> str:
        """The haproxy server name of ``host``'s instance on ``port``."""
        return server_name(self.config, host, port)


def server_name(config: Config, host: HostSettings, port: int) -> str:
    """The haproxy server name of ``host``'s instance on ``port`` (``[lb] server_name``)."""
    return str(config.need("lb").server_name.format(host=host.name, port=port))
