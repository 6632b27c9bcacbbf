"""One root error; each subclass carries its data and the exit code of SPEC section 3.

The CLI catches :class:`FastdowntimeError` at the top and exits with
``error.exit_code`` after printing ``str(error)``. Code below the CLI raises
the most specific subclass and puts what a release manager needs to act in
the message: the file, the line, the host, the revision.
"""

from __future__ import annotations

from typing import ClassVar


class ExitCode:
    """The exit codes shared by every command."""

    OK = 0
    FAILED_BEFORE_COMMIT = 1
    BAD_INPUT = 2
    REFUSED = 3
    FAILED_AFTER_COMMIT = 4
    LOCKED = 5
    INTERNAL = 70


class FastdowntimeError(Exception):
    """Root of every error the orchestrator raises on purpose.

    ``key`` names the input that is bad, when one is: a flag (``--to``), an argument
    (``RUN``) or a config key (dotted: ``window.budget_s``); ``run_id`` the run the error
    ended, when it happened inside one. ``--json`` reports both.
    """

    exit_code: ClassVar[int] = ExitCode.FAILED_BEFORE_COMMIT
    key: str | None = None
    run_id: str | None = None

    def __init__(self, *args: object, key: str | None = None) -> None:
        super().__init__(*args)
        if key is not None:
            self.key = key


class BadInput(FastdowntimeError):
    """Usage, config, revision or patch file is wrong; nothing was touched."""

    exit_code = ExitCode.BAD_INPUT


class ConfigError(BadInput):
    """A config file is invalid. ``path`` is the file, ``key`` the dotted key (or None)."""

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class Refused(FastdowntimeError):
    """A plan violation or a failed preflight check; nothing was touched."""

    exit_code = ExitCode.REFUSED


class FailedBeforeCommit(FastdowntimeError):
    """Failed before the commit point; the old state was restored."""

    exit_code = ExitCode.FAILED_BEFORE_COMMIT


class UndoFailed(FailedBeforeCommit):
    """Failed before the commit point, and putting the old state back failed too: the
    message lists what could not be undone; ``resume RUN`` tries again."""


class FailedAfterCommit(FastdowntimeError):
    """Failed after the commit point; the schema is new and the run rolls forward."""

    exit_code = ExitCode.FAILED_AFTER_COMMIT


class CommitUnknown(FailedAfterCommit):
    """The connection to the primary was lost during COMMIT and the database could not be
    asked whether it committed: the schema may be old or new. Exit 4, since the commit
    point was reached; ``resume RUN`` asks the database, then finishes or restores."""


class Locked(FastdowntimeError):
    """Another run holds the deploy lock."""

    exit_code = ExitCode.LOCKED


class InternalError(FastdowntimeError):
    """Something the orchestrator did not expect (a bug, or the machine failing under it):
    the state is unknown. ``run_id`` names the run it happened in, if any."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, cause: BaseException, run_id: str | None = None) -> None:
        self.cause = cause
        self.run_id = run_id
        what = f"{type(cause).__name__}: {cause}"
        if run_id is None:
            super().__init__(f"internal error ({what}); the state is unknown: if a deploy was "
                             "running, `fastdowntime show last`, then `fastdowntime resume RUN`")
        else:
            super().__init__(f"internal error ({what}); state unknown: `fastdowntime show "
                             f"{run_id}`, then `fastdowntime resume {run_id}`")


class SandboxError(FastdowntimeError):
    """The embedded sandbox could not be brought up, checked or taken down.

    ``component`` names the part (``primary``, ``app2`` ...) and ``log`` the
    file to read, when there is one.
    """

    def __init__(self, component: str, problem: str, log: str | None = None) -> None:
        self.component = component
        self.problem = problem
        self.log = log
        tail = f" (log: {log})" if log else ""
        super().__init__(f"sandbox {component}: {problem}{tail}")
