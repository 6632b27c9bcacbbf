"""The ``report`` views: one run's page and the trend of every run, as self-contained HTML.

:func:`report_data` and :func:`trend_data` turn run summaries (and a run's
journal) into plain JSON data (``report --json``); :func:`render_report` and
:func:`render_trend` draw a page from that data alone, from the template
files of this package (``run.html``, ``trend.html``, ``report.css``, read with
:mod:`importlib.resources`): inline CSS and SVG, no script, nothing fetched,
everything that comes from data escaped.
"""

from orchestrator.views.report.data import report_data, run_line, trend_data
from orchestrator.views.report.page import render_report
from orchestrator.views.report.trend import render_trend

__all__ = ["render_report", "render_trend", "report_data", "run_line", "trend_data"]
