"""Actions that run with the service up: live patches, and the nodowntime rollout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import HostSettings
from orchestrator.errors import FailedAfterCommit, FastdowntimeError
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, action
from orchestrator.runner.actions.script import (
    Answers,
    Background,
    Drained,
    Effect,
    Fail,
    Health,
    If,
    Pick,
    ReadSlots,
    Script,
    SetState,
    Sql,
    Ssh,
    Swap,
    When,
    Wrap,
)
from orchestrator.runner.context import Run


@action
class ApplyLivePatches(Action):
    """This stage's live patches, online, one statement at a time, before its code."""

    name = "apply_live_patches"

    def names(self, run: Run) -> tuple[str, ...]:
        return (run.plan.fastdowntime_live_patches if run.stage == "fastdowntime"
                else run.plan.nodowntime_live_patches)

    def script(self, run: Run) -> Script:
        return (Sql(lambda run: [f"db ({name}, autocommit, lock_timeout): {s.sql};"
                                 for name in self.names(run)
                                 for s in run.plan.reports[name].statements],
                    self._apply, key="patches"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"patches": answers["patches"]}

    def _apply(self, run: Run, answers: Answers) -> list[dict[str, Any]]:
        from orchestrator.db.connect import connect
        from orchestrator.db.live import apply_live

        settings = run.config.need("database")
        done: list[dict[str, Any]] = []
        if not self.names(run):
            return done
        conn = connect(settings, what="primary", autocommit=True)
        try:
            for name in self.names(run):
                result = apply_live(conn, run.plan.reports[name], run.texts[name],
                                    revision_table=settings.revision_table,
                                    lock_timeout_s=settings.lock_timeout_s,
                                    retries=settings.live_retries,
                                    backoff_s=settings.live_backoff_s, run_id=run.run_id)
                done.append({"file": name, "skipped": result.skipped,
                             "duration_s": round(result.duration_s, 6)})
        finally:
            conn.close()
        return done


# --- nodowntime -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RollingParams:
    batch_size: int | None = None
    health_timeout_s: float | None = None


@action
class RollingUpdate(Action):
    """Host by host (or batch by batch): new beside old, healthy, swap in haproxy, old drains
    and stops, ``current`` switches. A failing host keeps its previous release; the
    rollout stops there."""

    name = "rolling_update"
    Params = RollingParams

    def size(self, run: Run) -> int:
        settings = run.config.nodowntime
        return min(self.params.batch_size or settings.batch_size, settings.max_out_of_rotation)

    def reads(self, run: Run) -> Script:
        return (Effect(lambda run, answers: run.haproxy.open()), ReadSlots())

    def script(self, run: Run) -> Script:
        timeout = self.params.health_timeout_s or run.config.need("app").health_timeout_s
        hosts, size = list(run.app_hosts), self.size(run)
        nodes: list[Any] = []
        for start in range(0, len(hosts), size):
            batch = hosts[start:start + size]
            nodes += [*self._batch(run, batch, timeout), _journal_batch(batch)]
        return tuple(nodes)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"hosts": [h.name for h in run.app_hosts], "batch_size": self.size(run)}

    def _batch(self, run: Run, batch: list[HostSettings], timeout: float) -> Script:
        """One batch: start and health-check each host's new instance (a failure stops
        what started and the rollout), swap them in, let the old ones drain; then, in
        the background while the next batch starts, stop the old ones and switch
        ``current``."""
        config, release = run.config, run.release
        old = {h.name: run.slots[h.name][0] for h in batch}
        new = {h.name: run.slots[h.name][1] for h in batch}
        names = ", ".join(h.name for h in batch)

        def give_up(upto: list[HostSettings], what: str, why: Any) -> Script:
            """Stop the new instances of ``upto``; the batch keeps its release; fail."""
            return (*(Ssh(ops.stop_commands(config, [h], new[h.name])) for h in upto),
                    Effect(lambda run, answers: run.host_states.update(
                        {h.name: f"kept {run.previous[:12]}" for h in batch})),
                    Fail(what, why))

        def start(i: int, host: HostSettings) -> Script:
            key = f"start:{host.name}"
            return (Ssh(ops.start_commands(config, [host], release, new[host.name]), key=key),
                    If(When(f"starting {release[:12]} on {host.name} fails",
                            lambda run, answers: not answers[key].ok),
                       give_up(batch[:i], "starting the new instance failed",
                               lambda run, answers: f"starting {release[:12]} on "
                               f"{answers[key].results[0].describe()}")))

        def healthy(host: HostSettings) -> Script:
            key, name = f"health:{host.name}", host.name
            return (Health(((host, new[name], release),), timeout, key),
                    If(When(f"{name}'s new instance is unhealthy",
                            lambda run, answers: not answers[key][name].ok),
                       give_up(batch, "its health check failed",
                               lambda run, answers: "health check failed: "
                               f"{answers[key][name].describe()}"),
                       (Effect(lambda run, answers: run.journal.event(
                           "rolling.healthy", host=name,
                           start_to_healthy_s=round(run.clock() - answers["began"], 6))),)))
        nodes: list[Any] = [Effect(lambda run, answers: answers.update(began=run.clock()))]
        for i, host in enumerate(batch):
            nodes += start(i, host)
        for host in batch:
            nodes += healthy(host)
        pairs = tuple((run.server(h, old[h.name]), run.server(h, new[h.name])) for h in batch)
        retired = tuple(o for o, _ in pairs)

        def after_swap(exc: FastdowntimeError) -> Exception:
            return FailedAfterCommit(f"after the swap of {names} to {release[:12]}: {exc}")

        def serving(run: Run, answers: Answers) -> None:
            """From the swap on these hosts serve the new release."""
            run.host_states.update({h.name: f"serving {run.release[:12]}" for h in batch})

        def moved(run: Run, answers: Answers) -> None:
            run.slots.update({h.name: (new[h.name], old[h.name]) for h in batch})

        def stopped(name: str) -> When:
            return When(f"stopping the old instance on {name} fails",
                        lambda run, answers: not answers[f"stop:{name}"].ok)

        def note_problem(name: str) -> Effect:
            return Effect(lambda run, answers: run.problems.append(
                "stopping the old instance: "
                f"{answers[f'stop:{name}'].results[0].describe()}"))
        finish: list[Any] = []
        for host in batch:
            finish += [Ssh(ops.stop_commands(config, [host], old[host.name]),
                           key=f"stop:{host.name}"),
                       If(stopped(host.name), (note_problem(host.name),))]
        switched = f"switch:{names}"
        finish += [Ssh(ops.switch_commands(config, release, batch), key=switched),
                   If(When(f"switching current on {names} fails",
                           lambda run, answers: not answers[switched].ok),
                      (Fail("the rollout stops after the swap (exit 4)",
                            lambda run, answers: f"after the swap of {names} to "
                            f"{release[:12]}: " + "; ".join(
                                r.describe() for r in answers[switched].failed),
                            FailedAfterCommit),))]
        return (*nodes, Swap(pairs), Effect(serving),
                Wrap((Drained(retired, config.need("lb").drain_timeout_s),
                      SetState(tuple(Pick(s) for s in retired), "maint")), after_swap,
                     "a failure from here on comes after the swap: the rollout stops (exit 4)"),
                Effect(moved),
                Background(tuple(finish), "in the background, while the next batch starts"))


def _journal_batch(batch: list[HostSettings]) -> Effect:
    names = [h.name for h in batch]
    return Effect(lambda run, answers: run.journal.event("rolling.batch", hosts=names))


__all__ = ["ApplyLivePatches", "RollingParams", "RollingUpdate"]
