"""The run summary: what a run did, per observatory, in numbers a script can trust."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aretriever.redact import redact


class Outcome(StrEnum):
    """What happened to one source in one observatory lane."""

    FETCHED = "fetched"  # new data from the archive
    REFETCHED = "refetched"  # the row existed but its file was missing, resized or unreadable
    SKIPPED = "skipped"  # already stored: no request
    RELINKED = "relinked"  # a file without a row got its row back: no request
    REDUCED = "reduced"  # raw data on disk, lightcurves were missing: reduced again, no request
    NO_DATA = "no_data"  # nothing to ask the archive for (e.g. below its declination limit)
    FAILED = "failed"


@dataclass(slots=True)
class LaneSummary:
    """Counts for one observatory lane."""

    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # hedges included
    retries: int = 0
    hedged: int = 0  # late requests sent a second time (aretriever.hedge); not retries
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, outcome: Outcome, reason: str | None = None) -> None:
        self.outcomes[outcome.value] += 1
        if outcome is Outcome.FAILED:
            self.failures[redact(reason) if reason else "unknown"] += 1  # summaries are shown and saved


@dataclass(slots=True)
class RunSummary:
    """Counts for a whole run."""

    lanes: dict[str, LaneSummary] = field(default_factory=dict)
    bad_rows: Counter[str] = field(default_factory=Counter)
    failed_row_writes: int = 0  # database writes refused after retries (each is logged)
    elapsed_s: float = 0.0
    interrupted: bool = False

    def lane(self, name: str) -> LaneSummary:
        return self.lanes.setdefault(name, LaneSummary())

    def total(self, outcome: Outcome) -> int:
        return sum(lane.outcomes[outcome.value] for lane in self.lanes.values())

    @property
    def failed(self) -> int:
        # Everything the run did not store counts, so exit code 0 never hides a lost row or source.
        return self.total(Outcome.FAILED) + sum(self.bad_rows.values()) + self.failed_row_writes

    @property
    def handled(self) -> int:
        return sum(sum(lane.outcomes.values()) for lane in self.lanes.values())

    @property
    def sources_per_s(self) -> float:
        return self.handled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (``--summary-json``)."""
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "sources_per_s": round(self.sources_per_s, 3),
            "interrupted": self.interrupted,
            "failed": self.failed,
            "bad_catalog_rows": dict(self.bad_rows),
            "failed_row_writes": self.failed_row_writes,
            "observatories": {
                name: {
                    # Every outcome, zeros included: scripts read a fixed set of keys without checking.
                    **{o.value: lane.outcomes[o.value] for o in Outcome},
                    "failures": dict(lane.failures),
                    "requests": lane.requests,
                    "retries": lane.retries,
                    "hedged": lane.hedged,
                    "http_statuses": {str(k): v for k, v in sorted(lane.statuses.items())},
                }
                for name, lane in self.lanes.items()
            },
        }

    def format_table(self) -> str:
        """A plain-text table for the terminal."""
        cols = [o.value for o in Outcome] + ["requests", "retries", "hedged"]
        lines = ["observatory " + " ".join(f"{c:>9}" for c in cols)]
        for name, lane in self.lanes.items():
            values = [lane.outcomes[o.value] for o in Outcome] + [lane.requests, lane.retries, lane.hedged]
            lines.append(f"{name:<11} " + " ".join(f"{v:>9}" for v in values))
            lines.extend(f"  failed ({reason}): {n}" for reason, n in lane.failures.most_common())
        lines.extend(f"bad catalog rows ({reason}): {n}" for reason, n in self.bad_rows.most_common())
        if self.failed_row_writes:
            lines.append(f"database writes that failed (see the log): {self.failed_row_writes}")
        lines.append(f"{self.handled} source-lanes in {self.elapsed_s:.1f} s ({self.sources_per_s:.1f}/s)")
        return "\n".join(lines)
