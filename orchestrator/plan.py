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
from functools import cached_property
from typing import Any, NamedTuple

from orchestrator.errors import BadInput
from orchestrator.estimate import WINDOW_OVERHEAD_S, Estimate
from orchestrator.history import Change, Commit, History, Revision
from orchestrator.history.checkout import Checkout
from orchestrator.history.globs import matches, matches_any
from orchestrator.patches import (
    NAME_RE,
    PatchName,
    PatchNameError,
    PatchReport,
    Problem,
    lint,
    parse_name,
    refusing,
)

CODE, COLD, LIVE, MIXED = "code", "schema-cold", "schema-live", "mixed"
_CHANGED = ("A", "M", "T")


@dataclass(frozen=True)
class PathRules:
    """Which paths are patch files and which are schema files (``[source]``)."""

    patches: str = "database/schema/patch-*.sql"
    schema_files: tuple[str, ...] = ("database/schema/**",)
    revision_table: str = "LaunchpadDatabaseRevision"

    def is_patch(self, path: str) -> bool:
        return self.classify(path) == _PATCH

    def is_schema(self, path: str) -> bool:
        return self.classify(path) != _CODE_FILE

    def classify(self, path: str) -> int:
        """Patch file, other schema file, or code; cached per rules: a history repeats its
        paths, and hashing the rules for a shared cache costs more than the match."""
        known = self._classes.get(path)
        if known is None:
            if matches(path, self.patches):
                known = _PATCH
            else:
                known = _SCHEMA_FILE if matches_any(path, self.schema_files) else _CODE_FILE
            self._classes[path] = known
        return known

    @cached_property
    def _classes(self) -> dict[str, int]:
        return {}


_CODE_FILE, _SCHEMA_FILE, _PATCH = 0, 1, 2


@dataclass(frozen=True)
class Finding:
    """A violation (the deploy refuses it) or a warning, about one revision.

    ``commit`` is the commit that breaks the rule (a commit a merge brought
    in, or the revision itself); empty means the revision.
    """

    revision: str
    rule: str
    detail: str
    commit: str = ""

    def describe(self) -> str:
        """One line: the revision's short sha, the rule and the detail."""
        return f"{self.revision[:12]} {self.rule}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        return {"revision": self.revision, "commit": self.commit or self.revision,
                "rule": self.rule, "detail": self.detail}


class PlannedRevision(NamedTuple):
    """One revision, classified; ``patches`` are the basenames it adds or modifies.

    ``problems`` are what is wrong with the patch versions it brought (a text
    PostgreSQL's parser refuses, a misnamed file ...): history as it is, which
    only refuses a deploy while the version to be applied still has them.
    """

    sha: str
    kind: str
    patches: tuple[str, ...]
    subject: str
    problems: tuple[Problem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha": self.sha, "kind": self.kind,
                                "patches": list(self.patches), "subject": self.subject}
        if self.problems:
            data["problems"] = [p.to_json() for p in self.problems]
        return data


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
    texts: Mapping[str, str] = field(repr=False, default_factory=dict)
    """The text of every patch of the target tree the range changed (basename -> text):
    what the runner applies, as the planner read it."""
    tree: Mapping[str, str] = field(repr=False, default_factory=dict)
    """Every file of the target tree: path -> git blob id."""
    estimate: Estimate | None = field(repr=False, default=None)
    """How ``estimated_outage_s`` was made, patch by patch (None: from timings alone)."""
    source: Checkout | None = field(repr=False, default=None)
    """The repository read, the branch's tip and when it was fetched (None: not known)."""

    @classmethod
    def empty(cls, from_sha: str, to_sha: str) -> Plan:
        """A plan of no revision from ``from_sha`` to ``to_sha``: what a run resumed from its
        journal holds (it applies no patch; its journal says what the first run did)."""
        return cls("", from_sha, to_sha, None, (), (), (), (), None, (), (), {})

    def with_estimate(self, estimate: Estimate) -> Plan:
        """This plan with ``estimate`` as its outage estimate."""
        return dataclasses.replace(self, estimated_outage_s=estimate.total_s, estimate=estimate)

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
            **({"source": self.source.to_json()} if self.source is not None else {}),
            "revisions": [r.to_json() for r in self.revisions],
            "fastdowntime": {"revisions": [r.sha for r in self.fastdowntime_revisions],
                             "cold_patches": list(self.cold_patches),
                             "live_patches": list(self.fastdowntime_live_patches),
                             "estimated_outage_s": self.estimated_outage_s,
                             **({"estimate": self.estimate.to_json()}
                                if self.estimate is not None else {})},
            "nodowntime": {"revisions": [r.sha for r in self.nodowntime_revisions],
                           "live_patches": list(self.nodowntime_live_patches)},
            "violations": [v.to_json() for v in self.violations],
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(frozen=True)
class TreePatches:
    """The patch files of the target tree.

    ``blobs``: every well-named patch (basename -> blob id, "" when unknown),
    in numeric order; ``names``: the basename of every file the patch glob
    matches; ``misnamed``: those whose name is not patch-MAJOR-MINOR-POINT.sql;
    ``duplicates``: groups of files that are the same patch number.
    """

    blobs: dict[str, str]
    names: frozenset[str]
    misnamed: tuple[str, ...]
    duplicates: tuple[tuple[str, ...], ...]


def check_tree(tree: Mapping[str, str] | Iterable[str], rules: PathRules) -> TreePatches:
    """Sort the target tree's patch files; bad and duplicate names are reported, not raised."""
    blobs = tree if isinstance(tree, Mapping) else dict.fromkeys(tree, "")
    named: list[tuple[PatchName, str]] = []
    names, misnamed = set(), []
    for path, blob in blobs.items():
        if not rules.is_patch(path):
            continue
        names.add(posixpath.basename(path))
        try:
            named.append((parse_name(path), blob))
        except PatchNameError:
            misnamed.append(posixpath.basename(path))
    by_key: dict[tuple[int, int, int], list[str]] = {}
    for name, _ in named:
        by_key.setdefault(name.key, []).append(name.filename)
    duplicates = tuple(tuple(sorted(set(group))) for group in by_key.values()
                       if len(set(group)) > 1)
    return TreePatches({name.filename: blob for name, blob in sorted(named)}, frozenset(names),
                       tuple(sorted(misnamed)), duplicates)


def make_plan(history: History, texts: Mapping[str, str | bytes],
              tree: Mapping[str, str] | Sequence[str],
              rules: PathRules = PathRules(), timings: Mapping[str, float] | None = None,
              overhead_s: float = WINDOW_OVERHEAD_S) -> Plan:
    """Classify every revision of ``history`` and cut it. Never raises on content.

    ``texts`` maps the blob sha of every patch file the range adds or modifies
    to its text (bytes when it is not UTF-8); ``tree`` lists the files of the
    target revision (with their blob ids when it is a mapping); ``timings``
    maps patch basenames to rehearsed seconds (the outage estimate is their
    sum plus ``overhead_s``, or None when a cold patch has no timing).

    A patch version that does not parse, or a misnamed patch file, is a
    problem of the revision that brought it, which counts as schema-cold. The
    versions to be applied (the last in the range, still in the target tree)
    make the plan's violations.
    """
    target = check_tree(tree, rules)
    reports: dict[str, PatchReport] = {}
    latest: dict[str, tuple[str, str]] = {}
    """Basename -> (revision, commit) that brought the version in the target tree."""
    planned, violations, warnings = [], [], []
    for revision in history.revisions:
        mixed = [Finding(revision.sha, "mixed", detail, commit.sha)
                 for commit in revision.brought_in + (revision.commit,)
                 if (detail := _mixed(commit, rules))]
        violations += mixed
        patch_changes = [c for c in revision.changes if rules.is_patch(c.path)]
        changed = [c for c in patch_changes if c.status in _CHANGED]
        authors = _authors(revision) if changed and revision.is_merge else {}
        problems: list[Problem] = []
        cold = False
        for change in changed:
            name = posixpath.basename(change.path)
            report = _analyse(change, texts, rules)
            reports[name] = report
            latest[name] = (revision.sha, authors.get((change.path, change.blob), revision.sha))
            problems += refusing(report)
            cold = cold or report.kind == "cold" or not report.parsed or report.name is None
        for change in patch_changes:
            if change.status == "D":
                latest.pop(posixpath.basename(change.path), None)
        if mixed:
            kind = MIXED
        elif not changed:
            kind = CODE
            deleted = [posixpath.basename(c.path) for c in patch_changes]
            if deleted:
                warnings.append(Finding(revision.sha, "deletes-patch",
                                        f"deletes {', '.join(deleted)} and adds no patch: "
                                        "planned as code"))
        else:
            kind = COLD if cold else LIVE
        names = tuple(sorted({posixpath.basename(c.path) for c in changed}, key=_order))
        planned.append(PlannedRevision(revision.sha, kind, names, revision.subject,
                                       tuple(problems)))
    violations += _applied_findings(target, reports, latest, warnings)
    plan = _cut(history, tuple(planned), reports, target.blobs, violations, warnings, timings,
                overhead_s)
    files = tree if isinstance(tree, Mapping) else dict.fromkeys(tree, "")
    applied = {name: text for name, blob in target.blobs.items()
               if isinstance(text := texts.get(blob), str)}
    return dataclasses.replace(plan, tree_patches=target.blobs, texts=applied, tree=files)


def _applied_findings(target: TreePatches, reports: Mapping[str, PatchReport],
                      latest: Mapping[str, tuple[str, str]], warnings: list[Finding],
                      ) -> list[Finding]:
    """Violations of the patch versions to be applied: those the range brought that are in the
    target tree. A bad or duplicate name the range did not touch is only a warning."""
    found = []
    for name, (revision, commit) in latest.items():
        if name in target.names:
            found += [Finding(revision, p.rule, str(p), commit) for p in refusing(reports[name])]
    for group in target.duplicates:
        touched = [latest[n] for n in group if n in latest]
        numbers = "-".join(str(n) for n in parse_name(group[0]).key)
        detail = f"{' and '.join(group)} are all patch {numbers}; rename all but one"
        if touched:
            found.append(Finding(touched[-1][0], "duplicate", detail, touched[-1][1]))
        else:
            warnings.append(Finding("", "duplicate", detail))
    for name in target.misnamed:
        if name not in latest:
            warnings.append(Finding("", "bad-name", f"{name} matches the patch glob but not "
                                    "patch-MAJOR-MINOR-POINT.sql (not in this range)"))
    return found


def _authors(revision: Revision) -> dict[tuple[str, str], str]:
    """(path, blob) -> the commit a merge brought in (or the merge itself) that wrote it."""
    written = {}
    for commit in revision.brought_in + (revision.commit,):
        for change in commit.changes:
            written[(change.path, change.blob)] = commit.sha
    return written


def _order(name: str) -> tuple[int, int, int, str]:
    """Numeric order for patch names; a misnamed file sorts last, by name."""
    match = NAME_RE.fullmatch(name)
    if match is None:
        return (1 << 62, 0, 0, name)
    major, minor, point = (int(g) for g in match.groups())
    return (major, minor, point, name)


def _cut(history: History, planned: tuple[PlannedRevision, ...],
         reports: Mapping[str, PatchReport], applied: Mapping[str, str],
         violations: list[Finding], warnings: list[Finding],
         timings: Mapping[str, float] | None, overhead_s: float) -> Plan:
    cold_at = [i for i, r in enumerate(planned) if r.kind == COLD]
    cut = planned[cold_at[-1]].sha if cold_at else None
    split = cold_at[-1] + 1 if cold_at else 0

    def patches_of(revisions: Sequence[PlannedRevision], kind: str) -> tuple[str, ...]:
        names = {p for r in revisions for p in r.patches
                 if p in applied and reports[p].kind == kind}
        return tuple(sorted(names, key=_order))

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
    classes = [rules.classify(c.path) for c in commit.changes]
    if _PATCH not in classes or _CODE_FILE not in classes:
        return None
    patches = [c.path for c, k in zip(commit.changes, classes, strict=True) if k == _PATCH]
    code = [c.path for c, k in zip(commit.changes, classes, strict=True) if k == _CODE_FILE]
    return (f"commit {commit.sha[:12]} ({commit.subject}) changes the patch "
            f"{', '.join(posixpath.basename(p) for p in patches)} together with application "
            f"code: {', '.join(code[:5])}{' ...' if len(code) > 5 else ''}")


def _analyse(change: Change, texts: Mapping[str, str | bytes], rules: PathRules,
             ) -> PatchReport:
    if change.blob not in texts:
        raise BadInput(f"{change.path}: the text of blob {change.blob[:12]} was not read")
    return lint(change.path, texts[change.blob], revision_table=rules.revision_table)


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
            raise BadInput(f"--approve {value!r}: expected PATCH:WHO", key="--approve")
        name = patch.strip()
        name = name if name.endswith(".sql") else name + ".sql"
        if name not in plan.cold_patches:
            cold = ", ".join(plan.cold_patches) or "none"
            raise BadInput(f"--approve {value!r}: {name} is not a cold patch of the plan "
                           f"(cold patches: {cold})", key="--approve")
        approvals[name] = who.strip()
    return approvals
