"""The project's score histograms on disk, counted while a run analyses lightcurves.

Counts since the last save are kept in memory and added to the file at each save (every
``histogram_save_s``, as soon as :data:`MAX_PENDING` lightcurves wait, and at the end of a run:
the bins of a lightcurve take a few KB, so at 70 sources/s a minute of them grew the process by
~120 MB), so the file always holds whole lightcurves and a
killed run loses at most the counts of its last interval (its sources stay analysed: see
docs/design.md). The points arrive binned by the pool worker (:mod:`aretriever.engine.score_bins`,
``ReducedTable.binned``), so adding a source here is only its ledger digests; counting runs at
the save, in a worker thread, off the event loop.

Several processes may analyse one project at once, and a source may be analysed again (its
reduced file was deleted, the database was rebuilt by ``populate``, a killed run is resumed):

- each save is one read-add-write of the file under an exclusive ``flock`` on the sidecar
  ``score_histograms.h5.lock``, so no process overwrites counts another one added;
- the file keeps a ledger (``counted``, sorted uint64) of 64-bit digests of every lightcurve it
  counted: observatory, source name, its number and total (``series_number``/``series_total``),
  filter, time span and config hash. A save adds only lightcurves whose digest is not in the
  ledger, in the same locked write, so counts and ledger never disagree and a lightcurve is
  counted once however often it is analysed. A lightcurve that changed (new data after a
  refetch: another span) is a new lightcurve and is counted again; its old counts stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import numpy as np

from aretriever.adapters.base import Target
from aretriever.engine.histogram_io import histogram_path, load_histograms, load_with_ledger, save_histograms
from aretriever.engine.pool import ReducedTable
from aretriever.errors import ConfigError
from aretriever.science.binning import Binned
from aretriever.science.histograms import ScoreHistograms
from aretriever.settings import HistogramConfig

log = logging.getLogger("aretriever.histograms")


def lightcurve_digest(
    observatory: str, source: str, number: int, total: int, table: ReducedTable, cfg_hash: str
) -> int:
    """The 64-bit identity of one analysed lightcurve (what the ledger records)."""
    identity = [
        observatory,
        source,
        number,
        total,
        table.filter,
        float(table.time_start_mjd).hex(),  # exact: the same data reduce to the same bits
        float(table.time_end_mjd).hex(),
        cfg_hash,
    ]
    text = json.dumps(identity, ensure_ascii=True)  # any name, even lone surrogates, encodes
    return int.from_bytes(hashlib.blake2b(text.encode("ascii"), digest_size=8).digest(), "big")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created, never deleted: deleting lock files races)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


#: Lightcurves whose bins wait in memory at most before a save (a few MB of bins).
MAX_PENDING = 2000


class HistogramFile:
    """Score histograms of one project folder (``<folder>/score_histograms.h5``).

    Raises
    ------
    ConfigError
        The file on disk was counted with other bins (change the bins with version control on,
        or move the old file away).
    """

    def __init__(
        self, project_dir: Path, cfg: HistogramConfig, cfg_hash: str = "", max_pending: int | None = None
    ) -> None:
        self.path = histogram_path(project_dir)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.cfg = cfg
        self.cfg_hash = cfg_hash
        self._empty = ScoreHistograms(cfg)  # its binning, which the file and the workers must share
        self._pending: dict[int, Binned] = {}  # digest -> a lightcurve not saved yet
        self._lock = threading.Lock()
        self.max_pending = MAX_PENDING if max_pending is None else max_pending
        self._due: anyio.Event | None = None  # set when max_pending lightcurves wait
        if self.path.exists():
            self._check_binning(load_histograms(self.path))

    def _check_binning(self, stored: ScoreHistograms) -> None:
        if stored.binning() != self._empty.binning():
            raise ConfigError(
                f"config: analysis.histograms: {self.path} was counted with bins {stored.binning()},"
                f" not {self._empty.binning()}"
            )

    async def add(self, target: Target, tables: Sequence[ReducedTable], observatory: str = "") -> None:
        """Count the scores of a source's analysed lightcurves (at the next save).

        Tables arrive binned with :attr:`cfg` (``ReducedTable.binned``); one without bins was not
        analysed and is not counted. Only digests are computed here: no thread is needed.
        """
        self._add(target, tables, observatory)

    def _add(self, target: Target, tables: Sequence[ReducedTable], observatory: str) -> None:
        total = len(tables)
        for number, table in enumerate(tables, start=1):
            if table.binned is None:
                continue  # not analysed
            digest = lightcurve_digest(observatory, target.name, number, total, table, self.cfg_hash)
            with self._lock:
                self._pending.setdefault(digest, table.binned)
        if self._due is not None and len(self._pending) >= self.max_pending:
            self._due.set()

    async def wait_due(self, timeout_s: float) -> None:
        """Return after ``timeout_s``, or as soon as :attr:`max_pending` lightcurves wait to be saved."""
        self._due = anyio.Event()
        if len(self._pending) >= self.max_pending:
            return
        with anyio.move_on_after(timeout_s):
            await self._due.wait()

    async def save(self) -> None:
        """Add the lightcurves not counted yet to the file (locked, written atomically)."""
        await anyio.to_thread.run_sync(self._save)

    def _save(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            added, points = self._add_to_file(pending)
        except Exception:
            with self._lock:  # keep them for the next save
                self._pending = {**pending, **self._pending}
            raise
        log.info(
            "histograms: %d lightcurves (%d points) added to %s; %d were counted already",
            added,
            points,
            self.path,
            len(pending) - added,
        )

    def _add_to_file(self, pending: dict[int, Binned]) -> tuple[int, int]:
        """One read-add-write under the file lock: (lightcurves added, points added)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.lock_path):
            if self.path.exists():
                stored, ledger = load_with_ledger(self.path)
                self._check_binning(stored)
            else:
                stored, ledger = ScoreHistograms(self.cfg), np.array([], dtype=np.uint64)
            digests = np.fromiter(pending, dtype=np.uint64, count=len(pending))
            new = digests[~np.isin(digests, ledger)]
            if len(new) == 0:
                return 0, 0
            before = stored.n_points()
            for digest in new.tolist():
                stored.count(pending[digest])
            save_histograms(self.path, stored, ledger=np.union1d(ledger, new))
            return len(new), stored.n_points() - before
