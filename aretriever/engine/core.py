"""The async engine: catalog rows stream into one lane per observatory.

::

    catalog chunks ─► producer ─► per lane: skip check (bulk) ─► N fetchers (rate limit, retries)
                                      └► process pool (parse + reduce) ─► file writer ─► row writer

Stages are joined by bounded anyio memory streams, so memory stays flat whatever the catalog size,
and there is no batch barrier: each fetcher takes the next source as soon as it is free. Every
long-lived task is named and owned by one task group. On a stop request the producer stops taking
rows, fetchers finish what they hold (for up to ``grace_s``), and the writers flush.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskGroup

from aretriever.adapters import get_adapter
from aretriever.adapters.base import LooksUpIds, Target
from aretriever.catalogs.core import Catalog, SearchableCatalog, chunk_to_targets
from aretriever.catalogs.names import check_unique_names
from aretriever.engine import lookup, resources, stages
from aretriever.engine.claims import Claims
from aretriever.engine.histogram_file import HistogramFile
from aretriever.engine.lanes import (
    LaneParts,
    LaneRuntime,
    LaneState,
    count_run,
    open_lane,
    snapshot,
    state_of,
)
from aretriever.engine.pipeline import CpuRunner, SourceResult, Stores
from aretriever.engine.resources import products_for, write_version_config
from aretriever.engine.skipcheck import check_batch, report_changed_config
from aretriever.engine.summary import RunSummary
from aretriever.errors import ConfigError, cause
from aretriever.settings import Config, LaneConfig
from aretriever.store import owners
from aretriever.store.db import create_engine, session_factory
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.queries import Sessions
from aretriever.store.schema import migrate
from aretriever.store.writers import RowWriter

# products_for and write_version_config live with the other resources; callers import them here
__all__ = ["Engine", "LaneState", "ResultCallback", "ResultSink", "products_for", "write_version_config"]

log = logging.getLogger("aretriever.engine.core")

CLOSE_TIMEOUT_S = 60.0  # beyond the grace period, for writers to flush and the pool to stop

ResultCallback = Callable[[SourceResult], None]  # progress: called on the loop, must not block
ResultSink = Callable[[SourceResult], Awaitable[None]]  # a run's consumer: may apply backpressure
BatchSource = Callable[[Stores], AsyncIterator[list[Target]]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Backfills catalog sources from one or more observatories.

    Parameters
    ----------
    cfg
        The resolved configuration.
    observatories
        Lane names (default: ``cfg.project.obs_names``).
    executor
        Where parsing and reduction run (default: a process pool, one worker per core).
    on_result
        Called on the event loop for every source and lane as it completes.
    clock
        The wall clock that refresh ages and failure back-offs are measured with.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        observatories: Sequence[str] | None = None,
        executor: Executor | None = None,
        on_result: ResultCallback | None = None,
        catalog_name: str = "",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self.observatories = [o.lower() for o in (observatories or cfg.project.obs_names)]
        self.data_root = data_root_of(cfg.store)
        self.db_url = db_url_of(cfg.store)
        self.products = products_for(cfg, reduce=cfg.engine.reduce, analyze=cfg.engine.analyze)
        self.histograms: HistogramFile | None = None
        self.summary = RunSummary()
        self._executor = executor
        self._callbacks: list[ResultCallback] = [on_result] if on_result is not None else []
        self._catalog_name = catalog_name
        self._stopping = anyio.Event()
        self._work_scope = anyio.CancelScope()
        self._lanes: dict[str, LaneRuntime] = {}
        self._adapters = {name: get_adapter(name, cfg) for name in self.observatories}
        self._stores: Stores | None = None
        self._sessions: Sessions | None = None
        self._claims = Claims(lease_s=cfg.engine.lease_s, claim_batch=cfg.engine.claim_batch)
        if cfg.engine.shared_queue and not self.db_url.startswith("postgresql"):
            raise ConfigError(
                "config: engine.shared_queue: several workers share their work through PostgreSQL;"
                f" store.db_url is {self.db_url.split(':', 1)[0]} (SQLite is for one process)"
            )
        self._one_run = anyio.Lock()
        self._listener: ResultSink | None = None
        self._failed_before = 0  # the row writer's failures before this run: its count is cumulative
        self._sweeper: owners.Sweeper | None = None

    # -- control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking new rows and let in-flight work finish; a second request aborts at once."""
        if self._stopping.is_set():
            log.warning("second stop request: aborting in-flight work")
            self._work_scope.cancel()
        else:
            log.warning("stop requested: finishing in-flight sources (grace %.0f s)", self.cfg.engine.grace_s)
            self.summary.interrupted = True
            self._stopping.set()

    # -- run -----------------------------------------------------------------------------------

    async def run(
        self,
        catalog: Catalog,
        start: int = 0,
        stop: int | None = None,
        *,
        on_result: ResultSink | None = None,
    ) -> RunSummary:
        """Backfill rows ``start`` to ``stop`` of ``catalog`` and return the summary.

        ``on_result`` is called (on the loop) for every source and lane of this run, besides the
        engine's own callback.
        """

        def batches(stores: Stores) -> AsyncIterator[list[Target]]:
            rows = self._catalog_batches(catalog, start, stop, stores)
            if self.cfg.engine.shared_queue:
                return self._claims.batches(self._opened_sessions(), catalog.name, rows, self._stopping)
            return rows

        await self._check_names(catalog, start, stop)
        return await self._run(batches, catalog.name, on_result=on_result)

    async def _check_names(self, catalog: Catalog, start: int, stop: int | None) -> None:
        """Duplicate names fail the run before any request (a whole scan of the range's names)."""
        name = self.cfg.catalog.columns.name
        await anyio.to_thread.run_sync(check_unique_names, catalog, name, start, stop)

    async def run_targets(
        self,
        targets: Sequence[Target],
        catalog_name: str = "",
        *,
        lanes: Sequence[str] | None = None,
        on_result: ResultSink | None = None,
    ) -> RunSummary:
        """Backfill these targets (the same skip check, lanes and writers as a catalog run).

        ``lanes`` limits the run to some of the engine's observatories.
        """
        size = self.cfg.engine.skip_batch

        async def batches(_: Stores) -> AsyncIterator[list[Target]]:
            for lo in range(0, len(targets), size):
                yield list(targets[lo : lo + size])

        return await self._run(batches, catalog_name, lanes, on_result=on_result)

    async def fetch_by_ids(
        self, observatory: str, values: Sequence[str], catalog: SearchableCatalog | None = None
    ) -> RunSummary:
        """Fetch stars by the archive's own identifiers (TESS: TIC ids), without a position match.

        Each star is filed under the catalog row nearest to the archive's position for it (within
        the lane's ``distance_thresh_arcsec``, else 10") when a catalog is given and has one, else
        under the archive's star itself (TESS: ``TIC <id>``). Either way the target carries the
        identifier, so the lane fetches that star's data directly.
        """
        targets = await self.resolve_ids(observatory, values, catalog)
        return await self.run_targets(targets, catalog.name if catalog is not None else "")

    async def fetch_by_tic(self, tic: int, catalog: SearchableCatalog | None = None) -> RunSummary:
        """TESS lightcurves of TIC ``tic`` (see :meth:`fetch_by_ids`)."""
        return await self.fetch_by_ids("tess", [str(tic)], catalog)

    async def resolve_ids(
        self, observatory: str, values: Sequence[str], catalog: SearchableCatalog | None = None
    ) -> list[Target]:
        """The targets :meth:`fetch_by_ids` files these identifiers under."""
        adapter = self._adapters.get(observatory)
        if not isinstance(adapter, LooksUpIds):
            raise ConfigError(
                f"fetch by id: observatory {observatory!r} is not in this run or has no identifiers"
                f" (engine observatories: {self.observatories})"
            )
        return await lookup.resolve_ids(self.cfg, observatory, adapter, values, catalog)

    async def _run(
        self,
        batches: BatchSource,
        catalog: str,
        lanes: Sequence[str] | None = None,
        *,
        on_result: ResultSink | None = None,
    ) -> RunSummary:
        unknown = sorted(set(lanes or ()) - set(self.observatories))
        if unknown:
            raise ConfigError(
                f"engine: observatories {unknown} are not in this engine ({self.observatories})"
            )
        if self._stores is not None:  # opened by the caller (embedding): reuse everything
            return await self._drive(batches, catalog, lanes, on_result)
        async with self.opened():
            return await self._drive(batches, catalog, lanes, on_result)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Engine]:
        """Open the database, writers, process pool and lanes for several runs, then close them.

        ``run`` opens and closes them itself when called outside this block. Everything opened
        here is closed on the way out, also when the caller is cancelled.
        """
        if self._stores is not None:
            raise RuntimeError("engine: already opened")
        stack = AsyncExitStack()
        try:
            cpu = CpuRunner(self._executor, self.cfg.engine.workers)
            stack.push_async_callback(cpu.aclose)
            stores, self._sessions = await resources.open_stores(stack, self.cfg, self.data_root, self.db_url)
            self._sweeper = await resources.claim_data_root(
                stack, self.data_root, self.observatories, self.products
            )
            self.histograms = await resources.open_products(stack, self.cfg, self.data_root, self.products)
            await report_changed_config(self._sessions, self.products, self.observatories)
            parts = LaneParts(cpu, stores, self.products, self._catalog_name, self.histograms)
            for name, adapter in self._adapters.items():
                self._lanes[name] = await open_lane(
                    stack, self.cfg, name, adapter, self.lane_rate(name), parts
                )
            self._stores = stores
            yield self
        finally:
            self._stores = None
            self._lanes = {}
            await resources.close_bounded(stack, self.cfg.engine.grace_s + CLOSE_TIMEOUT_S)

    async def _drive(
        self,
        batches: BatchSource,
        catalog: str,
        lanes: Sequence[str] | None,
        on_result: ResultSink | None,
    ) -> RunSummary:
        """One run on opened resources; runs are serialised (their summaries and stop state)."""
        stores = self._stores
        if stores is None:  # pragma: no cover - _run opens first
            raise RuntimeError("engine: not opened")
        async with self._one_run:
            t0 = time.perf_counter()
            self._new_run_state(catalog)
            self._listener = on_result
            chosen = {name: lane for name, lane in self._lanes.items() if lanes is None or name in lanes}
            self._claims.lanes_in_run = len(chosen)
            before = {name: snapshot(lane.http.stats) for name, lane in chosen.items()}
            try:
                async with anyio.create_task_group() as outer:
                    self._start_side_tasks(outer)
                    with self._work_scope:
                        async with anyio.create_task_group() as tg:
                            stages.start_lanes(
                                tg,
                                chosen,
                                batches(stores),
                                queue_size=self.cfg.engine.queue_size,
                                check=self._skip_check(),
                                record=self._record,
                                stopping=self._stopping,
                            )
                    outer.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # callers see the error itself, not a task group's wrapper
                raise cause(group) from group
            with anyio.CancelScope(shield=True):  # the rows of finished sources are committed
                await stores.rows.flush()
            self.summary.failed_row_writes = stores.rows.failed_ops - self._failed_before
            count_run(self.summary, chosen, before)
            self.summary.elapsed_s = time.perf_counter() - t0
            return self.summary

    def _new_run_state(self, catalog: str) -> None:
        self.summary = RunSummary()
        self._stopping = anyio.Event()
        self._work_scope = anyio.CancelScope()
        self._failed_before = self._stores.rows.failed_ops if self._stores is not None else 0
        for lane in self._lanes.values():
            lane.pipeline.catalog = self._catalog_name or catalog

    async def plan(
        self, catalog: Catalog, start: int = 0, stop: int | None = None
    ) -> dict[str, Counter[str]]:
        """What a run would do (the skip check alone): no request, no file written."""
        counts: dict[str, Counter[str]] = {name: Counter() for name in self.observatories}
        await self._check_names(catalog, start, stop)
        db = create_engine(self.db_url, statement_timeout_s=self.cfg.store.statement_timeout_s)
        try:
            await migrate(db)
            self._sessions = session_factory(db)
            size = self.cfg.engine.skip_batch
            for chunk in catalog.iter_chunks(start, stop):
                targets, bad = chunk_to_targets(chunk, self.cfg.catalog.columns)
                for name in self.observatories:
                    if bad:
                        counts[name]["bad_row"] += len(bad)
                    for lo in range(0, len(targets), size):
                        batch = targets[lo : lo + size]
                        for d in await check_batch(
                            self._sessions, name, batch, self.products, self.data_root
                        ):
                            counts[name][d.action.value] += 1
        finally:
            await db.dispose()
        return counts

    async def wait_for_sweep(self) -> None:
        """Wait until the start-up sweep of temporary files has finished (tests, tools)."""
        if self._sweeper is not None:
            await anyio.to_thread.run_sync(self._sweeper.join)

    def _opened_sessions(self) -> Sessions:
        if self._sessions is None:  # pragma: no cover - runs happen only while the engine is open
            raise RuntimeError("engine: not opened")
        return self._sessions

    # -- stages (the streams between them are in engine.stages) ----------------------------------

    def _catalog_batches(
        self, catalog: Catalog, start: int, stop: int | None, stores: Stores
    ) -> AsyncIterator[list[Target]]:
        """The catalog's rows as skip-check-sized batches of targets; bad rows are recorded."""
        return stages.catalog_batches(
            catalog,
            start,
            stop,
            columns=self.cfg.catalog.columns,
            size=self.cfg.engine.skip_batch,
            on_bad=functools.partial(stages.record_bad_rows, summary=self.summary, rows=stores.rows),
            stopping=self._stopping,
        )

    def _start_side_tasks(self, outer: TaskGroup) -> None:
        """The run's watchdog, histogram saver and claim heartbeat: cancelled when the work ends."""
        cfg = self.cfg.engine
        watchdog = functools.partial(stages.grace_watchdog, self._stopping, cfg.grace_s, self._work_scope)
        outer.start_soon(watchdog, name="grace-watchdog")
        saver = functools.partial(stages.save_histograms, self.histograms, cfg.histogram_save_s)
        outer.start_soon(saver, name="histogram-saver")
        if cfg.shared_queue:
            outer.start_soon(self._claims.heartbeat, name="claim-heartbeat")

    def _skip_check(self) -> stages.SkipCheck:
        return stages.bulk_skip_check(
            self._opened_sessions(), self.products, self.data_root, self.cfg.engine, self._clock
        )

    async def _record(self, result: SourceResult) -> None:
        self.summary.lane(result.observatory).add(result.outcome, result.reason or None)
        for callback in self._callbacks:
            callback(result)
        if self._listener is not None:
            await self._listener(result)
        if self._stores is not None:  # shared queue: the claim is done once every lane reported
            await self._claims.mark_done(result.source, self._stores.rows)

    def add_listener(self, callback: ResultCallback) -> None:
        """Also call ``callback`` (on the loop, without blocking) for every result of every run."""
        self._callbacks.append(callback)

    def lane_rate(self, name: str) -> float:
        """Requests per second lane ``name`` of this process may send.

        Several workers share the archive's limit (``rate_per_s``): each takes its part
        (docs/operations.md). The limiter and the metrics both read it here.
        """
        lane: LaneConfig = getattr(self.cfg.observatories, name)
        return lane.rate_per_s / self.cfg.engine.n_workers

    def lane_states(self) -> dict[str, LaneState]:
        """Each open lane's cumulative counters, queued decisions and rate used."""
        return {name: state_of(lane, self.lane_rate(name)) for name, lane in self._lanes.items()}

    @property
    def row_writer(self) -> RowWriter | None:
        """The row writer while the engine is open (its ``pending`` and ``lag_s`` are metrics)."""
        return self._stores.rows if self._stores is not None else None

    @property
    def sessions(self) -> Sessions | None:
        """The database sessions while the engine is open, else None."""
        return self._sessions if self._stores is not None else None
