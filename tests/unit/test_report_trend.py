"""The trend of every run (``report --trend FILE``) and the commands: ``runs --json``,
``report RUN --json``, ``report RUN --html FILE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode
from orchestrator.runner.journal import iso_ms
from orchestrator.runner.runs import write_summary
from orchestrator.views.report import render_trend, trend_data
from tests.unit.test_report import T0, Node, Page, a_run


def runs_of(outages: list[float | None]) -> list[dict[str, Any]]:
    """A run a day, the outage drifting as given, the estimate creeping up, budget 15 s."""
    return [a_run(id=f"202611{10 + day:02d}-100000-aaaa", started=iso_ms(T0 + day * 86400),
                  outage_s=outage,
                  estimate={"total_s": 0.3 + 0.01 * day, "overhead_s": 0.25,
                            "overhead_source": "default", "patches": []})
            for day, outage in enumerate(outages)]


def trend_page(runs: list[dict[str, Any]], current: str | None = None) -> Node:
    return Page(render_trend(trend_data(runs, current))).root


def test_trend_data_reads_oldest_first_with_outage_estimate_and_budget() -> None:
    """Each run's outage, estimate and budget, oldest first, whatever order they came in."""
    runs = runs_of([0.05, 0.2, 0.6])
    data = trend_data(list(reversed(runs)), current=runs[1]["id"])
    assert data["current"] == runs[1]["id"]
    assert [(line["id"], line["outage_s"], line["estimated_s"], line["budget_s"])
            for line in data["runs"]] == [(runs[0]["id"], 0.05, 0.3, 15),
                                          (runs[1]["id"], 0.2, 0.31, 15),
                                          (runs[2]["id"], 0.6, 0.32, 15)]
    json.dumps(data)


def test_trend_page_has_a_bar_and_marks_per_run_against_the_budget() -> None:
    """One group per run: its outage bar, estimate and budget marks; the bars grow with the
    drift; the run asked for is outlined; small outages get a zoomed chart too."""
    runs = runs_of([0.05, 0.2, 0.6])
    root = trend_page(runs, current=runs[2]["id"])
    first, zoomed = root.all("svg", "trend-chart")
    groups = first.all("g", "run")
    assert [g.attrs["data-run"] for g in groups] == [r["id"] for r in runs]
    heights = [g.one("rect", "outage").number("height") for g in groups]
    assert heights == sorted(heights) and heights[0] > 0
    assert all(len(g.all("line", "budget")) == 1 and len(g.all("line", "estimate")) == 1
               for g in groups)
    assert "current" in groups[2].one("rect", "outage").classes
    # zoomed to the outages: the budget (15 s) is off that chart, the estimates are on it
    assert zoomed.all("line", "budget") == [] and len(zoomed.all("line", "estimate")) == 3
    rows = root.one("table", "trend").all("tr")
    assert len(rows) == 4 and "current" in rows[3].classes


def test_trend_of_runs_without_figures_still_renders() -> None:
    """Old and crashed runs (no outage, no estimate, no budget) render; none at all too."""
    root = trend_page([{"id": "old", "outcome": "crashed"}, {}])
    assert "no outage, estimate or budget recorded" in root.content()
    assert len(root.one("table", "trend").all("tr")) == 3
    trend_page([])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose [runs] dir holds two runs, the newer with a journal."""
    runs_dir = tmp_path / "runs"
    for run in runs_of([0.043, 0.05]):
        write_summary(runs_dir, run["id"], run)
    (runs_dir / "20261111-100000-aaaa" / "journal.jsonl").write_text(
        json.dumps({"ts": iso_ms(T0), "event": "run.start", "who": "alice"}) + "\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[runs]\ndir = "{runs_dir}"\n')
    return path


def test_runs_json_is_every_summary_newest_first(config: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """runs --json: a JSON list of the runs' summaries, newest first."""
    assert main(["runs", "-c", str(config), "--json"]) == ExitCode.OK
    runs = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in runs] == ["20261111-100000-aaaa", "20261110-100000-aaaa"]
    assert runs[0]["estimate"]["total_s"] == 0.31 and runs[0]["hosts"]["app1"]


def test_report_json_is_the_page_data_alone_on_stdout(config: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """report RUN --json --html FILE: stdout is one JSON document (the data), the page is
    written and said on stderr."""
    page = tmp_path / "r.html"
    assert main(["report", "last", "-c", str(config), "--json", "--html", str(page)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["id"] == "20261111-100000-aaaa" and data["window"]["outage_s"] == 0.05
    assert [e["event"] for e in data["events"]] == ["run.start"]
    assert err.strip() == f"wrote {page}"
    assert Page(page.read_text()).root.one("svg", "window-chart")


def test_report_trend_writes_every_run(config: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """report --trend FILE without RUN: a page with a group per run; with RUN, it is marked."""
    page = tmp_path / "t.html"
    assert main(["report", "-c", str(config), "--trend", str(page)]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    assert len(Page(page.read_text()).root.all("g", "run")) == 4  # two charts, two runs
    assert main(["report", "20261110", "-c", str(config), "--trend", str(page)]) == 0
    current = Page(page.read_text()).root.one("table", "trend").one("tr", "current")
    assert current.attrs["data-run"] == "20261110-100000-aaaa"


def test_report_without_run_or_trend_and_unwritable_files_are_bad_input(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """report with nothing to report, or a file that cannot be written: exit 2 naming it."""
    assert main(["report", "-c", str(config)]) == ExitCode.BAD_INPUT
    assert "give RUN" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "r.html"
    assert main(["report", "last", "-c", str(config), "--html", str(missing)]) == 2
    assert f"report --html {missing}: cannot write it" in capsys.readouterr().err


def test_report_run_alone_prints_show(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """report RUN without a flag prints the run as show does."""
    assert main(["report", "last", "-c", str(config)]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("run 20261111-100000-aaaa by alice: done")
