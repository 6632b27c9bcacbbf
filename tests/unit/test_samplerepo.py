"""The sample application repository: its history, determinism and SQL."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pglast
import pytest

from orchestrator.sandbox.samplerepo import SampleRepo, build_sample_repo

PATCH_NAME = re.compile(r"patch-(\d+)-(\d+)-(\d+)\.sql")
SCHEMA_DIR = "database/schema/"
PATCHES_BY_REVISION = {
    2: ["patch-2200-01-0.sql"],
    4: ["patch-2200-02-0.sql"],
    5: ["patch-2200-03-0.sql"],
    7: ["patch-2200-04-0.sql"],
    10: ["patch-2200-05-0.sql"],
    11: ["patch-2200-06-0.sql"],
}
"""Index in ``revisions`` -> patch files that revision adds."""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def changed(repo: Path, parent: str, child: str) -> list[str]:
    return git(repo, "diff", "--name-only", "--no-renames", parent, child).split()


def is_pure(files: list[str]) -> bool:
    """True when the files are all schema files or all non-schema files."""
    return len({f.startswith(SCHEMA_DIR) for f in files}) == 1


def parents(repo: Path, sha: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n1", sha).split()[1:]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRepo:
    return build_sample_repo(tmp_path_factory.mktemp("sample") / "repo")


def test_build_again_returns_the_same_repo_untouched(sample: SampleRepo) -> None:
    """A second build on an existing sample repo changes nothing and returns the same shas."""
    refs_before = git(sample.path, "for-each-ref")
    again = build_sample_repo(sample.path)
    assert again == sample
    assert git(sample.path, "for-each-ref") == refs_before
    assert git(sample.path, "status", "--porcelain") == ""


def test_shas_are_identical_in_different_directories(tmp_path: Path, sample: SampleRepo) -> None:
    """Two builds in different places yield the same commits (no machine-specific input)."""
    other = build_sample_repo(tmp_path / "elsewhere")
    assert other.revisions == sample.revisions
    assert (other.first, other.tip, other.branch) == (sample.first, sample.tip, "db-stable")


def test_empty_directory_is_built_into(tmp_path: Path, sample: SampleRepo) -> None:
    """An existing empty directory is built into, leaving no staging directory behind."""
    assert build_sample_repo(tmp_path).tip == sample.tip
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_something_else_at_path_is_refused(tmp_path: Path) -> None:
    """A non-empty directory, a file or another git repo at the path: ValueError naming it."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("hello\n")
    (tmp_path / "file").write_text("hello\n")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "db-stable")
    git(
        other,
        "-c",
        "user.name=x",
        "-c",
        "user.email=x@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    for path in (tmp_path / "dir", tmp_path / "file", other):
        with pytest.raises(ValueError, match=re.escape(str(path))):
            build_sample_repo(path)


def test_first_parent_history_is_long_enough(sample: SampleRepo) -> None:
    """db-stable has at least 14 first-parent revisions, from the root commit to the tip."""
    assert len(sample.revisions) >= 14
    assert sample.first == sample.revisions[0] and sample.tip == sample.revisions[-1]
    assert parents(sample.path, sample.first) == []
    assert git(sample.path, "rev-parse", "db-stable") == sample.tip
    assert all(re.fullmatch(r"[0-9a-f]{40}", sha) for sha in sample.revisions)


def test_commits_have_the_sample_author_and_increasing_dates(sample: SampleRepo) -> None:
    """Every commit has the fixed author and strictly increasing dates."""
    log = git(
        sample.path, "log", "--all", "--reverse", "--format=%an <%ae>|%cn|%at|%ct"
    ).splitlines()
    assert {line.split("|")[0] for line in log} == {"Sample Dev <dev@example.com>"}
    dates = [int(line.split("|")[2]) for line in log]
    assert dates == sorted(set(dates))


def test_each_non_merge_revision_changes_schema_or_code_only(sample: SampleRepo) -> None:
    """Apart from the root, a plain revision touches only database/schema/ or only other files."""
    for sha in sample.revisions[1:]:
        first, *others = parents(sample.path, sha)
        if not others:
            assert is_pure(changed(sample.path, first, sha)), sha


def test_merges_bring_in_the_described_side_branches(sample: SampleRepo) -> None:
    """Two --no-ff merges: code + cold patch (merge is schema-cold), then two code-only commits."""
    merges = [sha for sha in sample.revisions if len(parents(sample.path, sha)) == 2]
    assert len(merges) == 2
    sides = []
    for merge in merges:
        base, side = parents(sample.path, merge)
        commits = git(sample.path, "rev-list", "--reverse", f"{base}..{side}").split()
        assert len(commits) == 2, merge
        kinds = []
        for commit in commits:
            files = changed(sample.path, f"{commit}^", commit)
            assert is_pure(files), commit
            kinds.append("patch" if any(PATCH_NAME.search(f) for f in files) else "code")
        sides.append(kinds)
    assert sides == [["code", "patch"], ["code", "code"]]


def test_patches_land_in_the_expected_revisions_in_order(sample: SampleRepo) -> None:
    """Each patch is added by exactly one revision, in numeric order along the history."""
    added = {}
    for index, sha in enumerate(sample.revisions[1:], start=1):
        first = parents(sample.path, sha)[0]
        files = git(sample.path, "diff", "--name-only", "--diff-filter=A", first, sha).split()
        patches = [Path(f).name for f in files if f.startswith(SCHEMA_DIR + "patch-")]
        if patches:
            added[index] = patches
    assert added == PATCHES_BY_REVISION
    names = [name for patches in added.values() for name in patches]
    keys = [tuple(int(n) for n in PATCH_NAME.fullmatch(name).groups()) for name in names]
    assert keys == sorted(keys)


def _tip_sql(sample: SampleRepo) -> dict[str, str]:
    schema = sample.path / SCHEMA_DIR
    return {file.name: file.read_text() for file in sorted(schema.glob("*.sql"))}


def test_patch_file_names_match_the_launchpad_pattern(sample: SampleRepo) -> None:
    """Every patch-*.sql is named patch-MAJOR-MINOR-POINT.sql."""
    patches = [name for name in _tip_sql(sample) if name.startswith("patch-")]
    assert len(patches) == 6
    assert all(PATCH_NAME.fullmatch(name) for name in patches)


def test_every_sql_file_parses_and_ends_statements_with_semicolons(sample: SampleRepo) -> None:
    """baseline, security, comments and every patch parse with pglast; each ends with ';'."""
    files = _tip_sql(sample)
    assert {"baseline.sql", "security.sql", "comments.sql"} <= set(files)
    for name, sql in files.items():
        statements = pglast.parse_sql(sql)
        assert statements, name
        raw = sql.encode()  # statement locations are byte offsets
        for statement in statements:
            end = statement.stmt_location + statement.stmt_len
            assert statement.stmt_len and raw[end : end + 1] == b";", (name, statement)


def test_patches_record_themselves_except_one_cold_patch(sample: SampleRepo) -> None:
    """All patches insert their revision row, except patch-2200-04-0 (the orchestrator does it)."""
    insert = re.compile(r"INSERT INTO LaunchpadDatabaseRevision VALUES \((\d+), (\d+), (\d+)\);")
    for name, sql in _tip_sql(sample).items():
        if not name.startswith("patch-"):
            continue
        rows = insert.findall(sql)
        if name == "patch-2200-04-0.sql":
            assert rows == []
        else:
            assert [tuple(map(int, row)) for row in rows] == [
                tuple(map(int, PATCH_NAME.fullmatch(name).groups()))
            ], name


def test_only_the_first_live_patch_carries_the_header(sample: SampleRepo) -> None:
    """patch-2200-02-0 is live by header; patch-2200-06-0 is live only by its statements."""
    sql = _tip_sql(sample)
    headed = [name for name, text in sql.items() if "-- fastdowntime: live" in text.splitlines()]
    assert headed == ["patch-2200-02-0.sql"]
    assert "CREATE INDEX CONCURRENTLY" in sql["patch-2200-06-0.sql"]
