"""Build the sandbox's sample application repository with real git.

The history is data: ``sample/repo/history.toml`` lists the first-parent
revisions of ``db-stable`` (plain commits, and ``--no-ff`` merges of side
branches), and each commit's files are whole files under ``sample/repo/``.
:func:`build_sample_repo` replays that list into a git repository.

The result is the same on every machine: fixed author and committer, dates
counted from a fixed epoch, file modes forced to 0644, and git run without
the user's or the system's configuration (no signing, hooks, attributes,
excludes, templates) and without inherited ``GIT_*`` variables.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.history import git
from orchestrator.sandbox.layout import BRANCH

SAMPLE_REPO_DIR = Path(__file__).resolve().parent / "sample" / "repo"
HISTORY_FILE = SAMPLE_REPO_DIR / "history.toml"
AUTHOR_NAME = "Sample Dev"
AUTHOR_EMAIL = "dev@example.com"
EPOCH = 1709542800
"""2024-03-04 09:00:00 UTC: the date of the first commit."""
STEP_S = 4 * 3600
"""Every commit is dated this much after the previous one."""

_GIT_CONFIG = {
    "commit.gpgsign": "false",
    "tag.gpgsign": "false",
    "core.autocrlf": "false",
    "core.filemode": "true",
    "core.hooksPath": os.devnull,
    "core.attributesFile": os.devnull,
    "core.excludesFile": os.devnull,
    "gc.auto": "0",
    "user.name": AUTHOR_NAME,
    "user.email": AUTHOR_EMAIL,
}


@dataclass(frozen=True)
class SampleRepo:
    """The built repository: ``first`` is what the hosts run initially, ``tip`` the branch head."""

    path: Path
    branch: str
    first: str
    tip: str
    revisions: list[str] = field(hash=False)
    """Full shas of the first-parent revisions of ``branch``, oldest first."""


@dataclass(frozen=True)
class _Commit:
    files: str
    subject: str
    body: str = ""


@dataclass(frozen=True)
class _Revision:
    """A plain commit, or a --no-ff merge of ``side`` commits forked at label ``fork``."""

    subject: str
    body: str = ""
    label: str | None = None
    commit: _Commit | None = None
    branch: str | None = None
    fork: str | None = None
    side: tuple[_Commit, ...] = ()


def build_sample_repo(path: Path) -> SampleRepo:
    """Create the sample repository at ``path`` (absent or an empty directory) and describe it.

    The repository is built beside ``path`` and renamed into place, so an
    interrupted build never leaves a half-built repository at ``path``.

    If ``path`` already holds the sample repository (its ``db-stable`` is at
    the expected tip), it is returned untouched. Anything else at ``path``
    raises :class:`ValueError` naming it.
    """
    path = Path(path).absolute()
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        return _existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staging.chmod(0o755)
        built = _build(staging)
        os.replace(staging, path)  # whole or not at all: an interrupted build leaves no repo
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return replace(built, path=path)


def _load_history() -> list[_Revision]:
    """Parse ``history.toml``; raises ValueError naming the entry that is malformed."""
    with HISTORY_FILE.open("rb") as f:
        entries = tomllib.load(f)["revision"]
    revisions = []
    for number, entry in enumerate(entries, start=1):
        try:
            side = tuple(_commit(c) for c in entry.get("side", ()))
            commit = None if side else _commit(entry)
            if side and not (entry.get("branch") and entry.get("fork")):
                raise KeyError("branch and fork")
            revisions.append(
                _Revision(
                    subject=entry["subject"],
                    body=entry.get("body", "").strip(),
                    label=entry.get("label"),
                    commit=commit,
                    branch=entry.get("branch"),
                    fork=entry.get("fork"),
                    side=side,
                )
            )
        except KeyError as missing:
            raise ValueError(f"{HISTORY_FILE}: revision {number} lacks {missing}") from None
    return revisions


def _commit(entry: dict[str, str]) -> _Commit:
    return _Commit(entry["files"], entry["subject"], entry.get("body", "").strip())


def _existing(path: Path) -> SampleRepo:
    with tempfile.TemporaryDirectory(prefix="samplerepo-") as tmp:
        expected = _build(Path(tmp) / "repo")
    found = _branch_tip(path)
    if found != expected.tip:
        state = f"{BRANCH} is at {found}" if found else f"no git repository with branch {BRANCH}"
        raise ValueError(
            f"{path} exists but is not the sample repository ({state}, "
            f"expected {expected.tip}); remove it or choose another path"
        )
    return replace(expected, path=path)


def _branch_tip(path: Path) -> str | None:
    """The sha of ``BRANCH`` in the repository whose work tree is exactly ``path``, or None."""
    if not (path / ".git").exists():
        return None
    result = git.git(str(path), "rev-parse", "--verify", "-q",
                     f"refs/heads/{BRANCH}^{{commit}}", check=False)
    return result.stdout.decode().strip() or None


class _Git:
    """Runs git in one work tree with a clean environment and a commit clock."""

    def __init__(self, work_tree: Path) -> None:
        self.work_tree = work_tree
        self.commits = 0

    def __call__(self, *args: str, stdin: str | None = None, dated: bool = False) -> str:
        env = dict(_AUTHOR)
        if dated:
            stamp = f"{EPOCH + self.commits * STEP_S} +0000"
            env |= {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
            self.commits += 1
        config = [arg for key, value in _GIT_CONFIG.items() for arg in ("-c", f"{key}={value}")]
        result = git.git(str(self.work_tree), *args, check=False, env=env, options=config,
                         input=None if stdin is None else stdin.encode())
        if result.returncode != 0:
            raise RuntimeError(
                f"git {' '.join(args)} failed in {self.work_tree} "
                f"(exit {result.returncode}): {result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode().strip()

    def commit(self, files: str, subject: str, body: str) -> None:
        _copy_tree(SAMPLE_REPO_DIR / files, self.work_tree)
        self("add", "--all", ".")
        self.commit_index(subject, body)

    def commit_index(self, subject: str, body: str) -> None:
        message = f"{subject}\n\n{body}\n" if body else f"{subject}\n"
        self(
            "commit",
            "-q",
            "--no-verify",
            "--cleanup=verbatim",
            "-F",
            "-",
            stdin=message,
            dated=True,
        )


def _build(path: Path) -> SampleRepo:
    path.mkdir(parents=True, exist_ok=True)
    git = _Git(path)
    git("init", "-q", "--template=", "-b", BRANCH)
    labels: dict[str, str] = {}
    for revision in _load_history():
        if revision.commit is not None:
            c = revision.commit
            git.commit(c.files, c.subject, c.body)
        else:
            _merge_side_branch(git, revision, labels)
        if revision.label:
            labels[revision.label] = git("rev-parse", "HEAD")
    shas = git("rev-list", "--first-parent", "--reverse", BRANCH).split()
    return SampleRepo(path=path, branch=BRANCH, first=shas[0], tip=shas[-1], revisions=shas)


def _merge_side_branch(git: _Git, revision: _Revision, labels: dict[str, str]) -> None:
    assert revision.branch and revision.fork
    if revision.fork not in labels:
        raise ValueError(f"{HISTORY_FILE}: fork {revision.fork!r} names no earlier revision")
    git("checkout", "-q", "-b", revision.branch, labels[revision.fork])
    for c in revision.side:
        git.commit(c.files, c.subject, c.body)
    git("checkout", "-q", BRANCH)
    git("merge", "-q", "--no-ff", "--no-commit", revision.branch)
    git.commit_index(revision.subject, revision.body)
    git("branch", "-q", "-d", revision.branch)


def _copy_tree(source: Path, work_tree: Path) -> None:
    """Copy every file under ``source`` to the same place in ``work_tree``, mode 0644."""
    if not source.is_dir():
        raise ValueError(f"{HISTORY_FILE}: no directory {source.name} beside it")
    for file in sorted(source.rglob("*")):
        if not file.is_file() or "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        target = work_tree / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
        target.chmod(0o644)


_AUTHOR = {
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
}
"""Who commits the sample history (added to git's one environment)."""
