"""``fastdowntime completion bash|zsh``: scripts written from the parser that the shells
accept and that complete every command, its flags and their values."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import cli, cliparser
from orchestrator.errors import ExitCode
from orchestrator.views.completion import bash, describe, zsh

needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")


def commands() -> list[str]:
    return [command.name for command in describe(cliparser.build_parser())[1]]


def script(capsys: pytest.CaptureFixture[str], shell: str) -> str:
    assert cli.main(["completion", shell]) == ExitCode.OK
    return capsys.readouterr().out


def complete_bash(path: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash completes for ``line`` (the word under the cursor is its last one; a
    trailing space starts an empty one) with the script at ``path`` sourced."""
    code = ('source "$1"; read -ra COMP_WORDS <<< "$2"; [[ $2 == *" " ]] && COMP_WORDS+=("");'
            ' COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _fastdowntime;'
            ' printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", code, "bash", str(path), line], capture_output=True,
                          text=True, check=True, timeout=30, cwd=cwd)
    return [word for word in done.stdout.splitlines() if word]


def test_every_command_is_listed_with_completion_itself() -> None:
    """The parser's commands are all there, the new ``completion`` among them."""
    assert {"plan", "patches", "deploy", "sandbox", "completion"} <= set(commands())


def test_the_bash_script_is_valid_and_completes(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """``bash -n`` accepts the script; it completes every command, a command's flags, a
    flag's choices, files for a file, and finds the command after a global option's
    value."""
    path = tmp_path / "fastdowntime.bash"
    path.write_text(script(capsys, "bash"))
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    assert complete_bash(path, "fastdowntime ") == commands()
    assert complete_bash(path, "fastdowntime re") == ["rehearse", "report", "resume"]
    assert complete_bash(path, "fastdowntime -c env.toml sand") == ["sandbox"]
    assert complete_bash(path, "fastdowntime deploy --st") == ["--stage"]
    assert complete_bash(path, "fastdowntime deploy --stage ") == [
        "all", "fastdowntime", "nodowntime"]
    assert complete_bash(path, "fastdowntime completion ") == ["bash", "zsh"]
    assert "--json" in complete_bash(path, "fastdowntime unlock --")
    (tmp_path / "patch-2200-01-0.sql").write_text("")
    assert complete_bash(path, "fastdowntime patches patch-", cwd=tmp_path) == [
        "patch-2200-01-0.sql"]
    assert complete_bash(path, "fastdowntime -c fast", cwd=tmp_path) == ["fastdowntime.bash"]


@needs_zsh
def test_the_zsh_script_is_valid_and_registers(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    """``zsh -n`` accepts the script; every command has its function and its entry; from
    ``$fpath`` or sourced, compinit binds it to ``fastdowntime``."""
    text = script(capsys, "zsh")
    folder = tmp_path / "zfunc"
    folder.mkdir()
    path = folder / "_fastdowntime"
    path.write_text(text)
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=30)
    assert text.startswith("#compdef fastdowntime\n")
    for name in commands():
        assert f"_fastdowntime_{name}() {{" in text and f"\n                '{name}:" in text
    for setup in (f"fpath=({folder} $fpath); autoload -U compinit; compinit -u -D",
                  f"autoload -U compinit; compinit -u -D; source {path}"):
        done = subprocess.run(["zsh", "-f", "-c", f"{setup}; print -r -- $_comps[fastdowntime]"],
                              capture_output=True, text=True, timeout=30, check=True,
                              env={**os.environ, "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path)})
        assert done.stdout.strip() == "_fastdowntime", done.stderr


@needs_zsh
def test_help_texts_are_quoted_for_the_shells(tmp_path: Path) -> None:
    """Quotes, brackets, colons and dollars in help texts do not break either script."""
    parser = argparse.ArgumentParser(prog="fastdowntime")
    sub = parser.add_subparsers(dest="command")
    odd = sub.add_parser("odd", help="it's [odd]: $HOME `x`")
    odd.add_argument("--to", metavar="A:B", help="the user's [target]: $1")
    odd.add_argument("--at", action="append", choices=("x", "y"), help="'quoted'")
    odd.add_argument("where", metavar="DIR", nargs="?")
    for name, text in (("odd.bash", bash(parser)), ("_odd", zsh(parser))):
        (tmp_path / name).write_text(text)
    subprocess.run(["bash", "-n", str(tmp_path / "odd.bash")], check=True, timeout=30)
    subprocess.run(["zsh", "-n", str(tmp_path / "_odd")], check=True, timeout=30)
    assert "'*--at['\\''quoted'\\'']:AT:(x y)'" in zsh(parser)


def test_words_a_shell_would_misread_are_refused() -> None:
    """A choice that is not a plain word would need quoting in the scripts: refused loudly
    rather than written broken."""
    parser = argparse.ArgumentParser(prog="fastdowntime")
    parser.add_argument("--mode", choices=("a b", "c"))
    with pytest.raises(ValueError, match="'a b'"):
        bash(parser)


def test_completion_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``completion bash --json``: the script inside a document."""
    text = script(capsys, "bash")
    assert cli.main(["completion", "bash", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out) == {"shell": "bash", "script": text}
