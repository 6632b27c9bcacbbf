"""Standby positions, lag and the wait for replay, against small fakes of primary and standbys."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import DatabaseUnreachable
from orchestrator.db.replication import (
    POLL_S,
    Standbys,
    StandbysBehind,
    format_lsn,
    parse_lsn,
)
from tests.fakes import FakeClock

CONNINFO = "user=replicator host=10.0.0.1 port=5432 application_name=standby1"


class FakeConn:
    """Answers every query with the next row set of ``answers`` (the last one repeats)."""

    def __init__(self, *answers: list[tuple[Any, ...]] | Exception) -> None:
        self.answers = list(answers)
        self.autocommit = True
        self.closed = 0
        self.info = SimpleNamespace(transaction_status=0)
        self.rows: list[tuple[Any, ...]] = []
        self.description = ("a result",)  # every query here returns rows

    def cursor(self) -> FakeConn:
        return self

    def __enter__(self) -> FakeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            self.closed = 2
            raise answer
        self.rows = answer

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def close(self) -> None:
        self.closed = 1


def primary_at(lsn: str, *standbys: tuple[str, str, str | None, float | None]) -> list[Any]:
    """pg_stat_replication rows (name, state, replay_lsn, replay_lag) under a current LSN."""
    if not standbys:
        return [(lsn, None, None, None, None, None, None)]
    return [(lsn, name, "10.0.0.1", 40000 + i, state, replay, lag)
            for i, (name, state, replay, lag) in enumerate(standbys)]


def standby_at(replay: str, lag_s: float | None = 120.0) -> list[Any]:
    return [(True, replay, lag_s, "streaming", CONNINFO, "")]


def settings(dsns: int = 1, standbys: int = 1) -> DatabaseSettings:
    return DatabaseSettings(
        dsn="host=10.0.0.9 dbname=app user=fdt_admin", standbys=standbys,
        standby_dsns=tuple(f"host=10.0.0.{i + 1} port=5432 dbname=app user=fdt_admin"
                           for i in range(dsns)))


def group(primary: FakeConn, standby_conns: list[FakeConn], cfg: DatabaseSettings,
          clock: FakeClock | None = None) -> Standbys:
    clock = clock or FakeClock(50.0)
    by_dsn = dict(zip(cfg.standby_dsns, standby_conns, strict=True))
    return Standbys(cfg, primary, clock=clock, sleep=clock.sleep,
                    connector=lambda dsn: by_dsn[dsn])


def test_lsn_text_round_trips_through_byte_positions() -> None:
    """'16/B374D848' is (0x16 << 32) + 0xB374D848, and formats back the same."""
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn(None) is None


def test_caught_up_standby_has_no_lag_even_when_the_primary_is_idle() -> None:
    """A standby that replayed everything has lag 0, though its last replayed commit is old."""
    primary = FakeConn(primary_at("0/3000060", ("standby1", "streaming", "0/3000060", None)))
    [state] = group(primary, [FakeConn(standby_at("0/3000060", lag_s=3600.0))],
                    settings()).states()
    assert (state.name, state.state, state.lag_bytes, state.lag_s) == (
        "standby1", "streaming", 0, 0.0)


def test_standby_behind_reports_bytes_from_the_primary_and_seconds_from_itself() -> None:
    """lag_bytes = primary's LSN - standby's replay LSN; lag_s = standby's now() - last replay."""
    primary = FakeConn(primary_at("0/3001000", ("standby1", "streaming", "0/3000000", 0.5)))
    [state] = group(primary, [FakeConn(standby_at("0/3000000", lag_s=2.5))],
                    settings()).states()
    assert (state.lag_bytes, state.lag_s, state.replay_lsn) == (0x1000, 2.5, "0/3000000")


def test_without_dsns_positions_come_from_pg_stat_replication() -> None:
    """With no standby DSN each pg_stat_replication row is a standby, named by application_name."""
    primary = FakeConn(primary_at("0/5000000", ("a", "streaming", "0/5000000", None),
                                  ("b", "catchup", "0/4000000", 7.0)))
    states = group(primary, [], settings(dsns=0, standbys=2)).states()
    assert [(s.name, s.state, s.lag_bytes, s.lag_s) for s in states] == [
        ("a", "streaming", 0, 0.0), ("b", "catchup", 0x1000000, 7.0)]


def test_unreachable_standby_is_reported_not_raised() -> None:
    """A standby DSN that cannot be reached is listed as unreachable with the reason."""
    cfg = settings()
    primary = FakeConn(primary_at("0/1000000"))

    def refuse(dsn: str) -> Any:
        raise DatabaseUnreachable("standby", {"host": "10.0.0.1"}, "connection refused")

    standbys = Standbys(cfg, primary, connector=refuse)
    [state] = standbys.states()
    assert (state.name, state.state, state.lag_bytes) == ("10.0.0.1:5432", "unreachable", None)
    assert state.detail == "connection refused"


def test_wait_replayed_returns_the_time_until_the_standby_caught_up() -> None:
    """The wait ends at the first poll where every standby replayed the LSN noted at the start."""
    clock = FakeClock(50.0)
    primary = FakeConn(primary_at("0/2000000", ("standby1", "streaming", "0/1000000", 0.1)))
    standby = FakeConn(standby_at("0/1000000"), standby_at("0/1800000"), standby_at("0/2000010"))
    waited = group(primary, [standby], settings(), clock).wait_replayed(timeout_s=1.0)
    assert waited == pytest.approx(2 * POLL_S)


def test_wait_replayed_times_out_with_each_standbys_position() -> None:
    """A standby that never catches up raises StandbysBehind at the timeout, in fake time."""
    clock = FakeClock(50.0)
    primary = FakeConn(primary_at("0/2000000", ("standby1", "streaming", "0/1000000", 0.1)))
    wall = time.monotonic()
    with pytest.raises(StandbysBehind) as caught:
        group(primary, [FakeConn(standby_at("0/1000000"))], settings(), clock).wait_replayed(
            timeout_s=0.5)
    assert time.monotonic() - wall < 1.0
    error = caught.value
    assert error.target_lsn == "0/2000000" and error.waited_s == pytest.approx(0.5)
    assert [(p.name, p.replay_lsn, p.behind_bytes) for p in error.positions] == [
        ("standby1", "0/1000000", 0x1000000)]
    assert "standby1 at 0/1000000 (16777216 bytes behind)" in str(error)


def test_a_missing_standby_has_not_replayed() -> None:
    """Fewer standbys than [database] standbys: the wait fails naming the missing one."""
    clock = FakeClock(50.0)
    primary = FakeConn(primary_at("0/2000000", ("standby1", "streaming", "0/2000000", None)))
    with pytest.raises(StandbysBehind, match="2 configured, 1 seen"):
        group(primary, [], settings(dsns=0, standbys=2), clock).wait_replayed(timeout_s=0.1)


def test_broken_standby_connection_is_reopened_at_the_next_poll() -> None:
    """A standby connection that dies mid-wait is dropped and a new one is opened."""
    clock = FakeClock(50.0)
    cfg = settings()
    primary = FakeConn(primary_at("0/2000000", ("standby1", "streaming", "0/1000000", 0.1)))
    conns = [FakeConn(psycopg2.OperationalError("terminating connection")),
             FakeConn(standby_at("0/2000000"))]
    standbys = Standbys(cfg, primary, clock=clock, sleep=clock.sleep,
                        connector=lambda dsn: conns.pop(0))
    assert standbys.wait_replayed(timeout_s=1.0) == pytest.approx(POLL_S)
    assert conns == []
