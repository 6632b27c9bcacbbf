"""The run's journal: JSON lines, millisecond stamps, bound context, steps, masking, crashes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import BadInput
from orchestrator.runner.journal import (
    MASK,
    TRUNCATED,
    Journal,
    is_secret_key,
    iso_ms,
    jsonable,
    mask_text,
    read_journal,
)
from tests.fakes import FakeClock

_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def lines(journal: Journal) -> list[dict]:
    return [json.loads(line) for line in journal.path.read_text().splitlines()]


def test_lines_are_json_with_millisecond_utc_stamps(tmp_path: Path) -> None:
    """Each event is one JSON line: ts (UTC, ms), t (epoch), run_id, context, event, fields."""
    clock = FakeClock(1795625226.123456)
    journal = Journal(tmp_path, "r1", clock=clock)
    record = journal.event("window.open", budget_s=15)
    written = lines(journal)
    assert written == [record]
    assert record["ts"] == "2026-11-25T16:47:06.123Z"
    assert _TS.fullmatch(record["ts"])
    assert record["t"] == pytest.approx(1795625226.123456)
    assert list(record)[:4] == ["ts", "t", "run_id", "event"]
    assert record["run_id"] == "r1" and record["event"] == "window.open"
    assert record["budget_s"] == 15
    assert journal.path == tmp_path / "r1" / "journal.jsonl"


def test_bound_views_add_context_and_share_the_file(tmp_path: Path) -> None:
    """bind() returns a view adding stage/step/host to its events; the parent is unchanged."""
    journal = Journal(tmp_path, "r1")
    stage = journal.bind(stage="fastdowntime")
    host = stage.bind(step="stage_code", host="app1")
    host.event("ship", bytes=10)
    journal.event("plain")
    first, second = lines(journal)
    assert {k: first[k] for k in ("run_id", "stage", "step", "host", "event", "bytes")} == {
        "run_id": "r1", "stage": "fastdowntime", "step": "stage_code", "host": "app1",
        "event": "ship", "bytes": 10}
    assert "stage" not in second and "host" not in second
    assert stage.context == {"run_id": "r1", "stage": "fastdowntime"}


def test_every_line_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    """An event is flushed when written: a reader sees it before any checkpoint or close."""
    journal = Journal(tmp_path, "r1")
    journal.event("one")
    assert [e["event"] for e in read_journal(journal.path)] == ["one"]
    journal.checkpoint()
    journal.event("two")
    assert [e["event"] for e in read_journal(journal.path)] == ["one", "two"]


def test_step_writes_start_and_done_with_exact_duration_and_notes(tmp_path: Path) -> None:
    """step() writes step.start then step.done (outcome ok, duration from the injected clock)."""
    clock = FakeClock(1795625226.123456)
    journal = Journal(tmp_path, "r1", clock=clock).bind(stage="fastdowntime")
    with journal.step("open_window", host="lb1") as step:
        clock.advance(1.25)
        step.note(drained=["app1:8001"], waited_s=0.5)
    start, done = lines(journal)
    assert start["event"] == "step.start" and done["event"] == "step.done"
    for record in (start, done):
        assert (record["stage"], record["step"], record["host"]) == ("fastdowntime",
                                                                   "open_window", "lb1")
    assert done["outcome"] == "ok" and done["started"] == start["ts"]
    assert done["duration_s"] == 1.25
    assert done["drained"] == ["app1:8001"] and done["waited_s"] == 0.5
    assert step.duration_s == done["duration_s"] and step.outcome == "ok"


def test_injected_clock_gives_exact_millisecond_durations(tmp_path: Path) -> None:
    """With a fake clock the duration is exactly the time it advanced, to the millisecond."""
    clock = FakeClock(1000.0)
    journal = Journal(tmp_path, "r1", clock=clock)
    with journal.step("apply_cold_patches"):
        clock.advance(2.5)
    done = lines(journal)[-1]
    assert done["duration_s"] == 2.5
    assert lines(journal)[0]["ts"] == "1970-01-01T00:16:40.000Z"
    assert done["ts"] == "1970-01-01T00:16:42.500Z"


def test_failing_step_writes_failed_and_reraises(tmp_path: Path) -> None:
    """A step whose body raises writes step.failed (error type and message) and re-raises."""
    clock = FakeClock(1795625226.123456)
    journal = Journal(tmp_path, "r1", clock=clock)
    with pytest.raises(RuntimeError, match="haproxy said no"):
        with journal.step("close_window") as step:
            step.note(ready=["app1:8002"])
            clock.advance(0.25)
            raise RuntimeError("haproxy said no")
    start, failed = lines(journal)
    assert start["event"] == "step.start"
    assert failed["event"] == "step.failed"
    assert failed["outcome"] == "failed" and failed["duration_s"] == 0.25
    assert failed["started"] == start["ts"]
    assert failed["error_type"] == "RuntimeError" and failed["error"] == "haproxy said no"
    assert failed["ready"] == ["app1:8002"]


def test_events_inside_a_step_carry_its_context(tmp_path: Path) -> None:
    """The step record's event() writes with step= and the step's fields bound."""
    journal = Journal(tmp_path, "r1")
    with journal.step("cut_connections", host="db") as step:
        step.event("pgbouncer.kill", database="launchpad")
    inside = lines(journal)[1]
    assert (inside["event"], inside["step"], inside["host"]) == ("pgbouncer.kill",
                                                                 "cut_connections", "db")


def test_secret_keys_are_masked_at_any_depth(tmp_path: Path) -> None:
    """A field whose key names a password, passwd, secret or token is written as ***."""
    journal = Journal(tmp_path, "r1")
    journal.bind(api_token="t0k3n").event(
        "connect", password="hunter2", PGPASSWD="x1", client_secret="s3", user="fdt",
        nested={"db": {"Password": "deep"}, "hosts": [{"auth_token": "tt"}]})
    text = journal.path.read_text()
    for secret in ("hunter2", "x1", "s3", "deep", "tt", "t0k3n"):
        assert secret not in text
    record = lines(journal)[0]
    assert record["password"] == MASK and record["PGPASSWD"] == MASK
    assert record["client_secret"] == MASK and record["api_token"] == MASK
    assert record["nested"] == {"db": {"Password": MASK}, "hosts": [{"auth_token": MASK}]}
    assert record["user"] == "fdt"


def test_passwords_inside_strings_are_masked(tmp_path: Path) -> None:
    """A libpq password=... (quoted or not) or a URI user:password@ inside any string is ***."""
    journal = Journal(tmp_path, "r1")
    journal.event(
        "connect",
        dsn="host=127.0.0.10 port=5432 password=hunter2 dbname=launchpad",
        quoted="host=db password='it\\'s a secret' user=x",
        error=RuntimeError("could not connect: postgresql://fdt:pa55w0rd@db:5432/launchpad"),
        argv=["psql", "dbname=x PASSWORD = s3cr3t"])
    text = journal.path.read_text()
    for secret in ("hunter2", "a secret", "pa55w0rd", "s3cr3t"):
        assert secret not in text
    record = lines(journal)[0]
    assert record["dsn"] == "host=127.0.0.10 port=5432 password=*** dbname=launchpad"
    assert record["quoted"] == "host=db password=*** user=x"
    assert record["error"] == ("RuntimeError: could not connect: "
                               "postgresql://fdt:***@db:5432/launchpad")
    assert mask_text("no secrets here: lock_timeout=1s") == "no secrets here: lock_timeout=1s"


def test_failed_step_error_messages_are_masked(tmp_path: Path) -> None:
    """An exception message carrying a DSN is masked in step.failed."""
    journal = Journal(tmp_path, "r1")
    with pytest.raises(ValueError):
        with journal.step("connect"):
            raise ValueError("bad dsn: host=x password=hunter2")
    assert "hunter2" not in journal.path.read_text()
    assert lines(journal)[-1]["error"] == "bad dsn: host=x password=***"


def test_values_are_made_json_safe() -> None:
    """Datetimes, sets, tuples, dataclasses, paths and unknown objects become JSON data."""

    @dataclasses.dataclass
    class Timing:
        patch: str
        seconds: float
        db_password: str

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    value = jsonable({"when": datetime(2026, 11, 25, 16, 40, tzinfo=UTC),
                      "hosts": {"b", "a"}, "pair": (1, 2), "timing": Timing("p.sql", 1.5, "x"),
                      "path": Path("/srv/app"), "other": Opaque(), 3: float("nan")})
    assert value == {"when": "2026-11-25T16:40:00+00:00", "hosts": ["a", "b"], "pair": [1, 2],
                     "timing": {"patch": "p.sql", "seconds": 1.5, "db_password": MASK},
                     "path": "/srv/app", "other": "opaque!", "3": "nan"}
    json.dumps(value)


def test_truncated_last_line_is_skipped_with_a_marker(tmp_path: Path) -> None:
    """A last line cut mid-write (a crash) is skipped and replaced by a journal.truncated marker."""
    journal = Journal(tmp_path, "r1")
    journal.event("one")
    journal.event("two")
    journal.close()
    with journal.path.open("a") as handle:
        handle.write('{"ts":"2026-11-25T16:40:26.123Z","event":"thr')
    events = read_journal(journal.path)
    assert [e["event"] for e in events] == ["one", "two", TRUNCATED]
    assert events[-1]["line"] == 3


def test_damaged_line_before_the_end_is_bad_input(tmp_path: Path) -> None:
    """A bad line that is not the last one means a damaged file: BadInput names file and line."""
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "one"}\nnot json\n{"event": "three"}\n')
    with pytest.raises(BadInput, match=r"journal.jsonl line 2"):
        read_journal(path)


def test_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    """A run without a journal file has no events (not an error)."""
    assert read_journal(tmp_path / "nope" / "journal.jsonl") == []


def test_echo_sees_every_event_as_written(tmp_path: Path) -> None:
    """The echo callback receives each record exactly as it went to the file."""
    seen: list[dict] = []
    journal = Journal(tmp_path, "r1", echo=seen.append)
    with journal.step("s"):
        journal.event("inside", token="abc")
    assert seen == lines(journal)
    assert seen[1]["token"] == MASK


def test_reopening_a_journal_appends(tmp_path: Path) -> None:
    """A second Journal on the same run (resume) appends after the existing lines."""
    Journal(tmp_path, "r1").event("first")
    with Journal(tmp_path, "r1") as again:
        again.event("resumed")
    assert [e["event"] for e in read_journal(tmp_path / "r1" / "journal.jsonl")] == [
        "first", "resumed"]


def test_reopening_after_a_torn_line_cuts_it_and_says_so(tmp_path: Path) -> None:
    """A journal whose last line a crash or a full disk cut mid-write, opened again (resume),
    has the torn line cut and a journal.truncated event in its place: what is appended
    never glues onto it, and the whole file reads back."""
    journal = Journal(tmp_path, "r1")
    journal.event("one")
    journal.close()
    with journal.path.open("a") as handle:
        handle.write('{"ts":"2026-11-25T16:40:26.123Z","event":"tw')
    with Journal(tmp_path, "r1") as again:
        again.event("resume.start")
        again.event("resume.end")
    events = read_journal(journal.path)
    assert [e["event"] for e in events] == ["one", TRUNCATED, "resume.start", "resume.end"]
    assert events[1]["line"] == 2 and events[1]["bytes"] == 44 and events[1]["mended"]


def test_run_id_must_be_a_plain_name(tmp_path: Path) -> None:
    """A run id with a path separator is refused (it names a directory)."""
    with pytest.raises(BadInput, match="run id"):
        Journal(tmp_path, "../escape")


def test_iso_ms_rounds_to_the_millisecond() -> None:
    """Instants have three decimals, rounded to the nearest ms (carrying into the second)."""
    assert iso_ms(0.9999) == "1970-01-01T00:00:01.000Z"
    assert iso_ms(0.1 + 0.05) == "1970-01-01T00:00:00.150Z"
    assert iso_ms(1795625226.5) == "2026-11-25T16:47:06.500Z"


class FullDisk:
    """The journal's file, whose writes now fail as on a full disk."""

    def __init__(self, real: Any) -> None:
        self.real = real

    @property
    def closed(self) -> bool:
        return bool(self.real.closed)

    def write(self, _text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")

    def fileno(self) -> int:
        return int(self.real.fileno())

    def close(self) -> None:
        self.real.close()


def test_a_full_disk_never_stops_a_step(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """When the journal cannot be written, every step body and undo still runs, the events
    stay in memory, and stderr says so once."""
    journal = Journal(tmp_path, "r1", clock=FakeClock(1795625226.123456))
    journal._sink._file = FullDisk(journal._sink._file)
    ran = []
    with journal.step("drain") as record:
        ran.append("drain")
        record.note(hosts=2)
    with pytest.raises(RuntimeError), journal.step("swap"):
        ran.append("swap")
        raise RuntimeError("haproxy")
    journal.checkpoint()
    journal.close()
    assert ran == ["drain", "swap"]
    assert [e["event"] for e in journal.events] == ["step.start", "step.done", "step.start",
                                                    "step.failed"]
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1 and "the run goes on" in err


def test_a_broken_echo_never_stops_a_step(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A progress echo that fails (a closed pipe) is dropped; the journal keeps writing."""
    def echo(_record: dict[str, Any]) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    journal = Journal(tmp_path, "r2", echo=echo)
    with journal.step("drain"):
        pass
    journal.close()
    assert [e["event"] for e in read_journal(journal.path)] == ["step.start", "step.done"]
    assert "progress output failed" in capsys.readouterr().err


def test_run_records_are_private_and_never_follow_a_link(tmp_path: Path) -> None:
    """The runs directory is 0700, the journal 0600; a symbolic link where the journal goes
    is not followed (the run then keeps its events in memory)."""
    runs = tmp_path / "runs"
    journal = Journal(runs, "r3")
    journal.event("x")
    journal.close()
    assert stat.S_IMODE(os.stat(runs / "r3").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600
    target = tmp_path / "elsewhere"
    target.write_text("")
    (runs / "r4").mkdir()
    (runs / "r4" / "journal.jsonl").symlink_to(target)
    linked = Journal(runs, "r4")
    linked.event("y")
    linked.close()
    assert target.read_text() == "" and [e["event"] for e in linked.events] == ["y"]


@pytest.mark.parametrize(("text", "hidden"), [
    ("curl -H 'Authorization: Bearer eyJhbGciOi.abc-123' https://hooks", "eyJhbGciOi.abc-123"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI env", "wJalrXUtnFEMI"),
    ("API_KEY=abc123 ./notify", "abc123"),
    ("webhook failed: api_key: 'k-998877'", "k-998877"),
])
def test_bearer_tokens_and_key_values_are_masked(text: str, hidden: str) -> None:
    """Bearer tokens and ``*_KEY=`` values never reach a journal."""
    masked = mask_text(text)
    assert hidden not in masked and MASK in masked


def test_a_field_named_like_a_key_is_masked() -> None:
    """A field named ``api_key`` is a secret; ``key`` alone (a key file's path) is not."""
    assert is_secret_key("api_key") and is_secret_key("WEBHOOK_KEY")
    assert not is_secret_key("key") and not is_secret_key("keep_releases")
