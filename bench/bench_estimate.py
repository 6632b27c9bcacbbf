"""How long users will wait: the estimate shown before a deploy against what it measured.

Real deploys of the sandbox, seeded (``sandbox up --rows``) so the cold patches take
seconds. Printed, with the error of each (target in brackets):

- scaled: rehearse on a quarter of the rows (each cold patch's trials and window are
  printed, and the median kept), export the timings, bring the sandbox up again with all
  of them, deploy with the exported timings (within 20%);
- unscaled: the same rows on both sides (within 10%);
- learned overhead: after three deploys on the same ``[runs] dir``, the overhead the
  estimate uses against the one a fourth deploy measures (within 10 ms).

``FASTDOWNTIME_BENCH_RUNS=N`` repeats both comparisons N times and prints every error
with their median. "Measured" is the window the journal recorded; the probe's longest
wait (hold mode: what users waited) is printed beside it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import scratch
from orchestrator.runner.journal import read_journal
from orchestrator.sandbox import manager
from orchestrator.sandbox.configfile import render_config

ROWS = int(os.environ.get("FASTDOWNTIME_BENCH_ROWS", "5000000"))
"""Rows of `item`, so that the cold patches take seconds (4 million: 1.8 s here)."""
ROUNDS = max(1, int(os.environ.get("FASTDOWNTIME_BENCH_RUNS", "1")))
"""Rounds of the scaled and unscaled comparisons, each from fresh sandboxes (a deploy's
window is one run: ±20% here from one run to the next)."""


def fresh(rows: int, runs: Path | None = None, timings: Path | None = None) -> Path:
    """A fresh 4-host sandbox whose item table holds ``rows``; a config for it."""
    manager.down()
    layout = manager.up(4, rows)
    text = render_config(layout)
    if runs is not None:
        text, found = re.subn(r'^dir = ".*"$', f'dir = "{runs}"', text, count=1,
                              flags=re.MULTILINE)
        assert found == 1, "the sandbox's config has no [runs] dir line"
    if timings is not None:
        assert "[database]\n" in text
        text = text.replace("[database]\n", f'[database]\ntimings_file = "{timings}"\n', 1)
    path = scratch("config-") / "sandbox.toml"
    path.write_text(text)
    return path


def fdt(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fastdowntime {' '.join(args)}: exit {done.returncode}: "
                           f"{done.stderr[-2000:]}")
    return done.stdout


def rehearsed(rows: int) -> Path:
    """Rehearse on a sandbox of ``rows``; the exported timings' file. Prints each cold
    patch's runs (the trials before the window, then the window's) and the median kept."""
    config = fresh(rows)
    fdt(config, "rehearse", "--yes", "--stage", "fastdowntime")
    run = json.loads(fdt(config, "show", "last", "--json"))
    journal = manager.current_layout().base / "runs" / run["id"] / "journal.jsonl"
    events = read_journal(journal)
    trials = [e["patches"] for e in events if e["event"] == "rehearsal.trial" and "patches" in e]
    (kept,) = [e for e in events if e["event"] == "rehearsal.timings"]
    print(f"  rehearsal on {rows:,} rows: {len(trials)} trial(s), then the window", flush=True)
    for index, patch in enumerate(kept["window"]):
        runs = [t[index]["duration_s"] for t in trials] + [patch["duration_s"]]
        if max(runs) >= 0.01:
            print(f"    {patch['filename']}: " + ", ".join(f"{r:.3f}" for r in runs)
                  + f" s -> median {kept['patches'][index]['duration_s']:.3f} s", flush=True)
    path = scratch("config-") / "timings.json"
    path.write_text(fdt(config, "timings", "--json"))
    return path


def deployed(config: Path) -> dict[str, Any]:
    plan = json.loads(fdt(config, "plan", "--json"))
    approvals = [f"--approve={p}:bench" for p in plan["fastdowntime"]["cold_patches"]]
    fdt(config, "deploy", "--yes", "--stage", "fastdowntime", *approvals)
    return dict(json.loads(fdt(config, "show", "last", "--json")))


def judged(label: str, run: dict[str, Any], target: float) -> float:
    """Print the estimate against what ``run`` measured; the error (a fraction)."""
    estimate = run["estimate"]["total_s"]
    measured = run["outage_s"]
    cold = sum(p["duration_s"] for p in run["cold_patches"])
    error = (estimate - measured) / measured
    print(f"{label}: estimated {estimate:.3f} s, measured {measured:.3f} s (the journal's "
          f"window; cold patches {cold:.3f} s; the probe's longest wait "
          f"{run['probe']['longest_wait_s']:.3f} s): error {error * 100:+.1f}% "
          f"(target within {target * 100:.0f}%) "
          f"{'ok' if abs(error) <= target else 'OVER TARGET'}", flush=True)
    for patch in run["estimate"]["patches"]:
        print(f"    {patch['name']}: rehearsed {patch['rehearsed_s']} s x {patch['scale']} -> "
              f"{patch['estimated_s']} s", flush=True)
    return error


def spread(label: str, errors: list[float], target: float) -> None:
    """With more than one round: every round's error, their median and the rounds in target."""
    if len(errors) < 2:
        return
    inside = sum(abs(e) <= target for e in errors)
    print(f"{label} over {len(errors)} rounds: " + ", ".join(f"{e * 100:+.1f}%" for e in errors)
          + f"; median {statistics.median(errors) * 100:+.1f}%; {inside} of {len(errors)} "
          f"within {target * 100:.0f}%", flush=True)


def main() -> None:
    scaled: list[float] = []
    unscaled: list[float] = []
    for _ in range(ROUNDS):
        quarter = rehearsed(ROWS // 4)
        scaled.append(judged(f"scaled ({ROWS // 4:,} rows rehearsed, {ROWS:,} here)",
                             deployed(fresh(ROWS, timings=quarter)), 0.20))
        same = rehearsed(ROWS)
        unscaled.append(judged(f"unscaled ({ROWS:,} rows on both sides)",
                               deployed(fresh(ROWS, timings=same)), 0.10))
    spread("scaled", scaled, 0.20)
    spread("unscaled", unscaled, 0.10)
    runs = scratch("runs-")
    for _ in range(3):
        deployed(fresh(1000, runs=runs, timings=same))
    fourth = deployed(fresh(1000, runs=runs, timings=same))
    learned = fourth["estimate"]["overhead_s"]
    measured = fourth["outage_s"] - sum(p["duration_s"] for p in fourth["cold_patches"])
    gap = abs(learned - measured)
    seen = fourth["estimate"].get("overhead_seen_s")
    within = ("" if seen is None else
              f"; {'inside' if seen[0] <= measured <= seen[1] else 'outside'} the "
              f"{seen[0] * 1000:.1f}-{seen[1] * 1000:.1f} ms the 3 deploys saw")
    print(f"learned overhead after 3 deploys: {learned * 1000:.1f} ms "
          f"({fourth['estimate']['overhead_source']}); the 4th deploy measured "
          f"{measured * 1000:.1f} ms: {gap * 1000:.1f} ms apart (target <= 10 ms) "
          f"{'ok' if gap <= 0.010 else 'OVER TARGET'}{within}", flush=True)
    manager.down()
    manager.up()
