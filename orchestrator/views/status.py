"""The ``status`` view (rich): hosts, database, the next deploy, runs, the lock. A part
that could not be read shows why in its place. The JSON form is ``Status.to_json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.runner.status import (
    DatabaseStatus,
    HostStatus,
    LockStatus,
    PendingStatus,
    RunsStatus,
    Status,
    utc_instant,
)
from orchestrator.views.figures import instant, seconds, short


def print_status(status: Status, console: Console) -> None:
    """Every part in turn, then, if some could not be read, how many."""
    unread = _Unread()
    _hosts(status.hosts, console, unread)
    _database(status.database, console, unread)
    _pending(status.pending, console, unread)
    _runs(status.runs, console, unread)
    _lock(status.lock, console, unread)
    if not status.complete:
        console.print(f"[bold red]{len(status.unread)} part(s) could not be read[/] (exit 3)")


class _Unread:
    """``unread: why`` for a part that could not be read; a reason already given above (the
    database down, for each part it holds) reads ``unread (as above)``."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, why: str) -> str:
        if why in self.said:
            return "[red]unread[/] (as above)"
        self.said.add(why)
        return f"[red]unread:[/] {escape(why)}"


def _hosts(hosts: Sequence[HostStatus], console: Console, unread: _Unread) -> None:
    if not hosts:
        console.print("[bold]hosts[/] none configured")
        return
    table = Table(title="hosts", title_justify="left", show_edge=False)
    for column in ("host", "role", "revision", "serving", "health"):
        table.add_column(column)
    for host in hosts:
        revision = (unread(host.errors["revision"]) if "revision" in host.errors
                    else short(host.revision))
        table.add_row(host.name, host.role, revision, _serving(host, unread), _health(host, unread))
    console.print(table)


def _serving(host: HostStatus, unread: _Unread) -> str:
    if "slots" in host.errors:
        return unread(host.errors["slots"])
    if not host.slots:
        return "-"
    if host.serving is not None:
        others = ", ".join(f"{port} {state}" for port, state in host.slots.items()
                           if port != host.serving)
        return f"{host.serving}" + (f" [dim]({others})[/]" if others else "")
    ready = [str(port) for port, state in host.slots.items() if state == "ready"]
    return f"[yellow]{' and '.join(ready) + ' ready' if ready else 'none ready'}[/]"


def _health(host: HostStatus, unread: _Unread) -> str:
    if "health" in host.errors:
        return unread(host.errors["health"])
    result = host.health
    if result is None:
        return "-"
    if result.ok:
        return f"[green]healthy[/] ({result.elapsed_s * 1000:.0f} ms)"
    if result.revision and result.revision != host.revision:
        return (f"[yellow]answers on {short(result.revision)}[/], not on "
                f"{short(host.revision)}")
    return f"[bold red]unhealthy[/]: {escape(result.last_answer)}"


def _database(database: DatabaseStatus, console: Console, unread: _Unread) -> None:
    errors = database.errors
    level = database.patch_level
    if "patch_level" in errors:
        shown = unread(errors["patch_level"])
    elif level is None:
        shown = "none (the revision table is empty)"
    else:
        shown = (f"[bold]{level}[/] (applied {utc_instant(level.start_time) or '-'}; "
                 f"{level.applied} patch{'' if level.applied == 1 else 'es'} recorded)")
    console.print(f"[bold]database[/] patch level {shown}")
    for standby in database.standbys:
        colour = "green" if standby.state == "streaming" else "yellow"
        lag = "" if standby.lag_s is None else f", replay lag {seconds(standby.lag_s)}"
        behind = "" if standby.lag_bytes is None else f" ({standby.lag_bytes} bytes)"
        detail = f": {escape(standby.detail)}" if standby.detail else ""
        console.print(f"  standby {escape(standby.name)} [{colour}]{standby.state}[/]"
                      f"{lag}{behind}{detail}")
    if "standbys" in errors:
        console.print(f"  standbys {unread(errors['standbys'])}")
    elif not database.standbys and "patch_level" not in errors:
        console.print("  no standby")


def _pending(pending: PendingStatus, console: Console, unread: _Unread) -> None:
    plan = pending.plan
    if plan is None:
        console.print(f"[bold]next deploy[/] {unread(pending.errors.get('plan', '?'))}")
        return
    if not plan.revisions:
        console.print(f"[bold]next deploy[/] nothing: the hosts run {short(plan.to_sha)}, "
                      f"the tip of {plan.branch}")
    else:
        console.print(f"[bold]next deploy[/] {plan.branch} {short(plan.from_sha)}.."
                      f"{short(plan.to_sha)}: {len(plan.revisions)} revisions")
        if plan.cut is None:
            console.print("  fastdowntime: none (no cold patch, no window)")
        else:
            console.print(f"  fastdowntime: {len(plan.fastdowntime_revisions)} revisions up to "
                          f"the cut {short(plan.cut)}; cold {_names(plan.cold_patches)}; live "
                          f"{_names(plan.fastdowntime_live_patches)}")
            console.print(f"  estimated window: {_estimate(pending)}")
        console.print(f"  nodowntime: {len(plan.nodowntime_revisions)} revisions; live "
                      f"{_names(plan.nodowntime_live_patches)}")
    if plan.source is not None and plan.source.fetched is not None:
        console.print(f"  source: {escape(plan.source.describe())}")
    if plan.violations:
        console.print(f"  [bold red]{len(plan.violations)} violation(s)[/]: a deploy is "
                      "refused (`fastdowntime plan` names them)")
    if "estimate" in pending.errors:
        console.print(f"  estimate {unread(pending.errors['estimate'])}")


def _estimate(pending: PendingStatus) -> str:
    plan = pending.plan
    assert plan is not None
    budget = "" if pending.budget_s is None else f" of {pending.budget_s:g} s budget"
    if plan.estimate is not None:
        return escape(plan.estimate.describe()) + budget
    if plan.estimated_outage_s is not None:
        return f"{plan.estimated_outage_s:.3f} s{budget}"
    return "unknown (no rehearsal timings)"


def _names(names: Sequence[str]) -> str:
    return f"{len(names)} ({', '.join(names)})" if names else "0"


def _runs(runs: RunsStatus, console: Console, unread: _Unread) -> None:
    last = runs.last
    if last is None:
        shown = "none" if "runs_dir" not in runs.errors else unread(runs.errors["runs_dir"])
        console.print(f"[bold]last run[/] {shown}")
    else:
        console.print(f"[bold]last run[/] {_run(last)}")
        if last.get("error"):
            console.print(f"  {escape(str(last['error']))}")
    if not runs.needs_resume:
        console.print("[bold]needs resume[/] none")
    for run in runs.needs_resume:
        console.print(f"[bold]needs resume[/] [bold red]{escape(str(run['id']))}[/] "
                      f"{run.get('outcome')}, by {escape(str(run.get('who') or '?'))}, started "
                      f"{instant(run.get('started'))}: `fastdowntime resume {run['id']}`")
    for where, why in runs.errors.items():
        if where != "runs_dir" or last is not None:
            console.print(f"  {_RUN_SOURCES.get(where, where)} {unread(why)}")


_RUN_SOURCES = {"database": "the database's run records", "runs_dir": "the runs dir"}


def _run(run: Mapping[str, Any]) -> str:
    outcome = str(run.get("outcome"))
    colour = "green" if outcome == "done" else "yellow" if outcome == "dry-run" else "bold red"
    outage = ("" if run.get("outage_s") is None
              else f", outage {seconds(run['outage_s'])}")
    return (f"{escape(str(run.get('id')))} [{colour}]{outcome}[/], by "
            f"{escape(str(run.get('who') or '?'))}, started {instant(run.get('started'))}, "
            f"to {short(run.get('to'))}{outage}")


def _lock(lock: LockStatus, console: Console, unread: _Unread) -> None:
    if "holder" in lock.errors:
        shown = unread(lock.errors["holder"])
    elif lock.holder is None:
        shown = "[green]free[/]"
    else:
        shown = f"[yellow]held[/] by {escape(lock.holder.describe())}"
    console.print(f"[bold]deploy lock[/] {shown}")

