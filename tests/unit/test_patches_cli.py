"""``fastdowntime patches``: every file reported, exit codes 0/3/2, --fail-on, directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode
from orchestrator.patchfiles import expand

CLEAN = "-- fastdowntime: live\nCREATE INDEX CONCURRENTLY bug__heat__idx ON bug (heat);\n"
ERROR = "ALTER TABLE bug ALTER COLUMN heat SET NOT NULL;\n"
WARNING = "ALTER TABLE bug DROP COLUMN heat;\n"
BROKEN = "SELECT 1;\nCREATE TABL job (id int);\n"


@pytest.fixture
def schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty database/schema directory under a repository root that is the cwd."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "database" / "schema"
    directory.mkdir(parents=True)
    return directory


def write(directory: Path, texts: dict[str, str | bytes]) -> list[str]:
    """Write the files; their paths relative to the cwd, in order."""
    paths = []
    for name, text in texts.items():
        path = directory / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        paths.append(str(path.relative_to(Path.cwd())))
    return paths


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line; its exit code, stdout and stderr."""
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_files_exit_0(schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No problem at all: exit 0, nothing on stderr."""
    files = write(schema, {"patch-1-0-0.sql": CLEAN})
    code, _, err = run(["patches", *files, "--json"], capsys)
    assert code == ExitCode.OK and err == ""


def test_any_problem_exits_3_by_default(schema: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A problem of either severity exits 3 (SPEC: 3 when a file has a problem)."""
    error, warning = write(schema, {"patch-1-0-0.sql": ERROR, "patch-1-1-0.sql": WARNING})
    assert run(["patches", error], capsys)[0] == ExitCode.REFUSED
    assert run(["patches", warning], capsys)[0] == ExitCode.REFUSED


def test_fail_on_error_lets_a_warning_pass(schema: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-on error exits 0 on a warning alone, and still 3 on an error."""
    error, warning = write(schema, {"patch-1-0-0.sql": ERROR, "patch-1-1-0.sql": WARNING})
    assert run(["patches", warning, "--fail-on", "error"], capsys)[0] == ExitCode.OK
    code, _, err = run(["patches", error, warning, "--fail-on", "error"], capsys)
    assert code == ExitCode.REFUSED and "1 warning" in err


def test_every_file_is_reported_when_one_does_not_parse(
        schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several files, one unparseable: all are in the JSON, in order, and the exit code is 2."""
    files = write(schema, {"patch-1-0-0.sql": CLEAN, "patch-1-1-0.sql": BROKEN,
                           "patch-1-2-0.sql": ERROR, "patch-1-3-0.sql": b"SELECT '\xff';\n"})
    code, out, err = run(["patches", "--format", "json", *files], capsys)
    assert code == ExitCode.BAD_INPUT
    data = json.loads(out)
    assert [entry["file"] for entry in data] == files
    assert [[p["rule"] for p in entry["problems"]] for entry in data] == [
        [], ["unparseable"], ["set-not-null-scan"], ["unparseable"]]
    assert data[1]["problems"][0]["line"] == 2 and data[1]["kind"] == "cold"
    assert err.startswith("fastdowntime: ") and files[1] in err and files[3] in err


def test_unreadable_file_is_reported_and_exits_2(schema: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file gets an unreadable problem; the other files are still reported."""
    [clean] = write(schema, {"patch-1-0-0.sql": CLEAN})
    missing = "database/schema/patch-9-9-9.sql"
    code, out, _ = run(["patches", "--json", missing, clean], capsys)
    assert code == ExitCode.BAD_INPUT
    first, second = json.loads(out)
    assert first["file"] == missing and first["problems"][0]["rule"] == "unreadable"
    assert second["file"] == clean and second["problems"] == []


def test_json_flag_is_format_json(schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the same document as --format json."""
    files = write(schema, {"patch-1-0-0.sql": ERROR})
    assert run(["patches", "--json", *files], capsys)[1] == \
        run(["patches", "--format", "json", *files], capsys)[1]


def test_text_format_names_rule_severity_and_summary(
        schema: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The text report shows each problem's severity, code and sentence, and a summary."""
    monkeypatch.setenv("COLUMNS", "200")
    files = write(schema, {"patch-1-0-0.sql": ERROR, "patch-1-1-0.sql": WARNING})
    code, out, _ = run(["patches", *files], capsys)
    assert code == ExitCode.REFUSED
    assert f"error set-not-null-scan {files[0]} line 1: ALTER COLUMN heat SET NOT NULL" in out
    assert f"warning drop-column {files[1]} line 1:" in out
    assert out.rstrip().endswith("2 files: 1 error, 1 warning")


def test_revision_table_flag_names_the_recording_insert(
        schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--revision-table makes the INSERT into that table the live-safe revision record."""
    files = write(schema, {"patch-1-0-0.sql": "INSERT INTO schema_version VALUES (1, 0, 0);\n"})
    _, out, _ = run(["patches", "--json", *files], capsys)
    assert json.loads(out)[0]["kind"] == "cold"
    _, out, _ = run(["patches", "--json", "--revision-table", "schema_version", *files], capsys)
    assert json.loads(out)[0]["kind"] == "live"


def test_directory_arguments_expand_to_the_patch_files(
        schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The repository root expands by the --patches glob, database/schema by patch-*.sql."""
    write(schema, {"patch-1-1-0.sql": CLEAN, "patch-1-0-0.sql": CLEAN, "comments.sql": "x"})
    (schema / "old").mkdir()
    write(schema / "old", {"patch-0-1-0.sql": BROKEN})
    expected = ["database/schema/patch-1-0-0.sql", "database/schema/patch-1-1-0.sql"]
    assert expand(["."], "database/schema/patch-*.sql") == expected
    assert expand(["database/schema"], "database/schema/patch-*.sql") == expected
    assert expand(["database/schema/", *expected], "database/schema/patch-*.sql") == expected
    code, out, _ = run(["patches", "--json", "."], capsys)
    assert code == ExitCode.OK and [e["file"] for e in json.loads(out)] == expected


def test_patches_flag_changes_what_a_directory_holds(
        schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--patches GLOB is the pattern a directory argument is expanded with."""
    write(schema, {"patch-1-0-0.sql": CLEAN})
    (Path.cwd() / "sql").mkdir()
    write(Path.cwd() / "sql", {"patch-2-0-0.sql": ERROR})
    code, out, _ = run(["patches", "--json", "--patches", "sql/patch-*.sql", "."], capsys)
    assert code == ExitCode.REFUSED
    assert [e["file"] for e in json.loads(out)] == ["sql/patch-2-0-0.sql"]


def test_misnamed_file_is_an_error(schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file named against the pattern is linted, with a bad-name error (exit 3)."""
    files = write(schema, {"patch-2211-x.sql": CLEAN})
    code, out, _ = run(["patches", "--json", *files], capsys)
    assert code == ExitCode.REFUSED
    assert [p["rule"] for p in json.loads(out)[0]["problems"]] == ["bad-name"]
