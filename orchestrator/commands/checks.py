"""``preflight``, ``status`` and ``timings``: the commands that read and change nothing."""

from __future__ import annotations

import argparse

from rich.console import Console

from orchestrator.commands.loading import hosts, load
from orchestrator.commands.output import CommandFailed, emit, say, wants_json
from orchestrator.errors import ExitCode, FastdowntimeError


def cmd_preflight(args: argparse.Namespace) -> int:
    """``preflight``: run every check; change nothing. Exit 3 naming every failed check (5 when
    the failed one is the deploy lock); ``--json``: the checks, and the error beside them."""
    from orchestrator.plan import parse_approvals
    from orchestrator.runner.preflight import plan_for, preflight, rehearsal_timings

    config = load(args)
    timings = rehearsal_timings(config)
    with hosts(config) as remote:
        planned = plan_for(config, remote, from_rev=args.from_rev, to_rev=args.to_rev,
                           timings=timings, read_sizes=True)
        checked = preflight(config, remote, planned, parse_approvals(args.approve,
                                                                     planned.plan))
    if not wants_json(args):
        from orchestrator.views.text import print_checks

        print_checks(checked.checks, Console())
        checked.raise_for_failures(brief=True)
        return ExitCode.OK
    try:
        checked.raise_for_failures()  # the whole detail: the document is read without the text
    except FastdowntimeError as exc:
        raise CommandFailed(exc, checked.to_json()) from exc
    emit(checked.to_json())
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    """``status [--json]``: what is deployed where, what is pending, the last run, the lock.

    Changes nothing. A part that cannot be read says why in its place and the rest is
    shown all the same; exit 0 when every part was read, 3 when one could not be.
    """
    from orchestrator.runner.status import status

    found = status(load(args))
    if wants_json(args):
        emit(found.to_json())
    else:
        from orchestrator.views.status import print_status

        print_status(found, Console())
    if found.complete:
        return ExitCode.OK
    say(f"fastdowntime: status: {len(found.unread)} part(s) could not be read (each says why "
        "in its place)")
    return ExitCode.REFUSED


def cmd_timings(args: argparse.Namespace) -> int:
    """``timings [--json]``: the rehearsal timings production will read (exportable)."""
    from orchestrator.runner.admin import timings

    rows = timings(load(args))
    if wants_json(args):
        emit(rows)
    else:
        for row in rows:
            print(f"{row['file']}  {str(row['checksum'])[:12]}  {row['seconds']:.3f} s")
    return ExitCode.OK


__all__ = ["cmd_preflight", "cmd_status", "cmd_timings"]
