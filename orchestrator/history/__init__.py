"""git -> Revision objects: the first-parent revisions of a branch in (from, to].

:func:`read_history` reads every commit of the range with one ``git log``
and derives, from the parent graph alone, the first-parent chain and, for
each merge, the commits it brings in (reachable from its other parents, not
from anything earlier on the chain). A revision's change is its diff against
its first parent; a merge also keeps the changes of each commit it brings
in, so that "mixed" can be judged per commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from orchestrator.errors import BadInput
from orchestrator.history import git

# Change, Commit and Revision are NamedTuples: immutable like frozen dataclasses, and
# several times cheaper to build, which matters at 20,000 revisions.

__all__ = ["Change", "Commit", "History", "Revision", "parse_log", "read_history",
           "read_patch_texts"]


class Change(NamedTuple):
    """One file changed by a commit: ``status`` A, M, D or T, and the new blob (D: zeros)."""

    status: str
    path: str
    blob: str


class Commit(NamedTuple):
    """A commit with its diff against its first parent."""

    sha: str
    parents: tuple[str, ...]
    subject: str
    changes: tuple[Change, ...]


class Revision(NamedTuple):
    """A first-parent commit of the branch; ``brought_in`` lists what a merge brings in."""

    commit: Commit
    brought_in: tuple[Commit, ...] = ()

    @property
    def sha(self) -> str:
        return self.commit.sha

    @property
    def subject(self) -> str:
        return self.commit.subject

    @property
    def changes(self) -> tuple[Change, ...]:
        return self.commit.changes

    @property
    def is_merge(self) -> bool:
        return len(self.commit.parents) > 1


@dataclass(frozen=True)
class History:
    """The revisions of ``branch`` in (``from_sha``, ``to_sha``], oldest first."""

    repo: str
    branch: str
    from_sha: str
    to_sha: str
    revisions: tuple[Revision, ...]


def parse_log(chunks: Iterable[bytes]) -> dict[str, Commit]:
    """Parse :func:`git.log_range` output (whole, or streamed in chunks) into commits by sha."""
    commits: dict[str, Commit] = {}
    pending = b""
    for chunk in chunks:
        records = (pending + chunk).split(b"\x01")
        pending = records.pop()
        for record in records:
            if record:
                _parse_record(record, commits)
    if pending:
        _parse_record(pending, commits)
    return commits


def _parse_record(record: bytes, commits: dict[str, Commit]) -> None:
    head, _, body = record.partition(b"\0")
    ids, _, subject = head.partition(b"\x02")
    sha, *parents = ids.decode().split()
    fields = body.lstrip(b"\n").split(b"\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if meta[:1] != b":":
            continue
        parts = meta.split()
        changes.append(Change(chr(parts[4][0]), path.decode("utf-8", "surrogateescape"),
                              parts[3].decode()))
    commits[sha] = Commit(sha, tuple(parents), subject.decode("utf-8", "replace"),
                          tuple(changes))


def read_history(repo: str, branch: str, from_rev: str, to_rev: str | None = None) -> History:
    """Read ``branch`` in (``from_rev``, ``to_rev``] (default: the branch tip).

    Raises BadInput for: not a git repository, unknown branch, unknown
    revision, ``from`` not an ancestor of ``to``, or ``from`` not on the
    first-parent line of ``to`` (the range would not be a list of revisions).
    """
    git.check_repository(repo)
    tip = git.resolve_branch(repo, branch)
    to_sha = git.resolve(repo, to_rev, what="--to") if to_rev else tip
    from_sha = git.resolve(repo, from_rev, what="--from")
    if not git.is_ancestor(repo, from_sha, to_sha):
        raise BadInput(f"--from {from_rev}: {from_sha[:12]} is not an ancestor of "
                       f"--to {to_rev or branch} ({to_sha[:12]})")
    commits = parse_log(git.log_range(repo, from_sha, to_sha))
    return History(repo, branch, from_sha, to_sha, first_parent_revisions(commits, from_sha,
                                                                          to_sha))


def first_parent_revisions(commits: dict[str, Commit], from_sha: str, to_sha: str,
                           ) -> tuple[Revision, ...]:
    """The first-parent chain from ``to_sha`` back to ``from_sha``, oldest first, with merges'
    brought-in commits attached. ``commits`` is every commit in ``from..to``."""
    chain = []
    sha = to_sha
    while sha != from_sha:
        commit = commits.get(sha)
        if commit is None:
            raise BadInput(f"--from {from_sha[:12]} is an ancestor of {to_sha[:12]} but not on "
                           "its first-parent line: give a revision of the branch itself")
        if not commit.parents:
            raise BadInput(f"--from {from_sha[:12]} is not on the first-parent line of "
                           f"{to_sha[:12]}")
        chain.append(commit)
        sha = commit.parents[0]
    chain.reverse()
    seen: set[str] = set()
    revisions = []
    for commit in chain:
        brought: list[Commit] = []
        stack = list(commit.parents[1:])
        while stack:
            sha = stack.pop()
            if sha in seen or sha not in commits:
                continue
            seen.add(sha)
            side = commits[sha]
            brought.append(side)
            stack.extend(side.parents)
        seen.add(commit.sha)
        revisions.append(Revision(commit, tuple(reversed(brought))))
    return tuple(revisions)


def read_patch_texts(history: History, is_patch: Callable[[str], bool]) -> dict[str, str]:
    """The text of every patch file version the range adds or modifies, by blob sha.

    One ``git cat-file --batch`` for all of them. A patch that is not UTF-8
    is BadInput naming the file.
    """
    paths: dict[str, str] = {}
    for revision in history.revisions:
        for change in revision.changes:
            if change.status != "D" and is_patch(change.path):
                paths[change.blob] = change.path
    texts = {}
    for blob, data in git.read_blobs(history.repo, paths).items():
        try:
            texts[blob] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{paths[blob]} (blob {blob[:12]}): not UTF-8 text: {exc}") from None
    return texts
