"""The ``fastdowntime`` command line: one function per command; parse, call, print, exit.

Every command takes ``-c/--config FILE``; flags override the file. Errors are
:class:`~orchestrator.errors.FastdowntimeError` subclasses whose ``exit_code``
becomes the process's (SPEC section 3).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from rich.console import Console

from orchestrator.config import Config, load_config
from orchestrator.errors import BadInput, ExitCode, FastdowntimeError

if TYPE_CHECKING:
    from orchestrator.plan import PathRules

DEFAULT_CONFIG = Path("config/sandbox.toml")

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises BadInput (exit 2 with our message) instead of exiting itself."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse hook
        # main() says "fastdowntime: " before every message: name only the command here
        command = self.prog.removeprefix("fastdowntime").strip()
        raise BadInput(f"{command}: {message}" if command else message)


def configure_logging(verbose: bool = False) -> None:
    """structlog to stderr: key=value lines, millisecond UTC timestamps."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *args: _STDERR_LOGGER,
        cache_logger_on_first_use=False,
    )


class _StderrLogger:
    """structlog's PrintLogger on ``sys.stderr`` (looked up at each line, so a replaced
    stderr, in tests or by rich, is honoured) whose failed writes are dropped: a log line
    that cannot be written (stderr redirected to a full disk, a closed pipe) never fails
    the step that logged it."""

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            try:
                print(message, file=sys.stderr, flush=True)
            except (OSError, ValueError):
                return

    log = debug = info = warn = warning = err = error = critical = exception = msg
    fatal = failure = msg


_STDERR_LOGGER = _StderrLogger()


def _print(text: str) -> None:
    """``print`` to stdout, best effort: once a deploy has run, output that cannot be
    written (stdout redirected to a full disk) must not turn its exit code into 70."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        return


def load(args: argparse.Namespace, *, required: bool = True) -> Config:
    """The config named by ``-c``, else ``config/sandbox.toml`` when present.

    With ``required=False`` (commands that work on a laptop with flags alone)
    a missing default file gives the built-in defaults instead of an error.
    """
    path = getattr(args, "config", None)
    if path is not None:
        return load_config(path)
    if DEFAULT_CONFIG.exists() or required:
        return load_config(DEFAULT_CONFIG)
    return load_config(None)


# --- plan and patches ----------------------------------------------------------


def path_rules(config: Config, args: argparse.Namespace) -> PathRules:
    """The config's ``[source]`` path rules and revision table, overridden by the flags."""
    from orchestrator.plan import PathRules
    from orchestrator.runner.planning import rules_for

    rules = rules_for(config)
    return PathRules(getattr(args, "patches_glob", None) or rules.patches,
                     tuple(getattr(args, "schema_files", None) or rules.schema_files),
                     getattr(args, "revision_table", None) or rules.revision_table)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch the source, read db-stable, classify and cut it; print the plan.
    Changes nothing but the fetched refs (a URL's mirror, a ``--fetch`` remote's branch).

    With ``--check``, exit 3 when the plan has violations (for CI). With ``--sql``, print
    the SQL a deploy of the plan sends instead (``--json``: the plan with it under
    ``sql``); it connects nowhere, so it needs ``--from``.
    """
    from orchestrator.runner.planning import checked_out
    from orchestrator.runner.preflight import offline_timings, plan_for

    if args.permissions and not args.sql:
        raise BadInput("plan --permissions is for --sql")
    if args.sql and not args.from_rev:
        raise BadInput("plan --sql works offline: give --from REV, the revision the hosts run "
                       "(`fastdowntime status` shows it)")
    config = _with_source_flags(load(args, required=False), args)
    rules = path_rules(config, args)
    config = checked_out(config)
    with _hosts(config, needed=not args.from_rev) as remote:
        plan = plan_for(config, remote, from_rev=args.from_rev, to_rev=args.to_rev,
                        rules=rules, timings=offline_timings(config)).plan
    sql = _plan_sql(config, plan, rules.revision_table) if args.sql else None
    if args.json:
        data = plan.to_json()
        if sql is not None:
            data["sql"] = sql
        print(json.dumps(data, indent=2))
    elif sql is not None:
        print(sql)
    else:
        from orchestrator.views.text import print_plan

        print_plan(plan, Console())
    return ExitCode.REFUSED if args.check and plan.violations else ExitCode.OK


def _with_source_flags(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``plan``'s ``--repo``, ``--branch``, ``--fetch`` and ``--permissions``
    over its ``[source]`` (``--repo`` without ``--fetch`` reads that repository as it
    stands, whatever ``[source] fetch`` says of the configured one)."""
    import dataclasses

    source = config.source
    changes: dict[str, Any] = {"branch": args.branch or source.branch,
                               "permissions": args.permissions or source.permissions}
    if args.repo:
        changes.update(repo=args.repo, fetch=None)
    if args.fetch:
        changes["fetch"] = args.fetch
    return dataclasses.replace(config, source=dataclasses.replace(source, **changes))


def _plan_sql(config: Config, plan: Any, revision_table: str) -> str:
    """``plan --sql``'s text: the patch texts from the plan, the permissions file's from the
    repository planned."""
    from orchestrator.runner.deploy import read_texts
    from orchestrator.runner.sqlreview import plan_sql

    return "\n".join(plan_sql(config, plan, read_texts(config, plan), revision_table))


def cmd_patches(args: argparse.Namespace) -> int:
    """``patches FILE...``: lint patch files (kind, statements, locks, problems with rule codes).

    Every file is reported whatever the others hold. Exit 2 when a file cannot
    be read or parsed, else 3 when a problem is at least as severe as
    ``--fail-on`` (default warning: any problem), else 0.
    """
    from orchestrator.patchfiles import exit_code, expand, lint_files, summary
    from orchestrator.views import lint as lintout

    rules = path_rules(load(args, required=False), args)
    reports = lint_files(expand(args.files, rules.patches), rules.revision_table)
    if args.format == "json":
        print(json.dumps([r.to_json() for r in reports], indent=2))
    elif args.format == "github":
        for command in lintout.github(reports):
            print(command)
    elif args.format == "sarif":
        print(json.dumps(lintout.sarif(reports, lintout.tool_version()), indent=2))
    else:
        from orchestrator.views.text import print_patches

        print_patches(reports, Console())
    code = exit_code(reports, args.fail_on)
    if code != ExitCode.OK:
        print(f"fastdowntime: patches: {summary(reports)}", file=sys.stderr)
    return code


# --- preflight, lock, timings ------------------------------------------------------


@contextlib.contextmanager
def _hosts(config: Config, needed: bool = True) -> Iterator[Any]:
    """SSH to the config's hosts for one command (None when not needed or not configured)."""
    if not needed or config.ssh is None or not config.hosts:
        yield None
        return
    from orchestrator.runner.preflight import connect_hosts

    with connect_hosts(config) as remote:
        yield remote


def cmd_preflight(args: argparse.Namespace) -> int:
    """``preflight``: run every check; change nothing. Exit 3 naming every failed check."""
    from orchestrator.plan import parse_approvals
    from orchestrator.runner.preflight import plan_for, preflight, rehearsal_timings

    config = load(args)
    timings = rehearsal_timings(config)
    with _hosts(config) as remote:
        planned = plan_for(config, remote, from_rev=args.from_rev, to_rev=args.to_rev,
                           timings=timings, read_sizes=True)
        checked = preflight(config, remote, planned, parse_approvals(args.approve,
                                                                     planned.plan))
    if args.json:
        print(json.dumps(checked.to_json(), indent=2, default=str))
    else:
        from orchestrator.views.text import print_checks

        print_checks(checked.checks, Console())
    checked.raise_for_failures(brief=True)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    """``status [--json]``: what is deployed where, what is pending, the last run, the lock.

    Changes nothing. A part that cannot be read says why in its place and the rest is
    shown all the same; exit 0 when every part was read, 3 when one could not be.
    """
    from orchestrator.runner.status import status

    found = status(load(args))
    if args.json:
        print(json.dumps(found.to_json(), indent=2, default=str))
    else:
        from orchestrator.views.status import print_status

        print_status(found, Console())
    if found.complete:
        return ExitCode.OK
    _say(f"fastdowntime: status: {len(found.unread)} part(s) could not be read (each says why "
         "in its place)")
    return ExitCode.REFUSED


def cmd_unlock(args: argparse.Namespace) -> int:
    """``unlock --force``: end the session holding the deploy lock and mark its run."""
    from orchestrator.runner.admin import unlock

    if not args.force:
        raise BadInput("unlock: give --force to end another run's session")
    released = unlock(load(args))
    print("the deploy lock was free" if released is None
          else f"released the deploy lock held by {released.describe()}")
    return ExitCode.OK


def cmd_timings(args: argparse.Namespace) -> int:
    """``timings [--json]``: the rehearsal timings production will read (exportable)."""
    from orchestrator.runner.admin import timings

    rows = timings(load(args))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['file']}  {str(row['checksum'])[:12]}  {row['seconds']:.3f} s")
    return ExitCode.OK


# --- deploy, rehearse, history ------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    """``deploy``: the whole sequence (``rehearse``: the same, recording patch timings)."""
    from orchestrator.runner.deploy import Options, deploy
    from orchestrator.views.progress import Progress
    from orchestrator.views.text import print_plan

    config = load(args)
    console = Console()
    options = Options(stage=args.stage, dry_run=args.dry_run, yes=args.yes,
                      approve=args.approve, rehearse=args.command == "rehearse",
                      to_rev=args.to_rev)
    with Progress(console, config.window.budget_s) as progress:
        summary = deploy(config, options, show=_print, progress=progress,
                         show_plan=lambda plan: print_plan(plan, console))
    if summary.get("id"):
        _print(f"run {summary['id']}: {summary['outcome']}, outage {summary['outage_s']} s "
               f"(budget {summary['window_budget_s']} s), seen by the probe "
               f"{(summary.get('probe') or {}).get('longest_s')} s")
    return ExitCode.OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [--to RELEASE]``: code only, host by host, to a release the hosts keep."""
    from orchestrator.runner.rollback import rollback
    from orchestrator.views.progress import Progress

    config = load(args)
    with Progress(Console(), config.window.budget_s) as progress:
        summary = rollback(config, args.to, yes=args.yes, show=_print, progress=progress)
    _print(f"run {summary['id']}: {summary['outcome']}: every app host serves "
           f"{str(summary['to'])[:12]}; failed requests {summary.get('failed_requests')}")
    return ExitCode.OK


def cmd_runs(args: argparse.Namespace) -> int:
    """``runs [--json]``: the history of runs, newest first (``--json``: each run's summary)."""
    from orchestrator.runner.runs import list_runs, load_run

    runs_dir = Path(load(args).runs.dir)
    if args.json:
        print(json.dumps([load_run(runs_dir, run["id"]) for run in list_runs(runs_dir)],
                         indent=2, default=str))
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
    print(json.dumps(run, indent=2, default=str) if args.json else render_text(run))
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
        raise BadInput("report: give RUN (a run id, a prefix of one, or last), or --trend FILE")
    runs_dir = Path(load(args).runs.dir)
    run = None if args.run is None else load_run(runs_dir, args.run)
    said = sys.stderr if args.json else sys.stdout  # --json: stdout holds the JSON alone
    data: dict[str, Any] | None = None
    if run is not None and (args.html or args.json):
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
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    elif run is not None and not args.html and not args.trend:
        print(render_text(run))
    return ExitCode.OK


def _write_page(path: str, page: str, flag: str) -> None:
    """Write a report page; a file that cannot be written is BadInput naming it."""
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"report {flag} {path}: cannot write it ({exc.strerror or exc})") from exc


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume RUN``: finish or restore a run whose orchestrator died."""
    from orchestrator.runner.resume import resume

    summary = resume(load(args), args.run, show=_print)
    _print(f"run {summary['id']}: {summary['outcome']}")
    return ExitCode.OK


# --- sandbox -----------------------------------------------------------------


def cmd_sandbox(args: argparse.Namespace) -> int:
    """``sandbox up [--hosts N] [--rows N] | down | status [--json]``."""
    from orchestrator.sandbox import manager
    from orchestrator.sandbox.layout import MAX_APP_HOSTS, MAX_ROWS

    if args.hosts is not None and not 1 <= args.hosts <= MAX_APP_HOSTS:
        raise BadInput(f"sandbox up --hosts: must be between 1 and {MAX_APP_HOSTS}")
    if args.rows is not None and not 0 <= args.rows <= MAX_ROWS:
        raise BadInput(f"sandbox up --rows: must be between 0 and {MAX_ROWS:,}")
    if args.action == "up":
        layout = manager.up(args.hosts, args.rows)
        print(f"sandbox up: {layout.app_hosts} app hosts under {layout.base}")
        config = DEFAULT_CONFIG if layout.app_hosts == 4 else layout.base / "sandbox.toml"
        print(f"config: {config}")
        return ExitCode.OK
    if args.action == "down":
        removed = manager.down()
        print("sandbox down" if removed else "no sandbox to take down")
        return ExitCode.OK
    state = manager.status()
    if args.json:
        print(json.dumps(state, indent=2, sort_keys=True))
    else:
        from orchestrator.views.text import print_sandbox_status

        print_sandbox_status(state, Console())
    components = state["components"]
    all_up = bool(components) and all(c["state"] == "up" for c in components.values())
    return ExitCode.OK if all_up else ExitCode.FAILED_BEFORE_COMMIT


# --- parser ------------------------------------------------------------------


def _source_flags(parser: argparse.ArgumentParser) -> None:
    """The ``[source]`` keys as flags, for use without a config file."""
    parser.add_argument("--patches", dest="patches_glob", metavar="GLOB",
                        help="patch files (default [source] patches, "
                             "database/schema/patch-*.sql)")
    parser.add_argument("--schema-files", nargs="+", metavar="GLOB",
                        help="files that may change together with a patch "
                             "(default [source] schema_files, database/schema/**)")
    parser.add_argument("--revision-table", metavar="NAME",
                        help="the table patches record themselves in "
                             "(default [database] revision_table, LaunchpadDatabaseRevision)")


def _version() -> str:
    """The installed package's version, from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastdowntime")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets ``func``."""
    common = _Parser(add_help=False)
    # SUPPRESS: the option may come before or after the command without one
    # level's default overwriting the other's value.
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="environment config (TOML); default config/sandbox.toml")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")
    parser = _Parser(prog="fastdowntime", parents=[common],
                     description="Deploy db-stable with a fastdowntime window and a "
                                 "nodowntime rollout.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    plan = sub.add_parser("plan", parents=[common], help="print the plan; changes nothing")
    plan.add_argument("--repo", metavar="DIR|URL",
                      help="the repository: a local path (read as it stands), or a URL, "
                           "fetched into its mirror first (default [source] repo)")
    plan.add_argument("--branch", metavar="B", help="the branch (default [source] branch)")
    plan.add_argument("--fetch", metavar="REMOTE",
                      help="fetch the branch from this remote of the local repository first "
                           "and plan it as the remote has it (default [source] fetch)")
    plan.add_argument("--from", dest="from_rev", metavar="REV",
                      help="the deployed revision (default: what the app hosts run)")
    plan.add_argument("--to", dest="to_rev", metavar="REV", help="the target (default: tip)")
    plan.add_argument("--json", action="store_true", help="the plan as JSON (SPEC section 3)")
    plan.add_argument("--check", action="store_true",
                      help="exit 3 when the plan has violations (for CI)")
    plan.add_argument("--sql", action="store_true",
                      help="print the SQL a deploy sends, in order, for review (psql runs "
                           "it): the live patches' statements and the window's transaction "
                           "with its timeouts, revision rows and permissions; offline, so "
                           "--from is required; with --json, the plan with this text under "
                           "\"sql\"")
    plan.add_argument("--permissions", metavar="PATH",
                      help="the permissions file run in the window's transaction, for --sql "
                           "(default [source] permissions)")
    _source_flags(plan)
    plan.set_defaults(func=cmd_plan)

    patches = sub.add_parser(
        "patches", parents=[common],
        help="lint patch files: kind, statements, locks, problems with rule codes",
        description="Lint patch files. Every file is reported, whatever the others hold. "
                    "Exit 0 when no problem is at least as severe as --fail-on, 3 when one "
                    "is, 2 when a file cannot be read or parsed. The rules: "
                    "docs/patch-rules.md.")
    patches.add_argument("files", nargs="+", metavar="FILE",
                         help="patch files; a directory stands for the files under it that "
                              "match --patches (relative to it), and those directly in it "
                              "that match its last part (patch-*.sql)")
    patches.add_argument("--format", choices=("text", "json", "github", "sarif"),
                         default="text",
                         help="text (default), json, github (workflow commands for GitHub "
                              "Actions annotations) or sarif (SARIF 2.1.0, for code scanning)")
    patches.add_argument("--json", dest="format", action="store_const", const="json",
                         default=argparse.SUPPRESS, help="same as --format json")
    patches.add_argument("--fail-on", choices=("error", "warning"), default="warning",
                         help="the least severity that makes the exit code 3 (default "
                              "warning: any problem; error lets warnings pass)")
    _source_flags(patches)
    patches.set_defaults(func=cmd_patches)

    preflight = sub.add_parser("preflight", parents=[common],
                               help="run every check; changes nothing")
    preflight.add_argument("--from", dest="from_rev", metavar="REV",
                           help="the deployed revision (default: what the app hosts run)")
    preflight.add_argument("--to", dest="to_rev", metavar="REV", help="the target (default: tip)")
    preflight.add_argument("--approve", action="append", default=[], metavar="PATCH:WHO",
                           help="sign off a slow or unrehearsed cold patch")
    preflight.add_argument("--json", action="store_true", help="the results as JSON")
    preflight.set_defaults(func=cmd_preflight)

    status = sub.add_parser(
        "status", parents=[common],
        help="what is deployed where, what is pending, the last run, the lock",
        description="What is deployed where, at a glance: each app and scripts host's "
                    "revision, the instance slot haproxy serves and its health; the "
                    "database's patch level and standbys' replay lag; what `plan` would do "
                    "next and the estimated window; the last run, runs that need `resume`, "
                    "and who holds the deploy lock. Changes nothing. A part that cannot be "
                    "read (a host unreachable, the database down) says why in its place; "
                    "the rest is shown all the same. Exit 0 when every part was read, 3 when "
                    "one could not be (an unhealthy instance, a lagging standby or a held "
                    "lock is what was read: exit 0).")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(func=cmd_status)

    unlock = sub.add_parser("unlock", parents=[common], help="release a dead run's deploy lock")
    unlock.add_argument("--force", action="store_true", help="end the holding session")
    unlock.set_defaults(func=cmd_unlock)

    timings = sub.add_parser("timings", parents=[common],
                             help="the rehearsal timings (export with --json)")
    timings.add_argument("--json", action="store_true", help="as JSON, for [database] timings_file")
    timings.set_defaults(func=cmd_timings)

    for name, text in (("deploy", "the whole sequence"),
                       ("rehearse", "deploy on staging, recording per-patch timings")):
        deploy = sub.add_parser(name, parents=[common], help=text)
        deploy.add_argument("--dry-run", action="store_true",
                            help="read-only: preflight, then every step's commands and SQL")
        deploy.add_argument("--yes", action="store_true", help="do not ask")
        deploy.add_argument("--to", dest="to_rev", metavar="REV",
                            help="the target revision (default: the branch tip)")
        deploy.add_argument("--stage", choices=("all", "fastdowntime", "nodowntime"),
                            default="all")
        deploy.add_argument("--approve", action="append", default=[], metavar="PATCH:WHO",
                            help="sign off a slow or unrehearsed cold patch")
        deploy.set_defaults(func=cmd_deploy)

    rollback = sub.add_parser(
        "rollback", parents=[common],
        help="code only, host by host behind haproxy, back to a release the hosts keep",
        description="Roll the code back host by host behind haproxy, as nodowntime rolls "
                    "forward; the database is never touched. Refused (exit 3) for a release "
                    "that is not an ancestor of the deployed one, older than the one that "
                    "served before the last window, or not kept on every host.")
    rollback.add_argument("--to", metavar="RELEASE",
                          help="the release (default: the newest other one every host keeps)")
    rollback.add_argument("--yes", action="store_true", help="do not ask")
    rollback.set_defaults(func=cmd_rollback)

    runs = sub.add_parser("runs", parents=[common], help="the history of runs")
    runs.add_argument("--json", action="store_true",
                      help="a JSON list of every run's summary, newest first")
    runs.set_defaults(func=cmd_runs)
    show = sub.add_parser("show", parents=[common], help="one run")
    show.add_argument("run", metavar="RUN", help="a run id, a prefix of one, or last")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    report = sub.add_parser(
        "report", parents=[common], help="a run's retrospective; the trend of every run",
        description="A run's retrospective: the window to scale against its deadline, each "
                    "cold patch estimated vs rehearsed vs actual, every host's end state, what "
                    "the probe saw, the timelines. Pages are one self-contained HTML file.")
    report.add_argument("run", metavar="RUN", nargs="?",
                        help="a run id, a prefix of one, or last (optional with --trend)")
    report.add_argument("--html", metavar="FILE", help="write the run's page")
    report.add_argument("--json", action="store_true",
                        help="print the data the run's page is drawn from (without RUN: "
                             "the trend's)")
    report.add_argument("--trend", metavar="FILE",
                        help="write a page of every run's outage and estimate against the "
                             "budget (RUN, if given, is marked)")
    report.set_defaults(func=cmd_report)
    resume = sub.add_parser("resume", parents=[common],
                            help="finish or restore a run whose orchestrator died")
    resume.add_argument("run", metavar="RUN")
    resume.set_defaults(func=cmd_resume)

    sandbox = sub.add_parser("sandbox", parents=[common],
                             help="the embedded local staging (up, down, status)")
    sandbox.add_argument("action", choices=("up", "down", "status"))
    sandbox.add_argument("--hosts", type=int, default=None, metavar="N",
                         help="number of app hosts for `up` (default 4)")
    sandbox.add_argument("--rows", type=int, default=None, metavar="N",
                         help="`up`: the sample app's item table holds at least N rows "
                              "(generated in the database), so cold patches take seconds")
    sandbox.add_argument("--json", action="store_true", help="status as JSON")
    sandbox.set_defaults(func=cmd_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code.

    SIGTERM and SIGHUP (a service manager's stop, a dropped SSH session, a CI
    cancel) take the same path as Ctrl-C: the run undoes what it did before
    COMMIT, or rolls forward after it, and exits with the code that says
    which. Anything unexpected exits 70: the state is unknown.
    """
    previous = _route_signals()
    try:
        args = build_parser().parse_args(argv)
        configure_logging(getattr(args, "verbose", False))
        func: Command = args.func
        return func(args)
    except FastdowntimeError as exc:
        _say(f"fastdowntime: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        _say(f"fastdowntime: {exc or 'interrupted'}; nothing was changed")
        return ExitCode.FAILED_BEFORE_COMMIT
    except Exception as exc:  # noqa: BLE001 - the last resort: say so, exit 70
        import traceback

        _say("".join(traceback.format_exception(exc)).rstrip())
        _say(f"fastdowntime: internal error ({type(exc).__name__}: {exc}); the state is "
             "unknown: if a deploy was running, `fastdowntime show last`, then "
             "`fastdowntime resume RUN`")
        return ExitCode.INTERNAL
    finally:
        _drop_unwritable_stdout()
        for number, handler in previous.items():
            signal.signal(number, handler)


def _drop_unwritable_stdout() -> None:
    """Flush stdout; if it cannot be written, drop what it holds, so the interpreter's own
    flush at exit does not replace the command's exit code with 120."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the exit
        except OSError:
            return


def _interrupt(number: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(number).name} received")


def _route_signals() -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt naming the signal (Python's own
    SIGINT handler names none); SIGPIPE is ignored (a closed pipe is an error on the write,
    which never stops a run). Returns the old handlers."""
    previous: dict[int, Any] = {}
    wanted: dict[int, Any] = {signal.SIGINT: _interrupt, signal.SIGTERM: _interrupt,
                              signal.SIGHUP: _interrupt, signal.SIGPIPE: signal.SIG_IGN}
    for number, handler in wanted.items():
        try:
            previous[number] = signal.signal(number, handler)
        except ValueError:  # not the main thread (a test calling main): leave them be
            break
    return previous


def _say(message: str) -> None:
    """A line on stderr, if stderr is still there."""
    try:
        print(message, file=sys.stderr)
    except (OSError, ValueError):
        return
