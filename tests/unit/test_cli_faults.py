"""The CLI at its edges: signals take Ctrl-C's path, the unexpected exits 70."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator import cli
from orchestrator.commands import history
from orchestrator.errors import ExitCode, InternalError
from orchestrator.runner.outcome import Outcome


def test_an_unexpected_error_exits_70(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An exception nobody expected is exit 70, "internal error; state unknown", never 1
    (the code that promises nothing changed)."""
    def broken(_args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(history, "cmd_runs", broken)
    assert cli.main(["runs"]) == ExitCode.INTERNAL == 70
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: boom)" in err and "resume" in err


def test_an_internal_error_in_a_run_names_it_and_is_crashed() -> None:
    """Inside a run the error names `show RUN` and `resume RUN`; the record says crashed."""
    error = InternalError(RuntimeError("boom"), "20261202-1")
    assert error.exit_code == 70
    assert "`fastdowntime show 20261202-1`, then `fastdowntime resume 20261202-1`" in str(error)
    assert Outcome.of(error) is Outcome.CRASHED


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_take_the_ctrl_c_path(name: str) -> None:
    """SIGTERM or SIGHUP during a command ends it the way Ctrl-C does (exit 1, said why), not
    with the default handler's silent death."""
    code = ("import os, signal, time; from orchestrator import cli\n"
            "from orchestrator.commands import history\n"
            f"history.cmd_runs = lambda a: os.kill(os.getpid(), signal.{name}) or time.sleep(5)\n"
            "raise SystemExit(cli.main(['runs']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == ExitCode.FAILED_BEFORE_COMMIT, done.stderr
    assert f"{name} received" in done.stderr


def test_output_on_a_full_disk_never_changes_the_exit_code() -> None:
    """Log lines and the closing report that cannot be written (stdout and stderr on a full
    disk: /dev/full) are dropped: a step that logs never fails for it, and a run that is done
    exits 0, not 70 (internal error) nor 120 (Python's failed flush at exit)."""
    code = ("import structlog; from orchestrator import cli\n"
            "from orchestrator.commands import history, output\n"
            "def command(args):\n"
            "    structlog.get_logger('x').info('step.logged', n=1)\n"
            "    output.out('run x: done')\n"
            "    return 0\n"
            "history.cmd_runs = command\n"
            "raise SystemExit(cli.main(['runs']))\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=full,
                              timeout=30, check=False)
    assert done.returncode == 0
