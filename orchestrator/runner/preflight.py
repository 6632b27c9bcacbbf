"""One preflight for every command: the plan, the database, host and runs-dir checks, one
verdict.

``preflight``, ``deploy``, ``rehearse`` and ``deploy --dry-run`` all go
through here, each with its own :class:`Policy` (a rehearsal records timings,
so it never needs them). The deployed revision is read once per run, over
SSH, and handed to the checks; the planner's texts travel with the plan, so
git is read once too. The database checks receive plain values
(:class:`~orchestrator.db.preflight.Patches`), never the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.check_result import CheckResult
from orchestrator.config import Config
from orchestrator.db.preflight import Patches
from orchestrator.db.preflight import run_checks as database_checks
from orchestrator.db.timings import Statements, Timings, load_rehearsals, read_rehearsals
from orchestrator.errors import BadInput, Locked, Refused
from orchestrator.estimate import Estimate, Overhead, estimate, learned_overhead, tables_of
from orchestrator.plan import PathRules, Plan, estimate_outage, timings_for
from orchestrator.remote import checks as host_checks
from orchestrator.remote.operations import RevisionsDisagree, Runner, deployed_revisions
from orchestrator.remote.ssh import Remote
from orchestrator.runner.planning import build_plan, checked_out, rules_for
from orchestrator.runner.room import check_runs_dir


@dataclass(frozen=True)
class Policy:
    """What a command demands of preflight.

    ``need_timings``: every cold patch rehearsed (or approved) and the
    estimate within budget; False for ``rehearse``, which is how timings come
    to exist. ``hosts``: run the host checks (a config without hosts cannot).
    """

    need_timings: bool = True
    hosts: bool = True


DEPLOY = Policy()
REHEARSE = Policy(need_timings=False)


@dataclass(frozen=True)
class Rehearsed:
    """What staging's rehearsals say: each patch version's seconds and statement records."""

    seconds: Timings = field(default_factory=dict)
    statements: Statements = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Mapping[tuple[str, str], tuple[float, Any]]) -> Rehearsed:
        return cls({k: s for k, (s, _) in rows.items()}, {k: r for k, (_, r) in rows.items()})


@dataclass(frozen=True)
class Planned:
    """A plan and what was read to make it: the hosts' deployed revisions (empty when
    ``--from`` was given) and the rehearsal timings the estimate used."""

    plan: Plan
    deployed: Mapping[str, str] = field(default_factory=dict)
    timings: Timings = field(default_factory=dict)


@dataclass(frozen=True)
class Preflight:
    """Every check's result for one plan, and the approvals they honoured."""

    planned: Planned
    approvals: Mapping[str, str]
    checks: tuple[CheckResult, ...]

    @property
    def plan(self) -> Plan:
        return self.planned.plan

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def raise_for_failures(self, *, brief: bool = False) -> None:
        """Locked (exit 5) when another run holds the deploy lock, else Refused (exit 3)
        naming every failed check with its detail (only its name when ``brief``: the
        caller has shown the details); nothing when all passed."""
        held = next((c for c in self.failed if c.name == "deploy_lock"), None)
        if held is not None:
            raise Locked(held.detail if brief else
                         f"another run holds the deploy lock: {held.detail}")
        if brief and self.failed:
            raise Refused(f"preflight failed: {', '.join(c.name for c in self.failed)}")
        if self.failed:
            raise Refused("preflight failed: " + "; ".join(f"{c.name}: {c.detail}"
                                                            for c in self.failed))

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "checks": [c.to_json() for c in self.checks]}


def plan_for(config: Config, remote: Runner | None, *, from_rev: str | None = None,
             to_rev: str | None = None, rules: PathRules | None = None,
             timings: Rehearsed | None = None, read_sizes: bool = False) -> Planned:
    """Plan ``[source]`` from ``from_rev`` (default: what every app host runs, read over
    ``remote`` once) to ``to_rev`` (default: the branch tip, as fetched now unless
    ``config`` was checked out already: :func:`~orchestrator.runner.planning.checked_out`).

    The outage estimate uses ``timings`` (none: no estimate), the overhead learned from
    ``[runs] dir`` and, with ``read_sizes``, this database's table sizes (see
    :mod:`orchestrator.estimate`).
    """
    deployed: dict[str, str] = {}
    if from_rev is None:
        if remote is None or not config.role("app"):
            raise BadInput("--from is required (the deployed revision) when the config has no "
                           "[ssh] and app hosts to read it from", key="--from")
        deployed = deployed_revisions(remote, config, config.role("app"))
        if len(set(deployed.values())) > 1:
            raise RevisionsDisagree(deployed)
        from_rev = next(iter(deployed.values()))
    config = checked_out(config)
    plan = build_plan(config.repository, config.source.branch, from_rev, to_rev,
                      rules or rules_for(config), source=config.checkout)
    if timings is None:
        return Planned(plan, deployed, {})
    found = estimate_for(config, plan, timings, read_sizes)
    return Planned(plan.with_estimate(found), deployed, timings.seconds)


def estimate_for(config: Config, plan: Plan, timings: Rehearsed, read_sizes: bool) -> Estimate:
    """The outage estimate of ``plan``'s window: rehearsals of its cold patches' versions,
    scaled to this database's table sizes (with ``read_sizes`` and a database), plus the
    overhead this environment's runs measured."""
    versions = {name: (name, plan.tree_patches.get(name, "")) for name in plan.cold_patches}
    statements = {name: timings.statements.get(key, ()) for name, key in versions.items()}
    here = None
    if read_sizes and config.database is not None and plan.cold_patches:
        from orchestrator.db.connect import connect
        from orchestrator.db.timings import table_sizes

        conn = connect(config.database, what="primary", readonly=True, autocommit=True)
        try:
            here = table_sizes(conn, tables_of(statements.values()))
        finally:
            conn.close()
    return estimate(plan.cold_patches, timings_for(plan.tree_patches, timings.seconds),
                    statements, here, _overhead(config))


def _overhead(config: Config) -> Overhead:
    """The window overhead learned from this config's run history (``[runs] dir``)."""
    from orchestrator.runner.runs import summaries

    runs_dir = Path(config.runs.dir)
    # whole summaries: the overhead is each run's window less its cold patches' seconds
    return learned_overhead(summaries(runs_dir)) if runs_dir.is_dir() else Overhead.assumed()


def connect_hosts(config: Config) -> Remote:
    """SSH to the config's hosts (a context manager: every connection closed after it)."""
    return Remote(config)


def rehearsal_timings(config: Config) -> Rehearsed:
    """The rehearsal timings this environment reads (file, timings database or its own)."""
    return Rehearsed.of(read_rehearsals(config.need("database")))


def offline_timings(config: Config) -> Rehearsed | None:
    """``[database] timings_file`` when set (read without connecting anywhere), else None."""
    settings = config.database
    if settings is None or not settings.timings_file:
        return None
    return Rehearsed.of(load_rehearsals(Path(settings.timings_file)))


def patch_facts(plan: Plan, timings: Timings, need_timings: bool = True) -> Patches:
    """The plain values the database checks need of ``plan`` (its estimate when it has
    one, else the rehearsed seconds and the assumed overhead)."""
    seconds = timings_for(plan.tree_patches, timings)
    if plan.estimate is not None:
        total, unknown = plan.estimate.total_s or 0.0, list(plan.estimate.unknown)
        note = plan.estimate.source
    else:
        total, unknown = estimate_outage(plan.cold_patches, seconds)
        note = ""
    return Patches(tree=dict(plan.tree_patches),
                   planned=plan.cold_patches + plan.fastdowntime_live_patches +
                   plan.nodowntime_live_patches,
                   cold=plan.cold_patches, seconds=seconds,
                   estimate_s=None if unknown else total, estimate_note=note,
                   need_timings=need_timings)


def preflight(config: Config, remote: Remote | None, planned: Planned,
              approvals: Mapping[str, str] | None = None, policy: Policy = DEPLOY, *,
              scripts_stopped: bool = False) -> Preflight:
    """Run every check on ``planned`` under ``policy``; changes nothing.

    ``approvals`` come from :func:`~orchestrator.plan.parse_approvals`. The
    first result is the plan's own (its violations); then the database checks;
    then, with hosts, the host checks (their deployed revisions as read for the
    plan, not again); last, room in the runs directory for the run's journal.
    """
    plan = planned.plan
    approvals = approvals or {}
    results = [CheckResult("plan", not plan.violations,
                           "; ".join(v.describe() for v in plan.violations) or "no violations")]
    results += database_checks(config, patch_facts(plan, planned.timings, policy.need_timings),
                               approvals, scripts_stopped=scripts_stopped)
    if policy.hosts and remote is not None and config.ssh is not None and config.hosts:
        results += host_checks.run_checks(remote, config, plan.from_sha,
                                          planned.deployed or None)
    results.append(check_runs_dir(Path(config.runs.dir)))
    return Preflight(planned, approvals, tuple(results))


__all__ = ["DEPLOY", "REHEARSE", "Planned", "Policy", "Preflight", "Rehearsed", "connect_hosts",
           "estimate_for",
           "offline_timings",
           "patch_facts", "plan_for", "preflight", "rehearsal_timings"]
