"""Build real git histories in a temporary directory for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "LC_ALL": "C",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com",
}

COLD_SQL = "ALTER TABLE item ADD COLUMN c{n} integer;\n"
LIVE_SQL = "-- fastdowntime: live\nCREATE INDEX CONCURRENTLY item_i{n} ON item (name);\n"
PLAIN_LIVE_SQL = "CREATE INDEX CONCURRENTLY item_j{n} ON item (name);\n"


class GitRepo:
    """A repository on branch ``db-stable`` with helpers that commit files."""

    def __init__(self, path: Path, branch: str = "db-stable", *, clone_of: str | None = None,
                 ) -> None:
        """A new repository at ``path``; with ``clone_of``, a clone of that repository
        (path or URL) with ``branch`` checked out."""
        self.path = path
        self.branch = branch
        self._tick = 0
        if clone_of is not None:
            subprocess.run(["git", "clone", "-q", "-b", branch, clone_of, str(path)], env=_ENV,
                           check=True, capture_output=True)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", branch)
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        self._tick += 1
        env = {**_ENV, "GIT_AUTHOR_DATE": f"{1700000000 + self._tick} +0000",
               "GIT_COMMITTER_DATE": f"{1700000000 + self._tick} +0000"}
        return subprocess.run(["git", "-C", str(self.path), *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def commit(self, subject: str, files: dict[str, str | None]) -> str:
        """Write (or delete, for None) ``files`` and commit them; return the sha."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                self.git("rm", "-q", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            self.git("add", name)
        self.git("commit", "-q", "--allow-empty", "-m", subject)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def checkout(self, *args: str) -> None:
        self.git("checkout", "-q", *args)

    def merge(self, branch: str, subject: str, files: dict[str, str | None] | None = None,
              ) -> str:
        """Merge ``branch`` into the current branch with a merge commit; ``files`` are
        written into the merge itself (an "evil" merge: its own resolution)."""
        if not files:
            self.git("merge", "-q", "--no-ff", "-m", subject, branch)
            return self.head()
        self.git("merge", "-q", "--no-ff", "--no-commit", branch)
        return self.commit(subject, files)


def patch(major: int, minor: int, point: int = 0) -> str:
    return f"database/schema/patch-{major}-{minor:02d}-{point}.sql"
