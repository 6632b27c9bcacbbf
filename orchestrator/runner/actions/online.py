"""Actions that run with the service up: live patches, and the nodowntime rollout."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import (
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
)
from orchestrator.remote import haproxy_wire as hap
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, _lines, action
from orchestrator.runner.actions.instances import read_slots
from orchestrator.runner.context import Run


@action
class ApplyLivePatches(Action):
    """This stage's live patches, online, one statement at a time, before its code."""

    name = "apply_live_patches"

    def names(self, run: Run) -> tuple[str, ...]:
        return (run.plan.fastdowntime_live_patches if run.stage == "fastdowntime"
                else run.plan.nodowntime_live_patches)

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.connect import connect
        from orchestrator.db.live import apply_live

        settings = run.config.need("database")
        done: list[dict[str, Any]] = []
        if not self.names(run):
            return {"patches": done}
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
        return {"patches": done}

    def render(self, run: Run) -> list[str]:
        lines = []
        for name in self.names(run):
            lines += [f"db ({name}, autocommit, lock_timeout): {s.sql};"
                      for s in run.plan.reports[name].statements]
        return lines


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

    def do(self, run: Run) -> dict[str, Any]:
        settings = run.config.nodowntime
        size = min(self.params.batch_size or settings.batch_size, settings.max_out_of_rotation)
        app = run.config.need("app")
        timeout = self.params.health_timeout_s or app.health_timeout_s
        run.haproxy.open()
        run.slots = read_slots(run)
        hosts = list(run.app_hosts)
        done: list[str] = []
        # A drained old instance no longer serves: stopping it and switching `current`
        # overlap the next batch's start instead of delaying it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retire") as retire:
            pending: list[Future[None]] = []
            try:
                for start in range(0, len(hosts), size):
                    batch = hosts[start:start + size]
                    pending.append(self._batch(run, batch, timeout, retire))
                    done += [h.name for h in batch]
                    run.journal.event("rolling.batch", hosts=[h.name for h in batch])
            finally:
                for future in pending:
                    future.result()
        return {"hosts": done, "batch_size": size}

    def _batch(self, run: Run, batch: list[Any], timeout: float,
               retire: ThreadPoolExecutor) -> Future[None]:
        news = {h.name: run.slots[h.name][1] for h in batch}
        started = []
        began = run.clock()
        try:
            for host in batch:
                result = ops.start_instance(run.remote, run.config, host, run.release,
                                            news[host.name])
                if not result.ok:
                    raise FailedBeforeCommit(f"starting {run.release[:12]} on "
                                             f"{result.describe()}")
                started.append(host)
            for host in batch:
                health = ops.wait_healthy(run.config, host, news[host.name], run.release,
                                          timeout)
                if not health.ok:
                    raise FailedBeforeCommit(f"health check failed: {health.describe()}")
                run.journal.event("rolling.healthy", host=host.name,
                                  start_to_healthy_s=round(run.clock() - began, 6))
        except FailedBeforeCommit:
            for host in started:
                ops.stop_instance(run.remote, run.config, host, news[host.name])
            for host in batch:
                run.host_states[host.name] = f"kept {run.previous[:12]}"
            raise
        pairs = [(run.server(h, run.slots[h.name][0]), run.server(h, news[h.name]))
                 for h in batch]
        run.haproxy.swap(pairs)
        for host in batch:  # from here on these hosts serve the new release
            run.host_states[host.name] = f"serving {run.release[:12]}"
        old = [o for o, _ in pairs]
        names = ", ".join(h.name for h in batch)
        try:
            run.haproxy.wait_drained(old, run.config.need("lb").drain_timeout_s)
            run.haproxy.set_state(old, "maint")
        except FastdowntimeError as exc:
            raise FailedAfterCommit(f"after the swap of {names} to {run.release[:12]}: "
                                    f"{exc}") from exc
        ports = {h.name: run.slots[h.name][0] for h in batch}
        for host in batch:
            run.slots[host.name] = (news[host.name], ports[host.name])

        def finish() -> None:
            for host in batch:
                stopped = ops.stop_instance(run.remote, run.config, host, ports[host.name])
                if not stopped.ok:
                    run.problems.append(f"stopping the old instance: {stopped.describe()}")
            switched = ops.switch(run.remote, run.config, run.release, batch)
            if not switched.ok:
                raise FailedAfterCommit(f"after the swap of {names} to {run.release[:12]}: "
                                        + "; ".join(r.describe() for r in switched.failed))
        return retire.submit(finish)

    def render(self, run: Run) -> list[str]:
        lines = []
        for host in run.app_hosts:
            old, new = run.port(host, 0), run.port(host, 1)
            lines += _lines(ops.render_start_instances(run.config, [host], run.release, new),
                            run)
            lines.append(f"{host.name}: poll the health URL until it reports "
                         f"{run.release[:12]}")
            lines += [f"lb: {line}" for line in hap.render_swap(
                run.config.need("lb").backend,
                [(run.server(host, old), run.server(host, new))])]
            lines += _lines(ops.render_stop_instances(run.config, [host], old), run)
            lines += _lines(ops.render_switch(run.config, run.release, [host]), run)
        return lines
