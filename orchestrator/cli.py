"""The ``fastdowntime`` command line: parse, run one command, exit with its code.

The grammar is :mod:`orchestrator.cliparser`; the commands are in
:mod:`orchestrator.commands`. Every command takes ``-c/--config FILE``; flags override
the file; ``--json`` makes stdout one JSON document. Errors are
:class:`~orchestrator.errors.FastdowntimeError` subclasses whose ``exit_code`` becomes
the process's (SPEC section 3).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from orchestrator.cliparser import build_parser
from orchestrator.commands.output import (
    CommandFailed,
    emit,
    error_document,
    out,
    say,
    wants_json,
)
from orchestrator.errors import ExitCode, FailedBeforeCommit, FastdowntimeError, InternalError

Command = Callable[[argparse.Namespace], int]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code.

    SIGTERM and SIGHUP (a service manager's stop, a dropped SSH session, a CI
    cancel) take the same path as Ctrl-C: the run undoes what it did before
    COMMIT, or rolls forward after it, and exits with the code that says
    which. Anything unexpected exits 70: the state is unknown.

    With ``--json`` (anywhere on the line, read before parsing so that a usage
    error is JSON too) an error is printed as ``{"error": {...}}`` on stdout
    as well as said on stderr (:mod:`orchestrator.commands.output`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _json_asked(argv)  # until the line is parsed: a usage error is JSON too
    previous = _route_signals()
    try:
        parser = build_parser()
        if as_json and ("-h" in argv or "--help" in argv):
            # argparse prints help and exits 0: under --json, the help as one document
            said = io.StringIO()
            with contextlib.redirect_stdout(said), contextlib.suppress(SystemExit):
                parser.parse_args(argv)
            emit({"help": said.getvalue()})
            return ExitCode.OK
        args = parser.parse_args(argv)
        as_json = wants_json(args) or getattr(args, "format", None) == "json"
        configure_logging(getattr(args, "verbose", False))
        if getattr(args, "version", False):
            if as_json:
                emit({"version": _version()})
            else:
                out(f"fastdowntime {_version()}")
            return ExitCode.OK
        if args.command is None:
            parser.error("the following arguments are required: command")
        func: Command = args.func
        return func(args)
    except CommandFailed as failed:
        return _failed(failed.error, as_json, failed.document)
    except FastdowntimeError as exc:
        return _failed(exc, as_json)
    except KeyboardInterrupt as exc:
        return _failed(FailedBeforeCommit(f"{exc or 'interrupted'}; nothing was changed"),
                       as_json)
    except Exception as exc:  # noqa: BLE001 - the last resort: say so, exit 70
        import traceback

        say("".join(traceback.format_exception(exc)).rstrip())
        return _failed(InternalError(exc), as_json)
    finally:
        _drop_unwritable_stdout()
        for number, handler in previous.items():
            signal.signal(number, handler)


def _failed(error: FastdowntimeError, as_json: bool,
            document: Mapping[str, Any] | None = None) -> int:
    """Say ``error`` on stderr (and under ``--json`` print its document); its exit code."""
    say(f"fastdowntime: {error}")
    if as_json:
        emit(error_document(error, document))
    return error.exit_code


def _json_asked(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON, read before (or without) parsing it."""
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("--json", "--format=json") or (arg == "--format"
                                                  and argv[index + 1:index + 2] == ["json"]):
            return True
    return False


def _version() -> str:
    """The installed package's version, from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastdowntime")
    except PackageNotFoundError:
        return "(not installed)"


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


__all__ = ["build_parser", "configure_logging", "main"]
