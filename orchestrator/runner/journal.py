"""The run's journal: append-only JSON lines at ``<runs_dir>/<run_id>/journal.jsonl``.

Every event is one line ``{"ts", "t", "run_id", **context, "event", **fields}``:
``ts`` is the UTC instant to the millisecond (``2026-11-25T16:40:26.123Z``), ``t``
the same instant as epoch seconds. Each line is flushed as it is written, so a
crash loses nothing already written; :meth:`Journal.checkpoint` also fsyncs.
A journal opened again (``resume``) whose last line was cut mid-write (a
crash, a full disk) has that torn line cut and a ``journal.truncated`` event
written in its place, so appending never glues two events into one line.

The journal is a structlog bound logger underneath: :meth:`Journal.bind` returns
a view that adds context (``stage``, ``step``, ``host``) to its events and
shares the file. Values are made JSON-safe and secrets are masked where the
event is built: a field whose key names a password, secret or token is written
as ``***``, and so is a password inside any string (libpq ``password=...``,
``user:password@`` in a URI).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from enum import Enum
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any

import structlog

from orchestrator.errors import BadInput
from orchestrator.instants import iso_ms
from orchestrator.runner.room import UNSUPPORTED, release, reserve

MASK = "***"
JOURNAL_NAME = "journal.jsonl"
TRUNCATED = "journal.truncated"
"""The event :func:`read_journal` appends in place of a last line cut by a crash."""

_SECRET_KEY = re.compile(r"passw(?:or)?d|secret|token|_key$", re.IGNORECASE)
_SECRET_HINT = re.compile(r"passw(?:or)?d|secret|token|_key|bearer|://", re.IGNORECASE)
_INLINE_SECRET = re.compile(
    r"""(?P<key>[\w.-]*(?:passw(?:or)?d|secret|token|_key)[\w.-]*['"]?"""
    r"""(?:\s*[=:]\s*|\s+(?=['"])))"""
    r"""(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|"(?:[^"\\]|\\.)*(?:"|$)|\S+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]*@",
                           re.IGNORECASE)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_MAX_DEPTH = 32
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def parse_iso(text: str) -> float:
    """The epoch seconds of an ISO instant (``Z`` or an offset; naive means UTC)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def check_run_id(run_id: str) -> None:
    """A run id names a directory: letters, digits and ``._:-``; else :class:`BadInput`."""
    if not _RUN_ID.fullmatch(run_id):
        raise BadInput(f"run id {run_id!r}: only letters, digits and ._:- are allowed")


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    """Whether a field named ``key`` holds a secret (password, passwd, secret, token, or a
    name ending in ``_key`` such as ``api_key``)."""
    return _SECRET_KEY.search(key) is not None


def mask_text(text: str) -> str:
    """``text`` with every inline secret masked: libpq ``password=...``, ``*_KEY=...``,
    ``token: ...``, ``Bearer <token>``, URI ``user:pw@``."""
    if _SECRET_HINT.search(text) is None:
        return text
    text = _BEARER.sub(lambda m: m.group("head") + MASK, text)
    text = _INLINE_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return _URI_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON data with secrets masked.

    Datetimes become ISO strings, timedeltas seconds, sets and tuples lists,
    dataclasses and mappings dicts (secret keys masked), paths strings, enums
    their value, anything else ``str(value)``; every string goes through
    :func:`mask_text`.
    """
    kind = type(value)
    if kind is str:
        return mask_text(value)
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return mask_text(str(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if _depth > _MAX_DEPTH:
        return mask_text(str(value))
    depth = _depth + 1
    if isinstance(value, Mapping):
        return {str(k): MASK if is_secret_key(str(k)) else jsonable(v, depth)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v, depth) for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: MASK if is_secret_key(f.name) else jsonable(getattr(value, f.name), depth)
                for f in dataclasses.fields(value)}
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return mask_text(str(value))
    if isinstance(value, Enum):
        return jsonable(value.value, depth)
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}")
    return mask_text(str(value))


class _Sink:
    """The open journal file that every view of one journal shares.

    Writing the journal never steers the run: a write that fails (a full
    disk, a broken pipe on the progress echo) is said once on stderr and the
    run goes on; every event is also kept in memory (:attr:`events`) for the
    run's summary. Opening it reserves room past its end
    (:func:`~orchestrator.runner.room.reserve`), so a disk that fills during
    the run does not cut it; closing it gives back what was not used. The file
    is created 0600 in a 0700 directory, and never through a symbolic link.
    """

    def __init__(self, path: Path, echo: Callable[[dict[str, Any]], None] | None) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._echo = echo
        self._warned: set[str] = set()
        self._created = not path.exists()
        self._file: Any = None
        self.torn: tuple[int, int] | None = None
        """``(line, bytes)`` of a last line cut mid-write that opening removed, if any."""
        self.reserved = False
        """Whether room past the file's end is held (given back by :meth:`release`)."""
        try:
            self._file = open_private(path, "a")
        except OSError as exc:
            self._warn("journal", f"cannot open {path} ({exc}); events are kept in memory")
            return
        try:
            self.torn = _mend(path, self._file.fileno())
        except OSError as exc:
            self._warn("journal", f"cannot mend the last line of {path} ({exc})")
        try:
            reserve(self._file.fileno())
            self.reserved = True
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                self._warn("reserve", f"cannot reserve room for {path} ({exc}); a disk that "
                                      "fills during the run may cut the journal short")
            self.reserved = exc.errno == errno.ENOSPC  # some keep what they did allocate

    def write(self, record: dict[str, Any]) -> None:
        line = _ENCODER.encode(record) + "\n"
        with self._lock:
            self.events.append(record)
            if self._file is not None and not self._file.closed:
                try:
                    self._file.write(line)
                    self._file.flush()
                except OSError as exc:
                    self._warn("journal", f"writing {self.path} failed ({exc}); the run goes "
                                          "on and its events are kept in memory")
        if self._echo is not None:
            try:
                self._echo(record)
            except Exception as exc:  # noqa: BLE001 - progress output never stops a run
                self._echo = None
                self._warn("echo", f"progress output failed ({exc}); the run goes on")

    def checkpoint(self) -> None:
        with self._lock:
            if self._file is None or self._file.closed:
                return
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                if self._created:
                    directory = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(directory)
                    finally:
                        os.close(directory)
                    self._created = False
            except OSError as exc:
                self._warn("journal", f"syncing {self.path} failed ({exc}); the run goes on")

    def close(self) -> None:
        with self._lock:
            if self._file is not None and not self._file.closed:
                try:
                    self._flush_and_release()
                finally:
                    try:
                        self._file.close()
                    except OSError as exc:
                        self._warn("journal", f"closing {self.path} failed ({exc})")

    def release(self) -> None:
        """Give back the room reserved past the end; the journal stays open for writing."""
        with self._lock:
            if self._file is not None and not self._file.closed:
                self._flush_and_release()

    def _flush_and_release(self) -> None:
        """Flush, then give back the reserve if it is held: the size the release truncates
        to must count every line written."""
        try:
            self._file.flush()
        except OSError as exc:
            self._warn("journal", f"writing {self.path} failed ({exc})")
        if not self.reserved:
            return
        self.reserved = False
        try:
            release(self._file.fileno())
        except OSError as exc:
            self._warn("release", f"giving back the room reserved for {self.path} failed ({exc})")

    @property
    def closed(self) -> bool:
        return self._file is None or self._file.closed

    def _warn(self, what: str, message: str) -> None:
        if what in self._warned:
            return
        self._warned.add(what)
        try:
            sys.stderr.write(f"fastdowntime: warning: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            return  # stderr is gone too: nothing more can be said


def _mend(path: Path, descriptor: int) -> tuple[int, int] | None:
    """Cut a last line that a crash or a full disk stopped mid-write from the journal open on
    ``descriptor`` (for appending), so what is appended next starts a line of its own and
    the file stays one JSON object per line. Returns ``(line number, bytes cut)``, or None
    when the file ends with a whole line."""
    size = os.fstat(descriptor).st_size
    if size == 0:
        return None
    reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.pread(reader, 1, size - 1) == b"\n":
            return None
        data = os.pread(reader, size, 0)
    finally:
        os.close(reader)
    keep = data.rfind(b"\n") + 1
    os.ftruncate(descriptor, keep)
    return data.count(b"\n") + 1, size - keep


def open_private(path: Path, mode: str) -> Any:
    """Open ``path`` for writing text (``"a"`` or ``"w"``) as 0600 in a 0700 directory,
    refusing a symbolic link at ``path`` (``O_NOFOLLOW``)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_APPEND if mode == "a" else os.O_TRUNC
    descriptor = os.open(path, flags, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        return os.fdopen(descriptor, mode, encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise


def private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) and make it 0700: run records hold plans and hosts."""
    directory.mkdir(parents=True, exist_ok=True)
    if directory.is_symlink():
        raise OSError(f"{directory} is a symbolic link")
    os.chmod(directory, 0o700)


class _Logger(structlog.BoundLoggerBase):
    """A structlog bound logger whose processors end in a JSON-safe dict for the sink."""

    def record(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Run the processors over context + event + (sanitized) fields; write the result."""
        payload = {"event": mask_text(event)}
        payload.update(_sanitize(fields))
        _, record = self._process_event("record", None, payload)
        sink: _Sink = self._logger
        sink.write(dict(record))
        return dict(record)


def _sanitize(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` JSON-safe with secrets masked (context once at bind, fields per event)."""
    return {key: MASK if is_secret_key(key) else jsonable(value)
            for key, value in fields.items()}


class Journal:
    """Append-only JSON lines at ``<runs_dir>/<run_id>/journal.jsonl``.

    Every line is flushed as written (a crash loses nothing written) and
    fsync'd at :meth:`checkpoint`. ``clock`` gives each event's instant (epoch
    seconds); ``timer`` measures step durations and defaults to
    ``time.monotonic`` with the real clock, or to ``clock`` itself when a clock
    is injected, so a fake clock drives both. ``echo`` sees every event written
    (the CLI prints progress with it). Thread-safe.
    """

    path: Path
    run_id: str

    def __init__(self, runs_dir: Path, run_id: str, *,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] | None = None,
                 echo: Callable[[dict[str, Any]], None] | None = None) -> None:
        check_run_id(run_id)
        self.run_id = run_id
        self.path = Path(runs_dir).expanduser() / run_id / JOURNAL_NAME
        self._clock = clock
        self._timer = timer if timer is not None else (
            time.monotonic if clock is time.time else clock)
        self._sink = _Sink(self.path, echo)
        self._log = _Logger(self._sink, [self._stamp], {"run_id": run_id})
        if self._sink.torn is not None:
            line, cut = self._sink.torn
            self.event(TRUNCATED, line=line, bytes=cut, path=str(self.path), mended=True)

    def _stamp(self, _logger: Any, _method: str, event_dict: Any) -> dict[str, Any]:
        t = self._clock()
        stamped = {"ts": "", "t": 0.0, **event_dict}
        stamped["ts"] = iso_ms(t)
        stamped["t"] = round(t, 6)
        return stamped

    @property
    def context(self) -> dict[str, Any]:
        """The context this view adds to its events (``run_id`` and whatever was bound)."""
        return dict(structlog.get_context(self._log))

    def bind(self, **context: Any) -> Journal:
        """A view adding ``context`` (``stage=``, ``step=``, ``host=``) to its events."""
        view = Journal.__new__(Journal)
        view.__dict__.update(self.__dict__)
        view._log = self._log.bind(**_sanitize(context))
        return view

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event with this view's context; return the record as written."""
        return self._log.record(event, fields)

    def step(self, name: str, **fields: Any) -> StepRecord:
        """A context manager journaling one step.

        Writes ``step.start``; then ``step.done`` with ``outcome: ok``,
        ``started`` (the start event's ``ts``) and ``duration_s`` (to the
        millisecond) plus what the body added with ``note()``, or
        ``step.failed`` with ``outcome: failed``, ``started``, ``duration_s``,
        ``error_type`` and ``error``, and re-raises. ``step=name`` and
        ``fields`` (``host=``, ...) are bound to all three events and to events
        written with the record's ``event()``.
        """
        return StepRecord(self.bind(step=name, **fields), self._timer)

    def checkpoint(self) -> None:
        """Flush and fsync the journal: what was written survives a power cut."""
        self._sink.checkpoint()

    def release_reserve(self) -> None:
        """Give back the room the journal holds past its end, before the deploy lock frees
        the run for a ``resume`` that appends to the same file (:meth:`close` would cut at
        the size it read, racing those lines). Later events still append."""
        self._sink.release()

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event written through any view of this journal, in order (also when the
        file could not be written)."""
        return list(self._sink.events)

    def close(self) -> None:
        """Close the file (every view shares it). Closing twice is harmless."""
        self._sink.close()

    @property
    def closed(self) -> bool:
        return self._sink.closed

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class StepRecord:
    """One running step: ``note(**fields)`` adds data to its done (or failed) event."""

    def __init__(self, journal: Journal, timer: Callable[[], float]) -> None:
        self.journal = journal
        self.notes: dict[str, Any] = {}
        self.started: str | None = None
        """The ``ts`` of the step's ``step.start`` event."""
        self.duration_s: float | None = None
        self.outcome: str | None = None
        self._timer = timer
        self._started = 0.0

    def note(self, **fields: Any) -> None:
        """Add ``fields`` to the step's closing event (later notes win)."""
        self.notes.update(fields)

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write an event inside the step, with the step's context."""
        return self.journal.event(event, **fields)

    def __enter__(self) -> StepRecord:
        self.started = self.journal.event("step.start")["ts"]
        self._started = self._timer()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.duration_s = round(self._timer() - self._started, 3)
        fields: dict[str, Any]
        if exc is None:
            self.outcome = "ok"
            fields = {"outcome": "ok", "started": self.started, "duration_s": self.duration_s}
            event = "step.done"
        else:
            self.outcome = "failed"
            fields = {"outcome": "failed", "started": self.started,
                      "duration_s": self.duration_s, "error_type": type(exc).__name__,
                      "error": str(exc)}
            event = "step.failed"
        fields.update((k, v) for k, v in self.notes.items() if k not in fields)
        self.journal.event(event, **fields)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The events of a journal file, in order; a missing file reads as no events.

    A last line that is not a JSON object (a crash cut it mid-write) is skipped
    and replaced by a ``{"event": "journal.truncated", "line": N, "bytes": B}``
    marker, so readers can say so. Any earlier bad line means the file is
    damaged: :class:`BadInput` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    events: list[dict[str, Any]] = []
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        record: Any
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if isinstance(record, dict):
            events.append(record)
        elif index == last:
            events.append({"event": TRUNCATED, "line": index + 1, "bytes": len(raw),
                           "path": str(path)})
        else:
            raise BadInput(f"{path} line {index + 1}: not a JSON object; the journal is damaged")
    return events


__all__ = ["JOURNAL_NAME", "MASK", "TRUNCATED", "Journal", "StepRecord", "check_run_id",
           "is_secret_key", "open_private", "private_dir",
           "iso_ms", "jsonable", "mask_text", "parse_iso", "read_journal"]
