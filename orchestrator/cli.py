"""The ``fastdowntime`` command line: parse, run one command, exit with its code.

The grammar is :mod:`orchestrator.cliparser`; the commands are in
:mod:`orchestrator.commands`. Every command takes ``-c/--config FILE``; flags override
the file. Errors are :class:`~orchestrator.errors.FastdowntimeError` subclasses whose
``exit_code`` becomes the process's (SPEC section 3).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from orchestrator.cliparser import build_parser
from orchestrator.commands.output import say
from orchestrator.errors import ExitCode, FastdowntimeError

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
    """
    previous = _route_signals()
    try:
        args = build_parser().parse_args(argv)
        configure_logging(getattr(args, "verbose", False))
        func: Command = args.func
        return func(args)
    except FastdowntimeError as exc:
        say(f"fastdowntime: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        say(f"fastdowntime: {exc or 'interrupted'}; nothing was changed")
        return ExitCode.FAILED_BEFORE_COMMIT
    except Exception as exc:  # noqa: BLE001 - the last resort: say so, exit 70
        import traceback

        say("".join(traceback.format_exception(exc)).rstrip())
        say(f"fastdowntime: internal error ({type(exc).__name__}: {exc}); the state is "
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


__all__ = ["build_parser", "configure_logging", "main"]
