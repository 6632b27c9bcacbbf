"""Hold mode: the window holds requests at pgbouncer instead of turning them away.

The actions in hold mode (haproxy untouched until the swap, the window closing as the held
queries run), and the preflight checks that a held request can wait the window out.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import Config, load_config
from orchestrator.db import connections
from orchestrator.db.connections import SERVED_S, PgbouncerLimits, _pgbouncer_seconds
from orchestrator.db.preflight import Context, check_hold
from orchestrator.errors import BadInput
from orchestrator.remote.checks import check_haproxy_waits
from orchestrator.remote.haproxy_config import _words, backend_timeouts, read_backend, seconds
from orchestrator.remote.results import FAILED, OK, HostResult
from orchestrator.runner.actions import ACTIONS
from orchestrator.runner.actions.script import script_lines
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.fakes import FakeClock, make_run

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")


def configured(config: Config = SANDBOX, **sections: dict[str, Any]) -> Config:
    """``config`` with some settings of some sections replaced."""
    return dataclasses.replace(config, **{
        name: dataclasses.replace(getattr(config, name), **values)
        for name, values in sections.items()})


# --- the actions ------------------------------------------------------------------------

WINDOW_MODULES = ("orchestrator.db.cold", "orchestrator.db.connect", "orchestrator.db.connections",
                  "orchestrator.db.trial")


def test_the_window_code_is_loaded_with_its_actions() -> None:
    """The window's database code is loaded with its actions (imported inside, ~30 ms)."""
    code = ("import sys, orchestrator.runner.actions.window; "
            f"print([m for m in {WINDOW_MODULES!r} if m not in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr



class Recorder:
    """haproxy and the connection control, recording what they are asked."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.clock = clock

    def set_state(self, servers: list[str], state: str) -> None:
        self.sent.append(("set", state, *servers))

    def wait_drained(self, servers: list[str], timeout_s: float) -> float:
        self.sent.append(("drained", *servers))
        return 0.0

    def restore(self) -> None:
        self.sent.append(("RESUME",))

    def served(self, within_s: float) -> int:
        self.sent.append(("served", str(within_s)))
        if self.clock is not None:
            self.clock.advance(0.125)  # the held queue takes its time: after the window
        return 0

    def render(self) -> list[str]:
        return ["restore pgbouncer: RESUME app -- if paused"]

    def render_served(self) -> list[str]:
        return ["served pgbouncer: SHOW POOLS"]


def window_run(mode: str) -> Any:
    clock = FakeClock()
    recorder = Recorder(clock)
    slots = {h.name: (8001, 8002) for h in SANDBOX.role("app")}
    run = make_run(configured(window={"mode": mode}), haproxy=recorder, control=recorder,
                   slots=slots, clock=clock, wall=clock)
    return run, recorder, clock


def test_wait_standbys_before_the_window_opens_the_primary_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A playbook may wait for the standbys before prepare_window: the step opens the
    primary (kept on the run, where prepare_window finds it) and opens it only once."""
    from orchestrator.db import replication
    from orchestrator.runner.actions import window

    opened: list[str] = []
    waited: list[Any] = []
    primary = SimpleNamespace(closed=False)
    monkeypatch.setattr(window, "connect", lambda settings, what: opened.append(what) or primary)
    monkeypatch.setattr(replication, "wait_replayed",
                        lambda settings, conn, timeout_s: waited.append(conn) or 0.25)
    run = make_run(SANDBOX)
    assert ACTIONS["wait_standbys"]().do(run) == {"waited_s": 0.25}
    assert ACTIONS["wait_standbys"]().do(run) == {"waited_s": 0.25}
    assert opened == ["primary"] and run.primary is primary and waited == [primary, primary]


def test_hold_opens_the_window_without_touching_haproxy() -> None:
    run, recorder, _ = window_run("hold")
    data = ACTIONS["open_window"]().do(run)
    assert recorder.sent == [] and data == {"mode": "hold"}
    assert run.window_opened is not None
    drain, drained, _ = window_run("drain")
    ACTIONS["open_window"]().do(drain)
    assert drained.sent[0][:2] == ("set", "drain")


def test_a_window_opened_before_the_slots_were_read_reads_them() -> None:
    """A playbook may open the window first: in drain mode open_window reads the slots
    itself (it drains the serving slot), and its undo drains back nothing it never read."""
    from orchestrator.runner.actions.script import ReadSlots

    run, recorder, _ = window_run("drain")
    action = ACTIONS["open_window"]()
    assert action.reads(run) == ()
    run.slots = {}
    assert action.reads(run) == (ReadSlots(),)
    action.undo(run)
    assert recorder.sent == []


def test_hold_closes_the_window_as_the_held_queries_run() -> None:
    """RESUME ends the window in hold mode; neither the wait for pgbouncer to serve the
    held queries nor close_window after it moves its end."""
    run, recorder, clock = window_run("hold")
    ACTIONS["open_window"]().do(run)
    clock.advance(0.25)
    ACTIONS["restore_connections"]().do(run)
    assert recorder.sent == [("RESUME",), ("served", str(SERVED_S))]
    assert run.outage_s == 0.25
    drain, drained, _ = window_run("drain")
    ACTIONS["restore_connections"]().do(drain)
    assert drained.sent == [("RESUME",)]  # users got no answer: nobody is held
    clock.advance(1.0)
    closed = run.window_closed
    from orchestrator.runner.actions.window import _window_closed

    _window_closed(run, {})
    assert run.window_closed == closed and run.outage_s == 0.25


def test_a_held_window_undone_never_touches_haproxy() -> None:
    run, recorder, _ = window_run("hold")
    ACTIONS["open_window"]().do(run)
    ACTIONS["open_window"]().undo(run)
    assert recorder.sent == [] and run.window_closed is not None
    lines = script_lines(ACTIONS["open_window"]().script(run), run)
    assert not [line for line in lines if line.startswith("lb:")]
    assert any("haproxy keeps routing" in line for line in lines)


# --- the checks: pgbouncer and the app --------------------------------------------------


def hold_check(monkeypatch: pytest.MonkeyPatch, config: Config,
               limits: PgbouncerLimits | None = None) -> Any:
    monkeypatch.setattr(connections, "pgbouncer_limits",
                        lambda settings, dbname: limits or PgbouncerLimits(120.0, 500, 20))
    conn = SimpleNamespace(info=SimpleNamespace(dbname="app"))
    return check_hold(Context(config, conn, None, {}))  # type: ignore[arg-type]


def test_the_sandbox_can_hold_a_request_for_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    result = hold_check(monkeypatch, SANDBOX)
    assert result.ok, result.detail
    assert "can wait 32 s" in result.detail


@pytest.mark.parametrize(("sections", "limits", "named"), [
    ({"database": {"cut_method": "kill"}}, None, 'cut_method = "kill"'),
    ({"database": {"pgbouncer_admin_dsn": None}}, None, "pgbouncer_admin_dsn"),
    ({}, PgbouncerLimits(20.0, 500, 20), "query_wait_timeout = 20 s"),
    ({}, PgbouncerLimits(120.0, 30, 20), "max_client_conn = 30"),
    ({"app": {"pool_wait_s": 10.0}}, None, "[app] pool_wait_s = 10 s"),
    ({"window": {"budget_s": 200.0}}, None, "query_wait_timeout = 120 s"),
])
def test_hold_is_refused_where_a_request_would_time_out(
        monkeypatch: pytest.MonkeyPatch, sections: dict[str, dict[str, Any]],
        limits: PgbouncerLimits | None, named: str) -> None:
    """Each setting that would fail a held request is named, with its value."""
    result = hold_check(monkeypatch, configured(**sections), limits)
    assert not result.ok and named in result.detail, result.detail


def test_no_pgbouncer_wait_limit_and_an_unknown_pool_wait_pass_with_a_note(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result = hold_check(monkeypatch, configured(app={"pool_wait_s": None}),
                        PgbouncerLimits(0.0, 500, 20))
    assert result.ok and "pool_wait_s not set" in result.detail


def test_drain_mode_needs_no_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    result = hold_check(monkeypatch, configured(window={"mode": "drain"},
                                                database={"cut_method": "kill"}))
    assert result.ok


def test_pgbouncer_times() -> None:
    assert _pgbouncer_seconds("120") == 120.0
    assert _pgbouncer_seconds("0") == 0.0
    assert _pgbouncer_seconds("2min") == 120.0
    assert _pgbouncer_seconds("1500ms") == 1.5
    with pytest.raises(ValueError):
        _pgbouncer_seconds("soon")


# --- the checks: haproxy ----------------------------------------------------------------


HAPROXY = """\
global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout server 60s   # long enough
backend other
    timeout server 5s
backend app
    balance roundrobin
defaults
    timeout server 1s
listen stats
    timeout queue 3m
"""


def test_haproxy_times_and_sections() -> None:
    assert seconds("30s") == 30 and seconds("1500") == 1.5 and seconds("2m") == 120
    with pytest.raises(BadInput):
        seconds("30 s")
    app = backend_timeouts(HAPROXY, "app")
    assert (app.server_s, app.queue_s) == (60.0, 2.0)  # queue: timeout connect, as haproxy
    assert backend_timeouts(HAPROXY, "other").server_s == 5.0
    stats = backend_timeouts(HAPROXY, "stats")
    assert (stats.server_s, stats.queue_s) == (1.0, 180.0)
    with pytest.raises(BadInput, match="no backend 'nope'"):
        backend_timeouts(HAPROXY, "nope")


CHECKED = """\
defaults
    timeout server 60s
    timeout queue 60s
backend app
    option httpchk GET /+health HTTP/1.1
    default-server inter 1s fastinter 200ms fall 2 rise 1
    server app1_8001 127.0.0.11:8001 check
    server app1_8002 127.0.0.11:8002 check fall 3 inter 500
backend quiet
    option httpchk
    timeout check 20s
    server a 127.0.0.1:1 check
backend plain
    server a 127.0.0.1:1
backend modern
    http-check send meth GET uri /+alive?x=1 ver HTTP/1.1
    option httpchk
    server a 127.0.0.1:1 check
"""


def test_haproxy_health_checks_are_read_as_the_least_patient_server() -> None:
    app = read_backend(CHECKED, "app").checks
    # app1_8002 checks every 500 ms (fall 3): 1.5 s; app1_8001 1 s x 2: 2 s -> 8002's pace,
    # never one server's fall with another's inter
    assert (app.path, app.fall, app.inter_s) == ("/+health", 3, 0.5)
    assert app.down_after_s == 1.5  # fall 3 x inter 0.5 s (no timeout check)
    quiet = read_backend(CHECKED, "quiet").checks
    assert (quiet.path, quiet.timeout_s, quiet.fall) == ("/", 20.0, 3)  # haproxy's defaults
    assert quiet.down_after_s == 60.0
    assert read_backend(CHECKED, "plain").checks.path is None  # no HTTP checks
    assert read_backend(CHECKED, "modern").checks.path == "/+alive"
    with pytest.raises(BadInput, match="not an haproxy count: '\\$\\{FALL\\}'"):
        read_backend(CHECKED.replace("fall 3", 'fall "${FALL}"'), "app")


UNCHECKED = """\
defaults
    option httpchk GET /+health
    timeout check 1s
backend bare          # option httpchk inherited, but no server has check
    server a 127.0.0.1:1
    server b 127.0.0.1:2 inter 1s
backend late         # a default-server line counts for the servers after it only
    server a 127.0.0.1:1
    default-server check
backend tcp
    option tcp-check
    server a 127.0.0.1:1 check
backend all
    default-server check inter 1s fall 2
    server a 127.0.0.1:1
    server b 127.0.0.1:2 no-check inter 100ms fall 1
backend opted-out
    default-server check
    server a 127.0.0.1:1 no-check
backend templated
    server-template app 1-3 127.0.0.1:8000 check inter 3s
"""


def test_only_checked_servers_and_http_checks_count() -> None:
    """haproxy checks a server only with ``check``, and asks a page only with HTTP checks:
    the rest must never refuse a held window."""
    for name in ("bare", "late", "tcp", "opted-out"):
        assert read_backend(UNCHECKED, name).checks.path is None, name
    every = read_backend(UNCHECKED, "all").checks
    # b is not checked (no-check): its 100 ms x 1 does not count
    assert (every.path, every.inter_s, every.fall, every.timeout_s) == ("/+health", 1.0, 2, 1.0)
    templated = read_backend(UNCHECKED, "templated").checks
    assert (templated.path, templated.inter_s) == ("/+health", 3.0)
    result = check_haproxy_waits(ConfigHost(UNCHECKED.replace("backend bare", "backend app")),
                                 SANDBOX)  # type: ignore[arg-type]
    assert result.ok, result.detail
    assert result.data["check_path"] is None


NAMED = """\
defaults slow
    timeout server 90s
    timeout queue 90s
defaults quick  # the last defaults: what a section without "from" starts from
    timeout server 2s
backend app from slow
    option httpchk 'GET' "/+he\\x61lth" HTTP/1.1\\r\\nHost:\\ app
    server a 127.0.0.1:1 check inter "1s" fall 4  # checks: 4 x 1 s
backend other
    timeout server 45s
    timeout connect 3s
backend from         # a backend may be named "from"
    server a 127.0.0.1:1 check
"""


def test_named_defaults_quotes_and_escapes() -> None:
    app = read_backend(NAMED, "app")
    assert (app.timeouts.server_s, app.timeouts.queue_s) == (90.0, 90.0)
    assert (app.checks.path, app.checks.fall, app.checks.inter_s) == ("/+health", 4, 1.0)
    other = read_backend(NAMED, "other").timeouts
    assert (other.server_s, other.queue_s) == (45.0, 3.0)  # quick's 2 s overridden
    assert read_backend(NAMED, "from").timeouts.server_s == 2.0  # from quick, the last
    assert _words(r"a\#b 'c\d' \1 \x4a#comment", 1) == ["a#b", "c\\d", "\\1", "J"]
    with pytest.raises(BadInput, match="line 1: 'backend app from nowhere' names no defaults "
                                       "section 'nowhere'"):
        read_backend("backend app from nowhere\n", "app")
    with pytest.raises(BadInput, match="line 2: unterminated \" quote"):
        read_backend('backend app\n    option httpchk "/x\n', "app")


def test_health_checks_that_wait_for_the_database_refuse_a_held_window() -> None:
    held = CHECKED.replace("backend quiet", "backend nothing").replace("backend app", "backend x")
    waits = held.replace("backend x", "backend app", 1)
    result = check_haproxy_waits(ConfigHost(waits), SANDBOX)  # type: ignore[arg-type]
    assert not result.ok
    assert "health checks ask /+health" in result.detail and "after about 1.5 s" in result.detail
    alive = waits.replace("GET /+health", "GET /+alive")
    result = check_haproxy_waits(ConfigHost(alive), SANDBOX)  # type: ignore[arg-type]
    assert result.ok, result.detail
    assert result.data["check_path"] == "/+alive"
    patient = waits.replace("backend app\n", "backend app\n    timeout check 40s\n")
    result = check_haproxy_waits(ConfigHost(patient), SANDBOX)  # type: ignore[arg-type]
    assert result.ok, result.detail  # 2 x 40 s outlasts the 32 s a window may take


class ConfigHost:
    """The LB host over SSH: ``cat`` answers with ``text`` (None: the file is missing)."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.ran: list[str] = []

    def run(self, host: Any, command: Any, **_: Any) -> HostResult:
        self.ran.append(command.render())
        if self.text is None:
            return HostResult(host.name, FAILED, 1, "", "cat: no such file", 0.0, "cat")
        return HostResult(host.name, OK, 0, self.text, "", 0.0, "cat")


def test_the_haproxy_configuration_is_read_on_the_lb_host() -> None:
    ok = HAPROXY.replace("timeout connect 2s", "timeout queue 60s")
    host = ConfigHost(ok)
    result = check_haproxy_waits(host, SANDBOX)  # type: ignore[arg-type]
    assert result.ok, result.detail
    assert host.ran and "haproxy.cfg" in host.ran[0]
    result = check_haproxy_waits(ConfigHost(HAPROXY), SANDBOX)  # type: ignore[arg-type]
    assert not result.ok and "timeout queue 2 s" in result.detail


def test_haproxy_settings_stand_in_for_an_unreadable_configuration() -> None:
    unreadable = ConfigHost(None)
    result = check_haproxy_waits(unreadable, SANDBOX)  # type: ignore[arg-type]
    assert not result.ok and "could not read" in result.detail
    assert "[lb] timeout_server_s" in result.detail
    config = configured(lb={"timeout_server_s": 40.0})
    result = check_haproxy_waits(unreadable, config)  # type: ignore[arg-type]
    assert result.ok and "timeout queue unbounded" in result.detail
    config = configured(lb={"timeout_server_s": 30.0, "haproxy_config": None})
    result = check_haproxy_waits(unreadable, config)  # type: ignore[arg-type]
    assert not result.ok and "timeout server 30 s ([lb] timeout_server_s" in result.detail


def test_a_config_names_a_mode_it_knows(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('[window]\nmode = "wait"\n')
    with pytest.raises(BadInput, match="window.mode"):
        load_config(tmp_path / "x.toml")
    (tmp_path / "x.toml").write_text("[window]\nbudget_s = 5\n")
    assert load_config(tmp_path / "x.toml").window.mode == "hold"
