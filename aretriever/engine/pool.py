"""The CPU stage: what runs in the process pool.

Everything here is a top-level function of small, picklable arguments, so any
:class:`concurrent.futures.Executor` (a process pool, a dask ``Client.get_executor()``) can run it.
Parsing belongs here with the reduction: on the event loop it would stall every other request.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aretriever.adapters.base import Adapter, Fetched, RawTable, ReducedLightcurve, Target, raw_table_kind
from aretriever.engine.score_bins import bin_scores
from aretriever.engine.workers import WorkerContext
from aretriever.science.analysis import LightcurveResult, analysis_for
from aretriever.science.binning import Binned
from aretriever.science.histograms import ScoreHistograms
from aretriever.settings import AnalysisConfig, HistogramConfig
from aretriever.store import paths
from aretriever.store.hdf5 import (
    DEFAULT_COMPRESSION,
    Compression,
    Records,
    Tables,
    as_records,
    build_h5_image,
)


@dataclass(frozen=True, slots=True)
class CpuJob:
    """Parse a fetched body, or re-read a stored raw file (``raw_path``/``raw_key``); then reduce.

    The worker also builds the files to store (raw with ``raw_attrs``, reduced), as HDF5 images
    the event loop's writer only has to write.
    """

    adapter: Adapter
    target: Target
    fetched: Fetched | None = None
    raw_path: str | None = None
    raw_key: str | None = None
    reduce: bool = True
    analysis: AnalysisConfig | None = None  # analyse the lightcurves too (needs ``reduce``)
    # the raw table's metadata, made by the event loop: ``fetched_at`` is when it was fetched
    raw_attrs: Mapping[str, Any] = field(default_factory=dict)
    raw_compression: Compression = DEFAULT_COMPRESSION
    reduced_compression: Compression = "none"
    histograms: HistogramConfig | None = None  # bin analysed scores in these bins (for the sink)


@dataclass(frozen=True, slots=True)
class ReducedTable:
    """What the event loop still needs of a reduced lightcurve once its file image is built.

    Its points travel only inside :attr:`CpuResult.reduced_image`; here are its row's values and,
    when the histograms asked for it, its scores already binned.
    """

    num_rows: int
    filter: str
    time_start_mjd: float
    time_end_mjd: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)  # analysis: columns of its row
    detections: list[dict[str, Any]] = field(default_factory=list)  # analysis: its events
    binned: Binned | None = None  # analysis with histograms: its scores in their bins


@dataclass(frozen=True, slots=True)
class _Reduced:
    """A reduced lightcurve inside the worker: its table to store and its summary to send back."""

    records: Records
    table: ReducedTable

    @classmethod
    def of(cls, lc: ReducedLightcurve, analysed: LightcurveResult | None, bins: _Binner | None) -> _Reduced:
        """The table to store is the processed one (with scores and flags) when it was analysed."""
        if analysed is None:
            records = as_records(lc.data)
            return cls(
                records,
                ReducedTable(len(records), lc.filter, lc.time_start_mjd, lc.time_end_mjd, dict(lc.meta)),
            )
        records = as_records(analysed.processed)
        binned = bins(records, analysed.stats, lc.filter) if bins is not None else None
        table = ReducedTable(
            len(records),
            lc.filter,
            lc.time_start_mjd,
            lc.time_end_mjd,
            dict(lc.meta),
            analysed.stats,
            analysed.detections,
            binned,
        )
        return cls(records, table)


class _Binner:
    def __init__(self, cfg: HistogramConfig, source_mag: float | None) -> None:
        self._histograms = ScoreHistograms(cfg)
        self._mag = source_mag

    def __call__(self, records: Records, stats: Mapping[str, Any], filter: str) -> Binned | None:
        return bin_scores(self._histograms, records, stats, self._mag, filter)


@dataclass(frozen=True, slots=True)
class CpuResult:
    """The files to store, as HDF5 images, and what the event loop needs for their rows.

    ``raw_image`` is None when the raw table was read from disk (it is stored already);
    ``reduced_image`` is None when nothing was reduced or no lightcurve survived. Building the
    files here, in parallel, leaves the event-loop process only writing bytes.
    """

    raw_image: bytes | None
    lightcurves: list[ReducedTable] = field(default_factory=list)
    reduced_image: bytes | None = None
    num_raw_rows: int = 0
    parse_s: float = 0.0
    reduce_s: float = 0.0
    build_s: float = 0.0  # building the HDF5 images
    properties: dict[str, Any] | None = None  # analysis: the source's ``properties`` row values


def run_job(job: CpuJob) -> CpuResult:
    """Parse and/or reduce one source and build its files (runs in a worker process)."""
    t0 = time.perf_counter()
    raw = job.adapter.parse(job.fetched) if job.fetched is not None else _read_raw(job)
    t1 = time.perf_counter()
    reduced, properties = _reduce(job, raw)
    t2 = time.perf_counter()
    # A table read from disk is already stored: building it again would only cost time.
    raw_image = _raw_image(job, raw) if job.fetched is not None else None
    reduced_image = _reduced_image(job, reduced)
    tables = [r.table for r in reduced]
    return CpuResult(
        raw_image, tables, reduced_image, len(raw), t1 - t0, t2 - t1, time.perf_counter() - t2, properties
    )


def _reduce(job: CpuJob, raw: RawTable) -> tuple[list[_Reduced], dict[str, Any] | None]:
    # Reducers are never handed an empty table, so none of them needs to handle that case.
    lightcurves = job.adapter.reduce(raw, job.target) if job.reduce and len(raw) else []
    if job.analysis is None or not job.reduce:
        return [_Reduced.of(lc, None, None) for lc in lightcurves], None
    analysed = analysis_for(job.analysis).analyze(job.target, lightcurves)
    bins = _Binner(job.histograms, job.target.mag) if job.histograms is not None else None
    pairs = zip(lightcurves, analysed.lightcurves, strict=True)
    return [_Reduced.of(lc, a, bins) for lc, a in pairs], analysed.properties


def _raw_image(job: CpuJob, raw: RawTable) -> bytes:
    tables: Tables = {paths.raw_key(job.target.name): (as_records(raw), job.raw_attrs)}
    return build_h5_image(tables, job.raw_compression)


def _reduced_image(job: CpuJob, reduced: Sequence[_Reduced]) -> bytes | None:
    if not reduced:
        return None
    total = len(reduced)
    tables: Tables = {
        paths.reduction_key(job.target.name, number, total): (
            r.records,
            {**r.table.meta, "filter": r.table.filter},
        )
        for number, r in enumerate(reduced, start=1)
    }
    return build_h5_image(tables, job.reduced_compression)


def _read_raw(job: CpuJob) -> RawTable:
    from aretriever.store.hdf5 import read_records, records_to_frame

    if job.raw_path is None or job.raw_key is None:
        raise ValueError("a CpuJob needs either a fetched body or a raw file and key")
    records = read_records(Path(job.raw_path), job.raw_key)
    # the stored array as it is for an adapter that takes one (no DataFrame made and undone)
    return records if raw_table_kind(job.adapter) == "records" else records_to_frame(records)


PARENT_POLL_S = 1.0  # how often a worker without pidfd support checks that its owner lives


def default_executor(workers: int | None) -> ProcessPoolExecutor:
    """A process pool started by a fork server: workers never inherit the loop's threads or locks.

    Nor do they run the user's script again (see :mod:`aretriever.engine.workers`). Each worker
    watches the process that made the pool and exits when it dies, even by SIGKILL: its parent is
    the fork server, not that process, and it would otherwise wait forever on a queue whose write
    end it holds itself. (The fork server exits on its own when its owner goes.)
    """
    context = WorkerContext()
    preload = [
        "aretriever.engine.pool",
        "aretriever.adapters.ztf",
        "aretriever.store.hdf5",
        "aretriever.science.analysis",
    ]
    # Imported once in the fork server, so each worker starts with pandas, h5py and ZTF loaded.
    context.set_forkserver_preload(preload)
    return ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 1,
        mp_context=context,
        initializer=watch_owner,
        initargs=(os.getpid(),),
    )


def watch_owner(owner_pid: int) -> None:
    """Pool initializer: start a daemon thread that ends this worker when ``owner_pid`` is gone."""
    pidfd = _open_pidfd(owner_pid)
    if pidfd is None and not _alive(owner_pid):
        os._exit(1)  # the owner died before this worker started
    threading.Thread(target=_wait_for_exit, args=(owner_pid, pidfd), name="owner-watch", daemon=True).start()


def _open_pidfd(pid: int) -> int | None:
    # a pidfd refers to that very process: unlike a pid it cannot be reused by another one
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or the owner is already gone
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # The process exists but belongs to another user: it is alive.
    except PermissionError:
        return True
    return True


def _wait_for_exit(owner_pid: int, pidfd: int | None) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the owner has exited
    else:
        while _alive(owner_pid):
            time.sleep(PARENT_POLL_S)
    # no cleanup: the owner that would collect our results is gone, and interpreter shutdown
    # could block on the very queues that kept this worker alive
    os._exit(1)
