"""The drained window's overhead and the nodowntime stage, on real deploys of the sandbox.

(``[window] mode = "drain"``: users get no answer during the window. The default hold mode
fails no request; ``bench_hold`` measures how long they wait.)

Outage overhead = the outage users saw (the run's probe through haproxy)
minus the cold patches' own time (the database's clock, per patch). Each
case runs a real ``deploy`` on a fresh sandbox:

- default playbook, 4 app hosts: target overhead <= 0.1 s;
- default playbook, 16 app hosts: target <= 1.5x the 4-host overhead;
- restart playbook, 4 app hosts: target <= 1.0 s + the slowest app start-to-healthy;
- nodowntime, 4 hosts one at a time: target <= the sum of the app servers' own
  start-to-healthy times + 0.1 s per host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import scratch
from orchestrator.runner.journal import read_journal
from orchestrator.sandbox import manager
from orchestrator.sandbox.configfile import render_config

WINDOW_STEPS = ("open_window", "cut_connections", "apply_cold_patches", "restore_connections",
                "close_window")


def fresh(hosts: int, playbook: str = "fastdowntime", mode: str = "drain") -> Path:
    """A fresh sandbox with ``hosts`` app hosts; returns a config for it (drain mode unless
    told: the outage this file measures is the one a drained window shows users)."""
    manager.down()
    layout = manager.up(hosts)
    text = render_config(layout).replace('playbook = "fastdowntime"',
                                         f'playbook = "{playbook}"')
    text = text.replace('mode = "hold"', f'mode = "{mode}"')
    path = scratch("config-") / "sandbox.toml"
    path.write_text(text)
    return path


def deploy(config: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fdt = [sys.executable, "-m", "orchestrator", "-c", str(config)]
    plan = json.loads(subprocess.run([*fdt, "plan", "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    approvals = [f"--approve={p}:bench" for p in plan["fastdowntime"]["cold_patches"]]
    subprocess.run([*fdt, "deploy", "--yes", *approvals], capture_output=True, check=True)
    run = json.loads(subprocess.run([*fdt, "show", "last", "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    runs_dir = Path(config.read_text().split('[runs]\ndir = "')[1].split('"')[0])
    return run, read_journal(runs_dir / run["id"] / "journal.jsonl")


def window(run: dict[str, Any], journal: list[dict[str, Any]]) -> dict[str, float]:
    """The outage seen, the patches' own time, the overhead and its parts (seconds)."""
    cold = sum(p["duration_s"] for p in run["cold_patches"])
    seen = run["probe"]["longest_s"]
    parts = {e["step"]: e["duration_s"] for e in journal
             if e.get("event") == "step.done" and e.get("stage") == "fastdowntime"}
    return {"seen": seen, "journal": run["outage_s"], "cold": cold, "overhead": seen - cold,
            **{name: parts.get(name, 0.0) for name in WINDOW_STEPS}}


def show(label: str, figures: dict[str, float]) -> None:
    parts = ", ".join(f"{name} {figures[name] * 1000:.1f}" for name in WINDOW_STEPS)
    print(f"{label}: outage seen {figures['seen'] * 1000:.1f} ms (journal "
          f"{figures['journal'] * 1000:.1f}), cold patches {figures['cold'] * 1000:.1f} ms, "
          f"overhead {figures['overhead'] * 1000:.1f} ms")
    print(f"    parts (ms): {parts}")


def main() -> None:
    four = window(*deploy(fresh(4)))
    show("default playbook, 4 hosts", four)
    print(f"    overhead {four['overhead']:.3f} s (target <= 0.1 s) "
          f"{'ok' if four['overhead'] <= 0.1 else 'OVER TARGET'}")
    sixteen = window(*deploy(fresh(16)))
    show("default playbook, 16 hosts", sixteen)
    ratio = sixteen["overhead"] / max(four["overhead"], 1e-6)
    print(f"    16/4 overhead ratio {ratio:.2f}x (target <= 1.5x) "
          f"{'ok' if ratio <= 1.5 else 'OVER TARGET'}")
    run, journal = deploy(fresh(4, "fastdowntime-restart"))
    restart = window(run, journal)
    show("restart playbook, 4 hosts", restart)
    slowest = max((e["start_to_healthy_s"] for e in read_journal_events(journal,
                                                                       "restart.healthy")),
                  default=0.0)
    target = 1.0 + slowest
    print(f"    overhead {restart['overhead']:.3f} s (target <= 1.0 s + slowest start-to-healthy "
          f"{slowest:.3f} s = {target:.3f} s) "
          f"{'ok' if restart['overhead'] <= target else 'OVER TARGET'}")
    healthy = [e["start_to_healthy_s"] for e in read_journal_events(journal, "rolling.healthy")]
    stage = next(e["duration_s"] for e in journal if e.get("event") == "step.done"
                 and e.get("step") == "rolling_update")
    budget = sum(healthy) + 0.1 * len(healthy)
    print(f"nodowntime, {len(healthy)} hosts one at a time: {stage:.3f} s; the app servers' "
          f"own start-to-healthy sum {sum(healthy):.3f} s; target <= {budget:.3f} s "
          f"{'ok' if stage <= budget else 'OVER TARGET'}")
    manager.down()
    manager.up()


def read_journal_events(journal: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in journal if e.get("event") == name]
