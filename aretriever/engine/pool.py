"""The CPU stage: what runs in the process pool.

Everything here is a top-level function of small, picklable arguments, so any
:class:`concurrent.futures.Executor` (a process pool, a dask ``Client.get_executor()``) can run it.
Parsing belongs here with the reduction: on the event loop it would stall every other request.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aretriever.adapters.base import Adapter, Fetched, ReducedLightcurve, Target
from aretriever.science.analysis import LightcurveResult, analysis_for
from aretriever.settings import AnalysisConfig
from aretriever.store.hdf5 import Records, as_records


@dataclass(frozen=True, slots=True)
class CpuJob:
    """Parse a fetched body, or re-read a stored raw file (``raw_path``/``raw_key``); then reduce."""

    adapter: Adapter
    target: Target
    fetched: Fetched | None = None
    raw_path: str | None = None
    raw_key: str | None = None
    reduce: bool = True
    analysis: AnalysisConfig | None = None  # analyse the lightcurves too (needs ``reduce``)


@dataclass(frozen=True, slots=True)
class ReducedTable:
    """A reduced lightcurve as it travels back from the pool: a structured array, ready to write."""

    records: Records
    filter: str
    time_start_mjd: float
    time_end_mjd: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)  # analysis: columns of its row
    detections: list[dict[str, Any]] = field(default_factory=list)  # analysis: its events

    @classmethod
    def of(cls, lc: ReducedLightcurve, analysed: LightcurveResult | None = None) -> ReducedTable:
        """The table to write: the processed one (with scores and flags) when it was analysed."""
        meta = dict(lc.meta)
        if analysed is None:
            return cls(as_records(lc.data), lc.filter, lc.time_start_mjd, lc.time_end_mjd, meta)
        records = as_records(analysed.processed)
        return cls(
            records, lc.filter, lc.time_start_mjd, lc.time_end_mjd, meta, analysed.stats, analysed.detections
        )


@dataclass(frozen=True, slots=True)
class CpuResult:
    """The parsed raw table (None when it was read from disk) and its lightcurves, with timings.

    Tables come back as structured arrays: converting them here, in parallel, leaves the HDF5
    writer thread (which shares the event loop's GIL) only the HDF5 work itself.
    """

    raw: Records | None
    lightcurves: list[ReducedTable] = field(default_factory=list)
    num_raw_rows: int = 0
    parse_s: float = 0.0
    reduce_s: float = 0.0
    properties: dict[str, Any] | None = None  # analysis: the source's ``properties`` row values


def run_job(job: CpuJob) -> CpuResult:
    """Parse and/or reduce one source (runs in a worker process)."""
    t0 = time.perf_counter()
    raw = job.adapter.parse(job.fetched) if job.fetched is not None else _read_raw(job)
    t1 = time.perf_counter()
    # Reducers are never handed an empty table, so none of them needs to handle that case.
    lightcurves = job.adapter.reduce(raw, job.target) if job.reduce and len(raw) else []
    # A table read from disk is already stored: sending it back would only cost pickling.
    parsed = as_records(raw) if job.fetched is not None else None
    if job.analysis is None or not job.reduce:
        tables = [ReducedTable.of(lc) for lc in lightcurves]
        return CpuResult(parsed, tables, len(raw), t1 - t0, time.perf_counter() - t1)
    analysed = analysis_for(job.analysis).analyze(job.target, lightcurves)
    tables = [ReducedTable.of(lc, a) for lc, a in zip(lightcurves, analysed.lightcurves, strict=True)]
    return CpuResult(parsed, tables, len(raw), t1 - t0, time.perf_counter() - t1, analysed.properties)


def _read_raw(job: CpuJob) -> pd.DataFrame:
    from aretriever.store.hdf5 import read_h5

    if job.raw_path is None or job.raw_key is None:
        raise ValueError("a CpuJob needs either a fetched body or a raw file and key")
    frame, _ = read_h5(Path(job.raw_path), job.raw_key)
    return frame


PARENT_POLL_S = 1.0  # how often a worker without pidfd support checks that its owner lives


def default_executor(workers: int | None) -> ProcessPoolExecutor:
    """A process pool started by a fork server: workers never inherit the loop's threads or locks.

    Each worker watches the process that made the pool and exits when it dies, even by SIGKILL:
    its parent is the fork server, not that process, and it would otherwise wait forever on a
    queue whose write end it holds itself. (The fork server exits on its own when its owner goes.)
    """
    context = multiprocessing.get_context("forkserver")
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
