"""The run report: its data (``report RUN --json``) and the page drawn from it (``--html``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest

from orchestrator.runner.journal import iso_ms
from orchestrator.views.report import render_report, report_data
from orchestrator.views.report.svg import PLOT_W, X0
from orchestrator.views.runs import render_html

T0 = 1795625226.0  # 2026-11-25T16:47:06Z
OPENED = T0 + 4.0


@dataclass
class Node:
    """One element of a parsed page: its tag, attributes, children and own text."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def all(self, tag: str, css: str | None = None, **attrs: str) -> list[Node]:
        """Every element under this one with ``tag``, the class ``css`` and ``attrs``."""
        found = []
        for child in self.children:
            if (child.tag == tag and (css is None or css in child.classes)
                    and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                found.append(child)
            found += child.all(tag, css, **attrs)
        return found

    def one(self, tag: str, css: str | None = None, **attrs: str) -> Node:
        """The only such element."""
        found = self.all(tag, css, **attrs)
        assert len(found) == 1, (tag, css, attrs, len(found))
        return found[0]

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def number(self, name: str) -> float:
        return float(self.attrs[name])

    def content(self) -> str:
        """The text of this element and everything under it, in order."""
        return "".join(self.text) + "".join(child.content() for child in self.children)


class Page(HTMLParser):
    """A strict tree builder: every element closed, in order (SVG shapes may self-close)."""

    VOID = {"meta"}

    def __init__(self, document: str) -> None:
        super().__init__()
        self.root = Node("#document")
        self.stack = [self.root]
        self.feed(document)
        self.close()
        assert self.stack == [self.root], [n.tag for n in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (tag, [n.tag for n in self.stack[-4:]])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def page(run: dict[str, Any], journal: list[dict[str, Any]] | None = None) -> Node:
    """The run's page, parsed strictly."""
    return Page(render_report(report_data(run, journal or []))).root


ESTIMATE = {"total_s": 0.35, "overhead_s": 0.25, "overhead_source": "default",
            "patches": [{"name": "patch-2200-03-0.sql", "rehearsed_s": 0.02, "scale": 2.0,
                         "estimated_s": 0.04},
                        {"name": "patch-2200-04-0.sql", "rehearsed_s": None, "scale": None,
                         "estimated_s": None}]}
PROBE = {"requests": 1361, "failures": 2, "interval_s": 0.005, "first": T0 + 0.5,
         "last": T0 + 9.0, "longest_s": 0.02, "total_s": 0.02, "down_at_end": False,
         "outages": [{"start": OPENED + 0.01, "end": OPENED + 0.03, "duration_s": 0.02}],
         "longest_wait_s": 0.061, "p50_s": 0.0014, "p99_s": 0.0123}


def a_run(**changes: Any) -> dict[str, Any]:
    """A hold-mode run of today's shape: a 43 ms window in a 15 s budget, two cold patches."""
    run: dict[str, Any] = {
        "id": "20261125-164706-abcd", "who": "alice", "outcome": "done", "from": "a" * 40,
        "to": "b" * 40, "cut": "c" * 40, "started": iso_ms(T0), "finished": iso_ms(T0 + 9.5),
        "window_budget_s": 15, "window_mode": "hold", "outage_s": 0.043,
        "window": {"opened": iso_ms(OPENED), "closed": iso_ms(OPENED + 0.043), "budget_s": 15},
        "probe": PROBE, "probe_window": {**PROBE, "requests": 9, "p50_s": 0.03, "p99_s": 0.061},
        "failed_requests": 2, "longest_wait_s": 0.061,
        "hosts": {"app1": "serving cccccccccccc", "app2": "serving cccccccccccc",
                  "scripts1": "scripts started on cccccccccccc"},
        "cold_patches": [{"filename": "patch-2200-03-0.sql", "duration_s": 0.012,
                          "statements": 2},
                         {"filename": "patch-2200-04-0.sql", "duration_s": 0.021,
                          "statements": 1}],
        "estimate": ESTIMATE,
        "steps": [
            {"name": "stage_code", "stage": "prepare", "started": iso_ms(T0 + 0.6),
             "duration_s": 1.2, "outcome": "ok"},
            {"name": "hold_connections", "stage": "fastdowntime", "started": iso_ms(OPENED),
             "duration_s": 0.001, "outcome": "ok"},
            {"name": "apply_cold_patches", "stage": "fastdowntime",
             "started": iso_ms(OPENED + 0.001), "duration_s": 0.034, "outcome": "ok"},
            {"name": "stop_old_instances", "stage": "fastdowntime", "started": iso_ms(T0 + 5),
             "duration_s": 3.0, "outcome": "ok"}],
        "approvals": [], "error": None}
    run.update(changes)
    return run


def test_report_data_is_json_with_the_window_deadline_and_patch_rows() -> None:
    """--json: the window with its deadline (opened + budget), one row per cold patch merging
    estimate and actual, one row per host, the probe; all of it JSON."""
    data = report_data(a_run(), [])
    assert data["window"] == {"mode": "hold", "opened": iso_ms(OPENED),
                              "closed": iso_ms(OPENED + 0.043), "budget_s": 15,
                              "deadline": iso_ms(OPENED + 15), "outage_s": 0.043,
                              "estimated_s": 0.35, "over_budget": False}
    assert data["cold_patches"] == [
        {"name": "patch-2200-03-0.sql", "rehearsed_s": 0.02, "scale": 2.0, "estimated_s": 0.04,
         "actual_s": 0.012, "statements": 2},
        {"name": "patch-2200-04-0.sql", "rehearsed_s": None, "scale": None, "estimated_s": None,
         "actual_s": 0.021, "statements": 1}]
    assert data["hosts"] == [{"host": "app1", "state": "serving cccccccccccc"},
                             {"host": "app2", "state": "serving cccccccccccc"},
                             {"host": "scripts1", "state": "scripts started on cccccccccccc"}]
    assert (data["probe"]["failures"], data["failed_requests"], data["longest_wait_s"]) == (
        2, 2, 0.061)
    assert [s["name"] for s in data["steps"]] == ["stage_code", "hold_connections",
                                                  "apply_cold_patches", "stop_old_instances"]
    assert json.loads(json.dumps(data)) == data


def test_a_patch_applied_but_not_estimated_still_gets_its_row() -> None:
    """An actual timing with no estimate for it follows the estimated patches."""
    run = a_run(cold_patches=[{"filename": "patch-2200-05-0.sql", "duration_s": 1.5,
                               "statements": 3}])
    rows = report_data(run, [])["cold_patches"]
    assert [(r["name"], r["estimated_s"], r["actual_s"]) for r in rows] == [
        ("patch-2200-03-0.sql", 0.04, None), ("patch-2200-04-0.sql", None, None),
        ("patch-2200-05-0.sql", None, 1.5)]


def test_the_window_is_drawn_to_scale_against_the_deadline() -> None:
    """The window's rect is outage/budget of the budget's rect, which ends at the deadline."""
    chart = page(a_run()).one("svg", "window-chart")
    budget, window = chart.one("rect", "budget"), chart.one("rect", "window")
    estimate = chart.one("rect", "estimate")
    assert budget.number("x") == window.number("x") == X0
    assert budget.number("width") == pytest.approx(PLOT_W)
    assert window.number("width") / budget.number("width") == pytest.approx(0.043 / 15, rel=0.01)
    assert estimate.number("width") / budget.number("width") == pytest.approx(0.35 / 15, rel=0.01)
    deadline = chart.one("line", "deadline")
    assert deadline.number("x1") == pytest.approx(X0 + PLOT_W)
    assert "2026-11-25T16:47:25.000Z" in deadline.content()
    assert "43 ms: 0.3% of the budget" in chart.content()


def test_a_window_over_budget_runs_past_the_deadline() -> None:
    """Outage 20 s on a 15 s budget: the window rect is marked over and ends past the line."""
    run = a_run(outage_s=20.0, window={"opened": iso_ms(OPENED), "closed": iso_ms(OPENED + 20),
                                       "budget_s": 15})
    root = page(run)
    chart = root.one("svg", "window-chart")
    window, deadline = chart.one("rect", "over"), chart.one("line", "deadline")
    assert "window" in window.classes
    assert window.number("x") + window.number("width") > deadline.number("x1")
    assert deadline.number("x1") - X0 == pytest.approx(window.number("width") * 15 / 20)
    assert "OVER BUDGET" in root.content()


def test_the_zoom_spans_the_window_so_43_ms_fills_the_width() -> None:
    """The zoomed timeline's axis is the window plus a small margin: its shading fills ~90 %
    of the plot, where on the whole run's axis it is a sliver."""
    root = page(a_run())
    zoom = root.one("svg", "zoom")
    whole = next(svg for svg in root.all("svg", "timeline") if "zoom" not in svg.classes)
    assert zoom.one("rect", "win").number("width") >= 0.9 * PLOT_W
    assert whole.one("rect", "win").number("width") < 0.02 * PLOT_W
    # the steps inside the window are on the zoom; the ones long before or after are not
    labels = ["".join(row.one("text", "label").text) for row in zoom.all("g", "row")]
    assert labels == ["probe (users)", "hold_connections", "apply_cold_patches"]


def test_the_rows_one_per_host_one_per_probe_one_per_patch_one_per_step() -> None:
    """Hosts table: a row per host with its end state, the probe's own rows with failed
    requests and waits; patches table: estimated, rehearsed, actual side by side; the
    whole-run timeline: the probe row and a row per step."""
    root = page(a_run())
    hosts = root.one("table", "hosts")
    assert [(r.one("th").content(), r.one("td").content()) for r in hosts.all("tr", "host")] == [
        ("app1", "serving cccccccccccc"), ("app2", "serving cccccccccccc"),
        ("scripts1", "scripts started on cccccccccccc")]
    probe_rows = [r.content() for r in hosts.all("tr", "probe")]
    assert len(probe_rows) == 2
    assert "1361 requests, 2 failed" in probe_rows[0]
    assert "longest wait 0.061 s, p50 1.4 ms, p99 12 ms" in probe_rows[0]
    assert "window only" in probe_rows[1] and "9 requests" in probe_rows[1]
    patches = root.one("table", "patches")
    cells = [[td.content() for td in row.all("td")] for row in patches.all("tr", "patch")]
    assert cells == [["patch-2200-03-0.sql", "0.020 s", "x 2", "0.040 s", "0.012 s",
                      "-0.028 s", "2"],
                     ["patch-2200-04-0.sql", "-", "-", "-", "0.021 s", "-", "1"]]
    total = [td.content() for td in patches.one("tr", "total").all("td")]
    assert total[3:6] == ["0.350 s", "0.043 s", "-0.307 s"]
    chart = root.one("svg", "patches-chart")
    assert len(chart.all("g", "row", data_row="patch")) == 2
    assert len(chart.all("rect", "actual")) == 2 and len(chart.all("rect", "rehearsed")) == 1
    whole = next(svg for svg in root.all("svg", "timeline") if "zoom" not in svg.classes)
    assert len(whole.all("g", "row", data_row="probe")) == 1
    assert len(whole.all("g", "row", data_row="step")) == 4
    assert len(whole.one("g", "row", data_row="probe").all("rect", "down")) == 1


def test_no_estimate_says_so() -> None:
    """A summary without ``estimate`` renders, saying no estimate was recorded."""
    root = page(a_run(estimate=None))
    assert "no estimate recorded" in root.content()
    assert root.one("svg", "window-chart").all("rect", "estimate") == []
    assert root.one("table", "patches").all("tr", "total") == []


PARTIAL: list[dict[str, Any]] = [
    {},
    {"id": "r", "outcome": "done"},
    {key: None for key in a_run()},
    {"id": "r", "outcome": "crashed", "window": {"opened": iso_ms(OPENED), "closed": None},
     "steps": [{"name": "apply_cold_patches", "started": iso_ms(OPENED), "duration_s": None,
                "outcome": "unfinished"}]},
    {"id": "r", "hosts": ["app1"], "steps": "x", "cold_patches": {"a": 1}, "probe": [],
     "estimate": {"total_s": "soon", "patches": [None, {"name": None}]}, "window": "no",
     "notes": "x", "approvals": {}},
    a_run(probe={"requests": 3, "failures": 0, "outages": None}, probe_window=None,
          window_budget_s=None, window={"opened": iso_ms(OPENED), "budget_s": None},
          outage_s=None, hosts={}, cold_patches=[], estimate={"patches": []}),
    a_run(outage_s=float("nan"), window_budget_s=True,
          steps=[{"name": "s", "started": "yesterday", "duration_s": -1}]),
]


@pytest.mark.parametrize("run", PARTIAL, ids=range(len(PARTIAL)))
def test_old_partial_and_crashed_summaries_still_render(run: dict[str, Any]) -> None:
    """Missing keys, None values, wrong types, a crashed run with no window: the data is
    JSON and the page parses, self-contained."""
    data = report_data(run, [])
    json.dumps(data)
    document = render_report(data)
    root = Page(document).root
    assert root.all("script") == [] and root.all("link") == []
    assert root.one("table", "hosts") and root.one("table", "steps")


def test_a_window_that_never_closed_is_drawn_up_to_the_last_instant() -> None:
    """A crashed run's open window: grey to the last thing known, and said never closed."""
    run = {"id": "r", "outcome": "crashed", "window_budget_s": 15,
           "window": {"opened": iso_ms(OPENED), "closed": None, "budget_s": 15}}
    journal = [{"ts": iso_ms(OPENED + 3.0), "event": "step.start", "step": "apply_cold_patches"}]
    chart = page(run, journal).one("svg", "window-chart")
    unclosed = chart.one("rect", "unclosed")
    assert unclosed.number("width") / chart.one("rect", "budget").number("width") == \
        pytest.approx(3 / 15, rel=0.01)
    assert "never closed" in chart.content()


def test_the_page_is_self_contained_and_escapes_everything() -> None:
    """No script, no external reference; hostile names from data stay text."""
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    run = a_run(who=evil, hosts={evil: evil},
                estimate={**ESTIMATE, "overhead_source": evil,
                          "patches": [{"name": evil, "rehearsed_s": 1.0}]},
                steps=[{"name": evil, "host": evil, "stage": evil, "started": iso_ms(T0),
                        "duration_s": 1.0, "outcome": evil}])
    document = render_report(report_data(run, [{"ts": iso_ms(T0), "event": evil}]))
    root = Page(document).root
    assert root.all("script") == [] and root.all("img") == []
    assert evil in root.content()
    assert not [node for node in _walk(root) if {"src", "href"} & set(node.attrs)]
    assert "url(" not in document and "@import" not in document
    assert re.findall(r"https?://[^\s\"']+", document) == ["http://www.w3.org/2000/svg"] * len(
        root.all("svg"))
    assert "Content-Security-Policy" in document


def _walk(node: Node) -> list[Node]:
    return [node] + [n for child in node.children for n in _walk(child)]


def test_show_and_report_html_share_the_figures() -> None:
    """render_html (views.runs) is the report page, and its figures read as ``show``'s."""
    run = a_run()
    assert render_html(run, []) == render_report(report_data(run, []))
    cells = Page(render_html(run, [])).root.one("table", "summary").content()
    assert "0.043 s" in cells and "15.000 s" in cells and "2026-11-25T16:47:10.000Z" in cells
