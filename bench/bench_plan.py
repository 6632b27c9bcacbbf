"""plan over 20,000 first-parent revisions vs a bare ``git log --first-parent -m --name-status``.

The history is generated with one ``git fast-import``: code commits, cold and
live patches (a few hundred), and merges of two-commit side branches. Both
sides are timed in the same run, best of three; the target is a ratio <= 2.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.plan import PathRules
from orchestrator.planner import build_plan

REVISIONS = 20_000
PATCH_EVERY = 50
MERGE_EVERY = 10


def generate(path: Path) -> tuple[str, str]:
    """A db-stable history of REVISIONS first-parent revisions; returns (root, tip)."""
    subprocess.run(["git", "init", "-q", "-b", "db-stable", str(path)], check=True)
    out: list[str] = []
    mark = 0
    when = 1_700_000_000
    patches = 0

    def commit(ref: str, message: str, files: dict[str, str], parents: list[int]) -> int:
        nonlocal mark, when
        mark += 1
        when += 60
        out.append(f"commit {ref}\nmark :{mark}\n"
                   f"committer Bench <b@example.com> {when} +0000\n"
                   f"data {len(message)}\n{message}\n")
        if parents:
            out.append(f"from :{parents[0]}\n")
            out.extend(f"merge :{p}\n" for p in parents[1:])
        for name, content in files.items():
            data = content.encode()
            out.append(f"M 100644 inline {name}\ndata {len(data)}\n{content}\n")
        return mark

    head = commit("refs/heads/db-stable", "root", {"app/main.py": "0\n"}, [])
    for i in range(1, REVISIONS):
        if i % PATCH_EVERY == 0:
            patches += 1
            name = f"database/schema/patch-3000-{patches:04d}-0.sql"
            sql = (f"ALTER TABLE item ADD COLUMN c{patches} integer;\n" if patches % 3 else
                   f"CREATE INDEX CONCURRENTLY i{patches} ON item (name);\n")
            head = commit("refs/heads/db-stable", f"patch {patches}", {name: sql}, [head])
        elif i % MERGE_EVERY == 0:
            side = commit("refs/heads/side", f"side a {i}", {f"lib/s{i % 97}.py": f"{i}a\n"},
                          [head])
            side = commit("refs/heads/side", f"side b {i}", {f"lib/t{i % 89}.py": f"{i}b\n"},
                          [side])
            head = commit("refs/heads/db-stable", f"merge {i}", {}, [head, side])
        else:
            head = commit("refs/heads/db-stable", f"code {i}",
                          {f"app/m{i % 211}.py": f"{i}\n"}, [head])
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"],
                   input="".join(out).encode(), check=True)
    def sha(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    return sha("rev-list", "--max-parents=0", "db-stable"), sha("rev-parse", "db-stable")


def best_of(runs: int, func: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "history"
        started = time.perf_counter()
        root, tip = generate(repo)
        print(f"generated {REVISIONS} first-parent revisions in "
              f"{time.perf_counter() - started:.1f} s")
        rules = PathRules()
        baseline = best_of(3, lambda: subprocess.run(
            ["git", "-C", str(repo), "log", "--first-parent", "-m", "--name-status",
             f"{root}..{tip}"], capture_output=True, check=True))
        plan = build_plan(str(repo), "db-stable", root, tip, rules)
        ours = best_of(3, lambda: build_plan(str(repo), "db-stable", root, tip, rules))
        patches = len(plan.reports)
        print(f"plan: {len(plan.revisions)} revisions, {patches} patches, cut "
              f"{plan.cut[:12] if plan.cut else None}")
        print(f"git log --first-parent -m --name-status: {baseline:.3f} s")
        print(f"fastdowntime plan:                        {ours:.3f} s")
        verdict = "ok" if ours <= 2 * baseline else "OVER TARGET"
        print(f"ratio plan / git log: {ours / baseline:.2f}x (target <= 2x) {verdict}")
