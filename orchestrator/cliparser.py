"""The ``fastdowntime`` command line's grammar: every command, its flags and their help.

:func:`build_parser` is the one description of the command line; ``main`` parses with it
and ``completion`` turns it into shell completion scripts. Each subcommand sets ``func``,
the ``cmd_*`` function of :mod:`orchestrator.commands` that runs it.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from orchestrator.commands import checks, completion, deploying, history, planning, sandbox
from orchestrator.errors import BadInput

JSON_HELP = "print one JSON document on stdout; errors too, as {\"error\": {...}}"
RUN_JSON = ("print the run's summary as JSON at the end (what `show RUN --json` prints; "
            "after a failure, beside the error); progress goes to stderr")

_NAMED = (re.compile(r"argument ([^:]+):"),
          re.compile(r"the following arguments are required: ([^,]+)"),
          re.compile(r"unrecognized arguments: (\S+)"))


class _Parser(argparse.ArgumentParser):
    """argparse that raises BadInput (exit 2 with our message) instead of exiting itself."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse hook
        # main() says "fastdowntime: " before every message: name only the command here
        command = self.prog.removeprefix("fastdowntime").strip()
        raise BadInput(f"{command}: {message}" if command else message,
                       key=_bad_input(message))


def _bad_input(message: str) -> str | None:
    """The flag or argument an argparse message is about (``-c/--config``: ``--config``)."""
    for pattern in _NAMED:
        found = pattern.match(message)
        if found:
            return max(found.group(1).strip().split("/"), key=len)
    return None


def _json_flag(parser: argparse.ArgumentParser, text: str = JSON_HELP) -> None:
    """``--json``, which every command takes (SPEC section 3)."""
    # SUPPRESS: given before the command or after it, neither level's default hides it
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=text)


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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets ``func``."""
    common = _Parser(add_help=False)
    # SUPPRESS: the option may come before or after the command without one
    # level's default overwriting the other's value.
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="environment config (TOML); default $FASTDOWNTIME_CONFIG, else "
                             "config/sandbox.toml")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")
    parser = _Parser(prog="fastdowntime", parents=[common],
                     description="Deploy db-stable with a fastdowntime window and a "
                                 "nodowntime rollout.")
    # not argparse's version action: that prints and exits before a later --json is read
    parser.add_argument("--version", action="store_true", default=argparse.SUPPRESS,
                        help="print the version and exit")
    _json_flag(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

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
    _json_flag(plan, "the plan as JSON (SPEC section 3)")
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
    plan.set_defaults(func=planning.cmd_plan)

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
    _json_flag(patches, "same as --format json")
    patches.add_argument("--fail-on", choices=("error", "warning"), default="warning",
                         help="the least severity that makes the exit code 3 (default "
                              "warning: any problem; error lets warnings pass)")
    _source_flags(patches)
    patches.set_defaults(func=planning.cmd_patches)

    preflight = sub.add_parser("preflight", parents=[common],
                               help="run every check; changes nothing")
    preflight.add_argument("--from", dest="from_rev", metavar="REV",
                           help="the deployed revision (default: what the app hosts run)")
    preflight.add_argument("--to", dest="to_rev", metavar="REV", help="the target (default: tip)")
    preflight.add_argument("--approve", action="append", default=[], metavar="PATCH:WHO",
                           help="sign off a slow or unrehearsed cold patch")
    _json_flag(preflight, "the checks as JSON; when one failed, the error beside them")
    preflight.set_defaults(func=checks.cmd_preflight)

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
    _json_flag(status)
    status.set_defaults(func=checks.cmd_status)

    unlock = sub.add_parser("unlock", parents=[common], help="release a dead run's deploy lock")
    unlock.add_argument("--force", action="store_true", help="end the holding session")
    _json_flag(unlock, "whether the lock was held, and by whom, as JSON")
    unlock.set_defaults(func=deploying.cmd_unlock)

    timings = sub.add_parser("timings", parents=[common],
                             help="the rehearsal timings (export with --json)")
    _json_flag(timings, "as JSON, for [database] timings_file")
    timings.set_defaults(func=checks.cmd_timings)

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
        _json_flag(deploy, RUN_JSON)
        deploy.set_defaults(func=deploying.cmd_deploy)

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
    _json_flag(rollback, RUN_JSON)
    rollback.set_defaults(func=deploying.cmd_rollback)

    runs = sub.add_parser("runs", parents=[common], help="the history of runs")
    _json_flag(runs, "a JSON list of every run's summary, newest first")
    runs.set_defaults(func=history.cmd_runs)
    show = sub.add_parser("show", parents=[common], help="one run")
    show.add_argument("run", metavar="RUN", help="a run id, a prefix of one, or last")
    _json_flag(show, "the run's summary as JSON")
    show.set_defaults(func=history.cmd_show)
    report = sub.add_parser(
        "report", parents=[common], help="a run's retrospective; the trend of every run",
        description="A run's retrospective: the window to scale against its deadline, each "
                    "cold patch estimated vs rehearsed vs actual, every host's end state, what "
                    "the probe saw, the timelines. Pages are one self-contained HTML file.")
    report.add_argument("run", metavar="RUN", nargs="?",
                        help="a run id, a prefix of one, or last (optional with --trend)")
    report.add_argument("--html", metavar="FILE", help="write the run's page")
    _json_flag(report, "print the data the run's page is drawn from (without RUN: the "
                       "trend's)")
    report.add_argument("--trend", metavar="FILE",
                        help="write a page of every run's outage and estimate against the "
                             "budget (RUN, if given, is marked)")
    report.set_defaults(func=history.cmd_report)
    resume = sub.add_parser("resume", parents=[common],
                            help="finish or restore a run whose orchestrator died")
    resume.add_argument("run", metavar="RUN")
    _json_flag(resume, RUN_JSON)
    resume.set_defaults(func=deploying.cmd_resume)

    box = sub.add_parser("sandbox", parents=[common],
                         help="the embedded local staging (up, down, status)")
    box.add_argument("action", choices=("up", "down", "status"))
    box.add_argument("--hosts", type=int, default=None, metavar="N",
                     help="number of app hosts for `up` (default 4)")
    box.add_argument("--rows", type=int, default=None, metavar="N",
                     help="`up`: the sample app's item table holds at least N rows "
                          "(generated in the database), so cold patches take seconds")
    _json_flag(box, "what was done (up, down) or every component's state (status) as JSON")
    box.set_defaults(func=sandbox.cmd_sandbox)

    shell = sub.add_parser(
        "completion", parents=[common], help="print the shell completion script (bash, zsh)",
        description="Print the completion script for bash or zsh, written from this "
                    "command line. bash: fastdowntime completion bash > "
                    "~/.local/share/bash-completion/completions/fastdowntime; zsh: "
                    "fastdowntime completion zsh > ~/.zfunc/_fastdowntime, with "
                    "fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc.")
    shell.add_argument("shell", choices=completion.SHELLS)
    _json_flag(shell, "{\"shell\": ..., \"script\": ...} instead of the script alone")
    shell.set_defaults(func=completion.cmd_completion)
    return parser


__all__ = ["build_parser"]
