"""[hooks]: real commands (tiny ``sh -c`` scripts) and a real webhook on 127.0.0.1."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import HooksSettings
from orchestrator.db.lock import process_alive
from orchestrator.errors import (
    CommitUnknown,
    ExitCode,
    FailedAfterCommit,
    FailedBeforeCommit,
    Refused,
)
from orchestrator.runner import hooks as hooks_module
from orchestrator.runner.hooks import (
    Hooks,
    environment,
    post_json,
    redact_url,
    run_command,
    tail,
)
from orchestrator.runner.journal import Journal
from tests.fakes import make_run
from tests.webhook import Webhook

BASE = {"run_id": "run-1", "who": "rm@orchestrator", "command": "deploy", "stage": "all",
        "from": "a" * 40, "to": "b" * 40, "cut": "c" * 40, "config": "/etc/fdt/prod.toml",
        "summary": "/runs/run-1/run.json", "journal": "/runs/run-1/journal.jsonl"}
FACT_KEYS = ["event", *BASE, "outcome", "window", "outage_s", "exit_code", "error", "ts"]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook on 127.0.0.1 for one test."""
    with Webhook() as server:
        yield server


# --- commands that say what they saw -------------------------------------------------------


def env_writer(path: Path) -> tuple[str, ...]:
    """A command writing its environment to ``path``."""
    return ("sh", "-c", 'env > "$0"', str(path))


def read_env(path: Path) -> dict[str, str]:
    """The FASTDOWNTIME_* variables a command of :func:`env_writer` saw."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("FASTDOWNTIME_"))


class Said:
    """What the hooks warned, and their journal's hook events."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.warnings: list[str] = []

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [e for e in self.journal.events
                if e["event"].startswith("hook.") and (not names or e["event"] in names)]


def make_hooks(tmp_path: Path, settings: HooksSettings,
               sleeps: list[float] | None = None) -> tuple[Hooks, Said]:
    journal = Journal(tmp_path / "runs", "run-1")
    said = Said(journal)
    hooks = Hooks(settings, journal, BASE, cwd=tmp_path,
                  sleep=(sleeps if sleeps is not None else []).append,
                  warn=said.warnings.append)
    return hooks, said


def every_hook(tmp_path: Path, **settings: Any) -> HooksSettings:
    """Every event's command writing its environment to ``<event>.env`` in ``tmp_path``."""
    return replace(HooksSettings(before_window=env_writer(tmp_path / "before_window.env"),
                                 after_window=env_writer(tmp_path / "after_window.env"),
                                 on_failure=env_writer(tmp_path / "on_failure.env"),
                                 on_done=env_writer(tmp_path / "on_done.env")), **settings)


# --- where they fire, what they are told ----------------------------------------------------


def test_window_hooks_run_around_the_stage_with_its_facts(tmp_path: Path) -> None:
    """before_window runs before the body, after_window after it, each with the run's facts
    in FASTDOWNTIME_* variables; after a committed window its outage and state."""
    hooks, said = make_hooks(tmp_path, every_hook(tmp_path))
    run = make_run()
    with hooks.window(run):
        assert (tmp_path / "before_window.env").exists()
        assert not (tmp_path / "after_window.env").exists()
        run.window_opened, run.window_closed, run.committed = 100.0, 101.25, True
    before = read_env(tmp_path / "before_window.env")
    assert before["FASTDOWNTIME_EVENT"] == "before_window"
    assert before["FASTDOWNTIME_RUN_ID"] == "run-1"
    assert before["FASTDOWNTIME_OUTCOME"] == "running"
    assert before["FASTDOWNTIME_WINDOW"] == "pending"
    assert before["FASTDOWNTIME_CUT"] == "c" * 40
    assert before["FASTDOWNTIME_SUMMARY"] == "/runs/run-1/run.json"
    assert before["FASTDOWNTIME_EXIT_CODE"] == "" and before["FASTDOWNTIME_ERROR"] == ""
    assert set(before) == {f"FASTDOWNTIME_{key.upper()}" for key in FACT_KEYS}
    after = read_env(tmp_path / "after_window.env")
    assert after["FASTDOWNTIME_EVENT"] == "after_window"
    assert after["FASTDOWNTIME_WINDOW"] == "committed"
    assert after["FASTDOWNTIME_OUTCOME"] == "running"
    assert after["FASTDOWNTIME_OUTAGE_S"] == "1.25"
    assert [(e["event"], e["hook"]) for e in said.events()] == [
        ("hook.start", "before_window"), ("hook.done", "before_window"),
        ("hook.start", "after_window"), ("hook.done", "after_window")]
    assert said.events("hook.done")[0]["exit_code"] == 0
    assert said.warnings == []


def test_commands_run_in_the_config_directory_and_keep_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative command runs from the config file's directory, and sees the orchestrator's
    own environment beside the FASTDOWNTIME_* variables."""
    script = tmp_path / "notify"
    script.write_text('#!/bin/sh\npwd > where\necho "$FDT_TEST_CHANNEL" >> where\n')
    script.chmod(0o755)
    monkeypatch.setenv("FDT_TEST_CHANNEL", "#ops")
    hooks, said = make_hooks(tmp_path, HooksSettings(on_done=("./notify",)))
    hooks.run_ended({"outcome": "done", "outage_s": 1.5, "error": None}, None)
    assert (tmp_path / "where").read_text().split("\n")[:2] == [str(tmp_path), "#ops"]
    assert said.warnings == []


def test_a_stage_that_fails_before_commit_still_fires_after_window(tmp_path: Path) -> None:
    """A window rolled back: after_window says so (outcome rolled-back, the error) and the
    stage's own error goes on unchanged."""
    hooks, said = make_hooks(tmp_path, every_hook(tmp_path))
    run = make_run()
    failure = FailedBeforeCommit("fastdowntime step apply_cold_patches failed: boom")
    with pytest.raises(FailedBeforeCommit) as caught, hooks.window(run):
        run.window_opened, run.window_closed = 100.0, 100.5
        raise failure
    assert caught.value is failure
    after = read_env(tmp_path / "after_window.env")
    assert after["FASTDOWNTIME_WINDOW"] == "rolled-back"
    assert after["FASTDOWNTIME_OUTCOME"] == "rolled-back"
    assert "apply_cold_patches failed: boom" in after["FASTDOWNTIME_ERROR"]


@pytest.mark.parametrize(("error", "committed", "opened", "window", "outcome"), [
    (None, False, False, "not-opened", "running"),
    (FailedBeforeCommit("health check failed"), False, False, "not-opened", "rolled-back"),
    (CommitUnknown("connection lost at COMMIT"), False, True, "unknown", "commit-unknown"),
    (FailedAfterCommit("close_window failed"), True, True, "committed", "failed-after-commit"),
    (KeyboardInterrupt("SIGTERM received"), False, True, "rolled-back", "rolled-back"),
    (RuntimeError("bug"), False, False, "not-opened", "crashed"),
])
def test_after_window_tells_where_the_window_was_left(
        tmp_path: Path, error: BaseException | None, committed: bool, opened: bool,
        window: str, outcome: str) -> None:
    """after_window's window and outcome so far, for each way a stage can end."""
    hooks, _ = make_hooks(tmp_path, every_hook(tmp_path))
    run = make_run(committed=committed, window_opened=100.0 if opened else None)
    hooks.after_window(run, error)
    after = read_env(tmp_path / "after_window.env")
    assert (after["FASTDOWNTIME_WINDOW"], after["FASTDOWNTIME_OUTCOME"]) == (window, outcome)
    assert hooks.window_seen == window


def test_run_end_fires_on_done_or_on_failure_with_the_exit_code(tmp_path: Path) -> None:
    """on_done gets exit code 0 and the window the stage left; on_failure the error's exit
    code, the final outcome and the error; neither fires the other."""
    hooks, _ = make_hooks(tmp_path, every_hook(tmp_path))
    hooks.after_window(make_run(committed=True, window_opened=1.0, window_closed=2.0), None)
    hooks.run_ended({"outcome": "done", "outage_s": 1.0, "error": None}, None)
    done = read_env(tmp_path / "on_done.env")
    assert done["FASTDOWNTIME_EVENT"] == "on_done" and done["FASTDOWNTIME_OUTCOME"] == "done"
    assert done["FASTDOWNTIME_EXIT_CODE"] == "0" and done["FASTDOWNTIME_WINDOW"] == "committed"
    assert done["FASTDOWNTIME_OUTAGE_S"] == "1.0"
    assert not (tmp_path / "on_failure.env").exists()

    (tmp_path / "second").mkdir()
    hooks, _ = make_hooks(tmp_path / "second", every_hook(tmp_path / "second"))
    error = FailedAfterCommit("rolled forward past: web1 unhealthy")
    hooks.run_ended({"outcome": "failed-after-commit", "outage_s": None,
                     "error": str(error)}, error)
    failed = read_env(tmp_path / "second" / "on_failure.env")
    assert failed["FASTDOWNTIME_EVENT"] == "on_failure"
    assert failed["FASTDOWNTIME_EXIT_CODE"] == str(ExitCode.FAILED_AFTER_COMMIT)
    assert failed["FASTDOWNTIME_OUTCOME"] == "failed-after-commit"
    assert failed["FASTDOWNTIME_ERROR"] == "rolled forward past: web1 unhealthy"
    assert failed["FASTDOWNTIME_WINDOW"] == "none" and failed["FASTDOWNTIME_OUTAGE_S"] == ""
    assert not (tmp_path / "second" / "on_done.env").exists()


def test_unset_hooks_do_nothing(tmp_path: Path) -> None:
    """Without commands or a webhook, no event is journaled and nothing is said."""
    hooks, said = make_hooks(tmp_path, HooksSettings())
    with hooks.window(make_run()):
        pass
    hooks.run_ended({"outcome": "done"}, None)
    assert said.events() == [] and said.warnings == []


# --- before the window: a failure refuses --------------------------------------------------


def test_failing_before_window_refuses_with_its_exit_code_and_stderr(
        tmp_path: Path, webhook: Webhook) -> None:
    """before_window exiting 4: Refused (exit 3) naming the hook, the exit code and the tail
    of its stderr; the stage's steps never run, no after_window, no webhook for it."""
    settings = replace(every_hook(tmp_path, webhook_url=webhook.url),
                       before_window=("sh", "-c", "echo checking >&2; echo 'on-call: nobody' >&2;"
                                                  " exit 4"))
    hooks, said = make_hooks(tmp_path, settings)
    ran = []
    with pytest.raises(Refused) as caught, hooks.window(make_run()):
        ran.append("steps")
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.REFUSED
    assert "[hooks] before_window" in message and "exited 4" in message
    assert "on-call: nobody" in message and "nothing was changed" in message
    assert ran == [] and not (tmp_path / "after_window.env").exists()
    failed = said.events("hook.failed")
    assert [(e["hook"], e["exit_code"], e["blocks"]) for e in failed] == [
        ("before_window", 4, True)]
    assert failed[0]["stderr"] == "checking\non-call: nobody"
    assert webhook.posts == [] and said.warnings == []
    assert hooks.window_seen == "not-opened"


def test_before_window_that_cannot_start_refuses(tmp_path: Path) -> None:
    """A command that does not exist refuses the deploy, naming it."""
    hooks, said = make_hooks(tmp_path, HooksSettings(before_window=("./no-such-hook", "x")))
    with pytest.raises(Refused, match=r"cannot start `./no-such-hook`: No such file"), \
            hooks.window(make_run()):
        pass
    assert said.events("hook.failed")[0]["exit_code"] is None


def test_before_window_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    """A hook still running after timeout_s is killed with the processes it started, and
    refuses the deploy, saying so; it does not hold the run for its own length."""
    pidfile = tmp_path / "child.pid"
    settings = HooksSettings(before_window=("sh", "-c", 'sleep 30 & echo $! > "$0"; wait',
                                            str(pidfile)), timeout_s=0.5)
    hooks, said = make_hooks(tmp_path, settings)
    started = time.monotonic()
    with pytest.raises(Refused, match=r"did not finish within 0.5 s: killed"), \
            hooks.window(make_run()):
        pass
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(child), "the hook's background child outlived it"
    assert said.events("hook.failed")[0]["duration_s"] < 5


# --- after the window: a failure only warns ------------------------------------------------


def test_failing_hooks_after_the_window_only_warn(tmp_path: Path) -> None:
    """after_window, on_failure and on_done failing (exit code, timeout, cannot start): each
    journaled as hook.failed and said on stderr, none raises."""
    settings = HooksSettings(after_window=("sh", "-c", "echo 'chat is down' >&2; exit 1"),
                             on_failure=("sh", "-c", "sleep 10"),
                             on_done=("/nonexistent/notify",), timeout_s=0.3)
    hooks, said = make_hooks(tmp_path, settings)
    run = make_run(committed=True, window_opened=1.0, window_closed=2.0)
    with hooks.window(run):
        pass
    hooks.run_ended({"outcome": "done"}, None)
    hooks.run_ended({"outcome": "rolled-back", "error": "x"}, FailedBeforeCommit("x"))
    failed = said.events("hook.failed")
    assert [(e["hook"], e["blocks"]) for e in failed] == [
        ("after_window", False), ("on_done", False), ("on_failure", False)]
    assert "exited 1" in said.warnings[0] and "chat is down" in said.warnings[0]
    assert "cannot start `/nonexistent/notify`" in said.warnings[1]
    assert "did not finish within 0.3 s" in said.warnings[2]
    assert all(w.startswith("[hooks] ") and w.endswith("the run goes on")
               for w in said.warnings)


def test_an_interrupted_hook_after_the_window_stops_the_hook_not_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while on_done runs: the hook is journaled as interrupted, the call returns."""
    def interrupted(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(hooks_module, "run_command", interrupted)
    hooks, said = make_hooks(tmp_path, HooksSettings(on_done=("true",)))
    hooks.run_ended({"outcome": "done"}, None)
    assert said.events("hook.failed")[0]["error"] == "interrupted"
    assert "interrupted" in said.warnings[0]


def test_secrets_in_a_hook_are_masked_in_the_journal(tmp_path: Path) -> None:
    """A token on a hook's command line or in its output is masked in the journal."""
    settings = HooksSettings(on_done=("sh", "-c", "echo api_token=abc123 >&2; exit 2",
                                      "--password=hunter2"))
    hooks, said = make_hooks(tmp_path, settings)
    hooks.run_ended({"outcome": "done"}, None)
    text = (tmp_path / "runs" / "run-1" / "journal.jsonl").read_text()
    assert "hunter2" not in text and "abc123" not in text
    assert "abc123" not in said.warnings[0]


def test_run_command_reports_a_signal_and_keeps_output_tails(tmp_path: Path) -> None:
    """A command killed by a signal is a failure naming it; output keeps its last lines."""
    done = run_command(("sh", "-c", "seq 1 100; kill -TERM $$"), env=dict(os.environ),
                       cwd=tmp_path, timeout_s=5)
    assert done.problem == "killed by SIGTERM" and done.exit_code == -15
    assert done.stdout.splitlines() == [str(n) for n in range(81, 101)]
    assert tail("x" * 5000) == "x" * 2000


# --- the webhook ---------------------------------------------------------------------------


def test_webhook_receives_every_event_as_json(tmp_path: Path, webhook: Webhook) -> None:
    """The webhook gets one JSON POST per event, with the same facts as the commands'
    environment, and the event in a header."""
    hooks, said = make_hooks(tmp_path, every_hook(tmp_path, webhook_url=webhook.url))
    run = make_run()
    with hooks.window(run):
        run.window_opened, run.window_closed, run.committed = 10.0, 10.5, True
    hooks.run_ended({"outcome": "done", "outage_s": 0.5, "error": None}, None)
    assert webhook.events == ["before_window", "after_window", "on_done"]
    for post in webhook.posts:
        assert list(post) == FACT_KEYS
        assert read_env(tmp_path / f"{post['event']}.env") == environment(post)
    assert webhook.posts[1]["window"] == "committed" and webhook.posts[1]["outage_s"] == 0.5
    assert webhook.posts[2]["exit_code"] == 0 and webhook.posts[2]["outcome"] == "done"
    headers = webhook.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Fastdowntime-Event"] == "before_window"
    assert headers["User-Agent"].startswith("fastdowntime/")
    done = said.events("hook.done")
    assert [(e["hook"], e["kind"]) for e in done if e["kind"] == "webhook"] == [
        ("before_window", "webhook"), ("after_window", "webhook"), ("on_done", "webhook")]
    assert all(e["status"] == 200 and e["attempts"] == 1 for e in done if "status" in e)


def test_webhook_is_retried_with_backoff_after_a_failure(tmp_path: Path,
                                                         webhook: Webhook) -> None:
    """A webhook answering 503 then 200: tried again after 0.5 s (tenacity's sleep), the
    same body; journaled as one retry and done at the second attempt, no warning."""
    webhook.script = [503]
    sleeps: list[float] = []
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url=webhook.url), sleeps)
    hooks.run_ended({"outcome": "done"}, None)
    assert webhook.events == ["on_done", "on_done"]
    assert webhook.posts[0] == webhook.posts[1]
    assert sleeps == [0.5]
    retry = said.events("hook.retry")
    assert [(e["attempt"], e["sleep_s"]) for e in retry] == [(1, 0.5)]
    assert "503" in retry[0]["error"]
    assert said.events("hook.done")[0]["attempts"] == 2 and said.warnings == []


def test_webhook_gives_up_after_its_retries_and_only_warns(tmp_path: Path,
                                                          webhook: Webhook) -> None:
    """Always 500: 1 + webhook_retries attempts, backoff doubling, then a warning that
    names the webhook by host only (its path holds a token)."""
    webhook.script = [500, 500, 500]
    sleeps: list[float] = []
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url=webhook.url,
                                                     webhook_retries=2), sleeps)
    hooks.after_window(make_run(), None)
    assert len(webhook.posts) == 3 and sleeps == [0.5, 1.0]
    failed = said.events("hook.failed")[0]
    assert failed["attempts"] == 3 and failed["status"] == 500 and failed["blocks"] is False
    assert "after 3 attempts" in said.warnings[0] and "500" in said.warnings[0]
    journal = (tmp_path / "runs" / "run-1" / "journal.jsonl").read_text()
    assert "T0KEN" not in journal and "T0KEN" not in said.warnings[0]


def test_webhook_that_answers_too_late_is_tried_again(tmp_path: Path, webhook: Webhook) -> None:
    """An answer slower than webhook_timeout_s counts as a failure and is retried."""
    webhook.script = [(1.0, 200)]
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url=webhook.url,
                                                     webhook_timeout_s=0.2))
    started = time.monotonic()
    hooks.run_ended({"outcome": "done"}, None)
    assert time.monotonic() - started < 1.0
    assert len(webhook.posts) == 2
    assert "no answer within 0.2 s" in said.events("hook.retry")[0]["error"]
    assert said.events("hook.done")[0]["attempts"] == 2 and said.warnings == []


def test_webhook_client_errors_are_not_retried(tmp_path: Path, webhook: Webhook) -> None:
    """A 404 will not change by asking again: one attempt, a warning."""
    webhook.script = [404]
    sleeps: list[float] = []
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url=webhook.url), sleeps)
    hooks.run_ended({"outcome": "done"}, None)
    assert len(webhook.posts) == 1 and sleeps == []
    assert "at the first attempt" in said.warnings[0] and "404" in said.warnings[0]


def test_a_webhook_that_is_down_never_blocks_the_window(tmp_path: Path) -> None:
    """before_window's webhook refusing connections: warned, the stage runs anyway."""
    webhook = Webhook()  # bound, never served: connections are refused
    url = webhook.url
    webhook.server.server_close()
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url=url, webhook_retries=1))
    ran = []
    with hooks.window(make_run()):
        ran.append("steps")
    assert ran == ["steps"]
    assert [e["hook"] for e in said.events("hook.failed")] == ["before_window", "after_window"]
    assert "webhook http://127.0.0.1:" in said.warnings[0]


def test_an_unexpected_webhook_error_never_blocks_the_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong in before_window's webhook is a warning: the stage still runs."""
    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise UnicodeError("label too long")

    monkeypatch.setattr(hooks_module, "post_json", broken)
    hooks, said = make_hooks(tmp_path, HooksSettings(webhook_url="http://chat.example/h"))
    ran = []
    with hooks.window(make_run()):
        ran.append("steps")
    assert ran == ["steps"]
    assert "UnicodeError: label too long" in said.warnings[0]


def test_webhook_url_credentials_go_in_a_header_and_never_in_the_journal(
        tmp_path: Path, webhook: Webhook) -> None:
    """user:password@ in the URL becomes HTTP Basic authentication; shown URLs drop it, the
    path and the query."""
    url = webhook.url.replace("http://", "http://bot:s3cr%40t@") + "?key=k1"
    status = post_json(url, b"{}", 2.0)
    assert status == 200
    assert webhook.headers[0]["Authorization"] == "Basic Ym90OnMzY3JAdA=="  # bot:s3cr@t
    assert redact_url(url) == f"http://127.0.0.1:{webhook.server.server_address[1]}/..."
    assert redact_url("https://[::1]/") == "https://[::1]/"
