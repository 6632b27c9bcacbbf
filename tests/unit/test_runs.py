"""Run history: summaries, lookup by id/prefix/last, crashed runs rebuilt, text and HTML."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import BadInput
from orchestrator.runner.journal import Journal, iso_ms, read_journal
from orchestrator.runner.probe import ProbeReport
from orchestrator.runner.runs import (
    list_runs,
    load_run,
    steps_from_journal,
    summary_from_journal,
    write_summary,
)
from orchestrator.views.runs import render_html, render_text
from tests.fakes import FakeClock

T0 = 1795625226.0  # 2026-11-25T16:47:06Z
CUT = "c" * 40


def journal_a_window(runs_dir: Path, run_id: str, start: float, *, finish: bool = True,
                     step_name: str = "cut_connections") -> Journal:
    """Journal a small fastdowntime: run.start, three window steps, the probe, maybe run.end."""
    clock = FakeClock(start)
    journal = Journal(runs_dir, run_id, clock=clock)
    journal.event("run.start", who="alice", cut=CUT, window_budget_s=15, **{"from": "a" * 40},
                  to="b" * 40, approvals=[{"patch": "patch-2211-01-0.sql", "who": "bob"}])
    stage = journal.bind(stage="fastdowntime")
    with stage.step("open_window", host="lb1") as step:
        clock.now += 0.1
        stage.event("window.open", at=clock.now, budget_s=15)
        clock.now += 0.05
        step.note(waited_s=0.05)
    with stage.step(step_name, host="db"):
        clock.now += 2.0
    if not finish:
        stage.event("step.start", step="apply_cold_patches", host="db")
        return journal
    with stage.step("close_window", host="lb1"):
        clock.now += 0.2
        stage.event("window.close", at=clock.now, outage_s=round(clock.now - start - 0.1, 3))
    probe = ProbeReport.from_samples(
        [(start + 0.2, start + 0.201, True), (start + 0.3, start + 0.301, False),
         (start + 2.4, start + 2.401, True)], 0.01)
    journal.event("probe.report", **probe.to_json())
    clock.now += 0.5
    journal.event("run.end", outcome="done", error=None)
    return journal


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Three runs: two finished with run.json, the newest crashed without one."""
    root = tmp_path / "runs"
    for run_id, start in (("20261125-101500-aaaa", T0 - 7200), ("20261125-120000-abcd", T0)):
        journal = journal_a_window(root, run_id, start)
        summary = summary_from_journal(run_id, read_journal(journal.path))
        summary.pop("notes")
        write_summary(root, run_id, summary)
        journal.close()
    journal_a_window(root, "20261125-130000-ffff", T0 + 3600, finish=False).close()
    return root


def test_write_summary_is_atomic_json(tmp_path: Path) -> None:
    """run.json is replaced whole (no temporary left behind) and holds JSON-safe, masked data."""
    write_summary(tmp_path, "r1", {"id": "r1", "outcome": "running", "steps": [],
                                   "dsn": "host=x password=hunter2", "where": tmp_path})
    write_summary(tmp_path, "r1", {"id": "r1", "outcome": "done", "steps": ()})
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["run.json"]
    assert json.loads((tmp_path / "r1" / "run.json").read_text()) == {
        "id": "r1", "outcome": "done", "steps": []}
    write_summary(tmp_path, "r2", {"dsn": "host=x password=hunter2"})
    assert "hunter2" not in (tmp_path / "r2" / "run.json").read_text()
    with pytest.raises(ValueError, match="outcome 'finished'"):
        write_summary(tmp_path, "r3", {"outcome": "finished"})


def test_list_runs_newest_first_with_key_figures(runs_dir: Path) -> None:
    """runs lists every run newest first with id, started, outcome, cut, outage_s, who."""
    runs = list_runs(runs_dir)
    assert [r["id"] for r in runs] == ["20261125-130000-ffff", "20261125-120000-abcd",
                                       "20261125-101500-aaaa"]
    assert [r["outcome"] for r in runs] == ["crashed", "done", "done"]
    assert runs[1] == {"id": "20261125-120000-abcd", "started": iso_ms(T0),
                       "finished": iso_ms(T0 + 2.85), "outcome": "done", "cut": CUT,
                       "outage_s": 2.25, "who": "alice"}


def test_list_runs_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    """No runs directory yet means no runs, not an error."""
    assert list_runs(tmp_path / "never") == []


def test_load_run_by_id_prefix_and_last(runs_dir: Path) -> None:
    """A run is found by its full id, a unique prefix, or `last` (the newest)."""
    assert load_run(runs_dir, "20261125-120000-abcd")["id"] == "20261125-120000-abcd"
    assert load_run(runs_dir, "20261125-10")["id"] == "20261125-101500-aaaa"
    assert load_run(runs_dir, "last")["id"] == "20261125-130000-ffff"


def test_load_run_unknown_or_ambiguous_is_bad_input(runs_dir: Path, tmp_path: Path) -> None:
    """An unknown or ambiguous reference is BadInput naming it (and the candidates)."""
    with pytest.raises(BadInput, match="'nope': no such run"):
        load_run(runs_dir, "nope")
    with pytest.raises(BadInput, match=r"'20261125-1' is ambiguous.*20261125-101500-aaaa"):
        load_run(runs_dir, "20261125-1")
    with pytest.raises(BadInput, match="no runs"):
        load_run(tmp_path / "empty", "last")


def test_show_json_has_the_contract_keys(runs_dir: Path) -> None:
    """The summary has id, outcome, outage_s, window_budget_s, cut and steps (show --json)."""
    run = load_run(runs_dir, "20261125-12")
    assert {"id", "who", "started", "finished", "outcome", "from", "to", "cut",
            "window_budget_s", "outage_s", "window", "probe", "steps", "approvals",
            "error"} <= set(run)
    assert (run["outcome"], run["outage_s"], run["window_budget_s"]) == ("done", 2.25, 15)
    assert run["window"] == {"opened": iso_ms(T0 + 0.1), "closed": iso_ms(T0 + 2.35),
                             "budget_s": 15}
    assert [s["name"] for s in run["steps"]] == ["open_window", "cut_connections",
                                                 "close_window"]
    assert run["steps"][1] == {"name": "cut_connections", "stage": "fastdowntime",
                               "host": "db", "started": iso_ms(T0 + 0.15), "duration_s": 2.0,
                               "outcome": "ok"}
    json.dumps(run)


def test_run_without_summary_is_rebuilt_from_its_journal_as_crashed(runs_dir: Path) -> None:
    """No run.json: who/cut/window/steps come from the journal, outcome is crashed."""
    run = load_run(runs_dir, "20261125-13")
    assert run["outcome"] == "crashed"
    assert (run["who"], run["cut"], run["window_budget_s"]) == ("alice", CUT, 15)
    assert run["window"]["opened"] == iso_ms(T0 + 3600.1) and run["window"]["closed"] is None
    assert run["outage_s"] is None
    assert [(s["name"], s["outcome"]) for s in run["steps"]] == [
        ("open_window", "ok"), ("cut_connections", "ok"), ("apply_cold_patches", "unfinished")]
    assert "without run.end" in run["error"] and "resume 20261125-130000-ffff" in run["error"]
    assert any("rebuilt from the journal" in note for note in run["notes"])


def test_journal_saying_how_it_ended_wins_over_crashed(tmp_path: Path) -> None:
    """A journal with run.end but no run.json keeps the outcome the journal records."""
    journal_a_window(tmp_path, "r1", T0).close()
    assert load_run(tmp_path, "r1")["outcome"] == "done"


def test_running_checkpoint_is_completed_by_the_journal(tmp_path: Path) -> None:
    """A run.json still saying running shows the steps journaled since that checkpoint."""
    journal = journal_a_window(tmp_path, "r1", T0, finish=False)
    write_summary(tmp_path, "r1", {"id": "r1", "outcome": "running", "steps": []})
    journal.close()
    run = load_run(tmp_path, "r1")
    assert run["outcome"] == "running"
    assert len(run["steps"]) == 3 and run["window"]["opened"] == iso_ms(T0 + 0.1)


def test_crash_mid_line_is_noted(tmp_path: Path) -> None:
    """A journal whose last line was cut by the crash still rebuilds, with a note saying so."""
    journal = journal_a_window(tmp_path, "r1", T0, finish=False)
    journal.close()
    with journal.path.open("a") as handle:
        handle.write('{"ts": "2026-11-25T16:4')
    run = load_run(tmp_path, "r1")
    assert run["outcome"] == "crashed"
    assert any("cut mid-write" in note for note in run["notes"])


def test_render_text_has_the_key_figures(runs_dir: Path) -> None:
    """show: id, who, outcome, cut, window instants, journal vs probe outage vs budget, steps."""
    text = render_text(load_run(runs_dir, "20261125-12"))
    assert "run 20261125-120000-abcd by alice: done" in text
    assert CUT[:12] in text
    assert f"opened {iso_ms(T0 + 0.1)}" in text and f"closed {iso_ms(T0 + 2.35)}" in text
    assert "2.250 s (journal)" in text
    assert "2.101 s seen by the probe" in text
    assert "budget 15.000 s" in text
    assert "patch-2211-01-0.sql: bob" in text
    step_line = next(line for line in text.splitlines() if line.endswith("cut_connections"))
    assert step_line.split() == ["16:47:06.150", "2.000", "s", "ok", "fastdowntime", "db",
                                 "cut_connections"]


def test_render_text_gives_the_probes_waits(runs_dir: Path) -> None:
    """show: the probe line adds the longest wait and p50/p99 the probe journaled."""
    text = render_text(load_run(runs_dir, "20261125-12"))
    assert ("2.101 s seen by the probe (longest of 1; 3 requests, 1 failed; "
            "longest wait 0.001 s, p50 1.0 ms, p99 1.0 ms)") in text


PROBE = {"requests": 1361, "failures": 0, "interval_s": 0.005, "first": T0, "last": T0 + 7,
         "longest_s": 0.0, "total_s": 0.0, "down_at_end": False, "outages": [],
         "longest_wait_s": 1.043, "p50_s": 0.0014, "p99_s": 0.0123}
WINDOW = {**PROBE, "requests": 212, "longest_wait_s": 0.061, "p50_s": 0.0021, "p99_s": 0.45}


def test_show_prints_the_probe_in_the_window() -> None:
    """A summary with probe_window: one more line with its requests, failures and waits."""
    run = {"id": "r", "outcome": "done", "steps": [], "probe": PROBE, "probe_window": WINDOW}
    lines = render_text(run).splitlines()
    assert ("0.000 s seen by the probe (longest of 0; 1361 requests, 0 failed; "
            "longest wait 1.043 s, p50 1.4 ms, p99 12 ms)") in lines[4]
    assert lines[5].split() == ["probe", "window:", "212", "requests,", "0", "failed,",
                                "longest", "wait", "0.061", "s,", "p50", "2.1", "ms,", "p99",
                                "450", "ms"]
    cells = "".join(parse(render_html(run, [])).text)
    assert ("probe in the window" + "window: 212 requests, 0 failed, longest wait 0.061 s, "
            "p50 2.1 ms, p99 450 ms") in cells


def test_older_summaries_without_waits_still_render() -> None:
    """A probe without the wait keys and no probe_window: the probe line as before, no window."""
    old = {key: PROBE[key] for key in ("requests", "failures", "longest_s", "total_s",
                                       "down_at_end", "outages")}
    run = {"id": "r", "outcome": "done", "steps": [], "probe": old}
    text = render_text(run)
    assert "0.000 s seen by the probe (longest of 0; 1361 requests, 0 failed)  |" in text
    assert "wait" not in text and "probe window" not in text
    document = render_html(run, [])
    parse(document)
    assert "probe in the window" not in document and "wait" not in document
    no_requests = {**old, "requests": 0, "longest_wait_s": 0.0, "p50_s": None, "p99_s": None}
    assert "longest wait 0.000 s, p50 -, p99 -)" in render_text({**run, "probe": no_requests})


def test_steps_closed_without_a_start_event_keep_their_start() -> None:
    """A done event whose start was not journaled still gives the step its start instant."""
    steps = steps_from_journal([{"event": "step.done", "step": "s", "stage": "x", "host": None,
                                 "started": iso_ms(T0), "duration_s": 1.0, "outcome": "ok"}])
    assert steps == [{"name": "s", "stage": "x", "host": None, "started": iso_ms(T0),
                      "duration_s": 1.0, "outcome": "ok"}]


def test_render_text_flags_an_outage_over_budget() -> None:
    """An outage longer than the budget is flagged."""
    text = render_text({"id": "r", "outcome": "done", "outage_s": 20.5, "window_budget_s": 15,
                        "steps": []})
    assert "OVER BUDGET" in text


class TagChecker(HTMLParser):
    """Parses HTML and checks every opened tag is closed in order; records tags seen."""

    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(document: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(document)
    checker.close()
    assert checker.stack == []
    return checker


def test_render_html_is_well_formed_and_self_contained(runs_dir: Path) -> None:
    """report --html: balanced tags, inline CSS, no script, step bars, window and probe marks."""
    run = load_run(runs_dir, "20261125-12")
    document = render_html(run, read_journal(runs_dir / run["id"] / "journal.jsonl"))
    checker = parse(document)
    assert "script" not in checker.tags and "link" not in checker.tags
    assert document.count('class="bar ok"') >= 3
    assert 'class="win"' in document and 'class="down"' in document
    assert "The window (zoomed)" in document
    assert "alice" in "".join(checker.text)


def test_render_html_escapes_everything(tmp_path: Path) -> None:
    """A step named <script> and hostile fields are escaped, never markup."""
    journal = journal_a_window(tmp_path, "r1", T0, step_name="<script>alert(1)</script>")
    journal.event("note", text='"><img src=x onerror=alert(1)>')
    journal.close()
    run = load_run(tmp_path, "r1")
    run["who"] = "<b>mallory</b>"
    document = render_html(run, read_journal(journal.path))
    checker = parse(document)
    assert "script" not in checker.tags and "img" not in checker.tags and "b" not in checker.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "<script>alert(1)</script>" in "".join(checker.text)


def test_render_html_without_a_window_or_journal(tmp_path: Path) -> None:
    """A nodowntime-only run (no window, no probe) still renders."""
    run: dict[str, Any] = {"id": "r", "outcome": "done", "steps": [
        {"name": "roll", "stage": "nodowntime", "host": "app1", "started": iso_ms(T0),
         "duration_s": 1.5, "outcome": "ok"}]}
    checker = parse(render_html(run, []))
    assert "roll app1" in "".join(checker.text)
