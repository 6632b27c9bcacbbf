"""Human output (rich): plans, patch reports, preflight checks, the sandbox's status. The
JSON forms live on the objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.check_result import CheckResult
from orchestrator.estimate import PatchEstimate
from orchestrator.patches import PatchReport
from orchestrator.patchfiles import summary
from orchestrator.plan import COLD, LIVE, MIXED, Plan

_KIND_STYLE = {COLD: "bold yellow", LIVE: "cyan", MIXED: "bold red", "code": ""}


def print_plan(plan: Plan, console: Console) -> None:
    """The range, the revisions with the cut marked, the patches of each stage, findings."""
    console.print(f"[bold]{plan.branch}[/] {plan.from_sha[:12]}..{plan.to_sha[:12]}: "
                  f"{len(plan.revisions)} revisions")
    if plan.source is not None and plan.source.fetched is not None:
        console.print(f"source: {escape(plan.source.describe())}", soft_wrap=True)
    table = Table(show_edge=False)
    for column in ("", "revision", "kind", "patches", "subject"):
        table.add_column(column)
    for revision in plan.revisions:
        style = _KIND_STYLE[revision.kind]
        kind = f"[{style}]{revision.kind}[/]" if style else revision.kind
        marker = "[bold yellow]cut ->[/]" if revision.sha == plan.cut else ""
        table.add_row(marker, revision.sha[:12], kind, ", ".join(revision.patches),
                      escape(revision.subject))
    console.print(table)
    if plan.cut is None:
        console.print("no cold patch: no window, the whole range is a nodowntime deploy")
    else:
        console.print(f"[bold]fastdowntime[/] up to the cut {plan.cut[:12]} "
                      f"({len(plan.fastdowntime_revisions)} revisions)")
        console.print(f"  cold patches (in the window): {_names(plan.cold_patches)}")
        console.print(f"  live patches (online, before): {_names(plan.fastdowntime_live_patches)}")
        estimate = ("unknown (no rehearsal timings)" if plan.estimated_outage_s is None
                    else f"{plan.estimated_outage_s:.3f} s")
        if plan.estimate is not None:
            estimate = plan.estimate.describe()
        console.print(f"  estimated outage: {escape(estimate)}")
        for patch in plan.estimate.patches if plan.estimate is not None else ():
            console.print(f"    {patch.name}: {_estimated(patch)}")
    console.print(f"[bold]nodowntime[/] {len(plan.nodowntime_revisions)} revisions, "
                  f"live patches: {_names(plan.nodowntime_live_patches)}")
    for revision in plan.revisions:
        for problem in revision.problems:
            console.print(f"[yellow]history[/] {revision.sha[:12]} {problem.rule}: "
                          f"{escape(str(problem))}")
    for warning in plan.warnings:
        where = f" {warning.revision[:12]}" if warning.revision else ""
        console.print(f"[yellow]warning[/]{where} {warning.rule}: {escape(warning.detail)}")
    for violation in plan.violations:
        by = (f" (commit {violation.commit[:12]})"
              if violation.commit and violation.commit != violation.revision else "")
        console.print(f"[bold red]violation[/] {violation.revision[:12]}{by} {violation.rule}: "
                      f"{escape(violation.detail)}")
    if plan.violations:
        console.print(f"[bold red]{len(plan.violations)} violation(s): a deploy of this plan "
                      "is refused[/]")


def print_patches(reports: Sequence[PatchReport], console: Console) -> None:
    """Each file's kind and reason, its statements with their locks, and its problems
    (severity, rule code, the sentence and the safer form); a summary line at the end."""
    for report in reports:
        style = "bold yellow" if report.kind == "cold" else "cyan"
        console.print(f"[bold]{escape(report.file)}[/]: [{style}]{report.kind}[/] "
                      f"({escape(report.reason)})", soft_wrap=True)
        if report.statements:
            table = Table(show_edge=False, show_header=True)
            for column in ("line", "lock", "tables", "statement"):
                table.add_column(column)
            for statement in report.statements:
                first = statement.sql.splitlines()[0] if statement.sql else ""
                text = first if len(first) <= 70 else first[:67] + "..."
                table.add_row(str(statement.line), statement.lock or "-",
                              ", ".join(statement.tables) or "-", escape(text))
            console.print(table)
        for problem in report.problems:
            colour = "bold red" if problem.severity == "error" else "yellow"
            console.print(f"  [{colour}]{problem.severity}[/] [bold]{problem.rule}[/] "
                          f"{escape(str(problem))}", soft_wrap=True)
            if problem.hint:
                console.print(f"    [dim]instead: {escape(problem.hint)}[/]", soft_wrap=True)
    console.print(summary(reports), soft_wrap=True)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def print_checks(checks: Sequence[CheckResult], console: Console) -> None:
    """``preflight``: each check, ok or FAILED, and its detail."""
    table = Table(title="preflight")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[bold red]FAILED[/]",
                      escape(check.detail))
    console.print(table)


def print_sandbox_status(state: Mapping[str, Any], console: Console) -> None:
    """``sandbox status``: each component, its state, its address and what it runs."""
    if not state["components"]:
        console.print(f"no sandbox at {state['sandbox']}")
        return
    table = Table(title=f"sandbox {state['sandbox']}")
    for column in ("component", "state", "address", "detail"):
        table.add_column(column)
    for name, info in state["components"].items():
        where = f"{info.get('address', '')}:{info.get('port', info.get('ssh_port', ''))}"
        detail = ""
        if "instances" in info:
            detail = ", ".join(f"{port}: {i['revision'][:12]} patch {i['patch']}"
                               if i.get("ok") else f"{port}: -"
                               for port, i in info["instances"].items())
        elif "servers" in info:
            detail = ", ".join(f"{s}={st}" for s, st in info["servers"].items())
        elif "streaming" in info:
            detail = "streaming" if info["streaming"] else "not streaming"
        elif info.get("role") == "bastion":
            detail = "jump host (proxy_jump)"
        colour = "green" if info["state"] == "up" else "red"
        table.add_row(name, f"[{colour}]{info['state']}[/]", where, detail)
    console.print(table)


def _estimated(patch: PatchEstimate) -> str:
    """A cold patch's line of the estimate: rehearsed seconds, scale, estimate."""
    if patch.rehearsed_s is None:
        return "never rehearsed: unknown"
    if patch.estimated_s is None:
        return f"rehearsed {patch.rehearsed_s:.3f} s; unknown here: {escape(patch.why)}"
    scale = "" if patch.scale in (None, 1.0) else f" x {patch.scale:g} (table sizes here)"
    return f"rehearsed {patch.rehearsed_s:.3f} s{scale} -> {patch.estimated_s:.3f} s"
