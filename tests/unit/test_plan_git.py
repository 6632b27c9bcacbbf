"""The planner on real git histories: kinds, merges judged per commit, the cut, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import BadInput, ExitCode
from orchestrator.plan import COLD, LIVE, MIXED, PathRules
from orchestrator.runner.planning import build_plan
from tests.gitrepo import COLD_SQL, LIVE_SQL, PLAIN_LIVE_SQL, GitRepo, patch

RULES = PathRules()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("Initial", {"app/main.py": "v0\n", "database/schema/comments.sql": "-- c\n"})
    return repo


def plan_of(repo: GitRepo, start: str, to: str | None = None):  # type: ignore[no-untyped-def]
    return build_plan(str(repo.path), "db-stable", start, to, RULES)


def test_kinds_and_cut(repo: GitRepo) -> None:
    """code, cold and live revisions are classified, and the cut is the last cold one."""
    base = repo.head()
    code = repo.commit("Code", {"app/main.py": "v1\n"})
    cold = repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1),
                                "database/schema/comments.sql": "-- c2\n"})
    live = repo.commit("Live", {patch(2200, 2): LIVE_SQL.format(n=2)})
    cold2 = repo.commit("Cold 2", {patch(2200, 3): COLD_SQL.format(n=3)})
    tail = repo.commit("Code 2", {"app/main.py": "v2\n"})
    live2 = repo.commit("Live 2", {patch(2200, 4): PLAIN_LIVE_SQL.format(n=4)})
    plan = plan_of(repo, base)
    assert [(r.sha, r.kind) for r in plan.revisions] == [
        (code, "code"), (cold, COLD), (live, LIVE), (cold2, COLD), (tail, "code"), (live2, LIVE)]
    assert plan.cut == cold2
    data = plan.to_json()
    assert data["fastdowntime"]["revisions"] == [code, cold, live, cold2]
    assert data["nodowntime"]["revisions"] == [tail, live2]
    assert data["fastdowntime"]["cold_patches"] == ["patch-2200-01-0.sql", "patch-2200-03-0.sql"]
    assert data["fastdowntime"]["live_patches"] == ["patch-2200-02-0.sql"]
    assert data["nodowntime"]["live_patches"] == ["patch-2200-04-0.sql"]
    assert data["fastdowntime"]["estimated_outage_s"] is None
    assert data["violations"] == []
    assert all(len(sha) == 40 for sha in data["fastdowntime"]["revisions"])


def test_json_contract_keys(repo: GitRepo) -> None:
    """plan --json has the keys SPEC section 3 names, with the types it names."""
    base = repo.head()
    repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    data = plan_of(repo, base).to_json()
    assert {"branch", "from", "to", "cut", "revisions", "fastdowntime", "nodowntime",
            "violations"} <= set(data)
    assert set(data["revisions"][0]) == {"sha", "kind", "patches", "subject"}
    assert set(data["fastdowntime"]) == {"revisions", "cold_patches", "live_patches",
                                         "estimated_outage_s"}
    assert set(data["nodowntime"]) == {"revisions", "live_patches"}
    assert data["branch"] == "db-stable" and data["from"] == base


def test_no_cold_patch_means_no_window(repo: GitRepo) -> None:
    """Without a cold revision there is no cut and everything is nodowntime."""
    base = repo.head()
    revs = [repo.commit("Code", {"app/main.py": "v1\n"}),
            repo.commit("Live", {patch(2200, 1): LIVE_SQL.format(n=1)})]
    plan = plan_of(repo, base)
    assert plan.cut is None
    assert plan.to_json()["fastdowntime"]["revisions"] == []
    assert plan.to_json()["nodowntime"]["revisions"] == revs
    assert plan.to_json()["nodowntime"]["live_patches"] == ["patch-2200-01-0.sql"]


def test_mixed_commit_is_a_violation(repo: GitRepo) -> None:
    """A commit changing a patch file and application code is mixed, listed as a violation."""
    base = repo.head()
    bad = repo.commit("Both", {patch(2200, 1): COLD_SQL.format(n=1), "app/main.py": "v1\n"})
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == MIXED
    assert plan.cut is None
    [violation] = [v for v in plan.violations if v.rule == "mixed"]
    assert violation.revision == bad and "app/main.py" in violation.detail


def test_merge_judged_per_commit(repo: GitRepo) -> None:
    """A merge of a patch-only commit and a code-only commit is schema-cold, not mixed."""
    base = repo.head()
    repo.checkout("-b", "feature")
    repo.commit("Code on the side", {"app/feature.py": "f\n"})
    repo.commit("Patch on the side", {patch(2200, 1): COLD_SQL.format(n=1)})
    repo.checkout("db-stable")
    main_code = repo.commit("Main code", {"app/main.py": "v1\n"})
    merge = repo.merge("feature", "Merge feature")
    plan = plan_of(repo, base)
    assert [r.sha for r in plan.revisions] == [main_code, merge]
    assert plan.revisions[1].kind == COLD and plan.cut == merge
    assert plan.revisions[1].patches == ("patch-2200-01-0.sql",)
    assert plan.violations == ()


def test_merge_of_a_mixed_commit_is_mixed(repo: GitRepo) -> None:
    """A merge bringing in one commit that changes a patch and code is mixed, naming it."""
    base = repo.head()
    repo.checkout("-b", "feature")
    side = repo.commit("Both on the side", {patch(2200, 1): COLD_SQL.format(n=1),
                                            "app/feature.py": "f\n"})
    repo.checkout("db-stable")
    repo.commit("Main code", {"app/main.py": "v1\n"})
    repo.merge("feature", "Merge feature")
    plan = plan_of(repo, base)
    assert plan.revisions[1].kind == MIXED
    assert side[:12] in plan.violations[0].detail


def test_merge_brings_in_only_its_own_commits(repo: GitRepo) -> None:
    """Commits an earlier merge brought in are not judged again in a later merge."""
    base = repo.head()
    repo.checkout("-b", "feature")
    repo.commit("Mixed early", {patch(2200, 1): COLD_SQL.format(n=1), "app/x.py": "x\n"})
    repo.checkout("db-stable")
    first = repo.merge("feature", "Merge once")
    repo.checkout("feature")
    repo.commit("Code later", {"app/y.py": "y\n"})
    repo.checkout("db-stable")
    second = repo.merge("feature", "Merge twice")
    plan = plan_of(repo, base)
    kinds = {r.sha: r.kind for r in plan.revisions}
    assert kinds == {first: MIXED, second: "code"}


def test_deleting_a_patch_is_code_with_warning(repo: GitRepo) -> None:
    """A revision that only deletes patch files is code, with a warning in the plan."""
    repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    base = repo.head()
    gone = repo.commit("Drop it", {patch(2200, 1): None})
    plan = plan_of(repo, base)
    assert plan.revisions[0].kind == "code"
    assert [(w.revision, w.rule) for w in plan.warnings] == [(gone, "deletes-patch")]


def test_from_equals_to_is_an_empty_plan(repo: GitRepo) -> None:
    """Planning from the tip to the tip gives no revisions and no cut."""
    plan = plan_of(repo, repo.head())
    assert plan.revisions == () and plan.cut is None


def test_to_limits_the_range(repo: GitRepo) -> None:
    """--to stops the range at that revision instead of the tip."""
    base = repo.head()
    mid = repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    repo.commit("Later cold", {patch(2200, 2): COLD_SQL.format(n=2)})
    plan = plan_of(repo, base, mid)
    assert [r.sha for r in plan.revisions] == [mid] and plan.cut == mid


# --- bad input: each a clear message and exit 2 ---------------------------------------


def bad(repo_path: str, start: str, to: str | None = None, branch: str = "db-stable",
        ) -> BadInput:
    with pytest.raises(BadInput) as caught:
        build_plan(repo_path, branch, start, to, RULES)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return caught.value


def test_not_a_git_repository(tmp_path: Path) -> None:
    """A directory that is no repository is named."""
    assert "not a git repository" in str(bad(str(tmp_path), "HEAD"))


def test_unknown_branch(repo: GitRepo) -> None:
    """An unknown branch is named."""
    assert "'nope'" in str(bad(str(repo.path), repo.head(), branch="nope"))


def test_unknown_revision(repo: GitRepo) -> None:
    """An unknown --from or --to is named."""
    assert "deadbeef" in str(bad(str(repo.path), "deadbeef"))
    assert "--to 'v9'" in str(bad(str(repo.path), repo.head(), to="v9"))


def test_from_not_an_ancestor(repo: GitRepo) -> None:
    """--from that is not an ancestor of --to is refused."""
    base = repo.head()
    later = repo.commit("Code", {"app/main.py": "v1\n"})
    assert "not an ancestor" in str(bad(str(repo.path), later, base))


def test_patch_content_is_never_bad_input(repo: GitRepo) -> None:
    """A bad name, a duplicate number and a syntax error are plan findings, not exit 2: bad
    input is a bad argument, never a file's content."""
    base = repo.head()
    repo.commit("Bad", {"database/schema/patch-22a-1-0.sql": COLD_SQL.format(n=1)})
    repo.commit("One", {"database/schema/patch-2200-01-0.sql": COLD_SQL.format(n=1)})
    repo.commit("Two", {"database/schema/patch-2200-1-0.sql": COLD_SQL.format(n=2)})
    repo.commit("Broken", {patch(2200, 3): "-- a comment\n\nALTER TABLE item ADD COLUM x int;\n"})
    plan = plan_of(repo, base)
    found = {v.rule: v.detail for v in plan.violations}
    assert set(found) == {"bad-name", "duplicate", "unparseable"}
    assert "patch-22a-1-0.sql" in found["bad-name"]
    assert "patch-2200-01-0.sql" in found["duplicate"]
    assert "patch-2200-1-0.sql" in found["duplicate"]
    assert "patch-2200-03-0.sql line 3" in found["unparseable"]


# --- the command line ---------------------------------------------------------------


def test_cli_plan_json_without_config(repo: GitRepo, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """plan --repo --branch --from --json works anywhere, with no config file."""
    import json

    from orchestrator.cli import main

    base = repo.head()
    cold = repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    monkeypatch.chdir(tmp_path)
    code = main(["plan", "--repo", str(repo.path), "--branch", "db-stable", "--from", base,
                 "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cut"] == cold and data["to"] == cold


def test_cli_plan_human_marks_the_cut(repo: GitRepo, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The human plan shows each revision's short sha and kind, the cut and the violations."""
    from orchestrator.cli import main

    base = repo.head()
    cold = repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    mixed = repo.commit("Both", {patch(2200, 2): COLD_SQL.format(n=2), "app/main.py": "x\n"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", "--repo", str(repo.path), "--from", base]) == 0
    out = capsys.readouterr().out
    assert cold[:12] in out and "cut ->" in out and "schema-cold" in out
    assert mixed[:12] in out and "violation" in out


@pytest.mark.parametrize("args", [
    ["plan", "--repo", "/nonexistent/repo", "--from", "HEAD"],
    ["plan", "--from", "HEAD", "--bogus"],
    ["patches", "/nonexistent/patch-1-1-1.sql"],
])
def test_cli_bad_input_exits_2(args: list[str], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input exits 2 with a message on stderr."""
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == ExitCode.BAD_INPUT
    assert capsys.readouterr().err.startswith("fastdowntime: ")


def test_outage_estimate_uses_timings_of_the_same_version(repo: GitRepo) -> None:
    """The estimate sums the cold patches' rehearsed seconds plus overhead; another text's
    timing does not count."""
    from orchestrator.history.git import blob_sha

    base = repo.head()
    one, two = COLD_SQL.format(n=1), COLD_SQL.format(n=2)
    repo.commit("Cold 1", {patch(2200, 1): one})
    repo.commit("Cold 2", {patch(2200, 2): two})
    timings = {("patch-2200-01-0.sql", blob_sha(one.encode())): 1.25,
               ("patch-2200-02-0.sql", blob_sha(two.encode())): 2.5}
    plan = build_plan(str(repo.path), "db-stable", base, None, RULES, timings)
    assert plan.to_json()["fastdowntime"]["estimated_outage_s"] == pytest.approx(3.85)
    stale = {("patch-2200-01-0.sql", blob_sha(one.encode())): 1.25,
             ("patch-2200-02-0.sql", "0" * 40): 2.5}
    assert build_plan(str(repo.path), "db-stable", base, None, RULES,
                      stale).estimated_outage_s is None


def test_a_repository_config_runs_no_program(repo: GitRepo, tmp_path: Path) -> None:
    """A repository whose own config asks git to verify signatures with a program of its
    choosing (and to run an fsmonitor) runs nothing while it is planned."""
    marker = tmp_path / "ran"
    program = tmp_path / "evil"
    program.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    program.chmod(0o755)
    base = repo.head()
    tree = repo.git("rev-parse", "HEAD^{tree}")
    signed = (f"tree {tree}\nparent {base}\nauthor T <t@e> 1700000100 +0000\n"
              f"committer T <t@e> 1700000100 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n"
              " AAAA\n -----END PGP SIGNATURE-----\n\nSigned\n")
    sha = subprocess.run(["git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w",
                          "--stdin"], input=signed, capture_output=True, text=True,
                         check=True).stdout.strip()
    repo.git("update-ref", "refs/heads/db-stable", sha)
    for key, value in (("log.showSignature", "true"), ("gpg.program", str(program)),
                       ("core.fsmonitor", str(program))):
        repo.git("config", key, value)
    # git itself would run it: the test's premise holds
    subprocess.run(["git", "-C", str(repo.path), "log", "-1"], capture_output=True, check=False)
    assert marker.exists()
    marker.unlink()
    plan = plan_of(repo, base)
    assert [r.sha for r in plan.revisions] == [sha]
    assert not marker.exists()
