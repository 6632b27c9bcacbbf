"""Whole deploys against a fresh sandbox: the CLI in a subprocess, a client of our own.

``fresh`` gives every test a sandbox as just built (a stopped copy of one,
made once per session and put back in place), so each starts with every host
on the sample repository's first revision and the database at the baseline.
Tests add revisions to ``.sandbox/repo`` with :meth:`Sandbox.commit`, run
``python -m orchestrator`` with :meth:`Sandbox.cli`
(real exit codes, real signals), watch the run's journal with
:func:`wait_for_event`, and measure what users see with :class:`Client`, which
shares nothing with the orchestrator's own probe.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from orchestrator.sandbox import manager
from orchestrator.sandbox.configfile import render_config
from orchestrator.sandbox.haproxy import server_states
from orchestrator.sandbox.layout import (
    DB_NAME,
    PRIMARY_PORT,
    PROJECT_ROOT,
    PUBLIC_PORT,
    Layout,
    sandbox_dir,
)

CONFIG = PROJECT_ROOT / "config" / "sandbox.toml"
HEALTH = "/+health"
COLD_PATCHES = ("patch-2200-01-0", "patch-2200-03-0", "patch-2200-04-0", "patch-2200-05-0")
"""The sample repository's cold patches: never rehearsed, so each needs an approval."""

_GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "LC_ALL": "C",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_AUTHOR_DATE": "1800000000 +0000", "GIT_COMMITTER_DATE": "1800000000 +0000",
}


def approvals(*extra: str) -> list[str]:
    """``--approve PATCH:e2e`` for every sample cold patch and ``extra`` ones."""
    return [arg for patch in (*COLD_PATCHES, *extra) for arg in ("--approve", f"{patch}:e2e")]


@dataclass(frozen=True)
class Sandbox:
    """A freshly built sandbox: its layout, the config that describes it, its revisions."""

    layout: Layout
    config: Path
    first: str
    """The revision every host runs after ``up`` (the repository's root)."""

    @property
    def repo(self) -> Path:
        return self.layout.repo

    @property
    def runs(self) -> Path:
        return self.layout.base / "runs"

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.repo), *args], env=_GIT_ENV, check=True,
                              capture_output=True, text=True).stdout.strip()

    def tip(self) -> str:
        return self.git("rev-parse", "db-stable")

    def commit(self, subject: str, files: dict[str, str]) -> str:
        """Write ``files`` onto db-stable's work tree, commit them; return the new tip."""
        for name, text in files.items():
            target = self.repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            self.git("add", name)
        self.git("commit", "-q", "-m", subject)
        return self.tip()

    def edit(self, name: str, old: str, new: str) -> str:
        """``name``'s text at the tip with ``old`` (which must occur) replaced by ``new``."""
        text = (self.repo / name).read_text()
        assert old in text, f"{name} no longer holds {old!r}"
        return text.replace(old, new)

    def write_config(self, directory: Path, **edits: str) -> Path:
        """A config for this sandbox (absolute paths) with ``key = value`` lines replaced.

        ``edits`` maps a key to its new TOML value, e.g. ``budget_s="3"``; the key
        must occur exactly once in the rendered file (a commented-out key counts: the
        edit sets it).
        """
        lines = render_config(self.layout).splitlines()
        for key, value in edits.items():
            hits = [i for i, line in enumerate(lines)
                    if line.split(" = ")[0].removeprefix("# ") == key]
            assert len(hits) == 1, f"config key {key} occurs {len(hits)} times"
            lines[hits[0]] = f"{key} = {value}"
        path = directory / "sandbox.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def cli(self, *args: str, config: Path | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``python -m orchestrator -c CONFIG ARGS`` to its end (output captured)."""
        return subprocess.run(self.argv(*args, config=config), capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=PROJECT_ROOT)

    def spawn(self, *args: str, config: Path | None = None, log: Path) -> subprocess.Popen[str]:
        """The same command started in the background, its output going to ``log``."""
        with log.open("w") as out:
            return subprocess.Popen(self.argv(*args, config=config), stdout=out,
                                    stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT)

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "orchestrator", "-c", str(config or self.config), *args]

    def show(self, run: str = "last") -> dict[str, Any]:
        done = self.cli("show", run, "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def journal(self, run_id: str) -> Path:
        return self.runs / run_id / "journal.jsonl"

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the primary's application database (as fdt_admin)."""
        conn = psycopg2.connect(host="127.0.0.1", port=PRIMARY_PORT, dbname=DB_NAME,
                                user="fdt_admin", passfile=str(self.layout.pgpass),
                                connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def patches(self) -> set[tuple[int, int, int]]:
        """Every (major, minor, patch) in the revision table."""
        return {(a, b, c) for a, b, c in
                self.query("SELECT major, minor, patch FROM LaunchpadDatabaseRevision")}

    def item_columns(self) -> set[str]:
        return {name for (name,) in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'item'")}

    def haproxy(self) -> dict[str, str]:
        """``{server: status}`` of the app backend, read on the admin socket."""
        return server_states(self.layout.haproxy_socket)

    def current(self, host: str) -> str:
        """The release ``current`` points at on ``host``."""
        root = next(h for h in self.layout.hosts if h.name == host).app_root
        return (root / "current").resolve().name

    @property
    def app_hosts(self) -> list[str]:
        return [h.name for h in self.layout.role("app")]


@pytest.fixture(scope="session")
def _golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stopped copy of a sandbox just built from scratch. Each e2e test gets it back
    (:func:`restore`) instead of building one again: initdb, the standby's base backup,
    keys and the sample repository cost about 6 s a test; starting a copy, about 2."""
    manager.down()
    manager.up()
    manager.stop()
    golden = tmp_path_factory.mktemp("golden") / "sandbox"
    _copy(sandbox_dir(), golden)
    # a daemon's pid file would name a pid some other process may hold when it is restored
    for pidfile in golden.rglob("*.pid"):
        pidfile.unlink()
    yield golden
    shutil.rmtree(golden.parent)


def _copy(source: Path, target: Path) -> None:
    """``cp -a``: owners (the database's files are fdtpg's), modes and links kept."""
    subprocess.run(["cp", "-a", "--", str(source), str(target)], check=True,
                   capture_output=True)


def restore(golden: Path) -> Layout:
    """Take the sandbox down, put the golden copy in its place and start it."""
    manager.down()
    _copy(golden, sandbox_dir())
    return manager.up()


@pytest.fixture(scope="module")
def _leave_fresh(_golden: Path) -> Iterator[None]:
    """After a module of e2e tests, leave a fresh sandbox (first revision) for what follows."""
    yield
    restore(_golden)


@pytest.fixture
def fresh(_leave_fresh: None, _golden: Path) -> Sandbox:
    """A sandbox as just built: every host on the first revision, no run yet."""
    layout = restore(_golden)
    first = json.loads((layout.base / "layout.json").read_text())["first"]
    return Sandbox(layout, CONFIG, first)


# --- waiting on the journal -------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """The journal's complete lines (a line being written is left for the next read)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return events


def wait_until(what: str, found: Callable[[], Any], timeout: float,
               proc: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``found()`` every 20 ms until it is truthy; fail after ``timeout`` seconds.

    When ``proc`` ends first, fail at once (what we wait for will not come).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the orchestrator exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g} s")
        time.sleep(0.02)


def wait_for_run(sandbox: Sandbox, proc: subprocess.Popen[str] | None = None,
                 timeout: float = 30) -> str:
    """The id of the (only) run that appears under the sandbox's runs directory."""
    def one() -> str | None:
        ids = [journal.parent.name for journal in sandbox.runs.glob("*/journal.jsonl")]
        return ids[0] if len(ids) == 1 else None
    return str(wait_until("run directory", one, timeout, proc))


def wait_for_event(path: Path, match: Callable[[dict[str, Any]], bool], timeout: float,
                   proc: subprocess.Popen[str] | None = None,
                   what: str = "journal event") -> dict[str, Any]:
    """The first journal event ``match`` accepts, polling the file until ``timeout``."""
    return dict(wait_until(what, lambda: next((e for e in read_events(path) if match(e)),
                                              None), timeout, proc))


def step_started(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "step.start" and e.get("step") == name


def event_named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name


# --- what users see ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request: when it started and ended (epoch seconds), HTTP status (None: no answer)."""

    start: float
    end: float
    status: int | None
    body: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def revision(self) -> str | None:
        try:
            return str(json.loads(self.body)["revision"])
        except (ValueError, KeyError, TypeError):
            return None


def get(path: str = HEALTH, timeout: float = 2.0) -> Answer:
    """GET ``path`` through haproxy on a fresh connection."""
    start = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", PUBLIC_PORT, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return Answer(start, time.time(), response.status, body)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(start, time.time(), None, str(exc))
    finally:
        conn.close()


def get_direct(address: str, port: int, timeout: float = 2.0) -> Answer:
    """GET /+health of one instance, bypassing haproxy."""
    start = time.time()
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", HEALTH)
        response = conn.getresponse()
        return Answer(start, time.time(), response.status, response.read().decode())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(start, time.time(), None, str(exc))
    finally:
        conn.close()


class Client:
    """Our own user: a thread asking ``path`` through haproxy every ``interval_s``."""

    def __init__(self, path: str = HEALTH, interval_s: float = 0.01,
                 timeout_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2e client")

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.answers.append(get(self.path, self.timeout_s))
            next_at += self.interval_s
            wait = next_at - time.monotonic()
            if wait <= 0:  # a slow answer: ask again at once, the schedule restarts here
                next_at = time.monotonic()
                continue
            self._stop.wait(wait)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def failures(self, start: float = 0.0, end: float = float("inf")) -> list[Answer]:
        """Failed answers whose request started in [start, end]."""
        return [a for a in self.answers if not a.ok and start <= a.start <= end]

    def outages(self) -> list[tuple[float, float | None]]:
        """Runs of failures: (first failed request's start, next good answer's end or None)."""
        found: list[tuple[float, float | None]] = []
        since: float | None = None
        for answer in self.answers:
            if not answer.ok and since is None:
                since = answer.start
            elif answer.ok and since is not None:
                found.append((since, answer.end))
                since = None
        if since is not None:
            found.append((since, None))
        return found

    def rate(self) -> float:
        """Requests per second over the client's life."""
        if len(self.answers) < 2:
            return 0.0
        return len(self.answers) / (self.answers[-1].end - self.answers[0].start)
