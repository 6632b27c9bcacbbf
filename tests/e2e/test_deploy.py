"""Whole deploys on the sandbox, as a release manager runs them and as users see them.

Every test starts from a fresh sandbox (``fresh``: every host on the sample
repository's first revision), runs ``python -m orchestrator`` in a subprocess
(real exit codes, real SIGKILL) and checks the database, the hosts, haproxy
and what a client of our own saw through haproxy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.sandbox.layout import APP_PORTS
from tests.e2e.conftest import (
    Client,
    Sandbox,
    approvals,
    event_named,
    get,
    get_direct,
    read_events,
    step_started,
    wait_for_event,
    wait_for_run,
    wait_until,
)

pytestmark = pytest.mark.e2e

PATCH_07 = "database/schema/patch-2200-07-0.sql"
ROW_07 = "\nINSERT INTO LaunchpadDatabaseRevision VALUES (2200, 07, 0);\n"
FAILING_PATCH = "ALTER TABLE nosuchtable ADD COLUMN x int;\n" + ROW_07
SERVER = "app/server.py"
HEALTHY = 'self._send(200, "application/json", json.dumps(status).encode())'
UNHEALTHY = 'self._send(500, "application/json", json.dumps(status).encode())'
UNHEALTHY_ON_APP1 = HEALTHY.replace(
    "200", '500 if self.server.server_address[0] == "127.0.0.11" else 200')

HOLD_FILE = "hold-health"
HOLD_AFTER_PATCH_07 = (
    '__import__("time").sleep(5 if patch >= [2200, 7, 0] and (Path(__file__).resolve()'
    f'.parents[3] / "{HOLD_FILE}").exists() else 0); ' + HEALTHY)
"""Health that hangs 5 s once patch 2200-07 is applied, while the host's app root holds
``HOLD_FILE``: a deploy is then inside its window after COMMIT for at least a second."""

OLD, NEW = APP_PORTS
"""Every app host serves on its first slot after `sandbox up`; a deploy starts the second."""
COLD_ROWS = {(2200, 1, 0), (2200, 3, 0), (2200, 4, 0), (2200, 5, 0), (2200, 7, 0)}
COLD_COLUMNS = {"note", "tag_id", "price", "stock", "extra"}


def slow_patch(seconds: float) -> str:
    return f"-- fastdowntime: cold\nSELECT pg_sleep({seconds});\n" + ROW_07


def cold_patch() -> str:
    return "ALTER TABLE item ADD COLUMN extra integer;\n" + ROW_07


def assert_serving(sandbox: Sandbox, revision: str, requests: int = 12) -> None:
    """Every request through haproxy answers 200 from ``revision``."""
    answers = [get() for _ in range(requests)]
    assert [(a.status, a.revision) for a in answers] == [(200, revision)] * requests, \
        [a.body for a in answers if not a.ok][:3]


def assert_old_state(sandbox: Sandbox) -> None:
    """Nothing of the window stayed: old schema, old code, old instances in haproxy."""
    assert not sandbox.patches() & COLD_ROWS
    assert not sandbox.item_columns() & COLD_COLUMNS
    assert sandbox.query("SELECT to_regclass('tag')") == [(None,)]
    for host in sandbox.layout.role("app"):
        assert sandbox.current(host.name) == sandbox.first
        assert get_direct(host.address, OLD).revision == sandbox.first
        assert get_direct(host.address, NEW).status is None, f"{host.name}: {NEW} still runs"
    assert sandbox.haproxy() == {**{f"{h}_{OLD}": "UP" for h in sandbox.app_hosts},
                                 **{f"{h}_{NEW}": "MAINT" for h in sandbox.app_hosts}}
    assert_serving(sandbox, sandbox.first)


def window_events(sandbox: Sandbox, run_id: str) -> tuple[float, float]:
    events = read_events(sandbox.journal(run_id))
    opened = next(e for e in events if e["event"] == "window.open")
    closed = next(e for e in events if e["event"] == "window.close")
    return float(opened["at"]), float(closed["at"])


def sigkill_at(sandbox: Sandbox, proc: subprocess.Popen[str],
               *waits: tuple[Callable[[dict[str, Any]], bool], float, str]) -> str:
    """SIGKILL the deploy ``proc`` once its journal has shown each of ``waits`` (a match,
    its timeout, what it is) in turn; return its run id. ``proc`` never outlives this."""
    try:
        run_id = wait_for_run(sandbox, proc)
        for match, timeout, what in waits:
            wait_for_event(sandbox.journal(run_id), match, timeout, proc, what)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return run_id


def test_full_deploy_serves_the_tip_at_the_newest_patch(fresh: Sandbox, tmp_path: Path) -> None:
    """A full deploy: every host serves the tip through haproxy, the database is at 2200-06-0.
    The orchestrator reaches every host through the sandbox's bastion (a jump host, as
    operators have them; tests/integration/test_ssh_bastion.py shows the routing)."""
    config = fresh.write_config(tmp_path, proxy_jump=f'"{fresh.layout.bastion_jump}"')
    bastion_log = fresh.layout.logs / f"sshd-{fresh.layout.bastion.name}.log"
    logins = bastion_log.read_text().count("Accepted publickey")
    done = fresh.cli("deploy", "--yes", "--json", *approvals(), config=config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert bastion_log.read_text().count("Accepted publickey") > logins
    assert json.loads(done.stdout) == fresh.show()  # --json: the summary alone on stdout
    tip = fresh.tip()
    assert_serving(fresh, tip)
    for host in fresh.app_hosts:
        assert fresh.current(host) == tip
    assert fresh.query("SELECT max((major, minor, patch)::text) FROM LaunchpadDatabaseRevision"
                       ) == [("(2200,6,0)",)]
    assert max(fresh.patches()) == (2200, 6, 0)
    run = fresh.show()
    cut = fresh.git("log", "-1", "--format=%H", "db-stable", "--",
                    "database/schema/patch-2200-05-0.sql")
    assert run["outcome"] == "done" and run["id"] and run["cut"] == cut
    assert run["window_budget_s"] == 30
    assert 0 < run["outage_s"] < run["window_budget_s"]
    names = [(s["stage"], s["name"]) for s in run["steps"]]
    assert ("fastdowntime", "apply_cold_patches") in names
    assert ("nodowntime", "rolling_update") in names
    assert {s["outcome"] for s in run["steps"]} == {"ok"}
    assert [s["name"] for s in run["steps"] if not s.get("started")] == []


def test_rehearse_on_a_fresh_sandbox_needs_no_timings(fresh: Sandbox) -> None:
    """rehearse with no approvals and no timings: it runs every other check, tries the cold
    transaction twice (rolled back) before its window, deploys, records each cold patch's
    timing as the median of the three runs, and exits 0; a deploy then finds them."""
    from orchestrator.db.timings import median_timings

    done = fresh.cli("rehearse", "--yes", "--stage", "fastdowntime")
    assert done.returncode == 0, done.stderr[-2000:]
    run = fresh.show()
    assert run["outcome"] == "done"
    events = read_events(fresh.journal(run["id"]))
    trials = [e for e in events if e["event"] == "rehearsal.trial" and "trial" in e]
    assert [(e["trial"], e["of"]) for e in trials] == [(1, 2), (2, 2)]
    opened = next(i for i, e in enumerate(events) if e["event"] == "window.open")
    assert all(events.index(e) < opened for e in trials), "a trial ran inside the window"
    (rehearsed,) = [e for e in events if e["event"] == "rehearsal.timings"]
    assert rehearsed["runs"] == 3
    timings = fresh.cli("timings", "--json")
    assert timings.returncode == 0, timings.stderr[-2000:]
    recorded = {row["file"]: row["seconds"] for row in json.loads(timings.stdout)}
    assert {f"patch-{a}-{b:02d}-{c}.sql" for a, b, c in COLD_ROWS - {(2200, 7, 0)}
            } <= set(recorded)
    kept = median_timings([*(e["patches"] for e in trials), rehearsed["window"]])
    assert rehearsed["patches"] == json.loads(json.dumps(kept))
    for patch in kept:
        assert recorded[patch["filename"]] == pytest.approx(patch["duration_s"], abs=1e-6)


def test_a_playbook_may_wait_for_the_standbys_before_the_window(fresh: Sandbox,
                                                                  tmp_path: Path) -> None:
    """A playbook of the operator's that waits for the standbys before ``prepare_window``
    has opened the primary: the step opens it itself, the window reuses it, the deploy
    succeeds (it failed with "'NoneType' object has no attribute 'autocommit'")."""
    from orchestrator.runner.playbook import PLAYBOOKS

    text = (PLAYBOOKS / "fastdowntime.yaml").read_text()
    first = "  - action: prepare_window"
    assert text.count(first) == 1
    playbook = tmp_path / "wait-first.yaml"
    playbook.write_text(text.replace(first, "  - action: wait_standbys\n" + first))
    config = fresh.write_config(tmp_path, playbook=f'"{playbook}"')
    done = fresh.cli("deploy", "--yes", "--stage", "fastdowntime", *approvals(), config=config)
    assert done.returncode == 0, done.stderr[-2000:]
    run = fresh.show()
    names = [s["name"] for s in run["steps"]]
    assert names.count("wait_standbys") == 2
    assert names.index("wait_standbys") < names.index("prepare_window")
    assert {s["outcome"] for s in run["steps"]} == {"ok"}
    assert max(fresh.patches()) >= (2200, 5, 0)
    # the run keeps the playbook it ran, for resume
    assert (fresh.runs / run["id"] / "playbook.yaml").read_text() == playbook.read_text()


def test_client_sees_the_outage_the_journal_records(fresh: Sandbox, tmp_path: Path) -> None:
    """In drain mode a client probing every 10 ms sees one outage, within 150 ms of the
    journal's outage_s (hold mode fails no request: tests/e2e/test_hold_deploy.py). The
    client, the run's own probe, haproxy, 8 app instances and the deploy share 2 cores:
    twice in a row the client's outage came out 107 ms longer than the journal's."""
    config = fresh.write_config(tmp_path, mode='"drain"')
    with Client() as client:
        done = fresh.cli("deploy", "--yes", *approvals(), config=config)
    assert done.returncode == 0, done.stderr[-2000:]
    run = fresh.show()
    opened, closed = window_events(fresh, run["id"])
    outages = client.outages()
    assert len(outages) == 1, outages
    start, end = outages[0]
    assert end is not None
    assert abs((end - start) - run["outage_s"]) <= 0.15, (end - start, run["outage_s"])
    assert abs(start - opened) <= 0.15 and abs(end - closed) <= 0.15


def test_nodowntime_stage_fails_no_request(fresh: Sandbox) -> None:
    """The nodowntime rollout, under more than 50 requests a second, fails none of them."""
    first = fresh.cli("deploy", "--yes", "--stage", "fastdowntime", *approvals())
    assert first.returncode == 0, first.stderr[-2000:]
    with Client(path="/") as client:
        done = fresh.cli("deploy", "--yes", "--stage", "nodowntime")
    assert done.returncode == 0, done.stderr[-2000:]
    assert client.rate() >= 50, client.rate()
    assert len(client.answers) >= 100
    assert client.failures() == []
    assert_serving(fresh, fresh.tip())
    run = fresh.show()
    rolling = [s for s in run["steps"] if s["name"] == "rolling_update"]
    assert [s["outcome"] for s in rolling] == ["ok"]


def test_failing_cold_patch_restores_everything(fresh: Sandbox, tmp_path: Path) -> None:
    """A cold patch that fails in a drained window: exit 1, no cold patch applied, old code
    and instances serve; the client saw the one outage."""
    fresh.commit("Add a patch that fails (cold)", {PATCH_07: FAILING_PATCH})
    config = fresh.write_config(tmp_path, mode='"drain"')
    with Client() as client:
        done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nosuchtable" in done.stderr
    assert_old_state(fresh)
    assert fresh.show()["outcome"] == "rolled-back"
    assert len(client.outages()) == 1 and client.outages()[0][1] is not None


def test_cold_patch_slower_than_the_window_is_cut_off(fresh: Sandbox, tmp_path: Path) -> None:
    """A cold patch slower than the 3 s window: exit 1, schema unchanged. The window held
    users' requests (haproxy's checks ask a page without the database, so no server went
    down): none failed, and none waited much past the 3 s deadline."""
    fresh.commit("Add a slow patch (cold)", {PATCH_07: slow_patch(10)})
    config = fresh.write_config(tmp_path, budget_s="3")
    with Client(timeout_s=10) as client:
        done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert_old_state(fresh)
    assert client.failures() == [], client.failures()[:3]
    longest = max(a.end - a.start for a in client.answers)
    assert 2 <= longest <= 3 + 1, longest


def test_unhealthy_new_code_stops_before_the_window(fresh: Sandbox, tmp_path: Path) -> None:
    """New code failing its health check: the default playbook stops before the window (exit 1)."""
    fresh.commit("Health answers 500", {SERVER: fresh.edit(SERVER, HEALTHY, UNHEALTHY)})
    fresh.commit("Add extra column to item (cold)", {PATCH_07: cold_patch()})
    config = fresh.write_config(tmp_path, health_timeout_s="2")
    with Client() as client:
        done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "health" in done.stderr
    assert client.failures() == []
    run = fresh.show()
    events = read_events(fresh.journal(run["id"]))
    assert not [e for e in events if e["event"] in ("window.open", "commit")]
    assert_old_state(fresh)


@pytest.mark.parametrize("failing", ["every host", "app1"])
def test_unhealthy_code_on_restart_playbook_goes_back_after_commit(fresh: Sandbox, tmp_path: Path,
                                                                  failing: str) -> None:
    """Restart playbook, new code unhealthy: exit 4 after COMMIT, failing hosts back and serving."""
    broken = UNHEALTHY if failing == "every host" else UNHEALTHY_ON_APP1
    fresh.commit("Health answers 500", {SERVER: fresh.edit(SERVER, HEALTHY, broken)})
    cut = fresh.commit("Add extra column to item (cold)", {PATCH_07: cold_patch()})
    config = fresh.write_config(tmp_path, health_timeout_s="2",
                                playbook='"fastdowntime-restart"')
    done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert {(2200, 7, 0), (2200, 5, 0)} <= fresh.patches()
    assert "extra" in fresh.item_columns()
    back = fresh.app_hosts if failing == "every host" else [failing]
    expected = {h: fresh.first if h in back else cut for h in fresh.app_hosts}
    for host in fresh.layout.role("app"):
        if host.name in back:
            assert re.search(rf"{host.name}: [^;,]*{fresh.first[:12]}", done.stderr), host.name
        assert fresh.current(host.name) == expected[host.name]
        assert get_direct(host.address, OLD).revision == expected[host.name]
    # a restarted instance is UP once haproxy's own check passes again (downinter 500 ms)
    want = {**{f"{h}_{OLD}": "UP" for h in fresh.app_hosts},
            **{f"{h}_{NEW}": "MAINT" for h in fresh.app_hosts}}
    wait_until("every host's instance UP in haproxy", lambda: fresh.haproxy() == want, 3)
    answers = [get() for _ in range(16)]
    assert {a.status for a in answers} == {200}
    assert {a.revision for a in answers} == set(expected.values())
    assert fresh.show()["outcome"] == "failed-after-commit"


def test_resume_after_sigkill_inside_the_window(fresh: Sandbox, tmp_path: Path) -> None:
    """Orchestrator SIGKILLed inside the window: resume puts every host back, the lock is
    free, and resume's end fires the run's on_failure hook (the deploy could not)."""
    from tests.e2e.test_hooks_deploy import calls, hooked_config
    from tests.webhook import Webhook

    fresh.commit("Add a slow patch (cold)", {PATCH_07: slow_patch(2)})
    with Webhook() as webhook:
        config = hooked_config(fresh, tmp_path, webhook)
        proc = fresh.spawn("deploy", "--yes", *approvals("patch-2200-07-0"), config=config,
                           log=tmp_path / "deploy.log")
        run_id = sigkill_at(fresh, proc, (event_named("window.open"), 30, "window.open"),
                            (step_started("apply_cold_patches"), 5, "apply_cold_patches"))
        assert get().status != 200, "the window was open: nobody is serving"
        resumed = fresh.cli("resume", run_id, config=config)
        assert resumed.returncode == 1, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert webhook.events == ["before_window", "on_failure"]
    [ended] = calls(tmp_path, "on_failure")
    assert (ended["FASTDOWNTIME_COMMAND"], ended["FASTDOWNTIME_RUN_ID"]) == ("resume", run_id)
    assert (ended["FASTDOWNTIME_OUTCOME"], ended["FASTDOWNTIME_EXIT_CODE"]) == (
        "rolled-back", "1")
    assert calls(tmp_path, "after_window") == calls(tmp_path, "on_done") == []
    assert_old_state(fresh)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        answer = get("/")
        assert answer.ok, answer.body
    preflight = fresh.cli("preflight", *approvals("patch-2200-07-0"))
    assert preflight.returncode == 0, preflight.stdout[-3000:] + preflight.stderr[-2000:]
    assert fresh.show(run_id)["outcome"] == "rolled-back"


def test_resume_never_says_restored_when_a_cut_journal_hid_the_drain(fresh: Sandbox,
                                                                     tmp_path: Path) -> None:
    """A journal cut short before it recorded the slots (a full disk where nothing could be
    reserved), then a crash in a drained window: resume cannot undo what it never heard of,
    and says so from haproxy's state (exit 1, the run left to resume) instead of calling the
    drained hosts restored."""
    fresh.commit("Add a slow patch (cold)", {PATCH_07: slow_patch(2)})
    config = fresh.write_config(tmp_path, mode='"drain"')
    proc = fresh.spawn("deploy", "--yes", *approvals("patch-2200-07-0"), config=config,
                       log=tmp_path / "deploy.log")
    run_id = sigkill_at(fresh, proc, (step_started("apply_cold_patches"), 30,
                                      "apply_cold_patches"))
    assert get().status != 200, "the window was open: nobody is serving"
    journal = fresh.journal(run_id)
    lines = journal.read_text().splitlines(keepends=True)
    kept = next(i for i, line in enumerate(lines) if '"slots"' in line)
    journal.write_text("".join(lines[:kept]))
    resumed = fresh.cli("resume", run_id, config=config)
    said = resumed.stdout + resumed.stderr
    assert resumed.returncode == 1, said[-3000:]
    assert "haproxy routes to no slot of app1 (app1_8001 drain, app1_8002 maint)" in said, said
    assert "Traceback" not in said
    assert fresh.show(run_id)["outcome"] not in ("rolled-back", "done")
    assert not fresh.patches() & COLD_ROWS


@pytest.mark.parametrize(("playbook", "crash_in"), [
    ("fastdowntime", "close_window"), ("fastdowntime-restart", "restart_on_release")])
def test_resume_after_sigkill_after_commit_finishes_the_deploy(
        fresh: Sandbox, tmp_path: Path, playbook: str, crash_in: str) -> None:
    """SIGKILLed after COMMIT, before traffic came back: resume finishes, every host serves
    the cut from the slot the playbook hands traffic to, exit 0."""
    fresh.commit("Health holds while asked to", {SERVER: fresh.edit(SERVER, HEALTHY,
                                                                     HOLD_AFTER_PATCH_07)})
    cut = fresh.commit("Add extra column to item (cold)", {PATCH_07: cold_patch()})
    holds = [host.app_root / HOLD_FILE for host in fresh.layout.role("app")]
    for hold in holds:
        hold.touch()
    config = fresh.write_config(tmp_path, playbook=f'"{playbook}"')
    proc = fresh.spawn("deploy", "--yes", *approvals("patch-2200-07-0"), config=config,
                       log=tmp_path / "deploy.log")
    try:
        run_id = sigkill_at(fresh, proc, (event_named("commit"), 60, "commit"),
                            (step_started(crash_in), 10, crash_in))
    finally:
        for hold in holds:
            hold.unlink(missing_ok=True)
    assert "extra" in fresh.item_columns()
    resumed = fresh.cli("resume", run_id, config=config)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    serving, idle = (OLD, NEW) if playbook == "fastdowntime-restart" else (NEW, OLD)
    for host in fresh.layout.role("app"):
        assert fresh.current(host.name) == cut, host.name
        assert get_direct(host.address, serving).revision == cut, host.name
        assert get_direct(host.address, idle).status is None, f"{host.name}: {idle} still runs"
    for host in fresh.layout.role("scripts"):
        assert fresh.current(host.name) == cut, host.name
    want = {**{f"{h}_{serving}": "UP" for h in fresh.app_hosts},
            **{f"{h}_{idle}": "MAINT" for h in fresh.app_hosts}}
    # haproxy's own checks may have failed while health hung; they pass again at fastinter
    wait_until("the serving slots UP in haproxy", lambda: fresh.haproxy() == want, 10)
    assert_serving(fresh, cut)
    run = fresh.show(run_id)
    assert run["outcome"] == "done" and run["resumed_by"]
    assert set(run["hosts"].values()) == {f"serving {cut[:12]}"}


def test_second_deploy_is_refused_while_one_runs(fresh: Sandbox, tmp_path: Path) -> None:
    """While a deploy is inside a slow cold patch, a second one exits 5 naming the first run."""
    fresh.commit("Add a slow patch (cold)", {PATCH_07: slow_patch(5)})
    args = ("deploy", "--yes", *approvals("patch-2200-07-0"))
    proc = fresh.spawn(*args, log=tmp_path / "first.log")
    try:
        run_id = wait_for_run(fresh, proc)
        wait_for_event(fresh.journal(run_id), step_started("apply_cold_patches"), 30, proc,
                       "apply_cold_patches")
        second = fresh.cli(*args)
        assert proc.poll() is None, "the first deploy was still inside its window"
        assert proc.wait(60) == 0, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert second.returncode == 5, second.stderr[-2000:]
    assert run_id in second.stderr
    assert max(fresh.patches()) == (2200, 7, 0)



def test_exit_4_advice_is_a_command_the_cli_accepts(fresh: Sandbox, tmp_path: Path) -> None:
    """The next step an exit 4 names (`fastdowntime ...`) is not refused as bad input."""
    fresh.commit("Health answers 500 on app1",
                 {SERVER: fresh.edit(SERVER, HEALTHY, UNHEALTHY_ON_APP1)})
    fresh.commit("Add extra column to item (cold)", {PATCH_07: cold_patch()})
    config = fresh.write_config(tmp_path, health_timeout_s="2",
                                playbook='"fastdowntime-restart"')
    done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 4, done.stderr[-2000:]
    advice = re.findall(r"`fastdowntime ([^`]+)`", done.stderr.splitlines()[-1])
    assert advice, done.stderr.splitlines()[-1]
    then = fresh.cli(*shlex.split(advice[-1]), config=config)
    assert then.returncode != 2, then.stderr[-2000:]
