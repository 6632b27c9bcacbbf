"""Host operations over a fake Remote: what runs where, results as values, health polling."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.config import Config, HostSettings, load_config
from orchestrator.errors import BadInput, ExitCode, Refused
from orchestrator.remote import commands as C
from orchestrator.remote import operations as ops
from orchestrator.remote.commands import Command
from orchestrator.remote.results import GroupResult, HostResult, RemoteFailed
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.fakes import FakeClock
from tests.gitrepo import GitRepo

SHA_A, SHA_B, SHA_C = "a" * 40, "b" * 40, "c" * 40
SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")
APPS = SANDBOX.role("app")

Answer = Callable[[HostSettings, Command], tuple[int, str, str]]
"""A fake host: (exit code, stdout, stderr) for a command."""


class FakeRemote:
    """Records every command (rendered) and stdin per host; answers with ``answer``."""

    def __init__(self, answer: Answer | None = None,
                 unreachable: Sequence[str] = ()) -> None:
        self.answer = answer or (lambda host, command: (0, "", ""))
        self.unreachable = set(unreachable)
        self.ran: list[tuple[str, Command, bytes | None]] = []
        self.calls = 0

    def run(self, host: HostSettings, command: Command, *, timeout_s: float | None = None,
            stdin: bytes | None = None) -> HostResult:
        self.ran.append((host.name, command, stdin))
        if host.name in self.unreachable:
            return HostResult(host.name, "unreachable", None, "", "connection refused", 0.0,
                              command.render())
        code, out, err = self.answer(host, command)
        return HostResult(host.name, "ok" if code == 0 else "failed", code, out, err, 0.01,
                          command.render())

    def run_all(self, hosts: Sequence[HostSettings],
                command: Command | Callable[[HostSettings], Command], *,
                timeout_s: float | None = None,
                stdin: bytes | Callable[[HostSettings], bytes] | None = None) -> GroupResult:
        self.calls += 1
        return GroupResult.of(
            self.run(h, command(h) if callable(command) else command,
                     stdin=stdin(h) if callable(stdin) else stdin) for h in hosts)

    def lines(self) -> list[str]:
        """Every command run, as ``host: command`` in the order they ran."""
        return [f"{host}: {command.render()}" for host, command, _ in self.ran]


def is_script(command: Command, name: str) -> bool:
    return command.argv[:2] == ("sh", "-c") and command.argv[2] == C.SCRIPTS[name]


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, str]:
    git = GitRepo(tmp_path / "repo")
    git.commit("root", {"app/server.py": "print('v1')\n", "README.md": "hi\n"})
    return git, git.commit("second", {"app/server.py": "print('v2')\n"})


# --- deployed revision --------------------------------------------------------------------


def test_agreed_revision_when_all_app_hosts_agree() -> None:
    """All app hosts on one sha: that sha, read with one parallel command."""
    remote = FakeRemote(lambda h, c: (0, SHA_A + "\n", ""))
    assert ops.agreed_revision(remote, SANDBOX) == SHA_A
    assert remote.calls == 1 and [h for h, _, _ in remote.ran] == [h.name for h in APPS]


def test_disagreeing_hosts_are_refused_with_each_revision() -> None:
    """Hosts on different revisions: Refused (exit 3), naming every host and its sha."""
    remote = FakeRemote(lambda h, c: (0, (SHA_B if h.name == "app3" else SHA_A) + "\n", ""))
    with pytest.raises(ops.RevisionsDisagree) as caught:
        ops.agreed_revision(remote, SANDBOX)
    assert caught.value.exit_code == ExitCode.REFUSED
    assert caught.value.revisions == {"app1": SHA_A, "app2": SHA_A, "app3": SHA_B,
                                      "app4": SHA_A}
    assert f"app3 {SHA_B}" in str(caught.value) and f"app1 {SHA_A}" in str(caught.value)


def test_unreachable_host_fails_reading_revisions() -> None:
    """An unreachable host: RemoteFailed (exit 1) naming it, the others' results kept."""
    remote = FakeRemote(lambda h, c: (0, SHA_A, ""), unreachable=["app2"])
    with pytest.raises(RemoteFailed) as caught:
        ops.deployed_revisions(remote, SANDBOX, APPS)
    assert caught.value.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    assert "app2: unreachable" in str(caught.value)
    assert len(caught.value.result.results) == 4


def test_current_not_named_by_a_sha_is_refused() -> None:
    """current pointing at a release that is not a sha is refused, naming host and target."""
    remote = FakeRemote(lambda h, c: (0, "v1.2\n" if h.name == "app4" else SHA_A, ""))
    with pytest.raises(Refused, match=r"app4: 'v1.2'"):
        ops.deployed_revisions(remote, SANDBOX, APPS)


def test_deployed_revisions_runs_its_command_values() -> None:
    """The commands a dry run shows for reading revisions are exactly the ones that run."""
    remote = FakeRemote(lambda h, c: (0, SHA_A, ""))
    ops.deployed_revisions(remote, SANDBOX, APPS)
    assert ops.revision_commands(SANDBOX, APPS).lines() == remote.lines()


# --- staging ------------------------------------------------------------------------------


def stage_host(statuses: dict[str, str] | None = None, fail: dict[str, str] | None = None
               ) -> Answer:
    """Hosts that receive, report ``statuses`` (host -> status stdout) and prune;
    ``fail`` maps host -> name of the step that fails there."""
    statuses, fail = statuses or {}, fail or {}

    def answer(host: HostSettings, command: Command) -> tuple[int, str, str]:
        step = next((name for name in C.SCRIPTS if is_script(command, name)), "status")
        if fail.get(host.name) == step:
            return 1, "", f"{step} broke on {host.name}"
        if step == "status":
            return 0, statuses.get(host.name, ""), ""
        return 0, f"{step} done\n", ""
    return answer


def test_stage_archives_once_and_ships_the_same_bytes_everywhere(
        repo: tuple[GitRepo, str]) -> None:
    """One archive, its sha256 checked on every host, then every host pruned."""
    git, sha = repo
    remote = FakeRemote(stage_host())
    result = ops.stage(remote, SANDBOX, str(git.path), sha, APPS)
    assert result.ok and [r.host for r in result.results] == [h.name for h in APPS]
    receives = [(h, c, s) for h, c, s in remote.ran if is_script(c, "receive_release")]
    assert len(receives) == 4 and len({s for _, _, s in receives}) == 1
    data = receives[0][2]
    assert data is not None
    digest = hashlib.sha256(data).hexdigest()
    assert all(c.argv[4:] == (SANDBOX.app_root(APPS[i]), sha, digest)
               for i, (_, c, _) in enumerate(receives))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["README.md", "app", "app/server.py"]
    prunes = [c for _, c, _ in remote.ran if is_script(c, "prune_releases")]
    assert len(prunes) == 4 and all(p.argv[6:] == (sha,) for p in prunes)
    assert all(r.stdout == "receive_release done\nprune_releases done\n" for r in result.results)


def test_stage_protects_running_releases_from_pruning(repo: tuple[GitRepo, str]) -> None:
    """Releases the status command reports running are protected along with the new one."""
    git, sha = repo
    statuses = {"app1": json.dumps({"port": 8001, "pid": 7, "running": True, "release": SHA_A})
                + "\n" + json.dumps({"port": 8002, "pid": 9, "running": False,
                                     "release": SHA_B}),
                "app2": json.dumps({"port": 8002, "pid": 8, "running": True, "release": SHA_C})}
    remote = FakeRemote(stage_host(statuses))
    assert ops.stage(remote, SANDBOX, str(git.path), sha, APPS).ok
    prunes = {h: c.argv[6:] for h, c, _ in remote.ran if is_script(c, "prune_releases")}
    assert prunes == {"app1": (sha, SHA_A), "app2": (sha, SHA_C), "app3": (sha,), "app4": (sha,)}


def test_stage_failure_on_one_host_keeps_the_others(repo: tuple[GitRepo, str]) -> None:
    """A host that fails to receive is reported and not pruned; one whose status fails is not
    pruned either; one whose prune fails reports the prune; the rest are ok."""
    git, sha = repo
    fail = {"app2": "receive_release", "app3": "status", "app4": "prune_releases"}
    remote = FakeRemote(stage_host(fail=fail))
    result = ops.stage(remote, SANDBOX, str(git.path), sha, APPS)
    assert [r.host for r in result.failed] == ["app2", "app3", "app4"]
    assert result.by_host["app1"].ok
    for host, step in fail.items():
        assert result.by_host[host].stderr_tail == f"{step} broke on {host}"
    pruned = {h for h, c, _ in remote.ran if is_script(c, "prune_releases")}
    assert pruned == {"app1", "app4"}
    with pytest.raises(RemoteFailed, match="failed on 3 of 4 hosts"):
        result.raise_for_failures("staging")


def test_unparseable_status_stops_pruning_that_host(repo: tuple[GitRepo, str]) -> None:
    """Status output that is not JSON lines fails the host instead of pruning blind."""
    git, sha = repo
    remote = FakeRemote(stage_host({"app1": "all good\n"}))
    result = ops.stage(remote, SANDBOX, str(git.path), sha, APPS)
    assert [r.host for r in result.failed] == ["app1"]
    assert "status line 1 is not JSON" in result.by_host["app1"].stderr_tail
    assert "app1" not in {h for h, c, _ in remote.ran if is_script(c, "prune_releases")}


def test_stage_of_an_unknown_revision_is_bad_input(repo: tuple[GitRepo, str]) -> None:
    """A revision git cannot archive is BadInput naming it; no host is touched."""
    git, _ = repo
    remote = FakeRemote()
    with pytest.raises(BadInput, match=f"git archive of revision {SHA_C}"):
        ops.stage(remote, SANDBOX, str(git.path), SHA_C, APPS)
    with pytest.raises(BadInput, match="not a full 40-character"):
        ops.stage(remote, SANDBOX, str(git.path), "HEAD", APPS)
    assert remote.ran == []


def test_staging_lines_are_what_stage_runs(repo: tuple[GitRepo, str]) -> None:
    """Per host, the staging lines a dry run shows are what stage runs, the releases the
    status answer reports running standing in for the placeholder."""
    git, sha = repo
    status = json.dumps({"port": 8001, "pid": 7, "running": True, "release": SHA_A})
    remote = FakeRemote(stage_host({h.name: status for h in APPS}))
    ops.stage(remote, SANDBOX, str(git.path), sha, APPS)
    shown = [line.replace(ops.RUNNING, SHA_A)
             for line in ops.staging(SANDBOX, str(git.path), sha, APPS).lines()]
    ran = remote.lines()
    assert shown == [line for h in APPS for line in ran if line.startswith(f"{h.name}: ")]
    assert sum(ops.RUNNING in line
               for line in ops.staging(SANDBOX, str(git.path), sha, APPS).lines()) == 4


# --- switch and services ------------------------------------------------------------------


def test_switch_reports_each_host() -> None:
    """A switch refused on one host is reported with its stderr; the others are kept."""
    remote = FakeRemote(lambda h, c: (3, "", "not staged") if h.name == "app4" else
                        (0, "current -> x\n", ""))
    result = ops.switch(remote, SANDBOX, SHA_A, APPS)
    assert [r.host for r in result.failed] == ["app4"]
    app4 = result.by_host["app4"]
    assert app4.exit_code == 3 and "not staged" in app4.stderr_tail
    assert sum(r.ok for r in result.results) == 3
    assert ops.switch_commands(SANDBOX, SHA_A, APPS).lines() == remote.lines()


def test_services_run_the_commands_they_show() -> None:
    """Start, stop and status of instances and scripts run exactly their command values."""
    scripts = SANDBOX.role("scripts")
    cases: list[tuple[Callable[[FakeRemote], object], ops.Fanout]] = [
        (lambda r: ops.start_instances(r, SANDBOX, APPS, SHA_A, 8002),
         ops.start_commands(SANDBOX, APPS, SHA_A, 8002)),
        (lambda r: ops.start_instance(r, SANDBOX, APPS[1], SHA_A, 8002),
         ops.start_commands(SANDBOX, APPS[1:2], SHA_A, 8002)),
        (lambda r: ops.stop_instances(r, SANDBOX, APPS, 8002),
         ops.stop_commands(SANDBOX, APPS, 8002)),
        (lambda r: ops.instances_status(r, SANDBOX, APPS), ops.status_commands(SANDBOX, APPS)),
        (lambda r: ops.start_scripts(r, SANDBOX), ops.scripts_start_commands(SANDBOX)),
        (lambda r: ops.stop_scripts(r, SANDBOX), ops.scripts_stop_commands(SANDBOX)),
        (lambda r: ops.scripts_status(r, SANDBOX, scripts),
         ops.scripts_status_commands(SANDBOX, scripts)),
        (lambda r: ops.free_disk(r, SANDBOX, APPS), ops.free_disk_commands(SANDBOX, APPS)),
    ]
    for run, commands in cases:
        remote = FakeRemote(lambda h, c: (0, "500\n", ""))
        run(remote)
        assert remote.lines() == commands.lines()


def test_single_host_start_uses_the_app_template() -> None:
    """start_instance runs [app] start with the release directory and port filled in."""
    remote = FakeRemote()
    assert ops.start_instance(remote, SANDBOX, APPS[0], SHA_A, 8002).ok
    root = SANDBOX.app_root(APPS[0])
    assert remote.ran[0][1].argv == (f"{root}/bin/appctl", "start",
                                     f"{root}/releases/{SHA_A}", "8002")


def test_status_is_parsed_per_slot() -> None:
    """appctl and scriptctl status lines become service states; a slot is found by port."""
    lines = (json.dumps({"port": 8001, "pid": 10, "running": True, "release": SHA_A}) + "\n"
             + json.dumps({"port": 8002, "pid": None, "running": False, "release": None}))
    remote = FakeRemote(lambda h, c: (0, lines, ""))
    status = ops.instance_status(remote, SANDBOX, APPS[0])
    assert status.ok and status.on_port(8001) == ops.ServiceState("app-8001", 8001, 10, True,
                                                                   SHA_A)
    assert status.on_port(8002) is not None and not status.on_port(8002).running  # type: ignore[union-attr]
    assert status.on_port(9000) is None
    fragile = ops.parse_status('{"name": "fragile", "pid": 3, "running": true, "release": null}')
    assert fragile == (ops.ServiceState("fragile", None, 3, True, None),)


@pytest.mark.parametrize("line", ['[1, 2]', '{"pid": 3}', '{"running": "yes"}',
                                  '{"running": true, "port": "8001"}', "{"])
def test_malformed_status_lines_are_refused(line: str) -> None:
    """A status line that is not an object with a boolean running and typed fields is an error."""
    with pytest.raises(ValueError, match="status line 1"):
        ops.parse_status(line)


# --- disk ---------------------------------------------------------------------------------


def test_free_disk_marks_low_and_unreadable_hosts() -> None:
    """Hosts under the minimum fail naming MB and path; unreadable df output fails too."""
    answers = {"app1": "900\n", "app2": "40\n", "app3": "lots\n", "app4": "100\n"}
    remote = FakeRemote(lambda h, c: (0, answers[h.name], ""))
    result = ops.free_disk(remote, SANDBOX, APPS, 100)
    assert result.free_mb == {"app1": 900, "app2": 40, "app4": 100}
    assert result.low == {"app2": 40}
    assert [r.host for r in result.failed] == ["app2", "app3"] and not result.ok
    assert result.by_host["app2"].stderr_tail == (
        f"only 40 MB free on {SANDBOX.app_root(APPS[1])}, 100 MB needed")
    assert "no free space" in result.by_host["app3"].stderr_tail
    with pytest.raises(RemoteFailed, match="app2"):
        result.raise_for_failures("checking free disk")


def test_free_disk_defaults_to_the_configured_minimum() -> None:
    """Without a minimum, [app] min_free_mb applies."""
    assert SANDBOX.app is not None
    config = dataclasses.replace(SANDBOX, app=dataclasses.replace(SANDBOX.app, min_free_mb=500))
    result = ops.free_disk(FakeRemote(lambda h, c: (0, "499", "")), config, APPS[:1])
    assert result.min_mb == 500 and result.low == {"app1": 499}


# --- health -------------------------------------------------------------------------------


def test_health_deadline_names_host_port_and_last_answer() -> None:
    """An instance that never reports the revision fails at the deadline, quoting its answer."""
    clock = FakeClock(100.0)
    answers = iter([(None, "no answer: [Errno 111] Connection refused")]
                   + [(200, json.dumps({"ok": True, "revision": SHA_B}))] * 1000)
    result = ops.wait_healthy(SANDBOX, APPS[0], 8002, SHA_A, 1.0, clock=clock,
                              sleep=clock.sleep, ask=lambda url, t: next(answers))
    assert not result.ok and result.revision == SHA_B
    assert 51 <= result.attempts <= 52 and result.elapsed_s == pytest.approx(1.0)
    assert all(0 < s <= ops.POLL_S for s in clock.slept) and sum(clock.slept) == pytest.approx(1.0)
    assert result.url == "http://127.0.0.11:8002/+health"
    text = result.describe()
    assert "app1 port 8002" in text and f"not healthy on {SHA_A}" in text
    assert f'HTTP 200 {{"ok": true, "revision": "{SHA_B}"}}' in text


def test_health_passes_once_the_revision_answers_200() -> None:
    """Refused, then 503, then 200 with the expected revision: healthy on the third check."""
    clock = FakeClock(100.0)
    asked: list[tuple[str, float]] = []
    answers = iter([(None, "no answer: refused"),
                    (503, json.dumps({"ok": False, "revision": SHA_A})),
                    (200, json.dumps({"ok": True, "revision": SHA_A}))])

    def ask(url: str, timeout: float) -> tuple[int | None, str]:
        asked.append((url, timeout))
        return next(answers)

    result = ops.wait_healthy(SANDBOX, APPS[1], 8001, SHA_A, 5.0, clock=clock,
                              sleep=clock.sleep, ask=ask)
    assert result.ok and result.attempts == 3 and result.revision == SHA_A
    assert all(url == "http://127.0.0.12:8001/+health" and t == ops.REQUEST_TIMEOUT_S
               for url, t in asked)


def test_health_asks_at_least_once_even_past_the_deadline() -> None:
    """A zero timeout still asks once, with a short request timeout."""
    clock = FakeClock(100.0)
    asked: list[float] = []

    def ask(url: str, timeout: float) -> tuple[int | None, str]:
        asked.append(timeout)
        return None, "refused"

    result = ops.wait_healthy(SANDBOX, APPS[0], 8001, SHA_A, 0.0, clock=clock,
                              sleep=clock.sleep, ask=ask)
    assert not result.ok and result.attempts == 1 and asked == [0.05] and clock.slept == []


def test_wait_all_healthy_shares_one_deadline() -> None:
    """Every host is checked against one deadline: a slow first host leaves the rest less time."""
    clock = FakeClock(100.0)
    results = ops.wait_all_healthy(SANDBOX, APPS[:2], 8002, SHA_A, 0.5, clock=clock,
                                   sleep=clock.sleep)
    assert [r.host for r in results] == ["app1", "app2"] and not any(r.ok for r in results)
    assert clock.now - 100.0 == pytest.approx(0.5, abs=0.05)


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, list[dict[str, object]]]]:
    """A real HTTP server on loopback answering /+health with the queued bodies, last repeated."""
    bodies: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
            data = json.dumps(body).encode()
            self.send_response(200 if body.get("ok") else 503)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, bodies
    server.shutdown()
    server.server_close()


def test_health_over_real_http(health_server: tuple[ThreadingHTTPServer,
                                                    list[dict[str, object]]]) -> None:
    """Against a real HTTP server: 503s are polled past, the matching 200 is healthy."""
    server, bodies = health_server
    bodies.extend([{"ok": False, "revision": SHA_A}] * 3 + [{"ok": True, "revision": SHA_A}])
    host = HostSettings(name="local", role="app", address="127.0.0.1", port=22, root="/srv")
    result = ops.wait_healthy(SANDBOX, host, server.server_address[1], SHA_A, 5.0)
    assert result.ok and result.attempts == 4 and result.elapsed_s < 1.0


def test_health_url_is_filled_from_the_config() -> None:
    """[app] health_url gets the host's address, name and the port; a bad placeholder is named."""
    assert SANDBOX.app is not None
    config = dataclasses.replace(SANDBOX, app=dataclasses.replace(
        SANDBOX.app, health_url="http://{address}:{port}/{host}/ok"))
    assert ops.health_url(config, APPS[2], 8001) == "http://127.0.0.13:8001/app3/ok"
    broken: Config = dataclasses.replace(SANDBOX, app=dataclasses.replace(
        SANDBOX.app, health_url="http://{addr}:{port}/"))
    with pytest.raises(BadInput, match=r"\{addr\}"):
        ops.health_url(broken, APPS[0], 8001)
