"""The estimate on the sandbox: a rehearsal records what production needs to scale it.

Rehearse on a sandbox seeded with some rows, export the timings, bring a sandbox up with
four times the rows, and deploy with the exported timings: the patches whose statements
read every row of ``item`` are scaled by about 4, the others are not, and the run records
the estimate it was given beside what happened. (How close the estimate comes is measured
by ``make bench``: ``bench_estimate``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.sandbox import manager
from tests.e2e.conftest import Sandbox

pytestmark = pytest.mark.e2e

ROWS = 20_000


def with_timings_file(sandbox: Sandbox, directory: Path, timings: Path) -> Path:
    config = sandbox.write_config(directory)
    text = config.read_text().replace("[database]\n",
                                      f'[database]\ntimings_file = "{timings}"\n', 1)
    config.write_text(text)
    return config


def test_a_rehearsal_scales_to_a_larger_database(fresh: Sandbox, tmp_path: Path) -> None:
    seeded = fresh.cli("sandbox", "up", "--rows", str(ROWS))
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    assert fresh.query("SELECT count(*) FROM item")[0][0] >= ROWS
    done = fresh.cli("rehearse", "--yes", "--stage", "fastdowntime")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    exported = fresh.cli("timings", "--json")
    assert exported.returncode == 0, exported.stderr[-2000:]
    rows = json.loads(exported.stdout)
    records = {row["file"]: row["statements"] for row in rows}
    # patch 05 adds a CHECK constraint (a scan) and updates item: both grow with item
    growing = [s for s in records["patch-2200-05-0.sql"] if s["grows"]]
    assert len(growing) == 2 and all(s["tables"]["item"]["bytes"] > 0 for s in growing)
    assert not any(s["grows"] for s in records["patch-2200-01-0.sql"])
    timings = tmp_path / "timings.json"
    timings.write_text(exported.stdout)

    manager.down()
    manager.up(rows=4 * ROWS)
    production = with_timings_file(fresh, tmp_path, timings)
    done = fresh.cli("deploy", "--yes", "--stage", "fastdowntime", config=production)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    estimate = fresh.show()["estimate"]
    assert estimate["sizes_read"] and estimate["total_s"] is not None
    by_name = {p["name"]: p for p in estimate["patches"]}
    assert by_name["patch-2200-01-0.sql"]["scale"] == 1.0
    scaled = by_name["patch-2200-05-0.sql"]
    assert 1.5 < scaled["scale"] < 4.5, scaled  # the scans 4x; the round trips not
    assert scaled["estimated_s"] > scaled["rehearsed_s"]
