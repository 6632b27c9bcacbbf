"""plan over 20,000 first-parent revisions vs a bare ``git log --first-parent -m --name-status``.

The history is generated with one ``git fast-import`` and has the shapes a
long-lived project has: code commits on db-stable, about 400 patches (some
rewritten a revision after landing), feature branches that merge ``devel``
into themselves once or twice before they land, ``devel`` merging db-stable
back, and now and then a landing whose own resolution fixes a patch. Both
sides are timed in the same run, best of three; the target is a ratio <= 2.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.plan import PathRules
from orchestrator.runner.planning import build_plan

REVISIONS = 20_000
PATCH_EVERY = 50
REWRITE_EVERY = 7
"""Every 7th patch is rewritten by the next revision (a typo fixed after landing)."""
LAND_EVERY = 10
BACKMERGE_EVERY = 200
EVIL_EVERY = 97
"""Every 97th landing fixes a patch in its own resolution."""


class _Importer:
    """Builds a ``git fast-import`` stream; tracks each branch's files so merges carry the
    other side's changes, as a real merge would."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.mark = 0
        self.when = 1_700_000_000
        self.files: dict[str, dict[str, str]] = {}
        self.heads: dict[str, int] = {}

    def commit(self, branch: str, message: str, changes: dict[str, str],
               merge_from: str | None = None, start: str | None = None) -> int:
        """Commit ``changes`` on ``branch`` (forked from ``start`` when new), merging the head
        of ``merge_from`` when given; returns the mark."""
        if branch not in self.files:
            self.files[branch] = dict(self.files[start]) if start else {}
            if start:
                self.heads[branch] = self.heads[start]
        state = self.files[branch]
        written = dict(changes)
        if merge_from is not None:
            for path, content in self.files[merge_from].items():
                if state.get(path) != content and _owner(path) != branch:
                    written.setdefault(path, content)
        state.update(written)
        self.mark += 1
        self.when += 60
        self.out.append(f"commit refs/heads/{branch}\nmark :{self.mark}\n"
                        f"committer Bench <b@example.com> {self.when} +0000\n"
                        f"data {len(message)}\n{message}\n")
        if branch in self.heads:
            self.out.append(f"from :{self.heads[branch]}\n")
        if merge_from is not None:
            self.out.append(f"merge :{self.heads[merge_from]}\n")
        for path, content in written.items():
            self.out.append(f"M 100644 inline {path}\ndata {len(content.encode())}\n{content}\n")
        self.heads[branch] = self.mark
        return self.mark


def _owner(path: str) -> str:
    """The branch whose changes to ``path`` win a merge (the namespaces are disjoint)."""
    if path.startswith("lib/f"):
        return "feature"
    if path.startswith("lib/d"):
        return "devel"
    return "db-stable"


def _patch_sql(n: int, fixed: bool = True) -> str:
    if n % 3 == 0:
        return f"CREATE INDEX CONCURRENTLY i{n} ON item (name);\n"
    return f"ALTER TABLE item ADD COLUMN c{n} integer{'' if fixed else ' DEFAULT'};\n"


def generate(path: Path) -> tuple[str, str]:
    """A db-stable history of REVISIONS first-parent revisions; returns (root, tip)."""
    subprocess.run(["git", "init", "-q", "-b", "db-stable", str(path)], check=True)
    git = _Importer()
    git.commit("db-stable", "root", {"app/main.py": "0\n"})
    git.commit("devel", "devel starts", {"lib/d0.py": "0\n"}, start="db-stable")
    patches = landings = 0
    revision = 1
    rewrite: str | None = None
    while revision < REVISIONS:
        revision += 1
        if rewrite is not None:
            git.commit("db-stable", f"fix {rewrite}", {rewrite: _patch_sql(patches)})
            rewrite = None
        elif revision % PATCH_EVERY == 0:
            patches += 1
            name = f"database/schema/patch-3000-{patches:04d}-0.sql"
            broken = patches % REWRITE_EVERY == 0
            git.commit("db-stable", f"patch {patches}", {name: _patch_sql(patches, not broken)})
            rewrite = name if broken else None
        elif revision % LAND_EVERY == 0:
            landings += 1
            _feature(git, revision, landings)
        else:
            git.commit("db-stable", f"code {revision}", {f"app/m{revision % 211}.py":
                                                         f"{revision}\n"})
        if revision % BACKMERGE_EVERY == 0:
            git.commit("devel", f"merge db-stable into devel at {revision}", {},
                       merge_from="db-stable")
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"],
                   input="".join(git.out).encode(), check=True)

    def sha(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    return sha("rev-list", "--max-parents=0", "db-stable"), sha("rev-parse", "db-stable")


def _feature(git: _Importer, revision: int, landing: int) -> None:
    """A feature branch that merges devel into itself once or twice, then lands."""
    git.files.pop("feature", None)
    git.heads.pop("feature", None)
    git.commit("feature", f"feature {revision} a", {f"lib/f{revision % 97}.py": f"{revision}a\n"},
               start="db-stable")
    for inner in range(1 + landing % 2):
        git.commit("devel", f"devel {revision} {inner}", {f"lib/d{revision % 89}.py":
                                                          f"{revision}.{inner}\n"})
        git.commit("feature", f"merge devel into feature {revision}", {}, merge_from="devel")
        git.commit("feature", f"feature {revision} b{inner}",
                   {f"lib/f{(revision + inner) % 83}.py": f"{revision}b{inner}\n"})
    evil = {}
    if landing % EVIL_EVERY == 0:
        named = sorted(p for p in git.files["db-stable"] if p.startswith("database/"))
        if named:
            evil = {named[-1]: git.files["db-stable"][named[-1]] + "-- reviewed\n"}
    git.commit("db-stable", f"land feature {revision}", evil, merge_from="feature")


def best_of(runs: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "history"
        started = time.perf_counter()
        root, tip = generate(repo)
        commits = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "db-stable"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        print(f"generated {REVISIONS} first-parent revisions ({commits} commits) in "
              f"{time.perf_counter() - started:.1f} s")
        rules = PathRules()
        baseline = best_of(3, lambda: subprocess.run(
            ["git", "-C", str(repo), "log", "--first-parent", "-m", "--name-status",
             f"{root}..{tip}"], capture_output=True, check=True))
        plan = build_plan(str(repo), "db-stable", root, tip, rules)
        ours = best_of(3, lambda: build_plan(str(repo), "db-stable", root, tip, rules))
        kinds: dict[str, int] = {}
        for revision in plan.revisions:
            kinds[revision.kind] = kinds.get(revision.kind, 0) + 1
        problems = sum(1 for r in plan.revisions if r.problems)
        print(f"plan: {len(plan.revisions)} revisions {kinds}, {len(plan.reports)} patches, "
              f"{problems} revisions with problems, {len(plan.violations)} violations, "
              f"cut {plan.cut[:12] if plan.cut else None}")
        print(f"git log --first-parent -m --name-status: {baseline:.3f} s")
        print(f"fastdowntime plan:                        {ours:.3f} s")
        verdict = "ok" if ours <= 2 * baseline else "OVER TARGET"
        print(f"ratio plan / git log: {ours / baseline:.2f}x (target <= 2x) {verdict}")
