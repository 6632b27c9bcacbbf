"""How long users will wait: the outage estimate, from rehearsals and this environment's runs.

Pure. The window lasts the cold patches' own time plus the window's overhead
(holding connections, COMMIT, letting them back, the swap).

- **The patches' time** comes from the staging rehearsal of each patch version.
  A rehearsal also recorded, per statement, its seconds and the size of the tables
  it touched on staging. A statement whose time grows with its tables' size (a
  rewrite, a full scan, an index build, UPDATE or DELETE of an existing table: see
  :attr:`~orchestrator.patches.Statement.grows`) is scaled by how much larger its
  largest table is here than it was on staging; catalog-only work is not scaled.
  A table that exists on one side only makes the statement's estimate unknown
  (on neither side: the patch creates it, empty). Without statement records or
  sizes here the rehearsed seconds are taken as they are.
- **The overhead** is learned: the median of (window - cold patch time) over this
  environment's last successful runs (:func:`learned_overhead`); with no history,
  :data:`WINDOW_OVERHEAD_S` is assumed. The least and the most those runs took are
  kept beside it: one window's overhead varies from run to run (the machine's load,
  in-flight queries to wait for), and the release manager sees by how much.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW_OVERHEAD_S = 0.1
"""The window's own cost on top of the cold patches when no run has measured it here:
control work and round trips."""
HISTORY_RUNS = 10
"""How many of the latest successful runs the overhead is learned from."""


@dataclass(frozen=True)
class TableSize:
    """A table's size: bytes on disk (what a scan or a rewrite reads) and rows (estimated)."""

    bytes: int
    rows: float

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "rows": self.rows}

    @classmethod
    def from_json(cls, data: Any) -> TableSize | None:
        if not isinstance(data, Mapping):
            return None
        return cls(int(data["bytes"]), float(data["rows"]))


Sizes = Mapping[str, TableSize | None]
"""Table (as the patch names it) -> its size, or None when it does not exist."""


@dataclass(frozen=True)
class StatementTiming:
    """One statement of a rehearsed patch: its seconds, whether its time grows with its
    tables' size, and those tables' sizes on staging before the rehearsal."""

    seconds: float
    grows: bool
    tables: Sizes = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "grows": self.grows,
                "tables": {name: None if size is None else size.to_json()
                           for name, size in self.tables.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatementTiming:
        return cls(float(data["seconds"]), bool(data["grows"]),
                   {str(name): TableSize.from_json(size)
                    for name, size in (data.get("tables") or {}).items()})


@dataclass(frozen=True)
class Overhead:
    """The window's own cost, and where the figure comes from (words for people)."""

    seconds: float
    source: str
    seen_s: tuple[float, float] | None = None
    """The least and the most overhead of the runs learned from (None: fewer than two)."""

    @classmethod
    def assumed(cls) -> Overhead:
        return cls(WINDOW_OVERHEAD_S, f"no history: {WINDOW_OVERHEAD_S * 1000:.0f} ms assumed")


@dataclass(frozen=True)
class PatchEstimate:
    """One cold patch: its rehearsed seconds, the factor its size here applies, the
    estimate (None: unknown, ``why`` says so)."""

    name: str
    rehearsed_s: float | None
    scale: float | None
    estimated_s: float | None
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rehearsed_s": _round(self.rehearsed_s),
                "scale": _round(self.scale), "estimated_s": _round(self.estimated_s),
                "why": self.why}


@dataclass(frozen=True)
class Estimate:
    """The outage estimate: each cold patch's, the overhead, their total (None: a patch
    is unknown)."""

    patches: tuple[PatchEstimate, ...]
    overhead: Overhead
    sizes_read: bool
    """Whether this environment's table sizes were read (else nothing was scaled)."""

    @property
    def total_s(self) -> float | None:
        if not self.patches:
            return 0.0
        if any(p.estimated_s is None for p in self.patches):
            return None
        return round(sum(p.estimated_s or 0.0 for p in self.patches) + self.overhead.seconds, 3)

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.patches if p.estimated_s is None)

    def to_json(self) -> dict[str, Any]:
        return {"total_s": self.total_s, "overhead_s": round(self.overhead.seconds, 6),
                "overhead_source": self.overhead.source,
                "overhead_seen_s": (None if self.overhead.seen_s is None
                                    else [round(v, 6) for v in self.overhead.seen_s]),
                "sizes_read": self.sizes_read,
                "patches": [p.to_json() for p in self.patches]}

    @property
    def source(self) -> str:
        """Where the figure comes from, in words: the overhead's source, the scaling."""
        scaled = [p for p in self.patches if p.scale not in (None, 1.0)]
        sizes = (f"{len(scaled)} patch(es) scaled to this database's table sizes"
                 if scaled else "sizes here read, nothing to scale" if self.sizes_read
                 else "not scaled: this database's table sizes were not read")
        return f"overhead {self.overhead.seconds * 1000:.0f} ms, {self.overhead.source}; {sizes}"

    def describe(self) -> str:
        """One line: the total and where its parts come from."""
        total = "unknown" if self.total_s is None else f"{self.total_s:.3f} s"
        return f"{total} ({self.source})"


def estimate(cold_patches: Sequence[str], seconds: Mapping[str, float],
             statements: Mapping[str, Sequence[StatementTiming]],
             here: Sizes | None, overhead: Overhead) -> Estimate:
    """The estimate of a window applying ``cold_patches``: ``seconds`` and ``statements``
    are each patch's rehearsal (by name), ``here`` this database's table sizes (None: not
    read)."""
    patches = tuple(_patch(name, seconds.get(name), statements.get(name) or (), here)
                    for name in cold_patches)
    return Estimate(patches, overhead, here is not None)


def tables_of(statements: Iterable[Sequence[StatementTiming]]) -> list[str]:
    """Every table the growing statements of these rehearsals touched (sizes to read here)."""
    return sorted({name for patch in statements for s in patch if s.grows for name in s.tables})


def _patch(name: str, rehearsed: float | None, statements: Sequence[StatementTiming],
           here: Sizes | None) -> PatchEstimate:
    if rehearsed is None:
        return PatchEstimate(name, None, None, None, "never rehearsed")
    if here is None or not statements:
        return PatchEstimate(name, rehearsed, 1.0, rehearsed,
                             "" if here is None else "rehearsed without statement records")
    total = 0.0
    for number, statement in enumerate(statements, 1):
        factor, why = _factor(statement, here)
        if factor is None:
            return PatchEstimate(name, rehearsed, None, None, f"statement {number}: {why}")
        total += statement.seconds * factor
    # the time between statements (the revision row, the round trips) is not scaled
    total += max(0.0, rehearsed - sum(s.seconds for s in statements))
    return PatchEstimate(name, rehearsed, round(total / rehearsed, 3) if rehearsed else 1.0,
                         round(total, 6))


def _factor(statement: StatementTiming, here: Sizes) -> tuple[float | None, str]:
    """How many times longer ``statement`` takes here (None: unknown, and why)."""
    if not statement.grows:
        return 1.0, ""
    ratios = []
    for table, staged in statement.tables.items():
        now = here.get(table)
        if staged is None and now is None:
            continue  # created by the patch: empty on both sides
        if staged is None or now is None:
            side = "staging" if staged is None else "this database"
            return None, f"table {table} does not exist on {side}"
        if staged.bytes == 0:
            if now.bytes:
                return None, f"table {table} was empty on staging: its time cannot be scaled"
            continue
        ratios.append(now.bytes / staged.bytes)
    return max(ratios, default=1.0), ""


def learned_overhead(summaries: Iterable[Mapping[str, Any]],
                     runs: int = HISTORY_RUNS) -> Overhead:
    """The median window overhead (window - cold patch time) of the latest ``runs``
    successful runs in ``summaries`` (newest first), or the assumed constant."""
    seen = []
    for summary in summaries:
        if summary.get("outcome") != "done" or summary.get("outage_s") is None:
            continue
        cold = [p.get("duration_s") for p in summary.get("cold_patches") or []]
        if not cold or any(not isinstance(c, (int, float)) for c in cold):
            continue
        seen.append(max(0.0, float(summary["outage_s"]) - sum(cold)))
        if len(seen) == runs:
            break
    if not seen:
        return Overhead.assumed()
    median = statistics.median(seen)
    if len(seen) == 1:
        return Overhead(median, "1 run")
    low, high = min(seen), max(seen)
    return Overhead(median, f"median of {len(seen)} runs, {low * 1000:.0f}-{high * 1000:.0f} ms "
                            "seen", (low, high))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


__all__ = ["Estimate", "Overhead", "PatchEstimate", "Sizes", "StatementTiming", "TableSize",
           "estimate", "learned_overhead", "tables_of"]
