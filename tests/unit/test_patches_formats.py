"""``patches --format text|json|github|sarif``: golden outputs, GitHub's escaping, and the
SARIF log validated against the official SARIF 2.1.0 schema.

Set FASTDOWNTIME_UPDATE_GOLDEN=1 to rewrite the files under tests/unit/golden/ after an
intended change of output; review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode
from orchestrator.patches import RULES, PatchReport, lint
from orchestrator.views.lint import github, sarif, tool_version

GOLDEN = Path(__file__).parent / "golden"
SCHEMA = Path(__file__).parents[1] / "schemas" / "sarif-2.1.0-rtm.5.json"

PATCHES = {
    "patch-2211-03-0.sql": (
        "-- Copyright 2011 Canonical Ltd.\n"
        "SET client_min_messages=ERROR;\n"
        "\n"
        "ALTER TABLE Bug\n"
        "    ADD COLUMN heat integer DEFAULT 0 NOT NULL,\n"
        "    ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
        "ALTER TABLE Bug ALTER COLUMN heat_last_updated SET NOT NULL;\n"
        "CREATE INDEX bug__heat__idx ON Bug (heat);\n"
        "ALTER TABLE Bug DROP COLUMN hotness;\n"
        "\n"
        "INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 3, 0);\n"
    ),
    "patch-2211-04-0.sql": (
        "-- fastdowntime: live\n"
        "CREATE INDEX CONCURRENTLY bug__date_last_updated__idx ON Bug (date_last_updated);\n"
        "INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 4, 0);\n"
    ),
    "patch-2211-05-0.sql": "SELECT 1;\nCREATE TABL job (id int);\n",
    "patch-2211-06.sql": 'UPDATE "100%, done" SET x = 1;\n',
}


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The golden patches under database/schema in a cwd without a config; a fixed width."""
    monkeypatch.chdir(tmp_path)
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FASTDOWNTIME_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    schema = tmp_path / "database" / "schema"
    schema.mkdir(parents=True)
    for name, text in PATCHES.items():
        (schema / name).write_text(text, encoding="utf-8")
    return [f"database/schema/{name}" for name in PATCHES]


def check_golden(name: str, actual: str) -> None:
    """``actual`` equals tests/unit/golden/``name`` (rewritten when asked to)."""
    path = GOLDEN / name
    if os.environ.get("FASTDOWNTIME_UPDATE_GOLDEN"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8")


def output(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stdout of the command line, which must exit 2 (one golden patch does not parse)."""
    assert main(args) == ExitCode.BAD_INPUT
    return capsys.readouterr().out


@pytest.mark.parametrize(("fmt", "golden"), [
    ("text", "patches.txt"), ("json", "patches.json"), ("github", "patches.github"),
])
def test_golden_output(fmt: str, golden: str, files: list[str],
                       capsys: pytest.CaptureFixture[str]) -> None:
    """Each format prints exactly the stored output for the golden patches."""
    check_golden(golden, output(["patches", "--format", fmt, *files], capsys))


def test_golden_sarif(files: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The SARIF log is the stored one once the tool's version is normalised."""
    log = json.loads(output(["patches", "--format", "sarif", *files], capsys))
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["version"] == tool_version()
    driver["version"] = "VERSION"
    check_golden("patches.sarif.json", json.dumps(log, indent=2) + "\n")


def test_sarif_is_valid_against_the_official_schema(files: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The SARIF log validates against the SARIF 2.1.0 (rtm.5) JSON schema."""
    log = json.loads(output(["patches", "--format", "sarif", *files], capsys))
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(log), key=str)
    assert errors == []
    log["runs"][0]["results"][0]["level"] = "fatal"  # the schema is really applied
    assert not validator.is_valid(log)


def test_sarif_carries_every_rule_and_one_result_per_problem() -> None:
    """The driver lists the registry's rules; each result points at its rule and place."""
    reports = [lint(name, text) for name, text in PATCHES.items()]
    log = sarif(reports, "1.2.3")
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    assert all(r["shortDescription"]["text"] == RULES[r["id"]].title for r in rules)
    assert all(r["properties"]["plan"] == RULES[r["id"]].plan for r in rules)
    problems = [p for report in reports for p in report.problems]
    assert len(run["results"]) == len(problems)
    for result, problem in zip(run["results"], problems, strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == problem.rule
        assert result["level"] == problem.severity
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == problem.file
        if problem.line is None:
            assert "region" not in location
        else:
            assert location["region"] == {"startLine": problem.line, "startColumn": problem.col}


def test_github_commands_escape_data_and_properties() -> None:
    """%, CR and LF are escaped in the message; also ',' and ':' in properties."""
    problem = RULES["whole-table-dml"].problem(
        "db/a,b:c%.sql", 2, 3, "100% of\r\nrows", hint="batch, then: wait")
    report = PatchReport("db/a,b:c%.sql", None, "cold", "", None, (), (problem,), ())
    assert github([report]) == [
        "::error file=db/a%2Cb%3Ac%25.sql,line=2,col=3,title=whole-table-dml::"
        "100%25 of%0D%0Arows%0AInstead: batch, then: wait"
    ]


def test_github_command_without_a_line_and_for_a_warning() -> None:
    """A file-wide problem has no line or col; a warning is ::warning."""
    report = lint("database/schema/patch-x.sql", "ALTER TABLE bug DROP COLUMN heat;\n")
    bad_name, drop = github([report])
    assert bad_name.startswith("::error file=database/schema/patch-x.sql,title=bad-name::")
    assert drop.startswith("::warning file=database/schema/patch-x.sql,line=1,col=1,"
                           "title=drop-column::")


def test_sarif_uris_are_relative_or_file_uris() -> None:
    """Relative paths stay relative (percent-encoded, no ./); absolute ones are file URIs."""
    problem = RULES["empty"].problem("./db/my patch.sql", None, None, "nothing")
    report = PatchReport("./db/my patch.sql", None, "live", "", None, (), (problem,), ())
    absolute = RULES["empty"].problem("/srv/p.sql", None, None, "nothing")
    other = PatchReport("/srv/p.sql", None, "live", "", None, (), (absolute,), ())
    results = sarif([report, other], "1")["runs"][0]["results"]
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results]
    assert uris == ["db/my%20patch.sql", "file:///srv/p.sql"]
