"""The planner on the shapes real histories have: patches fixed after landing, files that never
parse, misnamed files, feature branches that merged devel, evil merges. It never aborts on
content; violations name the commit that breaks the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode
from orchestrator.plan import COLD, LIVE, MIXED, PathRules, Plan
from orchestrator.runner.planning import build_plan
from tests.gitrepo import COLD_SQL, LIVE_SQL, GitRepo, patch

TYPO = "ALTER TABLE item ADD CONSTRAINT c CHECK (price >> 0;\n"
UNPACKAGED = "CREATE EXTENSION pg_trgm FROM unpackaged;\n"
STRAY = "CREATE TABLE t (id integer);\n);\n"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Initial", {"app/main.py": "v0\n", "database/schema/comments.sql": "-- c\n"})
    return repo


def plan_of(repo: GitRepo, start: str) -> Plan:
    return build_plan(str(repo.path), "db-stable", start, None, PathRules())


def check(repo: GitRepo, start: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    """``plan --check --json``: its exit code and its document."""
    code = main(["plan", "--repo", str(repo.path), "--from", start, "--check", "--json"])
    return code, json.loads(capsys.readouterr().out)


def rules_of(plan: Plan) -> list[tuple[str, str, str]]:
    return [(v.rule, v.revision, v.commit or v.revision) for v in plan.violations]


def exit_of(repo: GitRepo, start: str) -> int:
    """``plan --check``'s exit code (its output is dropped)."""
    return main(["plan", "--repo", str(repo.path), "--from", start, "--check", "--json"])


def test_patch_fixed_one_revision_later(repo: GitRepo, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo fixed by the next revision: the broken version is a problem of its revision
    (counted cold); the plan is clean and applies the fixed version."""
    base = repo.head()
    broken = repo.commit("Add check", {patch(2207, 1): TYPO})
    fixed = repo.commit("Fix the check", {patch(2207, 1): COLD_SQL.format(n=1)})
    plan = plan_of(repo, base)
    assert [(r.sha, r.kind) for r in plan.revisions] == [(broken, COLD), (fixed, COLD)]
    assert [p.rule for p in plan.revisions[0].problems] == ["unparseable"]
    assert plan.revisions[1].problems == ()
    assert plan.violations == () and plan.cut == fixed
    assert plan.cold_patches == ("patch-2207-01-0.sql",)
    monkeypatch.chdir(tmp_path)
    code, data = check(repo, base, capsys)
    assert code == ExitCode.OK
    assert data["revisions"][0]["problems"][0]["rule"] == "unparseable"
    assert "problems" not in data["revisions"][1]


@pytest.mark.parametrize("text", [TYPO, UNPACKAGED, STRAY], ids=["typo", "unpackaged", "stray"])
def test_a_version_that_never_parses(repo: GitRepo, text: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A patch whose version in the target tree does not parse: the plan has an `unparseable`
    violation naming revision and commit; plan exits 0, plan --check exits 3."""
    base = repo.head()
    bad = repo.commit("Old syntax", {patch(2207, 2): text})
    later = repo.commit("Code", {"app/main.py": "v1\n"})
    plan = plan_of(repo, base)
    assert [(r.sha, r.kind) for r in plan.revisions] == [(bad, COLD), (later, "code")]
    assert rules_of(plan) == [("unparseable", bad, bad)]
    assert "patch-2207-02-0.sql" in plan.violations[0].detail
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--repo", str(repo.path), "--from", base, "--json"]) == ExitCode.OK
    capsys.readouterr()
    code, data = check(repo, base, capsys)
    assert code == ExitCode.REFUSED
    assert data["violations"] == [{"revision": bad, "commit": bad, "rule": "unparseable",
                                   "detail": plan.violations[0].detail}]


def test_a_broken_file_before_the_range_is_not_read(repo: GitRepo) -> None:
    """History before --from is not planned: a file broken there does not matter."""
    repo.commit("Ancient", {patch(79, 16): UNPACKAGED})
    base = repo.head()
    cold = repo.commit("Cold", {patch(2207, 3): COLD_SQL.format(n=3)})
    plan = plan_of(repo, base)
    assert plan.violations == () and plan.cut == cold


@pytest.mark.parametrize("name", ["patch-2207-09.0.sql", "patch-79-16.sql"])
def test_misnamed_file(repo: GitRepo, name: str) -> None:
    """A file matching the glob with a bad name: a problem of its revision, which counts cold;
    in the target tree a `bad-name` violation; it is never applied."""
    base = repo.head()
    bad = repo.commit("Misnamed", {f"database/schema/{name}": LIVE_SQL.format(n=9)})
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == COLD and plan.cut == bad
    assert [p.rule for p in plan.revisions[0].problems] == ["bad-name"]
    assert rules_of(plan) == [("bad-name", bad, bad)]
    assert plan.cold_patches == () and plan.fastdowntime_live_patches == ()
    assert exit_of(repo, base) == ExitCode.REFUSED


def test_misnamed_file_renamed_later(repo: GitRepo) -> None:
    """A misnamed file renamed right in a later revision: the plan is clean."""
    base = repo.head()
    repo.commit("Misnamed", {"database/schema/patch-2207-09.0.sql": COLD_SQL.format(n=1)})
    renamed = repo.commit("Rename", {"database/schema/patch-2207-09.0.sql": None,
                                     patch(2207, 9): COLD_SQL.format(n=1)})
    plan = plan_of(repo, base)
    assert plan.violations == () and plan.cut == renamed
    assert plan.cold_patches == ("patch-2207-09-0.sql",)
    assert exit_of(repo, base) == ExitCode.OK


def test_misnamed_file_outside_the_range_is_a_warning(repo: GitRepo) -> None:
    """A misnamed file the range does not touch only warns: it is not being deployed."""
    repo.commit("Ancient", {"database/schema/patch-79-16.sql": COLD_SQL.format(n=1)})
    base = repo.head()
    repo.commit("Code", {"app/main.py": "v1\n"})
    plan = plan_of(repo, base)
    assert plan.violations == ()
    assert [w.rule for w in plan.warnings] == ["bad-name"]


def test_duplicate_numbers_are_a_violation(repo: GitRepo) -> None:
    """Two files that are the same patch number: a `duplicate` violation naming both."""
    base = repo.head()
    repo.commit("One", {"database/schema/patch-2200-01-0.sql": COLD_SQL.format(n=1)})
    two = repo.commit("Two", {"database/schema/patch-2200-1-0.sql": COLD_SQL.format(n=2)})
    plan = plan_of(repo, base)
    [violation] = plan.violations
    assert (violation.rule, violation.revision) == ("duplicate", two)
    assert "patch-2200-01-0.sql" in violation.detail and "patch-2200-1-0.sql" in violation.detail


def test_not_utf8_is_a_problem_not_an_abort(repo: GitRepo) -> None:
    """A patch that is not UTF-8 is reported on its revision, never exit 2."""
    base = repo.head()
    path = repo.path / patch(2207, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"-- caf\xe9\nALTER TABLE item ADD COLUMN x integer;\n")
    repo.git("add", patch(2207, 4))
    latin = repo.commit("Latin-1", {})
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == COLD
    assert rules_of(plan) == [("unparseable", latin, latin)]


def feature_with_devel_merged_twice(repo: GitRepo) -> tuple[str, list[str]]:
    """db-stable <- feature, which merged devel (bringing a patch and other code) twice.
    Returns (the landing merge, the inner merges)."""
    fork = repo.head()
    repo.checkout("-b", "devel")
    repo.commit("Devel code", {"app/devel.py": "d1\n"})
    repo.commit("Devel patch", {patch(2207, 5): COLD_SQL.format(n=5)})
    repo.checkout("-b", "feature", fork)
    repo.commit("Feature code", {"app/feature.py": "f1\n"})
    inner = [repo.merge("devel", "Merge devel into feature")]
    repo.checkout("devel")
    repo.commit("Devel code 2", {"app/devel.py": "d2\n"})
    repo.commit("Devel live patch", {patch(2207, 6): LIVE_SQL.format(n=6)})
    repo.checkout("feature")
    repo.commit("Feature code 2", {"app/feature.py": "f2\n"})
    inner.append(repo.merge("devel", "Merge devel into feature again"))
    repo.checkout("db-stable")
    return repo.merge("feature", "Land feature"), inner


def test_feature_branch_that_merged_devel_twice(repo: GitRepo) -> None:
    """Inner merges of devel are judged by their own resolution (none), not by their diff
    against the feature branch: the landing is schema-cold, not mixed."""
    base = repo.head()
    landing, inner = feature_with_devel_merged_twice(repo)
    plan = plan_of(repo, base)
    assert [(r.sha, r.kind) for r in plan.revisions] == [(landing, COLD)]
    assert plan.revisions[0].patches == ("patch-2207-05-0.sql", "patch-2207-06-0.sql")
    assert plan.violations == () and plan.cut == landing
    assert exit_of(repo, base) == ExitCode.OK
    assert plan.cold_patches == ("patch-2207-05-0.sql",)
    assert plan.fastdowntime_live_patches == ("patch-2207-06-0.sql",)
    assert exit_of(repo, base) == ExitCode.OK


def test_evil_inner_merge_mixes_a_patch_with_code(repo: GitRepo) -> None:
    """An inner merge whose own resolution changes a patch and code is mixed, and the
    violation names that merge, not the landing."""
    base = repo.head()
    fork = repo.head()
    repo.checkout("-b", "devel")
    repo.commit("Devel patch", {patch(2207, 7): COLD_SQL.format(n=7)})
    repo.checkout("-b", "feature", fork)
    repo.commit("Feature code", {"app/feature.py": "f1\n"})
    evil = repo.merge("devel", "Merge devel, fixing things up",
                      {patch(2207, 7): COLD_SQL.format(n=70), "app/feature.py": "f2\n"})
    repo.checkout("db-stable")
    landing = repo.merge("feature", "Land feature")
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == MIXED
    assert rules_of(plan) == [("mixed", landing, evil)]
    assert "app/feature.py" in plan.violations[0].detail
    assert plan.cut is None and exit_of(repo, base) == ExitCode.REFUSED


def test_evil_first_parent_merge(repo: GitRepo) -> None:
    """A merge on db-stable itself whose resolution adds a patch and code is mixed."""
    base = repo.head()
    repo.checkout("-b", "feature")
    repo.commit("Feature code", {"app/feature.py": "f1\n"})
    repo.checkout("db-stable")
    landing = repo.merge("feature", "Land with extras",
                         {patch(2207, 8): COLD_SQL.format(n=8), "app/main.py": "v9\n"})
    plan = plan_of(repo, base)
    assert rules_of(plan) == [("mixed", landing, landing)]
    assert plan.cut is None and exit_of(repo, base) == ExitCode.REFUSED


def test_clean_merge_resolution_touching_only_a_patch(repo: GitRepo) -> None:
    """A merge whose own resolution edits only a patch is not mixed."""
    base = repo.head()
    repo.checkout("-b", "feature")
    repo.commit("Feature patch", {patch(2207, 10): COLD_SQL.format(n=10)})
    repo.checkout("db-stable")
    repo.commit("Main code", {"app/main.py": "v1\n"})
    landing = repo.merge("feature", "Land, fixing the patch",
                         {patch(2207, 10): COLD_SQL.format(n=11)})
    plan = plan_of(repo, base)
    assert plan.violations == () and plan.cut == landing


def test_first_parent_merge_with_one_mixed_commit(repo: GitRepo) -> None:
    """A merge bringing in clean commits and one mixed commit: one violation, naming that
    commit."""
    base = repo.head()
    repo.checkout("-b", "feature")
    repo.commit("Code", {"app/a.py": "a\n"})
    mixed = repo.commit("Both", {patch(2207, 11): COLD_SQL.format(n=11), "app/b.py": "b\n"})
    repo.commit("Patch only", {patch(2207, 12): COLD_SQL.format(n=12)})
    repo.commit("More code", {"app/c.py": "c\n"})
    repo.checkout("db-stable")
    landing = repo.merge("feature", "Land")
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == MIXED
    assert rules_of(plan) == [("mixed", landing, mixed)]
    assert plan.cut is None and exit_of(repo, base) == ExitCode.REFUSED


def test_live_blocks_names_the_commit_that_wrote_the_patch(repo: GitRepo) -> None:
    """A `live` header on a blocking statement, brought in by a merge: the violation names the
    brought-in commit that wrote it."""
    base = repo.head()
    repo.checkout("-b", "feature")
    writer = repo.commit("Wrong header",
                        {patch(2207, 13): "-- fastdowntime: live\nALTER TABLE item DROP x;\n"})
    repo.checkout("db-stable")
    landing = repo.merge("feature", "Land")
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == LIVE
    assert ("live-blocks", landing, writer) in rules_of(plan)


def test_source_flags_without_config(repo: GitRepo, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--patches and --schema-files say which files are patches and schema files."""
    base = repo.head()
    data_commit = repo.commit("Sample data", {"db/patches/sample-data.sql": "SELECT 1;\n",
                                              "db/patches/p-1.sql": "x",
                                              "db/patch-2207-14-0.sql": COLD_SQL.format(n=14)})
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--repo", str(repo.path), "--from", base, "--json",
                 "--patches", "db/patch-*.sql", "--schema-files", "db/**"]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data["cut"] == data_commit and data["violations"] == []
    assert data["fastdowntime"]["cold_patches"] == ["patch-2207-14-0.sql"]
