"""``--json`` on every command: stdout is one JSON document, errors included (SPEC section 3).

The commands run through :func:`orchestrator.cli.main`; what they would reach (the runner's
deploy, rollback, resume, preflight, the lock, the sandbox) is replaced by fakes.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli, cliparser
from orchestrator.check_result import CheckResult
from orchestrator.commands import history
from orchestrator.db.lock import Holder
from orchestrator.errors import ExitCode, FailedAfterCommit, FailedBeforeCommit, Locked
from orchestrator.history import History
from orchestrator.plan import make_plan
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.runs import load_run, write_summary

RUN_ID = "20261202-101500-ab12"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def config(tmp_path: Path, runs_dir: Path) -> Path:
    """A config file with nothing but ``[runs] dir``: enough for commands whose runner is
    faked."""
    path = tmp_path / "env.toml"
    path.write_text(f'[runs]\ndir = "{runs_dir}"\n')
    return path


def record(runs_dir: Path, run_id: str = RUN_ID, **fields: Any) -> dict[str, Any]:
    """Write a run's summary as a run does; what ``show RUN --json`` prints of it."""
    summary = {"id": run_id, "who": "rm", "started": "2026-12-02T10:15:00.000Z",
               "finished": "2026-12-02T10:16:00.000Z", "outcome": Outcome.DONE,
               "from": "a" * 40, "to": "b" * 40, "cut": "b" * 40, "outage_s": 1.25,
               "window_budget_s": 30.0, "probe": {"longest_s": 1.3}, **fields}
    write_summary(runs_dir, run_id, summary)
    return load_run(runs_dir, run_id)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """``main(argv)``: its exit code, stdout parsed as one JSON document, and stderr."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cliparser.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_takes_json() -> None:
    """Every subcommand, and the top level, has a ``--json`` flag."""
    parser = cliparser.build_parser()
    assert "--json" in parser._option_string_actions
    for name, sub in subcommands().items():
        assert "--json" in sub._option_string_actions, name


def test_json_before_or_after_the_command(config: Path, runs_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` may stand before the command or after it."""
    summary = record(runs_dir)
    for argv in (["--json", "-c", str(config), "show", RUN_ID],
                 ["-c", str(config), "show", RUN_ID, "--json"]):
        assert run(capsys, *argv)[:2] == (ExitCode.OK, summary)


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "key", "says"), [
    (["deploy", "--stage", "both"], "--stage", "invalid choice"),
    (["frobnicate"], "command", "invalid choice"),
    (["show"], "RUN", "required"),
    (["runs", "--bogus", "x"], "--bogus", "unrecognized"),
    (["sandbox", "up", "--hosts", "many"], "--hosts", "invalid int"),
    (["-c"], "--config", "expected one argument"),
    ([], "command", "required"),
])
def test_a_usage_error_is_a_json_error(argv: list[str], key: str, says: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An argparse usage error with ``--json`` on the line is the error document, exit 2,
    naming the flag or argument; stderr still says it."""
    code, document, err = run(capsys, *argv, "--json")
    assert code == ExitCode.BAD_INPUT
    assert set(document) == {"error"}
    assert document["error"]["code"] == 2 and document["error"]["key"] == key
    assert says in document["error"]["message"]
    assert err == f"fastdowntime: {document['error']['message']}\n"


def test_without_json_a_usage_error_is_text_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--json`` nothing changes: stdout empty, the message on stderr."""
    assert cli.main(["deploy", "--stage", "both"]) == ExitCode.BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("fastdowntime: deploy: argument --stage: invalid choice: 'both'")


def test_a_config_error_names_its_key(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A bad config key is the error's ``key`` (dotted); a file that cannot be read at all
    is named by its path."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[window]\nbudget_s = -1\n")
    code, document, _ = run(capsys, "-c", str(bad), "runs", "--json")
    assert code == ExitCode.BAD_INPUT
    assert document["error"]["key"] == "window.budget_s"
    assert str(bad) in document["error"]["message"]
    missing = tmp_path / "absent.toml"
    code, document, _ = run(capsys, "-c", str(missing), "runs", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, str(missing))


def test_bad_input_of_a_command_names_its_argument(config: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A run that does not exist is bad input about RUN; so is ``report`` without one."""
    code, document, _ = run(capsys, "-c", str(config), "show", "nope", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "RUN")
    assert "no such run" in document["error"]["message"]
    code, document, _ = run(capsys, "-c", str(config), "report", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "RUN")
    code, document, _ = run(capsys, "plan", "--sql", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "--from")


def test_an_error_without_an_input_has_a_null_key(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An error that is no one input's fault has ``"key": null``, and its own exit code."""
    def locked(_args: object) -> int:
        raise Locked("run 1 by rm holds the deploy lock")

    monkeypatch.setattr(history, "cmd_runs", locked)
    code, document, _ = run(capsys, "runs", "--json")
    assert code == ExitCode.LOCKED
    assert document == {"error": {"code": 5, "message": "run 1 by rm holds the deploy lock",
                                  "key": None}}


def test_an_internal_error_is_70_in_json(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The unexpected is code 70 in the document too, naming show and resume; the traceback
    stays on stderr."""
    def broken(_args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(history, "cmd_runs", broken)
    code, document, err = run(capsys, "runs", "--json")
    assert code == document["error"]["code"] == ExitCode.INTERNAL
    assert document["error"]["message"].startswith("internal error (RuntimeError: boom)")
    assert "resume" in document["error"]["message"] and "Traceback" in err


def test_an_interrupt_is_exit_1_in_json(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C outside a run: exit 1, "nothing was changed", as a document."""
    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt("SIGTERM received")

    monkeypatch.setattr(history, "cmd_runs", interrupted)
    code, document, _ = run(capsys, "runs", "--json")
    assert code == document["error"]["code"] == ExitCode.FAILED_BEFORE_COMMIT
    assert document["error"]["message"] == "SIGTERM received; nothing was changed"


# --- the run commands ---------------------------------------------------------------


def fake_deploy(monkeypatch: pytest.MonkeyPatch, act: Any) -> list[dict[str, Any]]:
    """Replace the runner's deploy with ``act(show, progress, ask)``; the calls' options."""
    from orchestrator.runner import deploy as module

    calls: list[dict[str, Any]] = []

    def deploy(config: Any, options: Any, *, ask: Any = input, show: Any = print,
               show_plan: Any = None, progress: Any = None) -> dict[str, Any]:
        calls.append({"options": options})
        return act(show, progress, ask)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "deploy", deploy)
    return calls


def test_deploy_json_prints_the_summary_show_prints(
        monkeypatch: pytest.MonkeyPatch, config: Path, runs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``deploy --json``: stdout is the run's summary exactly as ``show RUN --json`` prints
    it; what the run says on the way, and its progress, go to stderr."""
    summary = record(runs_dir)

    def act(show: Any, progress: Any, _ask: Any) -> dict[str, Any]:
        show("preflight:")
        progress({"ts": "t", "stage": "fastdowntime", "event": "step.start", "step": "stage"})
        return dict(summary, notes=["what the run returned, not what it recorded"])

    fake_deploy(monkeypatch, act)
    code, document, err = run(capsys, "-c", str(config), "deploy", "--yes", "--json")
    assert (code, document) == (ExitCode.OK, summary)
    assert "preflight:" in err and "step.start" in err
    code, shown, _ = run(capsys, "-c", str(config), "show", RUN_ID, "--json")
    assert shown == document


def test_deploy_without_json_is_unchanged(monkeypatch: pytest.MonkeyPatch, config: Path,
                                          runs_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--json`` the commentary and the closing line are text on stdout."""
    summary = record(runs_dir)

    def act(show: Any, _progress: Any, _ask: Any) -> dict[str, Any]:
        show("preflight:")
        return summary

    fake_deploy(monkeypatch, act)
    assert cli.main(["-c", str(config), "deploy", "--yes"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out == (f"preflight:\nrun {RUN_ID}: done, outage 1.25 s (budget 30.0 s), seen by "
                   "the probe 1.3 s\n")


def test_deploy_json_asks_on_stderr(monkeypatch: pytest.MonkeyPatch, config: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--yes`` the question goes to stderr (stdout holds the JSON alone); a closed
    stdin is no."""
    answers: list[str] = []

    def act(_show: Any, _progress: Any, ask: Any) -> dict[str, Any]:
        answers.append(ask("deploy 3 revisions? [y/N] "))
        if answers[-1] != "y":
            raise FailedBeforeCommit("not confirmed: nothing was changed")
        return {"outcome": Outcome.DONE, "revisions": 0}

    fake_deploy(monkeypatch, act)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, document, err = run(capsys, "-c", str(config), "deploy", "--json")
    assert (code, document) == (ExitCode.OK, {"outcome": "done", "revisions": 0})
    assert err.startswith("deploy 3 revisions? [y/N] ")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, document, _ = run(capsys, "-c", str(config), "deploy", "--json")
    assert code == document["error"]["code"] == ExitCode.FAILED_BEFORE_COMMIT
    assert answers == ["y", ""]


def test_a_dry_run_prints_what_deploy_returned(monkeypatch: pytest.MonkeyPatch, config: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``deploy --dry-run --json``: no run was recorded, so the document is what the dry run
    returned (the plan, the checks); its rendered steps go to stderr."""
    dry = {"outcome": "dry-run", "from": "a" * 40, "to": "b" * 40, "plan": {"cut": None},
           "checks": [{"name": "role", "ok": True, "detail": "", "data": {}}]}

    def act(show: Any, _progress: Any, _ask: Any) -> dict[str, Any]:
        show("fastdowntime/stage_code: on app1: tar -x ...")
        return dry

    calls = fake_deploy(monkeypatch, act)
    code, document, err = run(capsys, "-c", str(config), "deploy", "--dry-run", "--json")
    assert (code, document) == (ExitCode.OK, dry)
    assert "stage_code" in err and calls[0]["options"].dry_run


def test_a_failed_run_puts_its_summary_beside_the_error(
        monkeypatch: pytest.MonkeyPatch, config: Path, runs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A run that fails after it was recorded: the error (its exit code) and, under
    ``run``, the summary as ``show`` prints it."""
    summary = record(runs_dir, outcome=Outcome.FAILED_AFTER_COMMIT, error="app2: down")

    def act(_show: Any, _progress: Any, _ask: Any) -> dict[str, Any]:
        error = FailedAfterCommit("rolled forward past: app2: down")
        error.run_id = RUN_ID
        raise error

    fake_deploy(monkeypatch, act)
    code, document, err = run(capsys, "-c", str(config), "rehearse", "--yes", "--json")
    assert code == ExitCode.FAILED_AFTER_COMMIT
    assert document == {"error": {"code": 4, "message": "rolled forward past: app2: down",
                                  "key": None}, "run": summary}
    assert err == "fastdowntime: rolled forward past: app2: down\n"


def test_rollback_json(monkeypatch: pytest.MonkeyPatch, config: Path, runs_dir: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """``rollback --json``: the run's recorded summary."""
    from orchestrator.runner import rollback as module

    summary = record(runs_dir, to="c" * 40, failed_requests=0)
    monkeypatch.setattr(module, "rollback", lambda config, to, **_: summary)
    assert run(capsys, "-c", str(config), "rollback", "--yes", "--json")[:2] == (
        ExitCode.OK, summary)


def test_resume_json_restored_is_exit_1_with_the_run(
        monkeypatch: pytest.MonkeyPatch, config: Path, runs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``resume RUN --json`` of a run it restores: exit 1 and the run's summary beside the
    error, found by the prefix given; one it finishes: the summary alone."""
    from orchestrator.runner import resume as module

    summary = record(runs_dir, outcome=Outcome.ROLLED_BACK)
    asked: list[str] = []

    def restored(config: Any, ref: str, **_: Any) -> dict[str, Any]:
        asked.append(ref)
        raise FailedBeforeCommit(f"run {ref} restored")

    monkeypatch.setattr(module, "resume", restored)
    code, document, _ = run(capsys, "-c", str(config), "resume", RUN_ID[:10], "--json")
    assert code == ExitCode.FAILED_BEFORE_COMMIT and asked == [RUN_ID]
    assert document["run"] == summary and document["error"]["code"] == 1
    monkeypatch.setattr(module, "resume", lambda config, ref, **_: summary)
    assert run(capsys, "-c", str(config), "resume", RUN_ID, "--json")[:2] == (ExitCode.OK,
                                                                              summary)


# --- the other commands ---------------------------------------------------------------


def test_preflight_json_failed_checks_and_the_error(
        monkeypatch: pytest.MonkeyPatch, config: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``preflight --json`` with a failed check: one document with every check and the
    error (exit 3) naming the check and its detail; all passed: the checks alone."""
    from orchestrator.runner import preflight as module

    plan = make_plan(History("repo", "db-stable", "f" * 40, "f" * 40, ()), {}, [])
    checks = [CheckResult("role", True, "deployer"),
              CheckResult("replication_lag", False, "standby 90 s behind")]
    monkeypatch.setattr(module, "rehearsal_timings", lambda config: None)
    monkeypatch.setattr(module, "plan_for", lambda *a, **k: module.Planned(plan))
    monkeypatch.setattr(module, "preflight",
                        lambda config, remote, planned, approvals: module.Preflight(
                            planned, approvals, tuple(checks)))
    code, document, _ = run(capsys, "-c", str(config), "preflight", "--json")
    assert code == ExitCode.REFUSED
    assert document["ok"] is False and [c["name"] for c in document["checks"]] == [
        "role", "replication_lag"]
    assert document["error"]["message"] == ("preflight failed: replication_lag: standby 90 s "
                                            "behind")
    checks.pop()
    code, document, _ = run(capsys, "-c", str(config), "preflight", "--json")
    assert code == ExitCode.OK and document["ok"] is True and "error" not in document


def test_unlock_json_says_what_was_released(monkeypatch: pytest.MonkeyPatch, config: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``unlock --force --json``: whether a lock was released, and whose."""
    from orchestrator.runner import admin

    holder = Holder(4242, RUN_ID, "rm", datetime(2026, 12, 2, 10, 15, tzinfo=UTC), "deploy1",
                    99)
    monkeypatch.setattr(admin, "unlock", lambda config: holder)
    code, document, _ = run(capsys, "-c", str(config), "unlock", "--force", "--json")
    assert code == ExitCode.OK and document["released"] is True
    assert document["holder"]["run_id"] == RUN_ID and document["holder"]["backend_pid"] == 4242
    monkeypatch.setattr(admin, "unlock", lambda config: None)
    assert run(capsys, "-c", str(config), "unlock", "--force", "--json")[1] == {
        "released": False, "holder": None}
    code, document, _ = run(capsys, "-c", str(config), "unlock", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "--force")


def test_timings_runs_and_report_json(monkeypatch: pytest.MonkeyPatch, config: Path,
                                      runs_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``timings``, ``runs`` and ``report`` print one document each."""
    from orchestrator.runner import admin

    rows = [{"file": "patch-2200-01-0.sql", "checksum": "ab" * 20, "seconds": 1.5}]
    monkeypatch.setattr(admin, "timings", lambda config: rows)
    assert run(capsys, "-c", str(config), "timings", "--json")[1] == rows
    summary = record(runs_dir)
    assert run(capsys, "-c", str(config), "runs", "--json")[1] == [summary]
    code, document, _ = run(capsys, "-c", str(config), "report", RUN_ID, "--json")
    assert code == ExitCode.OK and isinstance(document, dict)


def test_sandbox_json_says_what_was_done(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``sandbox up|down --json``: what was done, where; ``status --json``: the state."""
    from orchestrator.sandbox import manager
    from orchestrator.sandbox.layout import Layout

    monkeypatch.setenv("FASTDOWNTIME_SANDBOX", str(tmp_path / "box"))
    monkeypatch.setattr(manager, "up", lambda hosts, rows: Layout(tmp_path / "box", 2))
    monkeypatch.setattr(manager, "down", lambda: True)
    monkeypatch.setattr(manager, "status", lambda: {"sandbox": "x", "components": {
        "primary": {"state": "up"}}})
    assert run(capsys, "sandbox", "up", "--hosts", "2", "--json")[1] == {
        "action": "up", "sandbox": str(tmp_path / "box"), "app_hosts": 2,
        "config": str(tmp_path / "box" / "sandbox.toml")}
    assert run(capsys, "sandbox", "down", "--json")[1] == {
        "action": "down", "sandbox": str(tmp_path / "box"), "removed": True}
    assert run(capsys, "sandbox", "status", "--json")[:2] == (ExitCode.OK, {
        "components": {"primary": {"state": "up"}}, "sandbox": "x"})
    code, document, _ = run(capsys, "sandbox", "up", "--rows", "-1", "--json")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "--rows")


def test_patches_json_is_format_json(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``patches --json`` is ``--format json``; with another format it is bad input."""
    patch = tmp_path / "patch-2200-01-0.sql"
    patch.write_text("-- live\nCREATE INDEX CONCURRENTLY i ON t (c);\n"
                     "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 1, 0);\n")
    code, document, _ = run(capsys, "patches", str(patch), "--json")
    assert [report["file"] for report in document] == [str(patch)]
    assert run(capsys, "patches", str(patch), "--format", "json")[1] == document
    code, document, _ = run(capsys, "patches", str(patch), "--json", "--format", "sarif")
    assert (code, document["error"]["key"]) == (ExitCode.BAD_INPUT, "--json")


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints ``fastdowntime X``; with ``--json``, ``{"version": X}``."""
    assert cli.main(["--version"]) == ExitCode.OK
    text = capsys.readouterr().out
    assert text.startswith("fastdowntime ") and text.count("\n") == 1
    code, document, _ = run(capsys, "--version", "--json")
    assert code == ExitCode.OK and document == {"version": text.split()[1]}


def test_the_cli_imports_neither_db_nor_remote() -> None:
    """Importing the CLI and building its parser loads neither orchestrator.db nor
    orchestrator.remote (nor paramiko): the commands import what they use when they run."""
    code = ("import sys; from orchestrator import cli; cli.build_parser()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('orchestrator.db', "
            "'orchestrator.remote', 'paramiko', 'fabric'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_a_dry_run_returns_the_plan_and_the_checks() -> None:
    """What a dry run returns is a summary without ``id`` (nothing was recorded): the range,
    the window's budget and mode, the plan and every check."""
    from orchestrator.config import Config
    from orchestrator.runner.deploy import _dry_run

    plan = make_plan(History("repo", "db-stable", "a" * 40, "a" * 40, ()), {}, [])
    checks = (CheckResult("role", True, "deployer"),)
    dry = _dry_run(Config(path=None), plan, checks)
    assert dry["outcome"] == Outcome.DRY_RUN and "id" not in dry
    assert (dry["from"], dry["to"], dry["cut"]) == ("a" * 40, "a" * 40, None)
    assert dry["plan"] == plan.to_json() and dry["checks"] == [checks[0].to_json()]
    assert json.loads(json.dumps(dry)) == dry


def test_help_under_json_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help --json``: the help text as ``{"help": ...}``, stdout one document, exit 0."""
    assert cli.main(["plan", "--help", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["help"].startswith("usage: fastdowntime plan")
