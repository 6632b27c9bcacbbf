"""``[hooks]``: commands on the orchestrator host and a webhook, at four points of a run.

The events (:data:`~orchestrator.config.HOOK_EVENTS`), in the order a run meets them:

- ``before_window``: right before the fastdowntime stage's steps, after preflight and the
  deploy lock. A failing command refuses the deploy (:class:`Refused`, exit 3): nothing
  has changed yet. Its webhook is then not sent (no window is coming); ``on_failure``
  tells of the refusal.
- ``after_window``: once the fastdowntime stage's steps have ended, however they ended:
  the window closed after COMMIT, or was rolled back, or never opened (a step before it
  failed). Fired at the end of the stage, not inside it, so a slow hook never delays
  the steps that follow the window (stopping the old instances, starting the scripts).
- ``on_failure`` / ``on_done``: once the run has ended, with an error outcome (any exit
  code but 0) or done; after the summary, the run record and the deploy lock are final.

A run without a cut fires no window hook; a dry run, a refused plan or preflight, and a
range with nothing to deploy are not runs and fire none.

For each event the command (if configured) runs first, then the webhook (if any) is
told. Both get the same facts (:meth:`Hooks.facts`): ``event``, ``run_id``, ``who``,
``command`` (deploy or rehearse), ``stage`` (the ``--stage`` option), ``from``, ``to``,
``cut``, ``outcome`` (so far: ``running`` until the run ends), ``window`` (``pending``,
``committed``, ``rolled-back``, ``not-opened``, ``unknown`` when COMMIT's fate is unknown,
``none`` when the run has no window), ``outage_s``, ``exit_code`` (at the end), ``error``,
``config``, ``summary`` (the run's ``run.json``), ``journal`` and ``ts``. A command sees
each as ``FASTDOWNTIME_<KEY>`` (``FASTDOWNTIME_RUN_ID``, ...; an absent value is the
empty string) on top of the orchestrator's own environment; the webhook receives them as
one JSON object (absent: ``null``).

A command is an argv list run without a shell in the config file's directory, stdin
empty, its output captured (the journal keeps the tails). After ``[hooks] timeout_s`` it
is killed with every process of its group. Any failure but a refusing ``before_window``
command, and every webhook failure, is a warning: a journal event and a line on stderr;
the run and its exit code go on as if the hook had not been configured. Ctrl-C while a
hook runs after the window stops the hook, not the run.

Journal events: ``hook.start`` (``hook``, ``kind``: command or webhook, ``argv`` or
``url``), then ``hook.done`` (``duration_s``, ``exit_code`` and output tails, or
``status`` and ``attempts``) or ``hook.failed`` (``error``, ``blocks``: whether it
refused the deploy); a webhook's retries are ``hook.retry`` (``attempt``, ``error``,
``sleep_s``). A webhook URL is journaled as its scheme and host only: its path often
holds a token.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from orchestrator import __version__
from orchestrator.config import Config, HooksSettings
from orchestrator.errors import CommitUnknown, FastdowntimeError, Refused
from orchestrator.runner.context import Run
from orchestrator.runner.journal import mask_text
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.ports import JournalPort

ENV_PREFIX = "FASTDOWNTIME_"
TAIL_LINES = 20
TAIL_CHARS = 2000
WEBHOOK_BACKOFF_S = 0.5
"""The first wait before a webhook retry; it doubles each time (at most 4 s)."""
_KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class Finished:
    """How one hook command ended. ``problem`` is None when it exited 0."""

    exit_code: int | None
    """None: it did not start, or was killed at the timeout."""
    stdout: str
    stderr: str
    duration_s: float
    problem: str | None


def run_command(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None,
                timeout_s: float, timer: Callable[[], float] = time.monotonic) -> Finished:
    """Run ``argv`` (no shell, stdin empty, output captured) in a session of its own; kill
    its whole process group when it outlives ``timeout_s`` or when this is interrupted.
    Never raises for the command's sake: a command that cannot start is a ``problem``."""
    started = timer()

    def spent() -> float:
        return round(timer() - started, 3)

    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=dict(env),
                                start_new_session=True)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Finished(None, "", "", spent(), f"cannot start `{argv[0]}`: {why}")
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out, err = _kill(proc)
        return Finished(None, tail(out), tail(err), spent(),
                        f"did not finish within {timeout_s:g} s: killed")
    except BaseException:
        _kill(proc)
        raise
    code = proc.returncode
    problem = None
    if code < 0:
        problem = f"killed by {_signal_name(-code)}"
    elif code != 0:
        problem = f"exited {code}"
    return Finished(code, tail(out), tail(err), spent(), problem)


def _kill(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGKILL ``proc``'s process group; what it wrote so far (best effort)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        return proc.communicate(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:  # a process that left the group still holds a pipe
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()
        return b"", b""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def tail(data: bytes | str | None) -> str:
    """The last :data:`TAIL_LINES` lines of ``data`` (at most :data:`TAIL_CHARS`), stripped."""
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = "\n".join(text.strip().splitlines()[-TAIL_LINES:])
    return text[-TAIL_CHARS:]


class WebhookFailed(Exception):
    """The webhook did not take an event. ``status`` is its answer, if it gave one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebhookUnavailable(WebhookFailed):
    """A failure worth another attempt: no connection, no answer in time, 408, 429, 5xx."""


def post_json(url: str, body: bytes, timeout_s: float,
              headers: Mapping[str, str] | None = None) -> int:
    """POST ``body`` (JSON) to ``url`` once; the answer's status when it is 2xx.

    Raises :class:`WebhookUnavailable` for a connection error, a timeout (``timeout_s``
    bounds connecting and each wait for the server) or an answer 408, 429 or 5xx;
    :class:`WebhookFailed` for any other answer (a redirect is not followed: it would drop
    the body) or a certificate refused.
    ``user:password@`` in the URL is sent as HTTP Basic authentication."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise WebhookFailed(f"bad URL: {exc}") from None
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", port, timeout=timeout_s)
    sent = {"Content-Type": "application/json", "User-Agent": f"fastdowntime/{__version__}",
            **(headers or {})}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        sent["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=sent)
        response = conn.getresponse()
        response.read(65536)
    except ssl.SSLCertVerificationError as exc:
        raise WebhookFailed(f"certificate refused: {exc.verify_message}") from None
    except TimeoutError:
        raise WebhookUnavailable(f"no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise WebhookUnavailable(str(exc) or type(exc).__name__) from None
    finally:
        conn.close()
    status = response.status
    if 200 <= status < 300:
        return status
    answered = f"answered {status} {response.reason}".strip()
    if status in (408, 429) or status >= 500:
        raise WebhookUnavailable(answered, status=status)
    raise WebhookFailed(answered, status=status)


def redact_url(url: str) -> str:
    """``url`` as scheme and host only (its user, path and query may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/..." if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def window_state(run: Run, error: BaseException | None = None) -> str:
    """Where the fastdowntime stage left the window: ``committed``, ``unknown`` (COMMIT's
    answer was lost), ``rolled-back`` (it opened, nothing committed) or ``not-opened``."""
    if isinstance(error, CommitUnknown):
        return "unknown"
    if run.committed:
        return "committed"
    if run.window_opened is not None:
        return "rolled-back"
    return "not-opened"


def outcome_so_far(run: Run, error: BaseException | None) -> str:
    """The outcome the run is heading for once the fastdowntime stage ended: ``running``
    when it went well, else the outcome its failure gives the run."""
    if error is None:
        return Outcome.FAILED_AFTER_COMMIT if run.problems else Outcome.RUNNING
    if isinstance(error, FastdowntimeError):
        return Outcome.of(error)
    if isinstance(error, KeyboardInterrupt):
        return Outcome.FAILED_AFTER_COMMIT if run.committed else Outcome.ROLLED_BACK
    return Outcome.CRASHED


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"fastdowntime: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        return


class Hooks:
    """The ``[hooks]`` of one run: :meth:`window` around the fastdowntime stage's steps,
    :meth:`run_ended` once the run's record is final.

    ``base`` holds the facts that stay the same for the whole run (``run_id``, ``who``,
    ``from`` ...). ``sleep`` waits between webhook attempts (tests pass ``list.append``),
    ``warn`` says a warning (default: a line on stderr).
    """

    def __init__(self, settings: HooksSettings, journal: JournalPort, base: Mapping[str, Any],
                 *, cwd: Path | None = None, sleep: Callable[[float], None] = time.sleep,
                 timer: Callable[[], float] = time.monotonic,
                 warn: Callable[[str], None] = _warn,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.journal = journal
        self.base = dict(base)
        self.cwd = cwd
        self.sleep = sleep
        self.timer = timer
        self.warn = warn
        self.environ = os.environ if environ is None else environ
        self.window_seen = "none"
        """The window as the last window hook saw it (``none``: no window hook fired)."""

    @classmethod
    def for_run(cls, config: Config, journal: JournalPort, summary: Mapping[str, Any], *,
                stage: str, summary_path: Path, journal_path: Path | None,
                command: str | None = None) -> Hooks:
        """The hooks of the run whose first summary is ``summary`` (``command``: the command
        that runs it, default ``deploy`` or ``rehearse`` as the summary says)."""
        base = {"run_id": summary["id"], "who": summary.get("who"),
                "command": command or ("rehearse" if summary.get("rehearse") else "deploy"),
                "stage": stage, "from": summary.get("from"), "to": summary.get("to"),
                "cut": summary.get("cut"),
                "config": str(config.path) if config.path is not None else None,
                "summary": str(summary_path),
                "journal": str(journal_path) if journal_path is not None else None}
        cwd = config.path.resolve().parent if config.path is not None else None
        return cls(config.hooks, journal, base, cwd=cwd)

    def facts(self, event: str, **state: Any) -> dict[str, Any]:
        """Everything an event tells: ``event``, the run's ``base`` facts, then ``state``
        (``outcome``, ``window``, ``outage_s``, ``exit_code``, ``error``), then ``ts``."""
        facts: dict[str, Any] = {"event": event, **self.base, "outcome": None,
                                 "window": None, "outage_s": None, "exit_code": None,
                                 "error": None}
        facts.update(state)
        if facts["error"] is not None:
            facts["error"] = mask_text(str(facts["error"]))
        facts["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        return facts

    # --- the points of a run -----------------------------------------------------------

    @contextmanager
    def window(self, run: Run) -> Iterator[None]:
        """Around the fastdowntime stage's steps: ``before_window`` first (raising
        :class:`Refused` when its command fails), ``after_window`` once the body ended,
        however it ended (its exception goes on unchanged)."""
        self.before_window()
        try:
            yield
        except BaseException as exc:
            self.after_window(run, exc)
            raise
        self.after_window(run, None)

    def before_window(self) -> None:
        """Fire ``before_window``; :class:`Refused` naming the command and how it failed
        when it fails. Its webhook only warns."""
        facts = self.facts("before_window", outcome=Outcome.RUNNING, window="pending")
        self.window_seen = "pending"
        failed = self._command("before_window", facts, blocks=True)
        if failed is not None:
            self.window_seen = "not-opened"
            raise Refused(f"[hooks] before_window {failed}; the deploy is refused before the "
                          "window: nothing was changed")
        try:
            self._webhook("before_window", facts)
        except Exception as exc:  # noqa: BLE001 - the webhook never blocks a deploy
            self._unexpected("before_window", exc)

    def after_window(self, run: Run, error: BaseException | None) -> None:
        """Fire ``after_window`` for the stage ``run`` that ended with ``error`` (None: it
        went well). Never raises: a failure is a warning."""
        self.window_seen = window_state(run, error)
        self._quietly("after_window", lambda: self.facts(
            "after_window", outcome=outcome_so_far(run, error), window=self.window_seen,
            outage_s=run.outage_s, error=_describe(error, run)))

    def run_ended(self, summary: Mapping[str, Any], error: FastdowntimeError | None) -> None:
        """Fire ``on_done`` (``error`` None) or ``on_failure`` with the run's final
        ``summary``. Never raises."""
        event = "on_done" if error is None else "on_failure"
        self._quietly(event, lambda: self.facts(
            event, outcome=summary.get("outcome"), window=self.window_seen,
            outage_s=summary.get("outage_s"), exit_code=0 if error is None else error.exit_code,
            error=summary.get("error")))

    # --- running them ------------------------------------------------------------------

    def _quietly(self, event: str, facts: Callable[[], dict[str, Any]]) -> None:
        """A hook that only warns: whatever happens in it (Ctrl-C included) stays in it."""
        try:
            told = facts()
            self._command(event, told, blocks=False)
            self._webhook(event, told)
        except KeyboardInterrupt:
            self.journal.event("hook.failed", hook=event, error="interrupted", blocks=False)
            self.warn(f"[hooks] {event}: interrupted; the run goes on")
        except Exception as exc:  # noqa: BLE001 - a hook after the window never stops a run
            self._unexpected(event, exc)

    def _unexpected(self, event: str, exc: Exception) -> None:
        why = mask_text(f"{type(exc).__name__}: {exc}")
        self.journal.event("hook.failed", hook=event, error=why, blocks=False)
        self.warn(f"[hooks] {event}: {why}; the run goes on")

    def _command(self, event: str, facts: Mapping[str, Any], *, blocks: bool) -> str | None:
        """Run ``event``'s command, if any; a description of its failure, or None."""
        argv = getattr(self.settings, event)
        if argv is None:
            return None
        journal = self.journal
        journal.event("hook.start", hook=event, kind="command", argv=list(argv))
        env = {**self.environ, **environment(facts)}
        done = run_command(argv, env=env, cwd=self.cwd, timeout_s=self.settings.timeout_s,
                           timer=self.timer)
        outputs = {"exit_code": done.exit_code, "duration_s": done.duration_s,
                   "stdout": done.stdout, "stderr": done.stderr}
        if done.problem is None:
            journal.event("hook.done", hook=event, kind="command", **outputs)
            return None
        journal.event("hook.failed", hook=event, kind="command", error=done.problem,
                      blocks=blocks, **outputs)
        said = " | ".join(done.stderr.splitlines()[-3:])
        failure = mask_text(f"`{shlex.join(argv)}` {done.problem}" + (f": {said}" if said else ""))
        if not blocks:
            self.warn(f"[hooks] {event} {failure}; the run goes on")
        return failure

    def _webhook(self, event: str, facts: Mapping[str, Any]) -> None:
        """Tell the webhook, if any, retrying transient failures; warn when it fails."""
        url = self.settings.webhook_url
        if url is None:
            return
        shown = redact_url(url)
        journal = self.journal
        journal.event("hook.start", hook=event, kind="webhook", url=shown)
        body = json.dumps(facts, default=str).encode()
        started = self.timer()
        attempts = 0

        def waited(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            pause = state.next_action.sleep if state.next_action else 0.0
            journal.event("hook.retry", hook=event, kind="webhook", attempt=state.attempt_number,
                          error=str(failure), sleep_s=pause)

        retrying = Retrying(
            retry=retry_if_exception_type(WebhookUnavailable),
            stop=stop_after_attempt(self.settings.webhook_retries + 1),
            wait=wait_exponential(multiplier=WEBHOOK_BACKOFF_S, max=4.0),
            sleep=self.sleep, before_sleep=waited, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    status = post_json(url, body, self.settings.webhook_timeout_s,
                                       {"X-Fastdowntime-Event": event})
        except WebhookFailed as exc:
            journal.event("hook.failed", hook=event, kind="webhook", url=shown,
                          error=str(exc), status=exc.status, attempts=attempts,
                          duration_s=round(self.timer() - started, 3), blocks=False)
            tries = f"after {attempts} attempts" if attempts > 1 else "at the first attempt"
            self.warn(f"[hooks] {event}: webhook {shown} failed {tries}: {exc}; "
                      "the run goes on")
            return
        journal.event("hook.done", hook=event, kind="webhook", url=shown, status=status,
                      attempts=attempts, duration_s=round(self.timer() - started, 3))


def environment(facts: Mapping[str, Any]) -> dict[str, str]:
    """``facts`` as ``FASTDOWNTIME_<KEY>`` variables (None: empty; numbers as written)."""
    return {ENV_PREFIX + key.upper(): "" if value is None else str(value)
            for key, value in facts.items()}


def _describe(error: BaseException | None, run: Run) -> str | None:
    if error is None:
        return "; ".join(run.problems) or None
    if isinstance(error, KeyboardInterrupt):
        return str(error) or "interrupted"
    if isinstance(error, FastdowntimeError):
        return str(error)
    return f"{type(error).__name__}: {error}"


__all__ = ["ENV_PREFIX", "Finished", "Hooks", "WebhookFailed", "WebhookUnavailable",
           "environment", "outcome_so_far", "post_json", "redact_url", "run_command", "tail",
           "window_state"]
