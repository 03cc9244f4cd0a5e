"""The project's score histograms on disk, counted while a run analyses lightcurves.

Counts since the last save are kept in memory and added to the file at each save (every
``save_every_s`` and at the end of a run), so the file always holds whole lightcurves and a
killed run loses at most the counts of its last interval (its sources stay analysed: see
docs/design.md). Counting runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import numpy as np
import pandas as pd

from aretriever.adapters.base import Target
from aretriever.errors import ConfigError
from aretriever.pool import ReducedTable
from aretriever.science.histograms import ScoreHistograms, histogram_path
from aretriever.settings import HistogramConfig

log = logging.getLogger("aretriever.histograms")

_COLUMNS = ("snr", "dmag", "offset", "flagged")


class HistogramFile:
    """Score histograms of one project folder (``<folder>/score_histograms.h5``).

    Raises
    ------
    ConfigError
        The file on disk was counted with other bins (change the bins with version control on,
        or move the old file away).
    """

    def __init__(self, project_dir: Path, cfg: HistogramConfig) -> None:
        self.path = histogram_path(project_dir)
        self.cfg = cfg
        self._pending = ScoreHistograms(cfg)
        self._lock = threading.Lock()
        if self.path.exists():
            stored = ScoreHistograms.load(self.path)
            if stored.binning() != self._pending.binning():
                raise ConfigError(
                    f"config: analysis.histograms: {self.path} was counted with bins {stored.binning()},"
                    f" not {self._pending.binning()}"
                )

    async def add(self, target: Target, tables: Sequence[ReducedTable]) -> None:
        """Count the scores of a source's analysed lightcurves."""
        await anyio.to_thread.run_sync(self._add, target, tables)

    def _add(self, target: Target, tables: Sequence[ReducedTable]) -> None:
        for table in tables:
            names = table.records.dtype.names or ()
            if not all(column in names for column in _COLUMNS):
                continue  # not analysed
            scores = pd.DataFrame({column: table.records[column] for column in _COLUMNS})
            exptime = (
                np.asarray(table.records["exptime"], dtype=float)
                if "exptime" in names
                else table.stats.get("exptime_s")
            )
            with self._lock:
                self._pending.add(scores, target.mag, exptime, table.filter)

    async def save(self) -> None:
        """Add the counts since the last save to the file (written atomically)."""
        await anyio.to_thread.run_sync(self._save)

    def _save(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, ScoreHistograms(self.cfg)
        if pending.n_points() == 0:
            return
        try:
            total = ScoreHistograms.load(self.path) + pending if self.path.exists() else pending
            total.save(self.path)
        except Exception:
            with self._lock:  # keep the counts for the next save
                self._pending = pending + self._pending
            raise
        log.info("histograms: %d points added to %s", pending.n_points(), self.path)
