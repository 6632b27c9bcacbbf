"""``deploy`` (and ``rehearse``): plan, ask, lock, preflight, then the two stages.

1. Plan from what the app hosts run to the target; refuse violations (exit 3).
2. Show the plan and ask, unless ``--yes``. ``--dry-run`` stops after
   preflight and prints every step with its commands and SQL.
3. Take the deploy lock (exit 5 if held), run preflight (exit 3).
4. fastdowntime up to the cut (if there is one), then nodowntime to the target,
   with a probe of ``[lb] public_url`` every 10 ms throughout. ``[hooks]``
   (:mod:`orchestrator.runner.hooks`): ``before_window`` and ``after_window``
   around the fastdowntime stage's steps, ``on_done`` or ``on_failure`` once the
   run's record is final and the lock released.

The run's journal and summary land in ``[runs] dir``; the outcome maps to
the exit codes of SPEC section 3.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.check_result import CheckResult
from orchestrator.config import Config
from orchestrator.errors import (
    BadInput,
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
    InternalError,
    Refused,
    UndoFailed,
)
from orchestrator.estimate import Sizes, StatementTiming
from orchestrator.history import git
from orchestrator.history.checkout import fetch_lock
from orchestrator.instants import iso_ms
from orchestrator.plan import Plan, parse_approvals
from orchestrator.runner.actions import window_serves
from orchestrator.runner.actions.window import PERMISSIONS
from orchestrator.runner.context import Run
from orchestrator.runner.engine import ROLL_FORWARD_HINT, render_steps, run_steps
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.planning import checked_out
from orchestrator.runner.playbook import Playbook, load_playbook
from orchestrator.runner.ports import NullJournal

STAGES = ("all", "fastdowntime", "nodowntime")
TAG_LOCK_S = 30.0
"""How long the cut's tag waits for another command's fetch of the repository; past it the
tag is skipped (journaled as refused): the deploy itself is over."""


@dataclass
class Options:
    """The deploy command's flags."""

    stage: str = "all"
    dry_run: bool = False
    yes: bool = False
    approve: list[str] = field(default_factory=list)
    rehearse: bool = False
    to_rev: str | None = None


def read_texts(config: Config, plan: Plan) -> dict[str, str]:
    """The text of every patch of the plan, as the planner read it at the target, and the
    permissions file (read from git here: the planner does not read it)."""
    wanted = plan.cold_patches + plan.fastdowntime_live_patches + plan.nodowntime_live_patches
    missing = [name for name in wanted if name not in plan.texts]
    if missing:
        raise BadInput(f"no text of {', '.join(missing)} at {plan.to_sha[:12]}")
    texts = {name: plan.texts[name] for name in wanted}
    permissions = config.source.permissions
    if permissions:
        if permissions not in plan.tree:
            raise BadInput(f"[source] permissions {permissions}: no such file at "
                           f"{plan.to_sha[:12]}")
        blob = plan.tree[permissions]
        data = git.read_blobs(config.repository, [blob])[blob]
        try:
            texts[PERMISSIONS] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"[source] permissions {permissions}: not UTF-8: {exc}") from None
    return texts


def deploy(config: Config, options: Options, *, ask: Callable[[str], str] = input,
           show: Callable[[str], None] = print, show_plan: Callable[[Plan], None] | None = None,
           progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the whole sequence; return the run summary. Raises the error of the outcome."""
    from orchestrator.db.lock import DeployLock, new_run_id, whoami
    from orchestrator.remote.ssh import Remote
    from orchestrator.runner.preflight import (
        DEPLOY,
        REHEARSE,
        plan_for,
        preflight,
        rehearsal_timings,
    )

    if options.stage not in STAGES:
        raise BadInput(f"--stage {options.stage!r}: one of {', '.join(STAGES)}", key="--stage")
    settings = config.need("database")
    config.need("app")
    config.need("lb")
    config = checked_out(config)  # the run reads, stages and tags what this fetched
    with Remote(config) as remote:
        planned = plan_for(config, remote, to_rev=options.to_rev,
                           timings=rehearsal_timings(config), read_sizes=True)
        plan = planned.plan
        if show_plan is not None:
            show_plan(plan)
        if plan.violations:
            raise Refused("the plan has violations: " + "; ".join(
                v.describe() for v in plan.violations))
        if options.stage == "nodowntime" and plan.cut is not None:
            raise Refused(f"the range holds cold patches up to {plan.cut[:12]}: run the "
                          "fastdowntime stage first")
        approvals = parse_approvals(options.approve, plan)
        texts = read_texts(config, plan)
        # a bad playbook is bad input, found before anything is checked or locked
        playbook = (load_playbook(config.runs.playbook)
                    if plan.cut is not None and options.stage in ("all", "fastdowntime")
                    else None)
        if not plan.revisions:
            show(f"nothing to deploy: the hosts run {plan.from_sha[:12]}, the target")
            return {"outcome": Outcome.DONE, "revisions": 0, "from": plan.from_sha,
                    "to": plan.to_sha}
        if not options.dry_run and not options.yes:
            answer = ask(f"deploy {len(plan.revisions)} revisions to {plan.to_sha[:12]}"
                         f"{' with a window' if plan.cut else ''}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise FailedBeforeCommit("not confirmed: nothing was changed")
        checked = preflight(config, remote, planned, approvals,
                            REHEARSE if options.rehearse else DEPLOY)
        if options.dry_run:
            _show_checks(list(checked.checks), show)
            _render(config, plan, texts, remote, show, rehearse=options.rehearse)
            checked.raise_for_failures()
            return _dry_run(config, plan, checked.checks)
        checked.raise_for_failures()
        run_id = new_run_id()
        lock = DeployLock(settings, run_id, whoami(), plan.to_json(),
                          [{"patch": p, "who": w} for p, w in approvals.items()])
        lock.acquire()
        try:
            return execute(config, plan, texts, remote, options, run_id, lock, approvals,
                           progress, playbook)
        finally:
            lock.finish(Outcome.FAILED, "the orchestrator stopped before recording an outcome")


def execute(config: Config, plan: Plan, texts: dict[str, str], remote: Any, options: Options,
            run_id: str, lock: Any, approvals: dict[str, str],
            progress: Callable[[dict[str, Any]], None] | None,
            playbook: Playbook | None) -> dict[str, Any]:
    """Run ``plan``'s stages under the held ``lock``: journal, probe, summary, outcome (the
    window with ``playbook``, the nodowntime tail, or for ``stage == "rollback"`` the
    rollback playbook back to ``plan.to_sha``). Raises the outcome's error."""
    from orchestrator.remote.haproxy import Haproxy
    from orchestrator.runner.hooks import Hooks
    from orchestrator.runner.journal import Journal, open_private
    from orchestrator.runner.probe import Probe
    from orchestrator.runner.runs import (
        PLAYBOOK_NAME,
        SUMMARY_NAME,
        save_summary,
        steps_from_journal,
    )

    runs_dir = Path(config.runs.dir)
    journal = Journal(runs_dir, run_id, echo=progress)
    # a user waits the window out: the probe's requests wait as long as a held one may
    # every 10 ms: the run's own probe must not load the hosts it measures (outside probes
    # of the tests and benchmarks ask every 5 ms)
    probe = Probe(config.need("lb").public_url, interval_s=0.01,
                  timeout_s=config.window.hold_needs_s)
    summary: dict[str, Any] = {
        "id": run_id, "who": lock.who, "started": _now(), "finished": None,
        "outcome": Outcome.RUNNING, "from": plan.from_sha, "to": plan.to_sha, "cut": plan.cut,
        "window_budget_s": config.window.budget_s, "window_mode": config.window.mode,
        "estimate": plan.estimate.to_json() if plan.estimate is not None else None,
        "outage_s": None, "window": None,
        "probe": None, "steps": [], "approvals": [{"patch": p, "who": w}
                                                 for p, w in approvals.items()],
        "error": None, "rehearse": options.rehearse, "hosts": {}}
    save_summary(runs_dir, run_id, summary)
    hooks = Hooks.for_run(config, journal, summary, stage=options.stage,
                          summary_path=runs_dir / run_id / SUMMARY_NAME,
                          journal_path=journal.path)
    # resume finishes the window with the steps it ran, from a copy beside the journal (a
    # playbook of the operator's may change or go; the journal masks secret-looking text)
    digest, not_kept = None, None
    if playbook is not None:
        try:
            with open_private(runs_dir / run_id / PLAYBOOK_NAME, "w") as copy:
                copy.write(playbook.text)
            digest = hashlib.sha256(playbook.text.encode()).hexdigest()
        except OSError as exc:  # a full disk: the run goes on, resume loads it by name
            not_kept = f"{PLAYBOOK_NAME} not written ({exc}): resume loads the playbook by name"
    journal.event("run.start", plan=plan.to_json(), stage=options.stage,
                  playbook=playbook.name if playbook else None,
                  playbook_file=str(playbook.path) if playbook else None,
                  playbook_sha256=digest, playbook_not_kept=not_kept,
                  window_serves=window_serves(playbook.steps) if playbook else None,
                  window_mode=config.window.mode)
    probe.start()
    haproxy: Any = None
    error: FastdowntimeError | None = None
    runs: list[Run] = []
    try:
        haproxy = Haproxy(remote, config)
        if playbook is not None and plan.cut is not None:
            run = Run(config, plan, run_id, journal, "fastdowntime", plan.cut, plan.from_sha,
                      texts, remote=remote, rehearse=options.rehearse, haproxy=haproxy,
                      lock=lock)
            runs.append(run)
            staged = _staged_sizes(config, plan) if options.rehearse else {}
            with hooks.window(run):  # before_window may refuse; after_window only warns
                _checked_steps(playbook, run)
                try:
                    _after_window(config, plan, run, journal, staged)
                except Exception as exc:  # noqa: BLE001 - after COMMIT: recorded, rolled forward
                    run.problems.append(f"after the window: {exc}")
        if options.stage == "rollback":  # code only, back to plan.to_sha (runner/rollback.py)
            run = Run(config, plan, run_id, journal, "rollback", plan.to_sha, plan.from_sha,
                      texts, remote=remote, haproxy=haproxy, lock=lock)
            runs.append(run)
            _checked_steps(load_playbook("rollback"), run)
        tail = plan.nodowntime_revisions
        if any(r.problems for r in runs):
            tail = ()  # the window left problems: no rollout on top of them (exit 4)
        if tail and options.stage in ("all", "nodowntime"):
            start = plan.cut or plan.from_sha
            run = Run(config, plan, run_id, journal, "nodowntime", plan.to_sha, start, texts,
                      remote=remote, haproxy=haproxy, lock=lock)
            runs.append(run)
            try:
                _checked_steps(load_playbook("nodowntime"), run)
            except FailedBeforeCommit as exc:
                if any(r.committed for r in runs) or any(
                        s.startswith("serving") for s in run.host_states.values()):
                    raise FailedAfterCommit(f"{exc}; hosts: {_states(run)}") from exc
                raise
    except FastdowntimeError as exc:
        error = exc
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP between the steps
        error = _interrupted(exc, runs, run_id)
    except Exception as exc:  # noqa: BLE001 - unexpected: recorded as crashed, exit 70
        error = InternalError(exc, run_id)
    finally:
        report = probe.stop()
        if haproxy is not None:
            haproxy.close()
        for run in runs:
            for resource in (run.primary, run.control.primary if run.control else None):
                if resource is not None and not resource.closed:
                    resource.close()
            if run.control:
                run.control.close()
    problems = [p for r in runs for p in r.problems]
    if error is None and problems:
        error = FailedAfterCommit("rolled forward past: " + "; ".join(problems) +
                                  f"; hosts: {'; '.join(_states(r) for r in runs)}; "
                                  + ROLL_FORWARD_HINT.replace("RUN", run_id))
    window_run = next((r for r in runs if r.window_opened is not None), None)
    held = None
    if window_run is not None:
        opened, closed = window_run.window_opened, window_run.window_closed
        if opened is not None and closed is not None:
            held = report.within(opened, closed).to_json()
    summary.update({
        "finished": _now(), "probe": report.to_json(), "probe_window": held,
        "failed_requests": report.failures, "longest_wait_s": round(report.longest_wait_s, 3),
        "outage_s": window_run.outage_s if window_run else None,
        "window": None if window_run is None else {
            "opened": _iso(window_run.window_opened), "closed": _iso(window_run.window_closed),
            "budget_s": config.window.budget_s},
        "outcome": Outcome.of(error), "error": None if error is None else str(error),
        "hosts": {h: s for r in runs for h, s in r.host_states.items()},
        "cold_patches": [t for r in runs for t in r.cold_timings]})
    try:
        journal.event("probe.report", **report.to_json())
        summary["steps"] = steps_from_journal(journal.events)
        save_summary(runs_dir, run_id, summary)
        journal.event("run.end", outcome=summary["outcome"], outage_s=summary["outage_s"],
                      probe_outage_s=report.longest_s)
        # once the lock is free a resume may append to this journal: the room it holds past
        # its end goes back first, so that giving it back cannot cut the resume's lines
        journal.release_reserve()
        lock.finish(summary["outcome"], summary["error"])
        hooks.run_ended(summary, error)  # the run's record is final; a failing hook only warns
    finally:
        journal.close()
    if error is not None:
        error.run_id = run_id  # the CLI's --json puts the run's record beside the error
        raise error
    return summary


def _dry_run(config: Config, plan: Plan, checks: tuple[CheckResult, ...]) -> dict[str, Any]:
    """What a dry run returns: a run's summary keys where they apply (no ``id``: nothing was
    recorded), with the plan and every preflight check."""
    return {"outcome": Outcome.DRY_RUN, "from": plan.from_sha, "to": plan.to_sha,
            "cut": plan.cut, "window_budget_s": config.window.budget_s,
            "window_mode": config.window.mode,
            "estimate": plan.estimate.to_json() if plan.estimate is not None else None,
            "plan": plan.to_json(), "checks": [check.to_json() for check in checks]}


def _staged_sizes(config: Config, plan: Plan) -> Sizes:
    """A rehearsal's record of the sizes, before its window, of the tables its cold patches'
    statements touch: production scales the timings by its own (see ``estimate``)."""
    from orchestrator.db.connect import connect
    from orchestrator.db.timings import table_sizes

    tables = {t for name in plan.cold_patches for s in plan.reports[name].statements
              for t in s.tables}
    conn = connect(config.need("database"), what="primary", readonly=True, autocommit=True)
    try:
        return table_sizes(conn, tables)
    finally:
        conn.close()


def _statement_records(plan: Plan, timing: Mapping[str, Any],
                       staged: Sizes) -> list[StatementTiming]:
    """One rehearsed patch's statements: seconds, whether they grow with size, table sizes."""
    statements = plan.reports[timing["filename"]].statements
    seconds = timing.get("statement_s") or []
    if len(seconds) != len(statements):
        return []
    return [StatementTiming(spent, bool(s.grows), {t: staged.get(t) for t in s.tables})
            for s, spent in zip(statements, seconds, strict=True)]


def _after_window(config: Config, plan: Plan, run: Run, journal: Any, staged: Sizes) -> None:
    """Record rehearsal timings and tag the cut, once the window committed."""
    if not run.committed:
        return
    if run.rehearse:
        from orchestrator.db.connect import connect
        from orchestrator.db.timings import median_timings, record_timings

        timed = median_timings([*run.rehearsal_trials, run.cold_timings])
        conn = connect(config.need("database"))
        try:
            record_timings(conn, [(t["filename"], plan.tree_patches[t["filename"]],
                                   float(t["duration_s"]), _statement_records(plan, t, staged))
                                  for t in timed], run.run_id)
        finally:
            conn.close()
        journal.event("rehearsal.timings", patches=timed, window=run.cold_timings,
                      runs=len(run.rehearsal_trials) + 1)
    if config.source.tag_cuts and plan.cut:
        # in the repository read: a URL's mirror keeps it across fetches; pushing it to the
        # URL is the user's choice
        tag = f"fastdowntime/{run.run_id}"
        # another command's fetch of a mirror (or of [source] fetch's remote) rewrites its
        # refs: take turns with it
        try:
            with fetch_lock(config.source.repo, remote=config.source.fetch,
                            cache_dir=config.source.cache_dir, timeout_s=TAG_LOCK_S):
                refused = git.tag(config.repository, tag, plan.cut)
        except BadInput as exc:
            refused = str(exc)
        journal.event("tag", tag=tag, ok=refused is None, error=refused or "",
                      repository=config.repository)


def _states(run: Run) -> str:
    if run.host_states:
        return ", ".join(f"{h}: {s}" for h, s in run.host_states.items())
    if run.committed and run.window_open:
        return ("not confirmed: the window did not close (haproxy may not have put the new "
                "instances in service)")
    if run.committed and run.window_closed is not None and not run.settled:
        # a held window closed at RESUME; the swap after it did not get through
        return ("the old instances still serve, on the new schema (their code works on it); "
                "the cut's instances run beside them, not yet in service")
    return "unchanged"


def _checked_steps(playbook: Playbook, run: Run) -> None:
    """:func:`run_steps`; a failure before COMMIT whose undo went through is called restored
    only as haproxy shows it (:func:`_restored`)."""
    try:
        run_steps(playbook, run)
    except FailedBeforeCommit as exc:
        if isinstance(exc, UndoFailed):
            raise
        told = _restored(run, exc)
        if told is exc:
            raise
        raise told from exc


def _restored(run: Run, error: FailedBeforeCommit) -> FailedBeforeCommit:
    """``error``, when haproxy, read now, routes to a slot of every app host; else an
    :class:`UndoFailed` naming the hosts it routes to through none, so that a run is never
    called restored while a host is down. Haproxy that cannot be read (the LB host gone, an
    interrupt) leaves ``error`` as it was, with a journal event: every undo that had to
    talk to haproxy got its answer."""
    from orchestrator.runner.actions.instances import hosts_unserved

    try:
        down = hosts_unserved(run)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the run ends as it was
        run.journal.event("restore.unconfirmed", error=str(exc) or type(exc).__name__)
        return error
    if not down:
        return error
    run.journal.event("restore.unserved", hosts=down)
    return UndoFailed(f"{error}; but haproxy, read after the undo, routes to no slot of "
                      f"{'; '.join(down)}: run `fastdowntime resume {run.run_id}` once the "
                      "cause is fixed")


def _interrupted(exc: KeyboardInterrupt, runs: list[Run], run_id: str) -> FastdowntimeError:
    """An interrupt outside the steps (the engine handles those inside): after COMMIT the
    run rolled forward as far as it got (exit 4), before it nothing had changed (exit 1)."""
    why = str(exc) or "interrupted"
    if any(r.committed for r in runs):
        return FailedAfterCommit(f"{why} after COMMIT; hosts: "
                                 f"{'; '.join(_states(r) for r in runs)}; "
                                 + ROLL_FORWARD_HINT.replace("RUN", run_id))
    return FailedBeforeCommit(f"{why} before any change: nothing was changed")


def _show_checks(checks: list[CheckResult], show: Callable[[str], None]) -> None:
    show("preflight:")
    for check in checks:
        show(f"  {'ok    ' if check.ok else 'FAILED'} {check.name}: {check.detail}")


def _render(config: Config, plan: Plan, texts: dict[str, str], remote: Any,
            show: Callable[[str], None], *, rehearse: bool = False) -> None:
    """Every step of both stages as the run would execute it: each action's own description
    (:func:`~orchestrator.runner.engine.render_steps`), rendered instead of run. What the
    steps read first is taken from read-only looks at the live state: haproxy's slots
    (``show stat``) and pgbouncer's databases; the nodowntime stage starts from the slots
    the window hands traffic to."""
    from orchestrator.db.connect import connect
    from orchestrator.db.connections import ConnectionControl
    from orchestrator.remote.haproxy import SESSION_SETUP, Haproxy
    from orchestrator.runner.actions import read_slots
    from orchestrator.runner.actions.script import Preview

    settings = config.need("database")
    show("every command runs on its host under `timeout -k 2 <[ssh] command_timeout_s>`")
    primary = connect(settings, what="primary", readonly=True, autocommit=True)
    control = ConnectionControl(settings, primary)
    try:
        with Haproxy(remote, config) as haproxy:
            show(f"`lb:` lines go to haproxy's admin socket over one channel, "
                 f"`{haproxy.host.name}: {' '.join(haproxy.argv)}`, opened once with "
                 + ", ".join(f"`{line}`" for line in SESSION_SETUP))
            probe = Run(config, plan, "dry-run", NullJournal(), "fastdowntime", plan.to_sha,
                        plan.from_sha, texts, remote=remote, haproxy=haproxy, dry_run=True)
            preview = Preview(read_slots(probe))
        show("a failing command fails its step, unless an `if` below it says what follows; "
             "lines under `if ...:` run only then")
        control.prepare()
        if plan.cut is not None:
            playbook = load_playbook(config.runs.playbook)
            run = Run(config, plan, "dry-run", NullJournal(), "fastdowntime", plan.cut,
                      plan.from_sha, texts, remote=remote, dry_run=True, rehearse=rehearse,
                      control=control)
            for line in render_steps(playbook, run, preview):
                show(line)
            if window_serves(playbook.steps) == "new":
                preview = Preview({h: (new, old) for h, (old, new) in preview.slots.items()})
        if plan.nodowntime_revisions:
            run = Run(config, plan, "dry-run", NullJournal(), "nodowntime", plan.to_sha,
                      plan.cut or plan.from_sha, texts, remote=remote, dry_run=True)
            for line in render_steps(load_playbook("nodowntime"), run, preview):
                show(line)
    finally:
        control.close()
        primary.close()


def _now() -> str:
    return iso_ms(time.time())


def _iso(epoch: float | None) -> str | None:
    """``epoch`` to the millisecond, rounded as the journal's instants are (truncating would
    make the summary's window a millisecond shorter than its ``outage_s``)."""
    return None if epoch is None else iso_ms(epoch)


__all__ = ["Options", "deploy", "read_texts"]
