"""``plan --sql``: the SQL a deploy sends, offline, in its order, with its timeouts, revision
rows and permissions, built from the one description the appliers execute."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.db.cold import ColdPatch, render_cold, review_cold
from orchestrator.db.live import review_live
from orchestrator.errors import ExitCode
from orchestrator.history.git import blob_sha
from orchestrator.patches import analyse
from tests.gitrepo import GitRepo, patch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PERMISSIONS = "database/schema/security.sql"
LIVE_FIRST = "-- fastdowntime: live\nCREATE INDEX CONCURRENTLY item_name ON item (name);\n"
COLD_A = "ALTER TABLE item ADD COLUMN note text;\nUPDATE item SET note = 'x';\n"
COLD_B = ("ALTER TABLE item ADD COLUMN price integer;\n"
          "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 3, 0);\n")
LIVE_AFTER = ("-- fastdowntime: live\nCREATE TABLE tag (id integer);\n"
              "CREATE INDEX tag_id ON tag (id);\n")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Initial", {"app/main.py": "v0\n", PERMISSIONS: "GRANT SELECT ON item TO app;\n"})
    return repo


@pytest.fixture
def history(repo: GitRepo) -> dict[str, str]:
    """A live patch before the cut, two cold ones (the second inserts its own revision
    row) with a new permissions text, code, and a live patch after the cut."""
    shas = {"base": repo.head()}
    shas["live"] = repo.commit("Live", {patch(2200, 1): LIVE_FIRST})
    # the later patch number comes first in history: the window applies numeric order
    shas["cold_b"] = repo.commit("Cold B", {patch(2200, 3): COLD_B})
    shas["cold_a"] = repo.commit("Cold A", {
        patch(2200, 2): COLD_A,
        PERMISSIONS: "GRANT SELECT ON item TO app;\nGRANT SELECT (note) ON item TO reader;\n"})
    shas["code"] = repo.commit("Code", {"app/main.py": "v1\n"})
    shas["after"] = repo.commit("Live after", {patch(2200, 4): LIVE_AFTER})
    return shas


def config(tmp_path: Path, repo: GitRepo, *, extra: str = "", reserve_s: float = 2.5) -> Path:
    """A config with a database and hosts (never reached), budget 20 s, lock timeout 2 s and
    a playbook whose apply_cold_patches keeps ``reserve_s``."""
    playbook = (PROJECT_ROOT / "playbooks" / "fastdowntime.yaml").read_text()
    assert "    reserve_s: 1.0\n" in playbook
    (tmp_path / "window.yaml").write_text(
        playbook.replace("    reserve_s: 1.0\n", f"    reserve_s: {reserve_s}\n"))
    path = tmp_path / "env.toml"
    path.write_text(f"""
[source]
repo = "{repo.path}"
permissions = "{PERMISSIONS}"

[database]
dsn = "host=192.0.2.1 port=5432 dbname=app user=deploy"
lock_timeout_s = 2
live_retries = 3
{extra}

[window]
budget_s = 20

[ssh]
user = "deploy"
key = "{tmp_path}/id"
known_hosts = "{tmp_path}/known_hosts"

[hosts.app.app1]
address = "192.0.2.11"
root = "/srv/app"

[runs]
dir = "{tmp_path}/runs"
playbook = "{tmp_path}/window.yaml"
""")
    return path


def sql_lines(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["plan", *args, "--sql"]) == ExitCode.OK
    return capsys.readouterr().out.splitlines()


def prose(lines: list[str]) -> str:
    """The comments' words, as one line (they wrap anywhere)."""
    return " ".join(line.removeprefix("--").strip() for line in lines if line.startswith("--"))


def test_sql_is_the_deploy_in_order(repo: GitRepo, history: dict[str, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The fastdowntime stage's live statements, then the window's transaction (patches in
    numeric order, revision rows, permissions, COMMIT), then the nodowntime stage's."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    sql = [line for line in lines if line and not line.startswith("--")]
    order = [
        "CREATE INDEX CONCURRENTLY item_name ON item (name);",
        "BEGIN;",
        "ALTER TABLE item ADD COLUMN note text;",
        "UPDATE item SET note = 'x';",
        "ALTER TABLE item ADD COLUMN price integer;",
        "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 3, 0);",
        "INSERT INTO LaunchpadDatabaseRevision (major, minor, patch, start_time, end_time) "
        "VALUES",
        "GRANT SELECT (note) ON item TO reader;",
        "COMMIT;",
        "CREATE TABLE tag (id integer);",
        "CREATE INDEX tag_id ON tag (id);",
    ]
    assert [sql.index(line) for line in order] == sorted(sql.index(line) for line in order)
    assert sql.count("BEGIN;") == 1 and sql.count("COMMIT;") == 1


def test_sql_header_names_the_plan(repo: GitRepo, history: dict[str, str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The header gives from, to and cut in full, the estimate, the table and permissions."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    head = lines[:lines.index("")]
    assert all(line.startswith("--") for line in head)
    assert f"-- from      {history['base']}" in head
    assert f"-- to        {history['after']}" in head
    assert f"-- cut       {history['cold_a']}" in head
    assert "-- estimated outage: unknown (no rehearsal timings)" in head
    assert f"-- permissions: {PERMISSIONS} at {history['after'][:12]}" in head


def test_sql_header_shows_a_known_estimate(repo: GitRepo, history: dict[str, str],
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """With rehearsal timings of both cold patches' versions, the header gives the estimate."""
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps([
        {"file": "patch-2200-02-0.sql", "checksum": blob_sha(COLD_A.encode()), "seconds": 1.5},
        {"file": "patch-2200-03-0.sql", "checksum": blob_sha(COLD_B.encode()), "seconds": 2.0}]))
    path = config(tmp_path, repo, extra=f'timings_file = "{timings}"')
    lines = sql_lines(capsys, "-c", str(path), "--from", history["base"])
    [estimate] = [line for line in lines if line.startswith("-- estimated outage: ")]
    assert "unknown" not in estimate and " s (overhead " in estimate


def test_every_window_statement_gets_the_remaining_budget(
        repo: GitRepo, history: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each statement of the window, the first and the permissions step included, follows
    SET LOCAL statement_timeout = budget_s - reserve_s (20 - 2.5 s); the comment says that
    offline it is the whole remaining budget."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    window = lines[lines.index("BEGIN;"):lines.index("COMMIT;")]
    timeout = "SET LOCAL statement_timeout = 17500;"
    for sent in ("SELECT clock_timestamp(), pg_backend_pid()", "ALTER TABLE item ADD COLUMN note",
                 "UPDATE item SET note", "ALTER TABLE item ADD COLUMN price",
                 "INSERT INTO LaunchpadDatabaseRevision VALUES", "GRANT SELECT ON item TO app"):
        at = next(i for i, line in enumerate(window) if line.startswith(sent))
        assert window[at - 1] == timeout, sent
    assert {line for line in window if "statement_timeout =" in line} == {timeout}
    comments = prose(lines)
    assert "budget_s 20 s" in comments and "reserve_s 2.5 s" in comments
    assert "Offline the timeout shown is the whole 17.5 s" in comments
    assert "at run time each statement gets what is left when it is sent" in comments


def test_revision_rows_as_the_orchestrator_sends_them(
        repo: GitRepo, history: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each patch's check runs after it; the patch that does not insert its row gets the
    orchestrator's INSERT, the one that does gets its times set; every checksum is recorded."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    check = ("SELECT clock_timestamp(), EXISTS (SELECT 1 FROM LaunchpadDatabaseRevision "
             "WHERE major = 2200 AND minor = {} AND patch = 0) \\gset patch_2200_0{}_0_")
    assert lines.index(check.format(2, 2)) == lines.index("UPDATE item SET note = 'x';") + 2
    assert lines.index(check.format(3, 3)) == lines.index(
        "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 3, 0);") + 2
    assert "-- patch-2200-03-0.sql done: the clock; does its row exist? (the patch inserts it)" \
        in lines
    at = lines.index("INSERT INTO LaunchpadDatabaseRevision (major, minor, patch, start_time, "
                     "end_time) VALUES")
    assert lines[at + 1] == (
        "  (2200, 2, 0, :'begin_clock_timestamp'::timestamptz AT TIME ZONE 'UTC', "
        ":'patch_2200_02_0_clock_timestamp'::timestamptz AT TIME ZONE 'UTC');")
    update = lines[at + 2:at + 4]
    assert update[0].startswith("UPDATE LaunchpadDatabaseRevision t SET start_time")
    assert update[1].startswith("  (2200, 3, 0, :'patch_2200_02_0_clock_timestamp'")
    assert "--   patch-2200-02-0.sql does not insert its row" in lines
    assert "--   patch-2200-03-0.sql inserts its row" in lines
    record = "\n".join(lines[lines.index("INSERT INTO fastdowntime.applied_patch (filename, "
                                         "major, minor, point, checksum, duration_s, run_id) "
                                         "VALUES"):])
    assert f"'patch-2200-02-0.sql', 2200, 2, 0, '{blob_sha(COLD_A.encode())}'" in record
    assert f"'patch-2200-03-0.sql', 2200, 3, 0, '{blob_sha(COLD_B.encode())}'" in record


def test_permissions_are_the_targets_text(repo: GitRepo, history: dict[str, str],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The permissions step is the file's text at the target, after the records, before
    COMMIT."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    at = lines.index("-- the permissions step")
    assert lines[at:at + 5] == ["-- the permissions step", "SET LOCAL statement_timeout = 17500;",
                                "GRANT SELECT ON item TO app;",
                                "GRANT SELECT (note) ON item TO reader;", "COMMIT;"]


def test_live_statements_follow_their_lock_timeout(
        repo: GitRepo, history: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Live statements run outside the transaction, each after SET lock_timeout ([database]
    lock_timeout_s, in ms); the comments say so and name the retries."""
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    for sent in ("CREATE INDEX CONCURRENTLY item_name ON item (name);",
                 "CREATE TABLE tag (id integer);", "CREATE INDEX tag_id ON tag (id);"):
        at = lines.index(sent)
        assert lines[at - 1] == "SET lock_timeout = 2000;"
        assert not lines.index("BEGIN;") < at < lines.index("COMMIT;")
    after = lines[lines.index("COMMIT;"):]
    assert any(line.startswith("INSERT INTO LaunchpadDatabaseRevision (major, minor, patch, "
                               "start_time, end_time) SELECT 2200, 4, 0,") for line in after)
    comments = prose(lines)
    assert "Outside any transaction block" in comments
    assert "up to 3 more times" in comments


def test_json_sql_carries_the_same_text(repo: GitRepo, history: dict[str, str],
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--json --sql prints the plan's JSON with the --sql text under "sql"."""
    path = str(config(tmp_path, repo))
    text = "\n".join(sql_lines(capsys, "-c", path, "--from", history["base"]))
    assert main(["plan", "-c", path, "--from", history["base"], "--sql", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sql"] == text
    assert data["cut"] == history["cold_a"] and data["fastdowntime"]["cold_patches"] == [
        "patch-2200-02-0.sql", "patch-2200-03-0.sql"]


def test_sql_connects_nowhere(repo: GitRepo, history: dict[str, str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """With a config naming a database and hosts, plan --sql opens no connection: no
    psycopg2, no SSH, no socket at all."""
    import paramiko
    import psycopg2

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("plan --sql connected")

    monkeypatch.setattr(psycopg2, "connect", refuse)
    monkeypatch.setattr(paramiko.SSHClient, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    lines = sql_lines(capsys, "-c", str(config(tmp_path, repo)), "--from", history["base"])
    assert "BEGIN;" in lines


def test_sql_needs_from(repo: GitRepo, history: dict[str, str], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --from, plan --sql would ask the hosts what they run: bad input (exit 2)."""
    assert main(["plan", "-c", str(config(tmp_path, repo)), "--sql"]) == ExitCode.BAD_INPUT
    assert "--from" in capsys.readouterr().err


def test_permissions_without_sql_is_bad_input(repo: GitRepo, history: dict[str, str],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--permissions only means something to --sql: alone it is bad input (exit 2)."""
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--repo", str(repo.path), "--from", history["base"], "--permissions",
                 PERMISSIONS]) == ExitCode.BAD_INPUT
    assert "--sql" in capsys.readouterr().err


def test_sql_without_a_config_or_a_cut(repo: GitRepo, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """No config: the defaults (lock timeout 1 s, no permissions); no cold patch: no
    transaction, the live statements of the nodowntime stage only."""
    base = repo.head()
    repo.commit("Live", {patch(2200, 1): LIVE_FIRST})
    monkeypatch.chdir(tmp_path)
    lines = sql_lines(capsys, "--repo", str(repo.path), "--from", base)
    assert "BEGIN;" not in lines and "COMMIT;" not in lines
    assert "-- cut       none: no window, the whole range is a nodowntime deploy" in lines
    assert "-- permissions: none ([source] permissions is not set)" in lines
    at = lines.index("CREATE INDEX CONCURRENTLY item_name ON item (name);")
    assert lines[at - 1] == "SET lock_timeout = 1000;"


def test_permissions_flag_without_a_config(repo: GitRepo, history: dict[str, str],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--permissions names the file without a config; the budget is the default 30 s less
    the default playbook's reserve_s 1 s."""
    monkeypatch.chdir(tmp_path)
    lines = sql_lines(capsys, "--repo", str(repo.path), "--from", history["base"],
                      "--permissions", PERMISSIONS)
    assert "GRANT SELECT (note) ON item TO reader;" in lines
    assert "SET LOCAL statement_timeout = 29000;" in lines


def test_violations_head_the_sql(repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A plan a deploy refuses says so at the top; --check still exits 3."""
    base = repo.head()
    repo.commit("Broken", {patch(2200, 1): "ALTER TABLE item ADD COLUMN c integer;\n",
                           "app/main.py": "v1\n"})
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--repo", str(repo.path), "--from", base, "--sql",
                 "--check"]) == ExitCode.REFUSED
    out = capsys.readouterr().out
    assert "-- 1 violation(s): a deploy of this plan is refused" in out
    assert " mixed: commit " in out


# --- the renderers, directly ---------------------------------------------------------------


def cold(name: str, text: str) -> ColdPatch:
    return ColdPatch(analyse(name, text), text, blob_sha(text.encode()))


def test_render_cold_is_unchanged() -> None:
    """--dry-run's rendering of the transaction is what it was: the review is beside it."""
    patch = cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")
    assert render_cold([patch], "GRANT SELECT ON item TO app;\n", "LaunchpadDatabaseRevision") == [
        "BEGIN",
        f"-- patch-2200-09-0.sql ({patch.checksum[:12]})",
        "ALTER TABLE item ADD COLUMN n int;",
        "-- check or insert the LaunchpadDatabaseRevision row of patch-2200-09-0.sql",
        "-- set the LaunchpadDatabaseRevision rows' times and record the checksums in "
        "fastdowntime.applied_patch",
        "-- permissions",
        "GRANT SELECT ON item TO app;",
        "COMMIT",
    ]


def test_review_cold_timeouts_and_a_permissions_text_without_semicolon() -> None:
    """The timeout is what is left in whole milliseconds (at least 1); a permissions text
    without a final semicolon gets one of its own line, so COMMIT stays a statement."""
    patches = [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")]
    lines = review_cold(patches, "GRANT SELECT ON item TO app\n-- end", "Rev", 3.2)
    assert "SET LOCAL statement_timeout = 3200;" in lines
    assert lines[-3:] == ["GRANT SELECT ON item TO app\n-- end", ";", "COMMIT;"]
    assert "SET LOCAL statement_timeout = 1;" in review_cold(patches, None, "Rev", 0.0)


def test_review_live_shows_the_concurrent_rewrite() -> None:
    """A plain CREATE INDEX on an existing table (a live-blocks violation) is shown as the
    live applier sends it: CONCURRENTLY."""
    text = "-- fastdowntime: live\nCREATE INDEX item_x ON item (name);\n"
    lines = review_live(analyse("patch-2200-05-0.sql", text), text,
                        revision_table="LaunchpadDatabaseRevision", lock_timeout_s=0.25)
    assert "CREATE INDEX CONCURRENTLY item_x ON item (name);" in lines
    assert "-- line 2: a plain CREATE INDEX on an existing table runs CONCURRENTLY" in lines
    assert "SET lock_timeout = 250;" in lines
