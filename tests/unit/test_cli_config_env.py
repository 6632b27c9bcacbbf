"""``FASTDOWNTIME_CONFIG`` names the config file when ``-c`` is not given (SPEC section 3)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.commands.loading import CONFIG_ENV, DEFAULT_CONFIG, load
from orchestrator.errors import ConfigError, ExitCode
from orchestrator.runner.runs import write_summary


def runs_config(tmp_path: Path, name: str, run_id: str) -> Path:
    """A config whose ``[runs] dir`` holds one run, ``run_id``."""
    runs = tmp_path / f"{name}-runs"
    write_summary(runs, run_id, {"id": run_id, "outcome": "done",
                                 "started": "2026-12-02T10:00:00.000Z"})
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[runs]\ndir = "{runs}"\n')
    return path


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert cli.main([*argv, "runs", "--json"]) == ExitCode.OK
    return [run["id"] for run in json.loads(capsys.readouterr().out)]


def test_the_variable_names_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``-c`` the file the variable names is read; ``-c`` wins over it."""
    monkeypatch.setenv(CONFIG_ENV, str(runs_config(tmp_path, "staging", "run-staging")))
    assert listed(capsys) == ["run-staging"]
    other = runs_config(tmp_path, "production", "run-production")
    assert listed(capsys, "-c", str(other)) == ["run-production"]


def test_a_missing_file_named_by_the_variable_is_bad_input(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A variable naming no file is exit 2 naming the file and the variable, even for the
    commands that need no config (the user asked for that one)."""
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "absent.toml"))
    assert cli.main(["plan", "--from", "HEAD", "--json"]) == ExitCode.BAD_INPUT
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["key"] == CONFIG_ENV
    assert f"absent.toml: no such file (named by ${CONFIG_ENV})" in err


def test_without_the_variable_the_default_stays(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Unset or empty, the variable changes nothing: config/sandbox.toml when present, else
    the built-in defaults for the commands that need no file, else an error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, "")
    assert load(argparse.Namespace(), required=False).path is None
    with pytest.raises(ConfigError, match="no such file"):
        load(argparse.Namespace())
    monkeypatch.delenv(CONFIG_ENV)
    DEFAULT_CONFIG.parent.mkdir()
    DEFAULT_CONFIG.write_text("")
    assert load(argparse.Namespace()).path == DEFAULT_CONFIG
