"""Pure planning: revisions + patch texts -> Plan (kinds, the cut, the two stages).

No I/O here: :func:`make_plan` takes the history read from git, the texts of
the patch blobs it changed, and the files of the target tree. The words are
SPEC section 2's: a revision is ``code``, ``schema-cold``, ``schema-live`` or
``mixed``; the cut is the last ``schema-cold`` revision; revisions up to it
form the fastdowntime stage, the rest the nodowntime stage.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from orchestrator.errors import BadInput
from orchestrator.globs import matches, matches_any
from orchestrator.history import Change, Commit, History
from orchestrator.patches import PatchReport, analyse, check_unique, parse_name

CODE, COLD, LIVE, MIXED = "code", "schema-cold", "schema-live", "mixed"
WINDOW_OVERHEAD_S = 0.1
"""The window's own cost on top of the cold patches: control work and round trips."""
_CHANGED = ("A", "M", "T")


@dataclass(frozen=True)
class PathRules:
    """Which paths are patch files and which are schema files (``[source]``)."""

    patches: str = "database/schema/patch-*.sql"
    schema_files: tuple[str, ...] = ("database/schema/**",)
    revision_table: str = "LaunchpadDatabaseRevision"

    def is_patch(self, path: str) -> bool:
        return _classify(self, path) == _PATCH

    def is_schema(self, path: str) -> bool:
        return _classify(self, path) != _CODE_FILE


_CODE_FILE, _SCHEMA_FILE, _PATCH = 0, 1, 2


@lru_cache(maxsize=65536)
def _classify(rules: PathRules, path: str) -> int:
    """Patch file, other schema file, or code; cached: a history repeats its paths."""
    if matches(path, rules.patches):
        return _PATCH
    return _SCHEMA_FILE if matches_any(path, rules.schema_files) else _CODE_FILE


@dataclass(frozen=True)
class Finding:
    """A violation (the deploy refuses it) or a warning, about one revision."""

    revision: str
    rule: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"revision": self.revision, "rule": self.rule, "detail": self.detail}


class PlannedRevision(NamedTuple):
    """One revision, classified; ``patches`` are the basenames it adds or modifies."""

    sha: str
    kind: str
    patches: tuple[str, ...]
    subject: str

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.sha, "kind": self.kind, "patches": list(self.patches),
                "subject": self.subject}


@dataclass(frozen=True)
class Plan:
    """The plan of SPEC section 3: ``to_json`` is the ``plan --json`` contract."""

    branch: str
    from_sha: str
    to_sha: str
    cut: str | None
    revisions: tuple[PlannedRevision, ...]
    cold_patches: tuple[str, ...]
    fastdowntime_live_patches: tuple[str, ...]
    nodowntime_live_patches: tuple[str, ...]
    estimated_outage_s: float | None
    violations: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    reports: Mapping[str, PatchReport] = field(repr=False)
    """The analysis of each patch (by basename), as of the last revision that changed it."""
    tree_patches: Mapping[str, str] = field(repr=False, default_factory=dict)
    """Every patch file of the target tree: basename -> git blob id (its checksum)."""

    def with_timings(self, timings: Mapping[tuple[str, str], float],
                     overhead_s: float = WINDOW_OVERHEAD_S) -> Plan:
        """This plan with its outage estimate from rehearsal timings (None if one is missing)."""
        total, unknown = estimate_outage(self.cold_patches,
                                         timings_for(self.tree_patches, timings), overhead_s)
        return dataclasses.replace(self, estimated_outage_s=None if unknown else total)

    @property
    def cut_index(self) -> int:
        """How many revisions the fastdowntime stage holds (0 when there is no cut)."""
        if self.cut is None:
            return 0
        return next(i for i, r in enumerate(self.revisions) if r.sha == self.cut) + 1

    @property
    def fastdowntime_revisions(self) -> tuple[PlannedRevision, ...]:
        return self.revisions[:self.cut_index]

    @property
    def nodowntime_revisions(self) -> tuple[PlannedRevision, ...]:
        return self.revisions[self.cut_index:]

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch, "from": self.from_sha, "to": self.to_sha, "cut": self.cut,
            "revisions": [r.to_json() for r in self.revisions],
            "fastdowntime": {"revisions": [r.sha for r in self.fastdowntime_revisions],
                             "cold_patches": list(self.cold_patches),
                             "live_patches": list(self.fastdowntime_live_patches),
                             "estimated_outage_s": self.estimated_outage_s},
            "nodowntime": {"revisions": [r.sha for r in self.nodowntime_revisions],
                           "live_patches": list(self.nodowntime_live_patches)},
            "violations": [v.to_json() for v in self.violations],
            "warnings": [w.to_json() for w in self.warnings],
        }


def check_tree(tree: Mapping[str, str] | Iterable[str], rules: PathRules) -> dict[str, str]:
    """Every patch file of the target tree (basename -> blob id, "" when unknown), in
    numeric order; BadInput for a bad or duplicate name."""
    blobs = tree if isinstance(tree, Mapping) else dict.fromkeys(tree, "")
    named = [(parse_name(path), blob) for path, blob in blobs.items() if rules.is_patch(path)]
    check_unique(name for name, _ in named)
    return {name.filename: blob for name, blob in sorted(named)}


def make_plan(history: History, texts: Mapping[str, str],
              tree: Mapping[str, str] | Sequence[str],
              rules: PathRules = PathRules(), timings: Mapping[str, float] | None = None,
              overhead_s: float = WINDOW_OVERHEAD_S) -> Plan:
    """Classify every revision of ``history`` and cut it.

    ``texts`` maps the blob sha of every patch file the range adds or modifies
    to its text; ``tree`` lists the files of the target revision (with their
    blob ids when it is a mapping); ``timings``
    maps patch basenames to rehearsed seconds (the outage estimate is their
    sum plus ``overhead_s``, or None when a cold patch has no timing).
    """
    tree_patches = check_tree(tree, rules)
    reports: dict[str, PatchReport] = {}
    planned, violations, warnings = [], [], []
    for revision in history.revisions:
        patch_changes = [c for c in revision.changes if rules.is_patch(c.path)]
        # A commit that changes no patch file cannot be mixed: skip the per-commit look.
        judged = revision.brought_in or ((revision.commit,) if patch_changes else ())
        mixed_details = [m for m in (_mixed(c, rules) for c in judged) if m]
        changed = [c for c in patch_changes if c.status in _CHANGED]
        for change in changed:
            report = _analyse(change, texts, rules)
            reports[parse_name(change.path).filename] = report
            for problem in report.problems:
                rule = "live-header-blocking" if problem in report.violations else "patch"
                violations.append(Finding(revision.sha, rule, problem))
        kinds = {reports[posixpath.basename(c.path)].kind for c in changed}
        if mixed_details:
            kind = MIXED
            violations += [Finding(revision.sha, "mixed", d) for d in mixed_details]
        elif not changed:
            kind = CODE
            deleted = [posixpath.basename(c.path) for c in patch_changes]
            if deleted:
                warnings.append(Finding(revision.sha, "deletes-patch",
                                        f"deletes {', '.join(deleted)} and adds no patch: "
                                        "planned as code"))
        else:
            kind = COLD if "cold" in kinds else LIVE
        names = tuple(sorted({posixpath.basename(c.path) for c in changed},
                             key=lambda n: parse_name(n).key))
        planned.append(PlannedRevision(revision.sha, kind, names, revision.subject))
    plan = _cut(history, tuple(planned), reports, violations, warnings, timings, overhead_s)
    return dataclasses.replace(plan, tree_patches=tree_patches)


def _cut(history: History, planned: tuple[PlannedRevision, ...],
         reports: Mapping[str, PatchReport], violations: list[Finding],
         warnings: list[Finding], timings: Mapping[str, float] | None,
         overhead_s: float) -> Plan:
    cold_at = [i for i, r in enumerate(planned) if r.kind == COLD]
    cut = planned[cold_at[-1]].sha if cold_at else None
    split = cold_at[-1] + 1 if cold_at else 0

    def patches_of(revisions: Sequence[PlannedRevision], kind: str) -> tuple[str, ...]:
        names = {p for r in revisions for p in r.patches if reports[p].kind == kind}
        return tuple(sorted(names, key=lambda n: parse_name(n).key))

    cold = patches_of(planned[:split], "cold")
    live_first = patches_of(planned[:split], "live")
    live_after = tuple(p for p in patches_of(planned[split:], "live") if p not in live_first)
    estimate: float | None = None
    if timings is not None:
        total, unknown = estimate_outage(cold, timings, overhead_s)
        estimate = None if unknown else total
    return Plan(history.branch, history.from_sha, history.to_sha, cut, planned, cold,
                live_first, live_after, estimate, tuple(violations), tuple(warnings),
                dict(reports))


def _mixed(commit: Commit, rules: PathRules) -> str | None:
    """Why ``commit`` is mixed (it changes a patch file and a non-schema file), or None."""
    patches = [c.path for c in commit.changes if rules.is_patch(c.path)]
    code = [c.path for c in commit.changes if not rules.is_schema(c.path)]
    if not patches or not code:
        return None
    return (f"commit {commit.sha[:12]} ({commit.subject}) changes the patch "
            f"{', '.join(posixpath.basename(p) for p in patches)} together with application "
            f"code: {', '.join(code[:5])}{' ...' if len(code) > 5 else ''}")


def _analyse(change: Change, texts: Mapping[str, str], rules: PathRules) -> PatchReport:
    if change.blob not in texts:
        raise BadInput(f"{change.path}: the text of blob {change.blob[:12]} was not read")
    return analyse(change.path, texts[change.blob], revision_table=rules.revision_table)


def estimate_outage(cold_patches: Sequence[str], seconds: Mapping[str, float],
                    overhead_s: float = WINDOW_OVERHEAD_S) -> tuple[float, list[str]]:
    """(the known cold patches' seconds plus the window overhead, the patches with no timing).

    No cold patch means no window: 0.
    """
    if not cold_patches:
        return 0.0, []
    unknown = [p for p in cold_patches if p not in seconds]
    total = sum(seconds.get(p, 0.0) for p in cold_patches) + overhead_s
    return round(total, 3), unknown


def timings_for(tree_patches: Mapping[str, str],
                timings: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """``{filename: seconds}`` for the versions of the patches the target tree holds.

    ``timings`` is keyed by (file name, checksum): a rehearsal of another text
    of the patch does not count.
    """
    return {name: timings[(name, blob)] for name, blob in tree_patches.items()
            if (name, blob) in timings}


def parse_approvals(values: Iterable[str], plan: Plan) -> dict[str, str]:
    """``--approve PATCH:WHO`` values -> ``{patch file name: who}``.

    PATCH is the file name with or without ``.sql``; it must be a cold patch
    of the plan (an approval of anything else is a typo worth stopping for).
    """
    approvals = {}
    for value in values:
        patch, sep, who = value.partition(":")
        if not sep or not patch.strip() or not who.strip():
            raise BadInput(f"--approve {value!r}: expected PATCH:WHO")
        name = patch.strip()
        name = name if name.endswith(".sql") else name + ".sql"
        if name not in plan.cold_patches:
            cold = ", ".join(plan.cold_patches) or "none"
            raise BadInput(f"--approve {value!r}: {name} is not a cold patch of the plan "
                           f"(cold patches: {cold})")
        approvals[name] = who.strip()
    return approvals
