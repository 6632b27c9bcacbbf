"""Invariants of the cut, for any history (hypothesis, on synthetic histories: no git)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.history import Change, Commit, History, Revision
from orchestrator.plan import COLD, MIXED, make_plan
from tests.gitrepo import COLD_SQL, LIVE_SQL, PLAIN_LIVE_SQL, patch

STEPS = st.lists(st.sampled_from(["code", "cold", "live", "plain-live", "mixed", "merge-cold",
                                  "merge-code", "schema-file"]), max_size=40)


def synthesise(steps: list[str]) -> tuple[History, dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    tree: list[str] = []
    revisions = []
    parent = "f" * 40

    def sha(i: int, suffix: str = "a") -> str:
        return f"{i:039x}{suffix}"

    def patch_change(i: int, template: str) -> Change:
        path = patch(2200, i + 1)
        blob = sha(i, "b")
        texts[blob] = template.format(n=i)
        tree.append(path)
        return Change("A", path, blob)

    for i, step in enumerate(steps):
        code = Change("M", "app/main.py", sha(i, "c"))
        changes: tuple[Change, ...]
        brought: tuple[Commit, ...] = ()
        if step == "code":
            changes = (code,)
        elif step == "schema-file":
            changes = (Change("M", "database/schema/comments.sql", sha(i, "d")),)
        elif step in ("cold", "live", "plain-live", "mixed"):
            template = {"cold": COLD_SQL, "live": LIVE_SQL, "plain-live": PLAIN_LIVE_SQL,
                        "mixed": COLD_SQL}[step]
            changes = (patch_change(i, template),) + ((code,) if step == "mixed" else ())
        else:
            side_code = Commit(sha(i, "e"), (parent,), "side code", (code,))
            side = [side_code]
            changes = (code,)
            if step == "merge-cold":
                change = patch_change(i, COLD_SQL)
                side.append(Commit(sha(i, "f"), (side_code.sha,), "side patch", (change,)))
                changes = (code, change)
            brought = tuple(side)
        if brought:  # a merge: its own resolution is empty, its change is what it landed
            commit = Commit(sha(i), (parent, brought[-1].sha), step, ())
            revisions.append(Revision(commit, brought, changes))
        else:
            revisions.append(Revision(Commit(sha(i), (parent,), step, changes)))
        parent = sha(i)
    history = History("repo", "db-stable", "f" * 40, parent, tuple(revisions))
    return history, texts, tree


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_cut_invariants(steps: list[str]) -> None:
    """The cut is schema-cold, nothing after it is, and the two stages are the range in order."""
    history, texts, tree = synthesise(steps)
    plan = make_plan(history, texts, tree)
    kinds = [r.kind for r in plan.revisions]
    if plan.cut is None:
        assert COLD not in kinds
        assert plan.fastdowntime_revisions == ()
    else:
        index = [r.sha for r in plan.revisions].index(plan.cut)
        assert kinds[index] == COLD
        assert COLD not in kinds[index + 1:]
    together = plan.fastdowntime_revisions + plan.nodowntime_revisions
    assert [r.sha for r in together] == [r.sha for r in history.revisions]
    data = plan.to_json()
    assert data["fastdowntime"]["revisions"] + data["nodowntime"]["revisions"] == [
        r.sha for r in history.revisions]


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_kinds_follow_the_steps(steps: list[str]) -> None:
    """Every revision's kind is the one its change implies; mixed ones are violations."""
    history, texts, tree = synthesise(steps)
    plan = make_plan(history, texts, tree)
    expected = {"code": "code", "schema-file": "code", "cold": COLD, "live": "schema-live",
                "plain-live": "schema-live", "mixed": MIXED, "merge-cold": COLD,
                "merge-code": "code"}
    assert [r.kind for r in plan.revisions] == [expected[s] for s in steps]
    assert {v.revision for v in plan.violations if v.rule == "mixed"} == {
        r.sha for r in plan.revisions if r.kind == MIXED}
    cold_of_cold_revisions = {p for r in plan.fastdowntime_revisions if r.kind == COLD
                              for p in r.patches if plan.reports[p].kind == "cold"}
    assert cold_of_cold_revisions <= set(plan.cold_patches)
    assert set(plan.cold_patches) <= {p for r in plan.fastdowntime_revisions for p in r.patches}


TEXTS = st.one_of(
    st.sampled_from([COLD_SQL.format(n=1), LIVE_SQL.format(n=2), "ALTER TABLE item ADD COLUM;\n",
                     "CREATE EXTENSION pg_trgm FROM unpackaged;\n", ");\n", "", "-- only\n",
                     "BEGIN;\nALTER TABLE item DROP x;\nCOMMIT;\n"]),
    st.text(max_size=60),
    st.binary(max_size=40),
)
NAMES = st.one_of(st.builds(patch, st.integers(0, 3), st.integers(0, 3)),
                  st.sampled_from(["database/schema/patch-2207-09.0.sql",
                                   "database/schema/patch-79-16.sql",
                                   "database/schema/patch-.sql"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, TEXTS), min_size=1, max_size=12))
def test_content_never_aborts_a_plan(versions: list[tuple[str, str | bytes]]) -> None:
    """Whatever the patch files hold or are called, the plan is made; a revision with a
    version that does not parse or a misnamed file counts cold, and the versions left in the
    target tree that have problems make violations."""
    texts: dict[str, str | bytes] = {}
    tree: dict[str, str] = {}
    revisions = []
    parent = "f" * 40
    for i, (path, text) in enumerate(versions):
        blob = f"{i:039x}b"
        texts[blob] = text
        tree[path] = blob
        sha = f"{i:039x}a"
        revisions.append(Revision(Commit(sha, (parent,), f"rev {i}", (Change("A", path, blob),))))
        parent = sha
    history = History("repo", "db-stable", "f" * 40, parent, tuple(revisions))
    plan = make_plan(history, texts, tree)
    assert all(r.kind == COLD for r in plan.revisions
               if {p.rule for p in r.problems} & {"unparseable", "bad-name"})
    last_of = {path: i for i, (path, _) in enumerate(versions)}
    refused = {f"{i:039x}a" for i in last_of.values() if plan.revisions[i].problems}
    assert refused <= {v.revision for v in plan.violations}
