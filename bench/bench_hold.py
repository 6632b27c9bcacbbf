"""Hold mode vs drain mode: requests failed and the longest wait, through whole deploys.

Each run is a real ``deploy`` (fastdowntime then nodowntime) on a fresh 4-host sandbox,
with an outside probe asking the public URL every 5 ms (200 requests/s) through haproxy,
each request on its own connection with a user's patience (the budget and a margin).
For both playbooks and both window modes, 10 runs each:

- failed requests: the target in hold mode is 0 in every run;
- longest wait minus the cold patches' own time (the database's clock): the target in
  hold mode is at most 50 ms. In drain mode the wait is short because users are turned
  away; its failures are the price.

For the run with the max, the bench says where its longest request came from: when it
started and answered against the window, and the window's steps (the overhead's parts).

The machine's floor is printed beside it: the median latency of the same probe on an
idle sandbox (2 cores serve the probe, haproxy, 8 app instances and the orchestrator), and
its tail: the longest request of the same deploys that nothing held (before the window,
or a second after it), what the 2 cores cost a request with no window at all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_window import WINDOW_STEPS, fresh
from orchestrator.config import load_config
from orchestrator.db.connections import SERVED_S
from orchestrator.runner.probe import Probe, ProbeReport
from orchestrator.runner.runs import epoch
from orchestrator.sandbox import manager

RUNS = int(os.environ.get("FASTDOWNTIME_BENCH_RUNS", "10"))
TARGET_S = 0.05


def deploy_probed(config: Path) -> tuple[dict[str, Any], ProbeReport]:
    fdt = [sys.executable, "-m", "orchestrator", "-c", str(config)]
    planned = subprocess.run([*fdt, "plan", "--json"], capture_output=True, text=True,
                             check=False)
    if planned.returncode != 0:
        raise RuntimeError(f"plan exited {planned.returncode}: {planned.stderr[-3000:]}")
    plan = json.loads(planned.stdout)
    approvals = [f"--approve={p}:bench" for p in plan["fastdowntime"]["cold_patches"]]
    settings = load_config(config)
    probe = Probe(settings.need("lb").public_url + "+health", interval_s=0.005,
                  timeout_s=settings.window.hold_needs_s)
    with probe:
        done = subprocess.run([*fdt, "deploy", "--yes", *approvals], capture_output=True,
                              text=True, check=False)
    report = probe.stop()
    if done.returncode != 0:
        raise RuntimeError(f"deploy exited {done.returncode}: {done.stderr[-3000:]}")
    run = json.loads(subprocess.run([*fdt, "show", "last", "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    return run, report


def floor(config: Path) -> float:
    """The probe's median latency on the idle sandbox, for 2 s."""
    settings = load_config(config)
    probe = Probe(settings.need("lb").public_url + "+health", interval_s=0.005, timeout_s=5.0)
    with probe:
        time.sleep(2.0)  # a measurement period, not a wait for readiness
    return probe.stop().p50_s or 0.0


def slow_statements(opened: float | None, closed: float | None) -> list[str]:
    """What the sandbox primary logged from the window's opening to ``SERVED_S`` after its
    close: statements over its ``log_min_duration_statement`` (100 ms) and checkpoints."""
    if opened is None or closed is None:
        return []
    log = manager.current_layout().logs / "primary.log"
    lines = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        except ValueError:
            continue
        if opened <= at.timestamp() <= closed + SERVED_S and ("duration:" in line
                                                         or "checkpoint" in line):
            lines.append(line[11:].strip()[:300])
    return lines


def worst_of(run: dict[str, Any], report: ProbeReport, cold: float,
             opened: float | None, closed: float | None) -> str:
    """Where a run's longest wait came from: its request against the window (``opened`` to
    ``closed``), and the window's steps (the parts of the overhead)."""
    start, end, _ = max(report.samples, key=lambda sample: sample[1] - sample[0])
    steps = {step["name"]: step["duration_s"] for step in run.get("steps", [])
             if step.get("stage") == "fastdowntime" and step["name"] in WINDOW_STEPS}
    parts = ", ".join(f"{name} {steps[name] * 1000:.1f} ms" for name in WINDOW_STEPS
                      if isinstance(steps.get(name), (int, float)))
    where = ("outside the window" if opened is None or closed is None
             else f"started {(start - opened) * 1000:+.0f} ms from the window's opening, "
                  f"answered {(end - closed) * 1000:+.0f} ms from its close")
    logged = "".join(f"\n      the primary logged: {line}"
                     for line in slow_statements(opened, closed))
    return (f"longest request {(end - start) * 1000:.1f} ms, {where}; cold patches "
            f"{cold * 1000:.1f} ms; {parts}{logged}")


def unheld(report: ProbeReport, opened: float, closed: float) -> float:
    """The longest answered request of the same deploy that nothing held: before the window
    opened, or started more than ``SERVED_S`` after its close (the longest the run waits
    for pgbouncer to serve the held queue). The machine's own tail while code is staged,
    instances start and hosts restart."""
    waits = [end - start for start, end, ok in report.samples
             if ok and (end < opened or start > closed + SERVED_S)]
    return max(waits, default=0.0)


def case(playbook: str, mode: str) -> dict[str, Any]:
    failed, extra, rates, held, tail = [], [], [], [], []
    worst: tuple[float, str] | None = None
    idle = 0.0
    for number in range(RUNS):
        config = fresh(4, playbook, mode)
        if number == 0:
            idle = floor(config)
        run, report = deploy_probed(config)
        cold = sum(p["duration_s"] for p in run["cold_patches"])
        failed.append(report.failures)
        extra.append(report.longest_wait_s - cold)
        window = run.get("window") or {}
        opened, closed = epoch(window.get("opened")), epoch(window.get("closed"))
        if report.samples and (worst is None or extra[-1] > worst[0]):
            worst = (extra[-1], worst_of(run, report, cold, opened, closed))
        if opened is not None and closed is not None:
            held.append(report.within(opened, closed).longest_wait_s - cold)
            tail.append(unheld(report, opened, closed))
        assert report.first is not None and report.last is not None
        rates.append(report.requests / (report.last - report.first))
    return {"failed": failed, "extra": extra, "rate": min(rates), "floor": idle, "held": held,
            "tail": tail, "worst": worst[1] if worst else ""}



def main() -> None:
    for playbook in ("fastdowntime", "fastdowntime-restart"):
        results = {mode: case(playbook, mode) for mode in ("hold", "drain")}
        for mode, got in results.items():
            extra = got["extra"]
            line = (f"{playbook}, {mode}: {RUNS} runs at >= {got['rate']:.0f} requests/s; "
                    f"failed requests {got['failed']}; longest wait - cold patches: median "
                    f"{statistics.median(extra) * 1000:.1f} ms, max {max(extra) * 1000:.1f} ms "
                    f"(the machine's floor: p50 latency idle {got['floor'] * 1000:.1f} ms)")
            held = got["held"]
            if held:
                line += (f"; the window's requests alone: longest wait - cold patches median "
                         f"{statistics.median(held) * 1000:.1f} ms, max {max(held) * 1000:.1f} ms")
            if got["tail"]:
                line += (f"; the longest request nothing held (outside the window, the same "
                         f"deploys): median {statistics.median(got['tail']) * 1000:.1f} ms, "
                         f"max {max(got['tail']) * 1000:.1f} ms")
            if mode == "hold":
                ok = max(got["failed"]) == 0 and max(extra) <= TARGET_S
                line += (f"; target 0 failed and <= {TARGET_S * 1000:.0f} ms: "
                         f"{'ok' if ok else 'OVER TARGET'}")
            print(line, flush=True)
            if got["worst"]:
                print(f"    the max run: {got['worst']}", flush=True)
    manager.down()
    manager.up()
