"""``runs``, ``show`` and ``report``: the record of past runs, read from ``[runs] dir``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.commands.loading import load
from orchestrator.commands.output import emit, wants_json
from orchestrator.errors import BadInput, ExitCode


def cmd_runs(args: argparse.Namespace) -> int:
    """``runs [--json]``: the history of runs, newest first (``--json``: each run's summary)."""
    from orchestrator.runner.runs import list_runs, load_run

    runs_dir = Path(load(args).runs.dir)
    if wants_json(args):
        emit([load_run(runs_dir, run["id"]) for run in list_runs(runs_dir)])
        return ExitCode.OK
    for run in list_runs(runs_dir):
        print(f"{run['id']}  {run.get('outcome', '?'):20}  cut {str(run.get('cut'))[:12]:12}  "
              f"outage {run.get('outage_s')} s  {run.get('who', '')}")
    return ExitCode.OK


def cmd_show(args: argparse.Namespace) -> int:
    """``show RUN|last [--json]``: one run."""
    from orchestrator.runner.runs import load_run
    from orchestrator.views.runs import render_text

    run = load_run(Path(load(args).runs.dir), args.run)
    if wants_json(args):
        emit(run)
    else:
        print(render_text(run))
    return ExitCode.OK


def cmd_report(args: argparse.Namespace) -> int:
    """``report [RUN] [--html FILE] [--json] [--trend FILE]``: the retrospective of a run.

    ``--html`` writes the run's page, ``--json`` prints the data it is drawn
    from (the trend's data without RUN), ``--trend`` writes a page of every
    run's outage and estimate against the budget (marking RUN when given).
    Without any of them, the run as ``show`` prints it. A file that cannot be
    written is bad input (exit 2) naming it.
    """
    from orchestrator.runner.journal import JOURNAL_NAME, read_journal
    from orchestrator.runner.runs import list_runs, load_run
    from orchestrator.views.report import render_report, render_trend, report_data, trend_data
    from orchestrator.views.runs import render_text

    if args.run is None and not args.trend:
        raise BadInput("report: give RUN (a run id, a prefix of one, or last), or --trend FILE",
                       key="RUN")
    runs_dir = Path(load(args).runs.dir)
    run = None if args.run is None else load_run(runs_dir, args.run)
    as_json = wants_json(args)
    said = sys.stderr if as_json else sys.stdout  # --json: stdout holds the JSON alone
    data: dict[str, Any] | None = None
    if run is not None and (args.html or as_json):
        data = report_data(run, read_journal(runs_dir / str(run["id"]) / JOURNAL_NAME))
        if args.html:
            _write_page(args.html, render_report(data), "--html")
            print(f"wrote {args.html}", file=said)
    if args.trend:
        trend = trend_data([load_run(runs_dir, line["id"]) for line in list_runs(runs_dir)],
                           current=None if run is None else str(run["id"]))
        _write_page(args.trend, render_trend(trend), "--trend")
        print(f"wrote {args.trend}", file=said)
        data = trend if data is None else data
    if as_json:
        emit(data)
    elif run is not None and not args.html and not args.trend:
        print(render_text(run))
    return ExitCode.OK


def _write_page(path: str, page: str, flag: str) -> None:
    """Write a report page; a file that cannot be written is BadInput naming it."""
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"report {flag} {path}: cannot write it ({exc.strerror or exc})",
                       key=flag) from exc


__all__ = ["cmd_report", "cmd_runs", "cmd_show"]
