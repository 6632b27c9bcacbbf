"""[hooks] in whole deploys on the sandbox: each hook fires once, told the run's facts, the
webhook (a server of our own on 127.0.0.1) gets the same events, and only a failing
before_window changes how a deploy ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import COLD_PATCHES, Sandbox, approvals, read_events
from tests.webhook import Webhook

pytestmark = pytest.mark.e2e

EVENTS = ("before_window", "after_window", "on_failure", "on_done")
PATCH_07 = "database/schema/patch-2200-07-0.sql"
FAILING_PATCH = ("ALTER TABLE nosuchtable ADD COLUMN x int;\n"
                 "\nINSERT INTO LaunchpadDatabaseRevision VALUES (2200, 07, 0);\n")


def recorder(directory: Path, event: str) -> list[str]:
    """A hook appending its environment to ``<event>.env`` (one block per call, ended by a
    ``--`` line) and copying the run summary it is pointed at to ``<event>.summary.json``."""
    script = ('env >> "$0/$1.env"; echo -- >> "$0/$1.env"; '
              'cp "$FASTDOWNTIME_SUMMARY" "$0/$1.summary.json"')
    return ["sh", "-c", script, str(directory), event]


def failing(message: str, code: int) -> list[str]:
    return ["sh", "-c", f"echo '{message}' >&2; exit {code}"]


def hooked_config(sandbox: Sandbox, tmp_path: Path, webhook: Webhook,
                  **commands: list[str]) -> Path:
    """The sandbox's config with every hook a :func:`recorder` (or one of ``commands``) and
    ``webhook`` told of every event."""
    config = sandbox.write_config(tmp_path)
    lines = ["", "[hooks]"]
    for event in EVENTS:
        argv = commands.get(event, recorder(tmp_path, event))
        lines.append(f"{event} = {json.dumps(argv)}")
    lines += ["timeout_s = 10", f"webhook_url = {json.dumps(webhook.url)}",
              "webhook_timeout_s = 2", "webhook_retries = 2"]
    config.write_text(config.read_text() + "\n".join(lines) + "\n")
    return config


def calls(directory: Path, event: str) -> list[dict[str, str]]:
    """The FASTDOWNTIME_* environment of each call of ``event``'s recorder."""
    path = directory / f"{event}.env"
    if not path.exists():
        return []
    blocks = path.read_text().split("\n--\n")
    return [{k: v for k, v in (line.split("=", 1) for line in block.splitlines()
                               if line.startswith("FASTDOWNTIME_"))}
            for block in blocks if block.strip()]


def hook_events(sandbox: Sandbox, run_id: str) -> list[tuple[str, str, str]]:
    return [(e["event"], e.get("hook", ""), e.get("kind", "")) for e in
            read_events(sandbox.journal(run_id)) if e["event"].startswith("hook.")]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook on 127.0.0.1 that the deploys (subprocesses) POST to."""
    with Webhook() as server:
        yield server


def test_a_deploy_fires_each_hook_once_with_the_run_facts(
        fresh: Sandbox, tmp_path: Path, webhook: Webhook) -> None:
    """A full deploy: before_window, after_window and on_done fire once each (on_failure
    never) with the run's facts; the webhook gets the same three events, the first one
    retried after a 503; on_done sees the final summary."""
    webhook.script = [503]
    config = hooked_config(fresh, tmp_path, webhook)
    done = fresh.cli("deploy", "--yes", *approvals(), config=config)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = fresh.show()
    fired = {event: calls(tmp_path, event) for event in EVENTS}
    assert {event: len(envs) for event, envs in fired.items()} == {
        "before_window": 1, "after_window": 1, "on_failure": 0, "on_done": 1}
    before, after, end = fired["before_window"][0], fired["after_window"][0], fired["on_done"][0]
    for event, env in (("before_window", before), ("after_window", after), ("on_done", end)):
        assert env["FASTDOWNTIME_EVENT"] == event
        assert env["FASTDOWNTIME_RUN_ID"] == run["id"]
        assert env["FASTDOWNTIME_CUT"] == run["cut"] and env["FASTDOWNTIME_TO"] == fresh.tip()
        assert env["FASTDOWNTIME_FROM"] == fresh.first
        assert env["FASTDOWNTIME_COMMAND"] == "deploy" and env["FASTDOWNTIME_STAGE"] == "all"
        assert env["FASTDOWNTIME_CONFIG"] == str(config)
        assert env["FASTDOWNTIME_SUMMARY"] == str(fresh.runs / run["id"] / "run.json")
    assert (before["FASTDOWNTIME_OUTCOME"], before["FASTDOWNTIME_WINDOW"]) == (
        "running", "pending")
    assert (after["FASTDOWNTIME_OUTCOME"], after["FASTDOWNTIME_WINDOW"]) == (
        "running", "committed")
    assert float(after["FASTDOWNTIME_OUTAGE_S"]) == run["outage_s"]
    assert (end["FASTDOWNTIME_OUTCOME"], end["FASTDOWNTIME_EXIT_CODE"]) == ("done", "0")
    assert end["FASTDOWNTIME_WINDOW"] == "committed" and end["FASTDOWNTIME_ERROR"] == ""
    assert json.loads((tmp_path / "before_window.summary.json").read_text())[
        "outcome"] == "running"
    final = json.loads((tmp_path / "on_done.summary.json").read_text())
    assert final["outcome"] == "done" and final["finished"]

    assert webhook.events == ["before_window", "before_window", "after_window", "on_done"]
    assert webhook.posts[0] == webhook.posts[1]  # the retry sends the same body
    for post in webhook.posts[1:]:
        env = {"before_window": before, "after_window": after, "on_done": end}[post["event"]]
        assert post["run_id"] == run["id"] and post["ts"] == env["FASTDOWNTIME_TS"]
    assert webhook.posts[2]["window"] == "committed"
    assert webhook.posts[3]["exit_code"] == 0 and webhook.posts[3]["outcome"] == "done"

    events = hook_events(fresh, run["id"])
    assert [e for e in events if e[0] != "hook.start"] == [
        ("hook.done", "before_window", "command"), ("hook.retry", "before_window", "webhook"),
        ("hook.done", "before_window", "webhook"), ("hook.done", "after_window", "command"),
        ("hook.done", "after_window", "webhook"), ("hook.done", "on_done", "command"),
        ("hook.done", "on_done", "webhook")]
    assert "T0KEN" not in fresh.journal(run["id"]).read_text()  # the webhook's path is not


def test_a_failing_before_window_refuses_the_deploy_before_any_change(
        fresh: Sandbox, tmp_path: Path, webhook: Webhook) -> None:
    """before_window exiting 7: exit 3 naming the hook, its exit code and stderr; no cold
    patch applied, every host still on the first revision; on_failure fires with exit code
    3, the webhook hears only on_failure."""
    config = hooked_config(fresh, tmp_path, webhook,
                           before_window=failing("change freeze until 18:00", 7))
    done = fresh.cli("deploy", "--yes", *approvals(), config=config)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "before_window" in done.stderr and "exited 7" in done.stderr
    assert "change freeze until 18:00" in done.stderr
    cold = {tuple(int(n) for n in p.split("-")[1:]) for p in COLD_PATCHES}
    assert not fresh.patches() & cold
    for host in fresh.app_hosts:
        assert fresh.current(host) == fresh.first
    run = fresh.show()
    events = read_events(fresh.journal(run["id"]))
    assert not [e for e in events if e["event"] in ("step.start", "window.open")]
    assert [len(calls(tmp_path, event)) for event in EVENTS] == [0, 0, 1, 0]
    failure = calls(tmp_path, "on_failure")[0]
    assert failure["FASTDOWNTIME_EXIT_CODE"] == "3"
    assert failure["FASTDOWNTIME_WINDOW"] == "not-opened"
    assert "change freeze" in failure["FASTDOWNTIME_ERROR"]
    assert webhook.events == ["on_failure"]
    assert webhook.posts[0]["exit_code"] == 3


def test_failing_hooks_after_the_window_leave_the_exit_code_alone(
        fresh: Sandbox, tmp_path: Path, webhook: Webhook) -> None:
    """A cold patch that fails, with after_window and on_failure hooks that fail too and a
    webhook that answers 500: the deploy still exits 1 (restored), each hook failure is a
    warning on stderr and a hook.failed event."""
    fresh.commit("Add a patch that fails (cold)", {PATCH_07: FAILING_PATCH})
    webhook.script = [200, 500, 500, 500, 500, 500, 500]  # before_window ok, then 3 + 3
    config = hooked_config(fresh, tmp_path, webhook,
                           after_window=failing("chat is down", 1),
                           on_failure=failing("pager is down", 2))
    done = fresh.cli("deploy", "--yes", *approvals("patch-2200-07-0"), config=config)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nosuchtable" in done.stderr
    assert "warning: [hooks] after_window" in done.stderr and "chat is down" in done.stderr
    assert "warning: [hooks] on_failure" in done.stderr and "pager is down" in done.stderr
    assert "webhook http://127.0.0.1:" in done.stderr
    run = fresh.show()
    assert run["outcome"] == "rolled-back"
    failed = [(hook, kind) for event, hook, kind in hook_events(fresh, run["id"])
              if event == "hook.failed"]
    assert failed == [("after_window", "command"), ("after_window", "webhook"),
                      ("on_failure", "command"), ("on_failure", "webhook")]
    assert webhook.events == ["before_window"] + ["after_window"] * 3 + ["on_failure"] * 3
    assert webhook.posts[1]["window"] == "rolled-back"
    assert webhook.posts[1]["outcome"] == "rolled-back"
    assert webhook.posts[-1]["exit_code"] == 1
