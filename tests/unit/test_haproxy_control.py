"""haproxy control against a fake admin channel: framing, answer checks, one round trip
per batch, hostile names, the drain deadline on an injected clock, reopening the channel.

The fake speaks haproxy 2.6's CLI framing as measured on the sandbox (each answer
followed by an empty line and the prompt, an empty answer for a successful ``set``);
its tables are a real ``show stat`` / ``show servers state`` captured from the
sandbox while a client ran and ``app1_8001`` was drained.
"""

from __future__ import annotations

import re
import time
from typing import Any, cast

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import Config, HostSettings, LbSettings, SshSettings
from orchestrator.errors import BadInput, ConfigError, ExitCode
from orchestrator.remote.haproxy import POLL_S, Haproxy
from orchestrator.remote.haproxy_wire import (
    MAX_LINE_BYTES,
    STATES,
    HaproxyError,
    NotDrained,
    admin_state,
    answer_problem,
    check_line,
    pack,
    parse_stat,
    server_stats,
    set_state_command,
    set_state_request,
    swap_commands,
    swap_request,
    take_answer,
)
from orchestrator.remote.ssh import Remote
from tests.fakes import FakeClock

SOCKET = "/srv/lb1/haproxy/haproxy.sock"
SHOW_STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
app,app1_8001,0,0,0,2,,13,1339,29913,,0,,0,0,0,0,DRAIN,1,1,0,0,0,0,0,,1,3,1,,13,,2,13,,13,L7OK,200,1,0,13,0,0,0,0,,,,13,0,0,,,,,0,,,0,1,12,13,,,,Layer7 check passed,,1,2,2,,,,127.0.0.11:8001,,http,,,,,,,,0,13,0,,,0,,0,1,52,54,0,0,0,0,2,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app1_8002,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,1,228,228,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.11:8002,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app2_8001,0,0,3,4,,18,1524,34515,,0,,0,0,0,0,UP,1,1,0,0,0,369,0,,1,3,3,,18,,2,17,,17,L7OK,200,4,0,15,0,0,0,0,,,,15,0,0,,,,,0,,,0,0,9,9,,,,Layer7 check passed,,1,2,2,,,,127.0.0.12:8001,,http,,,,,,,,0,18,0,,,0,,0,0,38,38,0,0,0,3,4,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app2_8002,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,369,369,,1,3,4,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.12:8002,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app3_8001,0,0,1,2,,17,1634,34747,,0,,0,0,0,0,UP,1,1,0,0,0,369,0,,1,3,5,,17,,2,16,,16,L7OK,200,5,0,16,0,0,0,0,,,,16,0,0,,,,,0,,,0,0,11,11,,,,Layer7 check passed,,1,2,2,,,,127.0.0.13:8001,,http,,,,,,,,0,17,0,,,0,,0,0,43,43,0,0,0,1,2,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app3_8002,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,369,369,,1,3,6,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.13:8002,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app4_8001,0,0,2,3,,17,1545,34515,,0,,0,0,0,0,UP,1,1,0,0,0,369,0,,1,3,7,,17,,2,17,,17,L7OK,200,5,0,15,0,0,0,0,,,,15,0,0,,,,,0,,,0,0,10,10,,,,Layer7 check passed,,1,2,2,,,,127.0.0.14:8001,,http,,,,,,,,0,17,0,,,0,,0,0,35,35,0,0,0,2,3,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,app4_8002,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,369,369,,1,3,8,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.14:8002,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
"""  # noqa: E501

SHOW_SERVERS_STATE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 app 1 app1_8001 127.0.0.11 2 8 1 1 0 15 3 2 6 0 0 0 - 8001 - 0 0 - - 0
3 app 2 app1_8002 127.0.0.11 0 5 1 1 228 1 0 0 14 0 0 0 - 8002 - 0 0 - - 0
3 app 3 app2_8001 127.0.0.12 2 0 1 1 369 15 3 2 6 0 0 0 - 8001 - 0 0 - - 0
3 app 4 app2_8002 127.0.0.12 0 5 1 1 369 1 0 0 14 0 0 0 - 8002 - 0 0 - - 0
3 app 5 app3_8001 127.0.0.13 2 0 1 1 369 15 3 2 6 0 0 0 - 8001 - 0 0 - - 0
3 app 6 app3_8002 127.0.0.13 0 5 1 1 369 1 0 0 14 0 0 0 - 8002 - 0 0 - - 0
3 app 7 app4_8001 127.0.0.14 2 0 1 1 369 15 3 2 6 0 0 0 - 8001 - 0 0 - - 0
3 app 8 app4_8002 127.0.0.14 0 5 1 1 369 1 0 0 14 0 0 0 - 8002 - 0 0 - - 0
"""  # noqa: E501


# --- a fake haproxy CLI behind a fake SSH channel ---------------------------------------


def _rows(text: str, skip: int) -> list[list[str]]:
    return [line.split("," if skip == 1 else " ") for line in text.splitlines()[skip:] if line]


class FakeCli:
    """haproxy 2.6's admin CLI as this module uses it, seeded from the sandbox capture."""

    STAT_HEADER = SHOW_STAT.splitlines()[0]
    STATE_HEAD = "\n".join(SHOW_SERVERS_STATE.splitlines()[:2])

    def __init__(self, extra: int = 0) -> None:
        self.stat_rows = {row[1]: row for row in _rows(SHOW_STAT, 1)}
        self.state_rows = {row[3]: row for row in _rows(SHOW_SERVERS_STATE, 2)}
        for i in range(extra):  # more servers, shaped like app2_8001
            name = f"web{i}_8001"
            self.stat_rows[name] = [*self.stat_rows["app2_8001"]]
            self.stat_rows[name][1] = name
            self.state_rows[name] = [*self.state_rows["app2_8001"]]
            self.state_rows[name][3] = name
        self.admin = {name: int(row[6]) for name, row in self.state_rows.items()}
        self.sessions = {name: int(row[4]) for name, row in self.stat_rows.items()}
        self.queued = {name: 0 for name in self.stat_rows}
        self.executed: list[str] = []

    def answer(self, command: str) -> str:
        self.executed.append(command)
        words = command.split()
        if command in ("prompt", "set timeout cli 3600"):
            return ""
        if command == "show info":
            return "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nUptime_sec: 369\n"
        if command == "show stat app 4 -1":
            return self.show_stat()
        if command == "show servers state app":
            return self.show_servers_state()
        if len(words) == 5 and words[:2] == ["set", "server"] and words[3] == "state":
            backend, _, server = words[2].partition("/")
            if backend != "app":
                return "No such backend.\n"
            if server not in self.admin:
                return "No such server.\n"
            bits = self.admin[server]
            self.admin[server] = {"ready": bits & ~0x09, "drain": bits & ~0x01 | 0x08,
                                  "maint": bits & ~0x08 | 0x01}[words[4]]
            return ""
        return "Unknown command, but maybe one of the following ones is a better match:\n"

    def state(self, server: str) -> str:
        return admin_state(self.admin[server])

    def show_stat(self) -> str:
        lines = [self.STAT_HEADER]
        for name, row in self.stat_rows.items():
            row = [*row]
            row[2], row[4] = str(self.queued[name]), str(self.sessions[name])
            row[17] = {"maint": "MAINT", "drain": "DRAIN", "ready": "UP"}[self.state(name)]
            lines.append(",".join(row))
        return "\n".join(lines) + "\n"

    def show_servers_state(self) -> str:
        lines = [self.STATE_HEAD]
        for name, row in self.state_rows.items():
            row = [*row]
            row[6] = str(self.admin[name])
            lines.append(" ".join(row))
        return "\n".join(lines) + "\n"


class FakeChannel:
    """A paramiko Channel running ``socat`` to the fake CLI; answers in small chunks."""

    def __init__(self, cli: FakeCli, chunk: int = 7) -> None:
        self.cli = cli
        self.chunk = chunk
        self.out = bytearray()
        self.interactive = False
        self.writes: list[bytes] = []
        self.closed = False
        self.eof_received = False
        self.exit_code: int | None = None
        self.stderr = b""
        self.silent = False
        self.dies_on_write: int | None = None
        """Index of the write on which socat exits instead of answering."""
        self.death = (b"", 0)
        """What socat leaves when it exits: its stderr and exit status."""

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("Socket is closed")
        self.writes.append(data)
        if self.dies_on_write == len(self.writes) - 1:
            self.die()
            return
        if self.silent:
            return
        for line in data.decode().split("\n")[:-1]:
            for command in line.split(";"):
                text = self.cli.answer(command)
                if command == "prompt":
                    self.interactive = not self.interactive
                self.out += (text + ("\n> " if self.interactive else "\n")).encode()

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def recv(self, size: int) -> bytes:
        if self.out:
            chunk = bytes(self.out[:min(size, self.chunk)])
            del self.out[:len(chunk)]
            return chunk
        if self.eof_received or self.closed:
            return b""
        raise TimeoutError  # what paramiko raises when settimeout() runs out

    def die(self) -> None:
        self.eof_received = True
        self.stderr, self.exit_code = self.death

    def exit_status_ready(self) -> bool:
        return self.exit_code is not None

    def recv_exit_status(self) -> int:
        assert self.exit_code is not None
        return self.exit_code

    def recv_stderr_ready(self) -> bool:
        return bool(self.stderr)

    def recv_stderr(self, size: int) -> bytes:
        data, self.stderr = self.stderr, b""
        return data

    def close(self) -> None:
        self.closed = True


class FakeRemote:
    """Opens fake channels; ``prepare`` adjusts each new one (by its index) before use."""

    def __init__(self, cli: FakeCli, prepare: Any = None, chunk: int = 7) -> None:
        self.cli = cli
        self.prepare = prepare
        self.chunk = chunk
        self.opened: list[tuple[str, tuple[str, ...]]] = []
        self.channels: list[FakeChannel] = []

    def open_process(self, host: HostSettings, argv: Any) -> paramiko.Channel:
        channel = FakeChannel(self.cli, self.chunk)
        if self.prepare:
            self.prepare(len(self.channels), channel)
        self.opened.append((host.name, tuple(argv)))
        self.channels.append(channel)
        return cast(paramiko.Channel, channel)


def make_config(*, lb_hosts: int = 1, backend: str = "app", socket: str = SOCKET,
                server_name: str = "{host}_{port}") -> Config:
    apps = tuple(HostSettings(f"app{i}", "app", f"127.0.0.{10 + i}", 2222) for i in range(1, 5))
    lbs = tuple(HostSettings(f"lb{i}", "lb", f"127.0.0.{1 + i}", 2222)
                for i in range(1, lb_hosts + 1))
    return Config(path=None, ssh=SshSettings(known_hosts="/dev/null"), hosts=apps + lbs,
                  lb=LbSettings(admin_socket=socket, public_url="http://127.0.0.1:18080/",
                                backend=backend, server_name=server_name))


def make(cli: FakeCli | None = None, prepare: Any = None, clock: FakeClock | None = None,
         chunk: int = 7, **options: Any) -> tuple[Haproxy, FakeRemote]:
    remote = FakeRemote(cli or FakeCli(), prepare, chunk)
    clock = clock or FakeClock()
    haproxy = Haproxy(cast(Remote, remote), make_config(), clock=clock, sleep=clock.sleep,
                      **options)
    return haproxy, remote


APP = [f"app{i}" for i in range(1, 5)]
PAIRS = [(f"{h}_8001", f"{h}_8002") for h in APP]


# --- parsing and checking answers ---------------------------------------------------------


def test_show_stat_sample_parses_to_server_stats() -> None:
    """The captured show stat + show servers state give each server's status and counters."""
    stats = server_stats(SHOW_STAT, SHOW_SERVERS_STATE, "app")
    assert sorted(stats) == sorted(f"{h}_{p}" for h in APP for p in (8001, 8002))
    drained = stats["app1_8001"]
    assert (drained.status, drained.admin_state, drained.current_sessions,
            drained.total_sessions, drained.weight, drained.check_status) == (
        "DRAIN", "drain", 0, 13, 1, "L7OK")
    busy = stats["app2_8001"]
    assert (busy.status, busy.admin_state, busy.current_sessions, busy.total_sessions,
            busy.busy) == ("UP", "ready", 3, 18, 3)
    idle = stats["app3_8002"]
    assert (idle.status, idle.admin_state, idle.check_status) == ("MAINT", "maint", None)


def test_show_stat_keeps_only_the_backend_servers() -> None:
    """FRONTEND and BACKEND rows and other proxies' servers are left out."""
    header = SHOW_STAT.splitlines()[0]
    row = SHOW_STAT.splitlines()[1].split(",")
    other = ",".join(["static", "s1", *row[2:]])
    text = "\n".join([header, "app,FRONTEND," + ",".join(row[2:]),
                      ",".join(row), other, "app,BACKEND," + ",".join(row[2:])]) + "\n"
    assert list(parse_stat(text, "app")) == ["app1_8001"]
    assert list(parse_stat(text, "static")) == ["s1"]


@pytest.mark.parametrize(("bits", "state"), [
    (0, "ready"), (4, "ready"), (5, "maint"), (1, "maint"), (2, "maint"), (0x20, "maint"),
    (8, "drain"), (12, "drain"), (0x10, "drain"), (9, "maint"), (0x40, "ready")])
def test_admin_state_from_bits(bits: int, state: str) -> None:
    """srv_admin_state bits: maintenance wins over drain; config-disabled alone is ready."""
    assert admin_state(bits) == state


@pytest.mark.parametrize(("command", "answer", "ok"), [
    ("set server app/app1_8001 state drain", "", True),
    ("set server app/nope state drain", "No such server.\n", False),
    ("set server app/app1_8001 state drain", "Permission denied\n", False),
    ("show stat app 4 -1", SHOW_STAT, True),
    ("show stat nope 4 -1", "No such proxy.\n", False),
    ("show servers state app", SHOW_SERVERS_STATE, True),
    ("show servers state nope", "Can't find backend.\n", False),
    ("show info", "Name: HAProxy\nVersion: 2.6.12\n", True),
    ("show info", "Permission denied\n", False),
    ("show sess", "0x55d0: proto=tcpv4 src=127.0.0.1:5000\n", True),
    ("show bogus", "Unknown command, but maybe one of the following ones is a better match:\n",
     False),
])
def test_answers_are_checked(command: str, answer: str, ok: bool) -> None:
    """A set must answer nothing; a show must answer its table, not an error phrase."""
    assert (answer_problem(command, answer) is None) is ok


def test_framing_splits_answers_at_the_empty_line_and_prompt() -> None:
    """Answers end at "\\n\\n> " (or are empty: "\\n> "); partial input waits for more."""
    buffer = bytearray(b"\n> No such server.\n\n> a\n> b\n\n> \n")
    assert take_answer(buffer) == ""
    assert take_answer(buffer) == "No such server.\n"
    assert take_answer(buffer) == "a\n> b\n"  # a line starting "> " is not the end
    assert take_answer(buffer) is None and buffer == bytearray(b"\n")
    buffer += b">"
    assert take_answer(buffer) is None
    buffer += b" "
    assert take_answer(buffer) == "" and not buffer
    with pytest.raises(ValueError, match="framing"):
        take_answer(bytearray(b"\nNo prompt"))


# --- composing lines ----------------------------------------------------------------------


def test_pack_joins_commands_into_lines_under_the_limit() -> None:
    """Commands are ';'-joined, in order, into as few lines as fit the byte limit."""
    commands = [f"set server app/web{i}_8001 state ready" for i in range(300)]
    lines = pack(commands)
    assert len(lines) > 1 and all(len(line) <= MAX_LINE_BYTES for line in lines)
    assert [c for line in lines for c in line.split(";")] == commands
    assert pack(commands[:4]) == [";".join(commands[:4])]
    assert pack([]) == []


def test_swap_request_puts_every_ready_before_any_drain() -> None:
    """A 4-host swap is one line: the four new servers ready, then the four old drain."""
    assert swap_request("app", PAIRS).lines() == [
        "set server app/app1_8002 state ready;set server app/app2_8002 state ready;"
        "set server app/app3_8002 state ready;set server app/app4_8002 state ready;"
        "set server app/app1_8001 state drain;set server app/app2_8001 state drain;"
        "set server app/app3_8001 state drain;set server app/app4_8001 state drain"]
    assert set_state_request("app", ["app1_8001", "app1_8001", "app2_8001"], "maint").lines() == [
        "set server app/app1_8001 state maint;set server app/app2_8001 state maint"]


@pytest.mark.parametrize("pairs", [
    [("app1_8001", "app1_8001")], [("app1_8001", "app1_8002"), ("app1_8002", "app2_8002")],
    [("app1_8001",)], ["app1_8001"]])
def test_swap_refuses_a_server_twice_or_malformed_pairs(pairs: Any) -> None:
    """A server may appear once in a swap, and each pair is (old, new)."""
    with pytest.raises(BadInput):
        swap_commands("app", pairs)


# --- hostile names ------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
HOSTILE = st.one_of(
    st.text(),
    st.builds(lambda a, b, c: a + b + c, st.from_regex(r"[a-z0-9_]{0,6}", fullmatch=True),
              st.sampled_from([";", "\n", "\r", " ", "\t", "\\", "$(", "`", "|", "&", "<<",
                               "'", '"', "/", "\x00", "#", ">", "é", "\u2028"]),
              st.text(max_size=12)),
)


@given(server=HOSTILE, backend=st.one_of(st.just("app"), HOSTILE),
       state=st.one_of(st.sampled_from(STATES), st.text(max_size=12)))
def test_hostile_values_are_refused_or_make_exactly_one_command(
        server: str, backend: str, state: str) -> None:
    """Any server, backend or state either raises BadInput or yields one five-word command."""
    try:
        line = set_state_command(backend, server, state)
    except BadInput:
        assert not (_SAFE.fullmatch(server) and _SAFE.fullmatch(backend) and state in STATES)
        return
    assert _SAFE.fullmatch(server) and _SAFE.fullmatch(backend) and state in STATES
    assert line.split(" ") == ["set", "server", f"{backend}/{server}", "state", state]
    assert check_line(line) == line


@given(st.lists(st.tuples(HOSTILE, HOSTILE), min_size=1, max_size=4))
def test_hostile_swap_never_reaches_haproxy(pairs: list[tuple[str, str]]) -> None:
    """A swap naming any unsafe server is refused before a byte is sent."""
    names = [n for pair in pairs for n in pair]
    haproxy, remote = make()
    try:
        haproxy.swap(pairs)
    except BadInput:
        assert remote.channels == []
        return
    except HaproxyError:
        pass  # safe names unknown to haproxy: refused by haproxy itself
    assert all(_SAFE.fullmatch(n) for n in names) and len(set(names)) == len(names)
    line = remote.channels[0].writes[1].decode()
    assert line == "\n".join(swap_request("app", pairs).lines()) + "\n"
    assert line.count("\n") == 1 and line.count(";") == 2 * len(pairs) - 1


@pytest.mark.parametrize("line", [
    "show info;set server app/app1_8001 state maint", "show info\nquit", "prompt", "quit",
    "set server app/a state ready\\;x", "add map #1 <<", "", "   ", "show info\x00",
    "show stat é"])
def test_raw_lines_that_would_add_a_command_or_end_the_session_are_refused(line: str) -> None:
    """command() takes one plain command: no ';', newline, escape, payload, prompt or quit."""
    haproxy, remote = make()
    with pytest.raises(BadInput):
        haproxy.command(line)
    assert remote.channels == []


# --- the channel and round trips ----------------------------------------------------------


def test_channel_runs_socat_on_the_lb_host_in_interactive_mode() -> None:
    """open() starts socat to [lb] admin_socket on the LB host, sends prompt, sets the timeout."""
    haproxy, remote = make()
    haproxy.open()
    haproxy.open()
    assert remote.opened == [("lb1", ("socat", "stdio", f"unix-connect:{SOCKET}"))]
    assert remote.channels[0].writes == [b"prompt\nset timeout cli 3600\n"]
    assert haproxy.is_open and haproxy.opens == 1
    haproxy.close()
    assert remote.channels[0].closed and not haproxy.is_open


def test_every_command_reuses_the_one_channel() -> None:
    """Many commands travel over the same channel, one write each."""
    haproxy, remote = make()
    for _ in range(50):
        assert haproxy.command("show info").startswith("Name: HAProxy")
    assert len(remote.channels) == 1 and len(remote.channels[0].writes) == 51


@pytest.mark.parametrize("hosts", [4, 60])
def test_swap_of_many_hosts_is_one_round_trip_and_every_answer_is_checked(hosts: int) -> None:
    """swap() writes swap_request()'s lines in one write; new servers ready, old draining."""
    cli = FakeCli(extra=hosts)
    haproxy, remote = make(cli)
    for i in range(hosts):
        cli.admin[f"web{i}_8001"] = 0
    pairs = [(f"web{i}_8001", f"app{i % 4 + 1}_8002") for i in range(4)] if hosts == 4 else \
        [(f"web{i}_8001", f"web{i + 30}_8001") for i in range(30)]
    for _, new in pairs:
        cli.admin[new] = 5
    haproxy.open()
    haproxy.swap(pairs)
    writes = remote.channels[0].writes[1:]
    assert writes == ["\n".join(swap_request(haproxy.backend, pairs).lines()).encode() + b"\n"]
    executed = cli.executed[2:]
    assert len(executed) == 2 * len(pairs)
    assert all(c.endswith("ready") for c in executed[:len(pairs)])
    assert all(cli.state(new) == "ready" and cli.state(old) == "drain" for old, new in pairs)


def test_set_state_of_many_servers_is_one_round_trip() -> None:
    """set_state() puts every named server in the state with one write."""
    haproxy, remote = make()
    haproxy.set_state([new for _, new in PAIRS], "drain")
    assert len(remote.channels[0].writes) == 2
    assert [haproxy.stats()[new].admin_state for _, new in PAIRS] == ["drain"] * 4


def test_error_answer_raises_with_command_and_haproxy_text() -> None:
    """An unknown server raises HaproxyError carrying the command and haproxy's answer."""
    haproxy, _ = make()
    with pytest.raises(HaproxyError) as caught:
        haproxy.command("set server app/nope state ready")
    error = caught.value
    assert error.command == "set server app/nope state ready"
    assert error.answer == "No such server.\n" and error.host == "lb1"
    assert "No such server." in str(error) and error.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    assert haproxy.command("show info")  # the session survives a refused command


def test_batch_reports_every_refused_command_after_haproxy_ran_them_all() -> None:
    """In one round trip haproxy goes on after a refusal; the error lists each refusal."""
    cli = FakeCli()
    haproxy, _ = make(cli)
    with pytest.raises(HaproxyError) as caught:
        haproxy.set_state(["nope1", "app1_8002", "nope2"], "drain")
    assert [c for c, _ in caught.value.failures] == [
        "set server app/nope1 state drain", "set server app/nope2 state drain"]
    assert cli.state("app1_8002") == "drain"
    assert "2 commands failed" in str(caught.value)


def test_swap_refused_for_a_new_server_puts_its_old_server_back_ready() -> None:
    """If a new server is refused, its old server does not stay drained: it is ready again."""
    cli = FakeCli()
    haproxy, _ = make(cli)
    with pytest.raises(HaproxyError) as caught:
        haproxy.swap([("app1_8001", "app1_8002"), ("app2_8001", "gone_8002")])
    assert [c for c, _ in caught.value.failures] == ["set server app/gone_8002 state ready"]
    assert cli.state("app1_8002") == "ready" and cli.state("app1_8001") == "drain"
    assert cli.state("app2_8001") == "ready"
    assert cli.executed[-1] == "set server app/app2_8001 state ready"


def test_a_channel_that_died_idle_is_reopened() -> None:
    """When socat has exited between commands, the next command opens a new channel."""
    haproxy, remote = make()
    haproxy.command("show info")
    remote.channels[0].die()
    assert not haproxy.is_open
    assert haproxy.command("show info").startswith("Name:")
    assert haproxy.opens == 2 and len(remote.channels) == 2 and remote.channels[0].closed


def test_a_channel_that_dies_under_a_request_is_reopened_once_and_resent() -> None:
    """A request whose channel closes before answering is sent again on a new channel."""
    def prepare(index: int, channel: FakeChannel) -> None:
        if index == 0:
            channel.dies_on_write = 1
    cli = FakeCli()
    haproxy, remote = make(cli, prepare)
    haproxy.swap(PAIRS[:1])
    assert haproxy.opens == 2 and cli.state("app1_8002") == "ready"
    assert remote.channels[0].writes[1] == remote.channels[1].writes[1]


def test_a_channel_that_keeps_dying_raises() -> None:
    """If the reopened channel dies under the request too, HaproxyError says so."""
    def prepare(index: int, channel: FakeChannel) -> None:
        channel.dies_on_write = 1
    haproxy, remote = make(prepare=prepare)
    with pytest.raises(HaproxyError, match="lost its channel"):
        haproxy.command("show info")
    assert len(remote.channels) == 2


def test_socat_failing_to_connect_reports_its_stderr() -> None:
    """A missing admin socket: socat's own error and exit status are in the HaproxyError."""
    def prepare(index: int, channel: FakeChannel) -> None:
        channel.dies_on_write = 0
        channel.death = (b"socat[9] E connect(5, AF=1 \"/srv/lb1/haproxy/haproxy.sock\", 31):"
                         b" No such file or directory\n", 1)
    haproxy, _ = make(prepare=prepare)
    with pytest.raises(HaproxyError) as caught:
        haproxy.open()
    assert "No such file or directory" in str(caught.value)
    assert "socat exit 1" in str(caught.value)


def test_no_answer_within_the_timeout_raises_and_drops_the_channel() -> None:
    """A silent haproxy raises HaproxyError after the answer timeout; the channel is dropped."""
    haproxy, remote = make(answer_timeout_s=0.05)
    haproxy.open()
    remote.channels[0].silent = True
    with pytest.raises(HaproxyError, match="no complete answer within 0.05 s"):
        haproxy.command("show info")
    assert remote.channels[0].closed and not haproxy.is_open


# --- waiting for a drain ------------------------------------------------------------------


def test_wait_drained_raises_at_the_deadline_naming_busy_servers() -> None:
    """Sessions that never end: NotDrained at the deadline, on the injected clock, in ms."""
    cli = FakeCli()
    clock = FakeClock()
    haproxy, _ = make(cli, clock=clock, chunk=1 << 16)
    cli.sessions["app2_8001"] = 3
    cli.sessions["app4_8001"], cli.queued["app4_8001"] = 0, 2
    started = time.perf_counter()
    with pytest.raises(NotDrained) as caught:
        haproxy.wait_drained(["app1_8001", "app2_8001", "app4_8001"], timeout_s=1.0)
    wall = time.perf_counter() - started
    assert caught.value.busy == {"app2_8001": 3, "app4_8001": 2}
    assert "app2_8001 (3 sessions)" in str(caught.value) and "after 1 s" in str(caught.value)
    assert clock.now - 1000.0 == pytest.approx(1.0)
    assert max(clock.sleeps) <= POLL_S and wall < 1.0


def test_wait_drained_returns_the_seconds_waited() -> None:
    """wait_drained() polls until sessions reach 0 and returns the clock time that took."""
    cli = FakeCli()
    cli.sessions["app2_8001"] = 3

    def finish_one() -> None:
        cli.sessions["app2_8001"] -= 1
    clock = FakeClock(on_sleep=finish_one)
    haproxy, _ = make(cli, clock=clock, chunk=1 << 16)
    assert haproxy.wait_drained(["app2_8001"], timeout_s=10) == pytest.approx(3 * POLL_S)
    assert haproxy.wait_drained(["app2_8001"], timeout_s=10) == 0.0


def test_wait_drained_on_an_unknown_server_raises() -> None:
    """Waiting on a server the backend lacks is an error, not an endless wait."""
    haproxy, _ = make()
    with pytest.raises(HaproxyError, match="no server app9_8001"):
        haproxy.wait_drained(["app9_8001"], timeout_s=10)


# --- configuration ------------------------------------------------------------------------


def test_server_name_fills_the_config_template() -> None:
    """[lb] server_name gives the haproxy server of a host's instance slot."""
    haproxy, _ = make()
    host = make_config().role("app")[0]
    assert haproxy.server_name(host, 8002) == "app1_8002"
    with pytest.raises(BadInput):
        haproxy.server_name(host, 0)


@pytest.mark.parametrize(("template", "problem"), [
    ("{host}_{slot}", "cannot fill"), ("{host} {port}", "gives 'app1 8001'"),
    ("{host};{port}", "gives")])
def test_a_bad_server_name_template_is_a_config_error(template: str, problem: str) -> None:
    """A template with an unknown placeholder or giving an unsafe name names lb.server_name."""
    config = make_config(server_name=template)
    haproxy = Haproxy(cast(Remote, FakeRemote(FakeCli())), config)
    with pytest.raises(ConfigError, match=problem) as caught:
        haproxy.server_name(config.role("app")[0], 8001)
    assert caught.value.key == "lb.server_name"


@pytest.mark.parametrize(("options", "key"), [
    ({"lb_hosts": 2}, "hosts.lb"), ({"lb_hosts": 0}, "hosts.lb"),
    ({"backend": "app;quit"}, "lb.backend"), ({"socket": "/run/a:b.sock"}, "lb.admin_socket"),
    ({"socket": "/run/a,b.sock"}, "lb.admin_socket"), ({"socket": "/run/a b"}, "lb.admin_socket")])
def test_config_that_cannot_be_driven_safely_is_refused(options: dict[str, Any],
                                                        key: str) -> None:
    """One LB host, a safe backend name and a socket path socat reads literally are required."""
    with pytest.raises(ConfigError) as caught:
        Haproxy(cast(Remote, FakeRemote(FakeCli())), make_config(**options))
    assert caught.value.key == key
