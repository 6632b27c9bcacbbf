"""The registry of patch rules: one :class:`Rule` per stable code, in :data:`RULES`.

Each rule says how bad it is (``severity``), why it matters on a live
database, what to write instead, and whether a plan refuses to deploy a patch
whose version to be applied has the problem (``plan``). Rules with
``plan=False`` are advisory: staging timings gate those patches, and
``patches`` (the linter) reports them for CI. ``docs/patch-rules.md``
documents every code (a unit test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from orchestrator.patches.problem import ERROR, WARNING, Problem, blocks

if TYPE_CHECKING:
    from orchestrator.patches.analysis import PatchReport


@dataclass(frozen=True)
class Rule:
    """One rule: ``code`` (stable), default ``severity``, a one-line ``title``, ``why`` it
    matters on a live database, what to write ``instead``, and ``plan``: True when a plan
    refuses a patch to be applied that has the problem."""

    code: str
    severity: str
    title: str
    why: str
    instead: str
    plan: bool

    def problem(
        self,
        file: str,
        line: int | None,
        col: int | None,
        message: str,
        *,
        lock: str | None = None,
        hint: str | None = None,
    ) -> Problem:
        """A :class:`Problem` of this rule; ``hint`` defaults to :attr:`instead`."""
        return Problem(
            rule=self.code,
            severity=self.severity,
            file=file,
            line=line,
            col=col,
            message=message,
            lock=lock,
            blocks=blocks(lock),
            hint=hint if hint is not None else self.instead,
        )


_ALL = (
    # --- the plan refuses these ------------------------------------------------
    Rule(
        "bad-name",
        ERROR,
        "The file name is not patch-MAJOR-MINOR-POINT.sql",
        "Patches are ordered and recorded in the revision table by the three numbers in "
        "their name; a file that cannot be numbered cannot be applied or recorded.",
        "Rename the file patch-MAJOR-MINOR-POINT.sql with the next free numbers.",
        plan=True,
    ),
    Rule(
        "unknown-header",
        ERROR,
        "Unknown fastdowntime header value",
        "A header that is neither live nor cold is ignored, so the patch's kind silently "
        "falls back to static analysis, which may not be what its author meant.",
        "Write exactly '-- fastdowntime: live' or '-- fastdowntime: cold'.",
        plan=True,
    ),
    Rule(
        "contrary-header",
        ERROR,
        "Two fastdowntime headers that say the opposite",
        "Only the first header counts; a second one saying the opposite means the author "
        "and the orchestrator may disagree on whether the patch needs the window.",
        "Keep one header.",
        plan=True,
    ),
    Rule(
        "stray-header",
        ERROR,
        "A fastdowntime header after the first statement",
        "Only the comment lines at the top of the file are read for the header; one further "
        "down is ignored, so the patch is classified as if it had none.",
        "Move the header into the comment lines at the top of the file.",
        plan=True,
    ),
    Rule(
        "empty",
        ERROR,
        "The patch has no SQL statements",
        "A patch that does nothing is almost always a mistake (a lost edit, the wrong "
        "file), and it still takes a number and a row in the revision table.",
        "Add the statements, or remove the file.",
        plan=True,
    ),
    Rule(
        "unterminated",
        ERROR,
        "The last statement does not end with ';'",
        "Tools that run or join SQL files (psql, a concatenated schema) read up to the next "
        "';': a missing one runs the last statement together with whatever follows.",
        "End the last statement with ';'.",
        plan=True,
    ),
    Rule(
        "transaction-control",
        ERROR,
        "BEGIN, COMMIT, ROLLBACK or SAVEPOINT in a patch",
        "The orchestrator applies all cold patches in one transaction that it commits at the "
        "commit point, and live patches one statement at a time; a COMMIT in a patch would "
        "commit part of the window early and break the all-or-nothing rollback.",
        "Remove it: the orchestrator owns the transaction.",
        plan=True,
    ),
    Rule(
        "no-transaction-in-cold",
        ERROR,
        "A statement that cannot run in a transaction block, in a cold patch",
        "CREATE INDEX CONCURRENTLY, VACUUM and the other CONCURRENTLY forms refuse to run "
        "inside a transaction block, and a cold patch runs inside the window's transaction: "
        "the window would fail and roll back.",
        "Move the statement to a live patch, which runs one statement at a time in "
        "autocommit.",
        plan=True,
    ),
    Rule(
        "live-blocks",
        ERROR,
        "A live header on a statement that blocks an existing table",
        "A live patch runs while users are served; a statement that takes SHARE or a "
        "stronger lock on an existing table stops their writes (or reads) for as long as it "
        "runs: an outage nobody planned.",
        "Remove the live header (the patch becomes cold and runs in the window), or use a "
        "live-safe form: CREATE INDEX CONCURRENTLY, ADD CONSTRAINT ... NOT VALID, VALIDATE "
        "CONSTRAINT.",
        plan=True,
    ),
    Rule(
        "unparseable",
        ERROR,
        "PostgreSQL's parser refuses the text (or the text is not UTF-8)",
        "What PostgreSQL cannot parse cannot be applied: in the window it fails and rolls "
        "everything back.",
        "Fix the SQL at the line and column given (the text must be UTF-8 without NUL "
        "characters).",
        plan=True,
    ),
    Rule(
        "unreadable",
        ERROR,
        "The file cannot be read",
        "What cannot be read can be neither checked nor applied.",
        "Check the path and its permissions.",
        plan=True,
    ),
    # --- advisory: staging timings gate these -----------------------------------------
    Rule(
        "rewrite-column-type",
        ERROR,
        "ALTER COLUMN ... TYPE rewrites the table",
        "Changing a column's type rewrites every row and rebuilds every index of the table "
        "under ACCESS EXCLUSIVE: nothing reads or writes the table until it ends, minutes on "
        "a big table. Only binary-coercible changes (varchar(n) to text or to a longer "
        "varchar) skip the rewrite, and the linter cannot see the old type.",
        "Add a column of the new type, fill it in batches from a live patch or a job (a "
        "trigger keeps new rows filled), switch the code to it, and drop the old column in a "
        "later release.",
        plan=False,
    ),
    Rule(
        "rewrite-volatile-default",
        ERROR,
        "ADD COLUMN with a value computed for every row rewrites the table",
        "Since PostgreSQL 11 ADD COLUMN with a constant or stable default (0, 'x', now()) "
        "only changes the catalog. A volatile default (random(), clock_timestamp(), "
        "gen_random_uuid(), nextval() ...), a serial or identity column, or a STORED "
        "generated column makes PostgreSQL compute a value for every existing row and "
        "rewrite the table under ACCESS EXCLUSIVE.",
        "Add the column without a default (or with a constant one), then ALTER COLUMN ... "
        "SET DEFAULT (only new rows get it), and fill the existing rows in batches from a "
        "live patch or a job.",
        plan=False,
    ),
    Rule(
        "set-not-null-scan",
        ERROR,
        "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE",
        "ALTER COLUMN ... SET NOT NULL reads every row to check for NULLs while holding "
        "ACCESS EXCLUSIVE: nothing reads or writes the table meanwhile.",
        "Add CHECK (col IS NOT NULL) NOT VALID and VALIDATE CONSTRAINT it in a live patch "
        "(SHARE UPDATE EXCLUSIVE: reads and writes go on); SET NOT NULL then uses the valid "
        "constraint instead of scanning (PostgreSQL 12+), and the CHECK can be dropped.",
        plan=False,
    ),
    Rule(
        "constraint-validation-scan",
        ERROR,
        "ADD CONSTRAINT CHECK or FOREIGN KEY without NOT VALID checks every row",
        "Adding a CHECK or FOREIGN KEY constraint checks every existing row while holding "
        "the lock: ACCESS EXCLUSIVE for a CHECK (nothing reads or writes the table), SHARE "
        "ROW EXCLUSIVE on both tables for a FOREIGN KEY (writes wait).",
        "Add the constraint NOT VALID (only new rows are checked; it is live-safe), then "
        "ALTER TABLE ... VALIDATE CONSTRAINT in a live patch, which takes SHARE UPDATE "
        "EXCLUSIVE only.",
        plan=False,
    ),
    Rule(
        "constraint-index-build",
        ERROR,
        "ADD PRIMARY KEY, UNIQUE or EXCLUDE builds an index under ACCESS EXCLUSIVE",
        "Adding a PRIMARY KEY, UNIQUE or EXCLUDE constraint builds its index while holding "
        "ACCESS EXCLUSIVE on the table; a PRIMARY KEY also scans its columns for NULLs.",
        "Build the index with CREATE UNIQUE INDEX CONCURRENTLY in a live patch, then ALTER "
        "TABLE ... ADD CONSTRAINT name PRIMARY KEY (or UNIQUE) USING INDEX index, which "
        "takes a moment. EXCLUDE has no USING INDEX form: rehearse it and budget for it.",
        plan=False,
    ),
    Rule(
        "whole-table-dml",
        ERROR,
        "UPDATE or DELETE without WHERE on an existing table",
        "An UPDATE or DELETE without WHERE changes every row in one transaction: in the "
        "window it lasts as long as the table is big; in a live patch it keeps every row it "
        "touched locked until it ends, so writers wait; and the standbys replay all of it.",
        "Backfill in batches (WHERE id BETWEEN ...), each batch its own transaction, from a "
        "live patch or a job.",
        plan=False,
    ),
    Rule(
        "index-not-concurrently",
        ERROR,
        "CREATE INDEX without CONCURRENTLY on an existing table, in a cold patch",
        "A plain CREATE INDEX holds SHARE on the table while it builds: writes wait, and in "
        "the window the whole build is outage.",
        "Make it a live patch with CREATE INDEX CONCURRENTLY.",
        plan=False,
    ),
    Rule(
        "rewrite-table",
        ERROR,
        "A statement that copies the whole table under ACCESS EXCLUSIVE",
        "SET TABLESPACE, SET LOGGED, SET UNLOGGED, SET ACCESS METHOD, CLUSTER and VACUUM "
        "FULL copy the whole table and rebuild its indexes while holding ACCESS EXCLUSIVE.",
        "Do it outside a deploy, in a maintenance window sized for the table, or online "
        "with a tool such as pg_repack.",
        plan=False,
    ),
    Rule(
        "drop-column",
        WARNING,
        "DROP COLUMN of a column the old code may still use",
        "During a deploy the old code runs on the new schema (the servers not yet rolled, "
        "and the fallback after the commit point); its queries that name the column fail.",
        "Stop using the column in the code first; drop it in a later release, once no "
        "deployed code names it.",
        plan=False,
    ),
    Rule(
        "drop-table",
        WARNING,
        "DROP TABLE of a table the old code may still use",
        "During a deploy the old code runs on the new schema; its queries on the table "
        "fail.",
        "Stop using the table in the code first; drop it in a later release, once no "
        "deployed code names it.",
        plan=False,
    ),
    Rule(
        "rename-column",
        WARNING,
        "RENAME COLUMN breaks the old code",
        "During a deploy the old code runs on the new schema and still uses the old name; "
        "its queries fail.",
        "Add the new column and keep both filled, switch the code, and drop the old one in "
        "a later release (or keep the name).",
        plan=False,
    ),
    Rule(
        "rename-table",
        WARNING,
        "ALTER TABLE ... RENAME TO breaks the old code",
        "During a deploy the old code runs on the new schema and still uses the old name; "
        "its queries fail.",
        "Keep the name, or rename and leave a view with the old name until no deployed code "
        "uses it.",
        plan=False,
    ),
    Rule(
        "bad-ignore",
        WARNING,
        "A fastdowntime-ignore comment names no advisory rule",
        "Only advisory rules (those a plan does not refuse) can be silenced; a misspelt or "
        "refusing code silences nothing.",
        "Name advisory rule codes from docs/patch-rules.md, separated by commas.",
        plan=False,
    ),
)

RULES: Mapping[str, Rule] = MappingProxyType({rule.code: rule for rule in _ALL})
"""Every rule by code, in the order the documentation lists them."""


def refusing(report: PatchReport) -> tuple[Problem, ...]:
    """The problems of ``report`` whose rule makes a plan refuse the patch."""
    return tuple(p for p in report.problems if RULES[p.rule].plan)
