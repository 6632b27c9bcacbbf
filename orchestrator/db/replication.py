"""The standbys: where their replay is, how far behind, and waiting for them after the commit.

Positions come from ``pg_stat_replication`` on the primary and, when
``[database] standby_dsns`` are configured, exactly from each standby
(``pg_last_wal_replay_lsn()``). Lag follows the standard formula, so an idle
primary never looks like lag: the primary's ``pg_current_wal_lsn()`` is
sampled first; a standby that has replayed up to it has ``lag_s = 0``, any
other has ``now() - pg_last_xact_replay_timestamp()`` on the standby (or the
primary's ``replay_lag`` when the standby is not reachable directly).

:class:`Standbys` keeps one read-only connection per standby DSN open across
calls (open them with :meth:`Standbys.prepare` before the window, so the
wait after the commit pays no connection cost); a broken one is reopened at
the next call. :func:`standbys` and :func:`wait_replayed` are one-shot
wrappers that open and close them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import psycopg2
import psycopg2.extensions

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import Connection, DatabaseUnreachable, connect, fresh_rows
from orchestrator.errors import FastdowntimeError

POLL_S = 0.002
"""Pause between two polls of the standbys' replay positions."""

_PRIMARY = """
SELECT pg_current_wal_lsn()::text, r.application_name, host(r.client_addr), r.client_port,
       r.state, r.replay_lsn::text, extract(epoch FROM r.replay_lag)::float8
  FROM (SELECT 1) one
  LEFT JOIN pg_stat_replication r ON true
 ORDER BY r.application_name, r.pid
"""
_STANDBY = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
       w.status, w.conninfo, current_setting('cluster_name')
  FROM (SELECT 1) one
  LEFT JOIN pg_stat_wal_receiver w ON true
"""


@dataclass(frozen=True)
class StandbyState:
    """One standby as seen now.

    ``name`` is its ``application_name`` (or the DSN's host:port); ``state``
    the primary's word for it (``streaming``, ``catchup`` ...), or, for a
    configured DSN, ``unreachable``, ``not in recovery`` or the wal
    receiver's status; ``detail`` says why when it is not streaming.
    """

    name: str
    state: str
    lag_bytes: int | None
    lag_s: float | None
    replay_lsn: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class StandbyPosition:
    """Where one standby's replay stood when :func:`wait_replayed` gave up."""

    name: str
    replay_lsn: str | None
    behind_bytes: int | None
    detail: str | None = None


class StandbysBehind(FastdowntimeError):
    """Some standby had not replayed up to ``target_lsn`` within the timeout.

    Raised after the commit point when waiting for the cold patches to reach
    the standbys; the caller decides what it means. ``positions`` lists every
    standby's replay position (a missing standby appears with no position).
    """

    def __init__(self, target_lsn: str, positions: list[StandbyPosition],
                 waited_s: float) -> None:
        self.target_lsn = target_lsn
        self.positions = positions
        self.waited_s = waited_s
        shown = "; ".join(
            f"{p.name} at {p.replay_lsn or '?'}"
            + (f" ({p.behind_bytes} bytes behind)" if p.behind_bytes is not None else "")
            + (f": {p.detail}" if p.detail else "") for p in positions)
        super().__init__(f"standbys have not replayed up to {target_lsn} after "
                         f"{waited_s:.3f} s: {shown}")


@dataclass(frozen=True)
class _Sample:
    name: str
    state: str
    replay: int | None
    lag_s: float | None
    """The standby's ``now() - pg_last_xact_replay_timestamp()``, or the primary's replay_lag."""
    detail: str | None = None


class Standbys:
    """The primary's standbys, with a connection to each configured standby DSN kept open.

    Use as a context manager, or call :meth:`close`. ``clock`` and ``sleep``
    are injectable; ``connector`` opens a standby connection from its DSN
    (default: :func:`~orchestrator.db.connect.connect`, read-only, autocommit).
    A standby that cannot be reached is reported, never raised; an error of
    the primary's connection (the caller's) propagates as psycopg2's.
    """

    def __init__(self, settings: DatabaseSettings, primary: Connection, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 connector: Callable[[str], Connection] | None = None) -> None:
        self.settings = settings
        self.primary = primary
        self.clock = clock
        self.sleep = sleep
        self._connector = connector or self._connect
        self._conns: dict[str, Connection] = {}

    def __enter__(self) -> Standbys:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def prepare(self) -> None:
        """Open a connection to every standby DSN now (raises DatabaseUnreachable)."""
        for dsn in self.settings.standby_dsns:
            self._standby(dsn)

    def close(self) -> None:
        """Close the standby connections (the primary belongs to the caller)."""
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            conn.close()

    def states(self) -> list[StandbyState]:
        """Every standby: the configured DSNs first, then any other the primary streams to."""
        current, samples = self._sample()
        result = []
        for s in samples:
            lag_bytes = max(0, current - s.replay) if s.replay is not None else None
            lag_s = 0.0 if s.replay is not None and s.replay >= current else s.lag_s
            result.append(StandbyState(s.name, s.state, lag_bytes, lag_s,
                                       format_lsn(s.replay), s.detail))
        return result

    def wait_replayed(self, *, timeout_s: float) -> float:
        """Wait until every standby has replayed the primary's WAL as of now; return seconds waited.

        "Every standby" is each configured DSN and each other standby the
        primary streams to, and at least ``[database] standbys`` of them.
        Raises :class:`StandbysBehind` with each one's position on timeout.
        """
        started = self.clock()
        target, samples = self._sample()
        while True:
            behind = [s for s in samples if s.replay is None or s.replay < target]
            missing = max(0, self.settings.standbys - len(samples))
            if not behind and not missing:
                return self.clock() - started
            waited = self.clock() - started
            if waited >= timeout_s:
                positions = [StandbyPosition(
                    s.name, format_lsn(s.replay),
                    max(0, target - s.replay) if s.replay is not None else None, s.detail)
                    for s in samples]
                positions += [StandbyPosition(
                    f"missing standby {i + 1}", None, None,
                    f"{self.settings.standbys} configured, {len(samples)} seen")
                    for i in range(missing)]
                raise StandbysBehind(format_lsn(target) or "?", positions, waited)
            self.sleep(max(0.0, min(POLL_S, started + timeout_s - self.clock())))
            _, samples = self._sample()

    # -- internals ---------------------------------------------------------------------

    def _sample(self) -> tuple[int, list[_Sample]]:
        """The primary's current LSN, sampled first, then every standby's position."""
        rows = fresh_rows(self.primary, _PRIMARY)
        current = parse_lsn(rows[0][0])
        assert current is not None  # pg_current_wal_lsn() on a primary is never NULL
        streamed = [_Sample(name or f"{addr}:{port}", state, parse_lsn(replay), lag,
                            None if replay else "replay_lsn not visible (grant pg_monitor)")
                    for _, name, addr, port, state, replay, lag in rows if state is not None]
        samples = [self._sample_standby(dsn, streamed) for dsn in self.settings.standby_dsns]
        return current, samples + streamed  # what the DSNs matched was taken out of streamed

    def _sample_standby(self, dsn: str, streamed: list[_Sample]) -> _Sample:
        """Sample one standby DSN; the primary's row for it (if any) leaves ``streamed``."""
        params = psycopg2.extensions.parse_dsn(dsn)
        where = f"{params.get('host', 'local socket')}:{params.get('port', '5432')}"
        try:
            conn = self._standby(dsn)
            with conn.cursor() as cur:
                cur.execute(_STANDBY)
                row = cur.fetchone()
        except DatabaseUnreachable as exc:
            return _Sample(where, "unreachable", None, None, exc.reason)
        except psycopg2.Error as exc:
            self._drop(dsn)
            return _Sample(where, "unreachable", None, None, " ".join(str(exc).split()))
        assert row is not None
        in_recovery, replay, lag_s, receiver, conninfo, cluster_name = row
        if not in_recovery:
            return _Sample(where, "not in recovery", None, None,
                           f"{where} is not a standby (pg_is_in_recovery() is false)")
        announced = _application_name(conninfo) or cluster_name or "walreceiver"
        match = next((s for s in streamed if s.name == announced), None)
        if match is not None:
            streamed.remove(match)
            name, state = match.name, match.state
        else:
            name, state = where, receiver or "not streaming"
        detail = None if state == "streaming" else f"{where}: wal receiver {receiver or 'absent'}"
        return _Sample(name, state, parse_lsn(replay), lag_s, detail)

    def _standby(self, dsn: str) -> Connection:
        conn = self._conns.get(dsn)
        if conn is None or conn.closed:
            conn = self._connector(dsn)
            self._conns[dsn] = conn
        return conn

    def _drop(self, dsn: str) -> None:
        conn = self._conns.pop(dsn, None)
        if conn is not None:
            conn.close()

    def _connect(self, dsn: str) -> Connection:
        return connect(self.settings, dsn, what="standby", readonly=True, autocommit=True)


def standbys(settings: DatabaseSettings, primary: Connection) -> list[StandbyState]:
    """Every standby's state and lag now (opens and closes the standby connections)."""
    with Standbys(settings, primary) as group:
        return group.states()


def wait_replayed(settings: DatabaseSettings, primary: Connection, *, timeout_s: float,
                  clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until every standby has replayed the primary's current WAL; the seconds waited.

    One-shot: the standby connections are opened inside the wait. In the
    window, hold a prepared :class:`Standbys` and call its ``wait_replayed``.
    """
    with Standbys(settings, primary, clock=clock) as group:
        return group.wait_replayed(timeout_s=timeout_s)


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` -> its byte position; None stays None."""
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int | None) -> str | None:
    """A byte position as PostgreSQL writes an LSN (``'16/B374D848'``); None stays None."""
    if position is None:
        return None
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def _application_name(conninfo: str | None) -> str | None:
    """The application_name a standby's wal receiver announces to the primary, if known."""
    if not conninfo:
        return None
    try:
        params = psycopg2.extensions.parse_dsn(conninfo)
    except psycopg2.ProgrammingError:
        return None
    return params.get("application_name") or None
