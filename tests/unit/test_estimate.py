"""The outage estimate: rehearsed seconds scaled to this database's table sizes, plus the
overhead this environment's runs measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.db.timings import median_timings
from orchestrator.estimate import (
    WINDOW_OVERHEAD_S,
    Overhead,
    StatementTiming,
    TableSize,
    estimate,
    learned_overhead,
    tables_of,
)

MB = 1 << 20
OVERHEAD = Overhead(0.04, "median of 3 runs")


def size(mb: float, rows: float = 0.0) -> TableSize:
    return TableSize(int(mb * MB), rows)


def scan(seconds: float, table: str = "item", staged: TableSize | None = None) -> StatementTiming:
    return StatementTiming(seconds, True, {table: staged if staged is not None else size(10)})


def catalog(seconds: float) -> StatementTiming:
    return StatementTiming(seconds, False, {"item": size(10)})


def test_a_growing_statement_scales_with_its_table_the_others_do_not() -> None:
    """Production's item is 4x staging's: the scan takes 4x, the catalog change does not,
    nor does the time between statements."""
    statements = {"p1.sql": [catalog(0.01), scan(1.0)]}
    got = estimate(["p1.sql"], {"p1.sql": 1.05}, statements, {"item": size(40)}, OVERHEAD)
    [patch] = got.patches
    assert patch.estimated_s == pytest.approx(0.01 + 4.0 + 0.04)
    assert patch.scale == pytest.approx(4.05 / 1.05, abs=1e-3)
    assert got.total_s == pytest.approx(4.05 + 0.04, abs=1e-3)
    assert "1 patch(es) scaled" in got.describe() and "median of 3 runs" in got.describe()


def test_the_same_sizes_change_nothing() -> None:
    statements = {"p1.sql": [scan(1.0)]}
    got = estimate(["p1.sql"], {"p1.sql": 1.0}, statements, {"item": size(10)}, OVERHEAD)
    assert got.patches[0].scale == 1.0 and got.total_s == pytest.approx(1.04)


def test_the_largest_of_a_statements_tables_sets_its_factor() -> None:
    both = StatementTiming(1.0, True, {"a": size(10), "b": size(10)})
    got = estimate(["p.sql"], {"p.sql": 1.0}, {"p.sql": [both]},
                   {"a": size(20), "b": size(30)}, OVERHEAD)
    assert got.patches[0].estimated_s == pytest.approx(3.0)


@pytest.mark.parametrize(("staged", "here", "why"), [
    (None, size(10), "does not exist on staging"),
    (size(10), None, "does not exist on this database"),
    (size(0), size(10), "was empty on staging"),
])
def test_a_table_on_one_side_only_makes_the_patch_unknown(
        staged: TableSize | None, here: TableSize | None, why: str) -> None:
    statement = StatementTiming(1.0, True, {"item": staged})
    got = estimate(["p.sql"], {"p.sql": 1.0}, {"p.sql": [statement]}, {"item": here},
                   OVERHEAD)
    assert got.total_s is None and got.unknown == ("p.sql",)
    assert why in got.patches[0].why and "statement 1" in got.patches[0].why


def test_a_table_the_patch_creates_is_not_scaled() -> None:
    statement = StatementTiming(0.5, True, {"tag": None})
    got = estimate(["p.sql"], {"p.sql": 0.5}, {"p.sql": [statement]}, {"tag": None}, OVERHEAD)
    assert got.patches[0].estimated_s == pytest.approx(0.5)


def test_without_sizes_or_records_the_rehearsal_is_taken_as_it_is() -> None:
    got = estimate(["p.sql", "q.sql"], {"p.sql": 2.0, "q.sql": 1.0}, {"p.sql": [scan(2.0)]},
                   None, OVERHEAD)
    assert [p.estimated_s for p in got.patches] == [2.0, 1.0]
    assert not got.sizes_read and "not scaled" in got.describe()
    got = estimate(["q.sql"], {"q.sql": 1.0}, {}, {"item": size(40)}, OVERHEAD)
    assert got.patches[0].estimated_s == 1.0
    assert "without statement records" in got.patches[0].why


def test_a_patch_never_rehearsed_is_unknown_and_no_window_costs_nothing() -> None:
    got = estimate(["p.sql"], {}, {}, None, OVERHEAD)
    assert got.total_s is None and got.patches[0].why == "never rehearsed"
    assert estimate([], {}, {}, None, OVERHEAD).total_s == 0.0


def test_only_the_growing_statements_tables_are_read() -> None:
    statements = [[catalog(0.1), scan(1.0, "big")], [scan(1.0, "other")]]
    assert tables_of(statements) == ["big", "other"]


def test_records_survive_json() -> None:
    record = StatementTiming(1.5, True, {"item": size(3, 1000.0), "tag": None})
    assert StatementTiming.from_json(record.to_json()) == record


def summary(outcome: str, outage: float | None, *cold: float) -> dict[str, object]:
    return {"outcome": outcome, "outage_s": outage,
            "cold_patches": [{"filename": f"p{i}.sql", "duration_s": c}
                             for i, c in enumerate(cold)]}


def timing(filename: str, seconds: float, *statements: float) -> dict[str, object]:
    return {"filename": filename, "duration_s": seconds, "statements": len(statements),
            "statement_s": statements}


def test_a_rehearsal_records_the_median_of_its_trials_and_its_window() -> None:
    """Per statement its median, per patch their sum and the median time between them: one
    slow run of three (a busy staging machine) does not become the timing production
    scales."""
    runs = [[timing("patch-1-00-0.sql", 0.9, 0.8, 0.1), timing("patch-1-01-0.sql", 0.01, 0.01)],
            [timing("patch-1-00-0.sql", 0.5, 0.45, 0.05), timing("patch-1-01-0.sql", 0.02, 0.02)],
            [timing("patch-1-00-0.sql", 0.4, 0.3, 0.1), timing("patch-1-01-0.sql", 0.03, 0.03)]]
    assert median_timings(runs) == [
        timing("patch-1-00-0.sql", 0.55, 0.45, 0.1), timing("patch-1-01-0.sql", 0.02, 0.02)]
    # two runs (a trial short): the mean of the two
    assert median_timings(runs[:2])[0] == timing("patch-1-00-0.sql", 0.7, 0.625, 0.075)
    assert median_timings(runs[2:]) == runs[2] and median_timings([]) == []


def test_a_slow_statement_and_a_slow_gap_in_different_runs_do_not_both_count() -> None:
    """Run 1's statement was slow, run 2's time between statements: the patch's seconds
    are the typical statement plus the typical gap, not the median of the two slow runs."""
    runs = [[timing("patch-1-00-0.sql", 1.01, 1.0)], [timing("patch-1-00-0.sql", 0.9, 0.4)],
            [timing("patch-1-00-0.sql", 0.41, 0.4)]]
    assert median_timings(runs) == [timing("patch-1-00-0.sql", 0.41, 0.4)]


def test_runs_that_timed_different_statements_keep_the_patch_median_only() -> None:
    """Statement seconds that do not line up are dropped (the estimate then takes the patch
    as rehearsed); runs of different patches are a bug, refused."""
    runs = [[timing("patch-1-00-0.sql", 0.9, 0.8, 0.1)], [timing("patch-1-00-0.sql", 0.5, 0.5)]]
    assert median_timings(runs) == [{**timing("patch-1-00-0.sql", 0.7), "statements": 2}]
    with pytest.raises(ValueError, match="patch-1-00-0.sql, patch-1-01-0.sql"):
        median_timings([[timing("patch-1-00-0.sql", 1)], [timing("patch-1-01-0.sql", 1)]])


def test_the_overhead_is_the_median_of_the_latest_successful_runs() -> None:
    runs = [summary("done", 0.150, 0.100),          # 50 ms
            summary("rolled-back", 9.0, 0.1),       # not a successful window
            summary("done", 0.080, 0.020, 0.020),   # 40 ms
            summary("done", None),                  # no window
            summary("done", 0.500, 0.430),          # 70 ms
            summary("done", 1.0, 0.0)]              # beyond the latest 3
    got = learned_overhead(runs, runs=3)
    assert got.seconds == pytest.approx(0.05)
    # the spread is shown beside the median: one window's overhead varies
    assert got.source == "median of 3 runs, 40-70 ms seen"
    assert got.seen_s == pytest.approx((0.04, 0.07))
    one = learned_overhead(runs[:1])
    assert (one.seconds, one.source, one.seen_s) == (pytest.approx(0.05), "1 run", None)
    shown = estimate(["p.sql"], {"p.sql": 1.0}, {}, None, got).to_json()
    assert shown["overhead_seen_s"] == [pytest.approx(0.04), pytest.approx(0.07)]


def test_no_history_assumes_the_constant() -> None:
    got = learned_overhead([summary("failed", 1.0, 0.1)])
    assert got.seconds == WINDOW_OVERHEAD_S and "no history" in got.source


def test_the_overhead_is_learned_from_the_runs_directory(tmp_path: Path) -> None:
    """Through ``[runs] dir`` as preflight reads it: the summaries written there, whole (the
    run list alone lacks the cold patches' seconds, and learned nothing)."""
    import dataclasses

    from orchestrator.config import Config, RunsSettings
    from orchestrator.runner.preflight import _overhead
    from orchestrator.runner.runs import write_summary

    config = dataclasses.replace(Config(path=None), runs=RunsSettings(dir=str(tmp_path)))
    assert "no history" in _overhead(config).source
    for number, (outage, cold) in enumerate([(0.150, 0.100), (0.090, 0.060)]):
        write_summary(tmp_path, f"2026120{number}-000000-aaaa", {
            **summary("done", outage, cold), "id": f"2026120{number}-000000-aaaa",
            "started": f"2026-12-0{number + 1}T00:00:00Z"})
    got = _overhead(config)
    assert got.seconds == pytest.approx(0.04) and got.source == "median of 2 runs, 30-50 ms seen"
