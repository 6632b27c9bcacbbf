"""The report page in a real browser: headless Chromium opens the file offline and draws it.

Needs no sandbox, only ``/usr/bin/chromium`` (``tools/install-system-packages``
installs it). The page is written from a synthetic summary; Chromium takes a
screenshot (which must not be blank and must show the drawings' colours) and
dumps the DOM it built (which must hold the SVG rows the file has).
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runner.journal import iso_ms
from orchestrator.views.report import render_report, report_data

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
T0 = 1795625226.0  # 2026-11-25T16:47:06Z
OPENED = T0 + 4.0

STEP_BLUE = (0x3B, 0x7D, 0xD8)  # rect.bar (report.css)
BUDGET_BLUE = (0xE4, 0xEE, 0xFC)  # rect.budget
WINDOW_AMBER = (0xF0, 0xA8, 0x00)  # rect.window


def synthetic_run() -> dict[str, Any]:
    """A hold-mode run: a 43 ms window in a 15 s budget, two cold patches, three hosts."""
    steps = [("stage_code", "prepare", T0 + 0.6, 1.2), ("start_new", "prepare", T0 + 1.9, 2.0),
             ("hold_connections", "fastdowntime", OPENED, 0.001),
             ("apply_cold_patches", "fastdowntime", OPENED + 0.001, 0.034),
             ("release_connections", "fastdowntime", OPENED + 0.036, 0.007),
             ("stop_old_instances", "fastdowntime", T0 + 4.1, 3.0)]
    probe = {"requests": 1361, "failures": 1, "interval_s": 0.005, "first": T0 + 0.5,
             "last": T0 + 9.0, "longest_s": 0.02, "total_s": 0.02, "down_at_end": False,
             "outages": [{"start": OPENED + 0.01, "end": OPENED + 0.03, "duration_s": 0.02}],
             "longest_wait_s": 0.061, "p50_s": 0.0014, "p99_s": 0.0123}
    return {
        "id": "20261125-164706-abcd", "who": "alice", "outcome": "done", "from": "a" * 40,
        "to": "b" * 40, "cut": "c" * 40, "started": iso_ms(T0), "finished": iso_ms(T0 + 9.5),
        "window_budget_s": 15, "window_mode": "hold", "outage_s": 0.043,
        "window": {"opened": iso_ms(OPENED), "closed": iso_ms(OPENED + 0.043), "budget_s": 15},
        "probe": probe, "probe_window": {**probe, "requests": 9}, "failed_requests": 1,
        "longest_wait_s": 0.061,
        "hosts": {"app1": "serving cccccccccccc", "app2": "serving cccccccccccc",
                  "scripts1": "scripts started on cccccccccccc"},
        "cold_patches": [{"filename": "patch-2200-03-0.sql", "duration_s": 0.012,
                          "statements": 2},
                         {"filename": "patch-2200-04-0.sql", "duration_s": 0.021,
                          "statements": 1}],
        "estimate": {"total_s": 0.35, "overhead_s": 0.25, "overhead_source": "default",
                     "patches": [{"name": "patch-2200-03-0.sql", "rehearsed_s": 0.02,
                                  "scale": 2.0, "estimated_s": 0.04},
                                 {"name": "patch-2200-04-0.sql", "rehearsed_s": 0.03,
                                  "scale": 2.0, "estimated_s": 0.06}]},
        "steps": [{"name": name, "stage": stage, "host": None, "started": iso_ms(at),
                   "duration_s": duration, "outcome": "ok"}
                  for name, stage, at, duration in steps],
        "approvals": [], "error": None}


class Rows(HTMLParser):
    """Counts, per ``<svg class>``, its ``<g class="row" data-row>`` rows (lenient parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.svg: str | None = None
        self.rows: Counter[tuple[str, str]] = Counter()
        self.svgs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "svg":
            self.svg = named.get("class") or ""
            self.svgs.append(self.svg)
        elif tag == "g" and self.svg is not None and "row" in (named.get("class") or "").split():
            self.rows[(self.svg, named.get("data-row") or "")] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = None


def rows_of(document: str) -> Rows:
    parser = Rows()
    parser.feed(document)
    parser.close()
    return parser


EXPECTED_ROWS = {
    ("window-chart", "budget"): 1, ("window-chart", "window"): 1,
    ("window-chart", "estimate"): 1, ("patches-chart", "patch"): 2,
    ("timeline", "probe"): 1, ("timeline", "step"): 6,
    ("timeline zoom", "probe"): 1, ("timeline zoom", "step"): 3,
}


def chromium(page: Path, tmp_path: Path, *action: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` with nothing reaching out (no network services)."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", *action, "--window-size=1200,1600",
               page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced truecolour PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    width = height = depth = colour = interlace = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    assert (depth, interlace) == (8, 0) and colour in (2, 6), (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(size, stride):
                line[i] = (line[i] + line[i - size]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - size] if i >= size else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - size] if i >= size else 0
                b, c = previous[i], previous[i - size] if i >= size else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(b for i, b in enumerate(r) if i % size < 3) for r in rows]


@pytest.fixture
def page(tmp_path: Path) -> Path:
    """The synthetic run's report, written as ``report RUN --html`` writes it."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: tools/install-system-packages installs chromium")
    path = tmp_path / "report.html"
    path.write_text(render_report(report_data(synthetic_run(), [])), encoding="utf-8")
    assert rows_of(path.read_text()).rows == Counter(EXPECTED_ROWS)
    return path


def test_chromium_draws_the_report_offline(page: Path, tmp_path: Path) -> None:
    """The screenshot is not blank: many distinct colours, among them the step bars', the
    budget's and the window's fills, so the inline SVG and CSS were drawn."""
    shot = tmp_path / "report.png"
    done = chromium(page, tmp_path, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = Counter(tuple(row[i:i + 3]) for row in rows for i in range(0, len(row), 3))
    assert len(colours) > 20, colours.most_common(5)
    white = colours.get((255, 255, 255), 0)
    assert white < 0.97 * width * height, "the page is (almost) all white"
    for name, colour in (("step bar", STEP_BLUE), ("budget", BUDGET_BLUE),
                         ("window", WINDOW_AMBER)):
        near = sum(count for seen, count in colours.items()
                   if all(abs(s - c) <= 3 for s, c in zip(seen, colour, strict=True)))
        assert near >= 10, f"no {name} colour {colour} in the screenshot"


def test_chromium_builds_the_svg_rows_the_file_has(page: Path, tmp_path: Path) -> None:
    """The DOM Chromium built from the file holds the same SVG drawings and rows."""
    done = chromium(page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    seen = rows_of(done.stdout)
    assert seen.svgs == ["window-chart", "patches-chart", "timeline", "timeline zoom"]
    assert seen.rows == Counter(EXPECTED_ROWS)
