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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aretriever.adapters import available, get_adapter
from aretriever.adapters.base import Adapter, LooksUpIds, Target
from aretriever.catalogs.core import BadRow, Catalog, SearchableCatalog, chunk_to_targets
from aretriever.catalogs.names import check_unique_names
from aretriever.config import config_hash, to_yaml
from aretriever.engine.histogram_file import HistogramFile
from aretriever.engine.pipeline import CpuRunner, SourcePipeline, SourceResult, Stores
from aretriever.engine.skipcheck import Decision, Freshness, Products, check_batch
from aretriever.engine.summary import RunSummary
from aretriever.engine.workqueue import WorkQueue
from aretriever.errors import ConfigError, cause
from aretriever.http import Lane, LaneStats, make_limiter
from aretriever.settings import Config, LaneConfig
from aretriever.store import owners, paths, product_folders
from aretriever.store.db import create_engine, session_factory
from aretriever.store.hdf5 import atomic_path
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.product_folders import check_project_folder
from aretriever.store.queries import Sessions
from aretriever.store.rows import catalog_failure
from aretriever.store.schema import migrate
from aretriever.store.transient import retry_transient
from aretriever.store.writers import FileWriter, RowWriter

log = logging.getLogger("aretriever.engine.core")

CLOSE_TIMEOUT_S = 60.0  # beyond the grace period, for writers to flush and the pool to stop

ResultCallback = Callable[[SourceResult], None]  # progress: called on the loop, must not block
ResultSink = Callable[[SourceResult], Awaitable[None]]  # a run's consumer: may apply backpressure
BatchSource = Callable[[Stores], AsyncIterator[list[Target]]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _snapshot(stats: LaneStats) -> LaneStats:
    return LaneStats(
        stats.requests, stats.retries, stats.bytes_in, Counter(stats.statuses), Counter(stats.errors)
    )


def products_for(cfg: Config, *, reduce: bool, analyze: bool = False) -> Products:
    """Where this project's products go: ``<PROJECT>`` or, with version control, ``<PROJECT>_<hash>``."""
    digest = config_hash(cfg) if cfg.project.version_control else ""
    folder = paths.product_folder(cfg.project.name, digest or None)
    check_project_folder(cfg.project.name, folder, [*available(), *cfg.project.obs_names])
    return Products(cfg.project.name, digest, folder, reduce, analyze and reduce)


def write_version_config(cfg: Config, folder: Path, digest: str) -> Path:
    """``<folder>/config.yaml``: the parameters a versioned product folder was made with (no secrets)."""
    path = folder / "config.yaml"
    text = f"# project {cfg.project.name}, config hash {digest}\n" + to_yaml(cfg)
    with atomic_path(path, f"project {cfg.project.name}") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


@dataclass(slots=True)
class _LaneRuntime:
    name: str
    cfg: LaneConfig
    adapter: Adapter
    http: Lane
    pipeline: SourcePipeline
    queue: MemoryObjectSendStream[Decision] | None = None  # decisions waiting for a fetcher


@dataclass(frozen=True, slots=True)
class LaneState:
    """A lane's counters and queue right now (for metrics)."""

    stats: LaneStats
    queued: int
    rate_per_s: float  # this process's share of the archive's limit (:meth:`Engine.lane_rate`)


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
        self._lanes: dict[str, _LaneRuntime] = {}
        self._adapters = {name: get_adapter(name, cfg) for name in self.observatories}
        self._stores: Stores | None = None
        self._sessions: Sessions | None = None
        self._queue: WorkQueue | None = None
        self._pending: Counter[str] = Counter()  # shared queue: lane results still due per source
        if cfg.engine.shared_queue and not self.db_url.startswith("postgresql"):
            raise ConfigError(
                "config: engine.shared_queue: several workers share their work through PostgreSQL;"
                f" store.db_url is {self.db_url.split(':', 1)[0]} (SQLite is for one process)"
            )
        self._one_run = anyio.Lock()
        self._listener: ResultSink | None = None
        self._failed_before = 0
        self._lanes_in_run = 0
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
            if self.cfg.engine.shared_queue:
                return self._shared_batches(catalog, start, stop, stores)
            return self._catalog_batches(catalog, start, stop, stores)

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
        cfg: LaneConfig = self.cfg.observatories.section(observatory)
        radius = float(getattr(cfg, "distance_thresh_arcsec", 10.0))
        targets = []
        async with aiohttp.ClientSession() as session:
            lane = Lane(observatory, cfg, session)
            for value in values:
                star = await adapter.lookup_id(value, lane)
                row = None if catalog is None else catalog.get_nearest_row(star.ra_deg, star.dec_deg, radius)
                if row is not None:
                    (found,), _ = chunk_to_targets(row.to_frame().T, self.cfg.catalog.columns)
                    star = replace(found, ids=star.ids)
                log.info("%s: %s %s is filed under %s", observatory, adapter.id_key, value, star.name)
                targets.append(star)
        return targets

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
            stores = await self._open_stores(stack)
            await self._claim_data_root(stack)
            if self.products.reduce:
                await anyio.to_thread.run_sync(
                    product_folders.claim, self.data_root, self.products.folder, self.products.project
                )
            if self.products.cfg_hash:
                folder = paths.resolve(self.data_root, self.products.folder)
                await anyio.to_thread.run_sync(write_version_config, self.cfg, folder, self.products.cfg_hash)
            if self.products.analyze:
                folder = paths.resolve(self.data_root, self.products.folder)
                self.histograms = HistogramFile(folder, self.cfg.analysis.histograms, self.products.cfg_hash)
                stack.push_async_callback(self.histograms.save)
            await self._open_lanes(stack, cpu, stores, self._catalog_name)
            self._stores = stores
            yield self
        finally:
            self._stores = None
            self._lanes = {}
            # closing finishes even when the caller is cancelled: writers flush what finished,
            # the pool and sessions close (bounded, so a stuck resource cannot hang the exit)
            limit = self.cfg.engine.grace_s + CLOSE_TIMEOUT_S
            with anyio.CancelScope(shield=True) as closing:
                closing.deadline = anyio.current_time() + limit
                log.info("closing: flushing writers")
                await stack.aclose()
            if closing.cancelled_caught:
                log.error("closing took longer than %.0f s: gave up", limit)

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
            self._lanes_in_run = len(chosen)
            before = {name: _snapshot(lane.http.stats) for name, lane in chosen.items()}
            try:
                async with anyio.create_task_group() as outer:
                    outer.start_soon(self._grace_watchdog, name="grace-watchdog")
                    outer.start_soon(self._save_histograms, name="histogram-saver")
                    if self.cfg.engine.shared_queue:
                        outer.start_soon(self._heartbeat, name="claim-heartbeat")
                    with self._work_scope:
                        async with anyio.create_task_group() as tg:
                            self._start_lanes(tg, chosen, batches(stores))
                    outer.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # callers see the error itself, not a task group's wrapper
                raise cause(group) from group
            with anyio.CancelScope(shield=True):  # the rows of finished sources are committed
                await stores.rows.flush()
            self.summary.failed_row_writes = stores.rows.failed_ops - self._failed_before
            self._collect_lane_stats(chosen, before)
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

    async def _open_stores(self, stack: AsyncExitStack) -> Stores:
        self.data_root.mkdir(parents=True, exist_ok=True)
        db = create_engine(self.db_url, statement_timeout_s=self.cfg.store.statement_timeout_s)
        stack.push_async_callback(db.dispose)
        await migrate(db)
        self._sessions = session_factory(db)
        files = await stack.enter_async_context(FileWriter(fsync=self.cfg.store.fsync))
        rows = await stack.enter_async_context(
            RowWriter(
                self._sessions, batch_rows=self.cfg.store.db_batch_rows, batch_ms=self.cfg.store.db_batch_ms
            )
        )
        return Stores(files, rows, self.data_root)

    async def _open_lanes(self, stack: AsyncExitStack, cpu: CpuRunner, stores: Stores, catalog: str) -> None:
        for name, adapter in self._adapters.items():
            cfg: LaneConfig = self.cfg.observatories.section(name)
            connector = aiohttp.TCPConnector(limit=cfg.max_concurrency)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            limiter = make_limiter(self.lane_rate(name))
            http = Lane(name, cfg, session, limiter=limiter, scratch_dir=str(self._fresh_scratch(name)))
            pipeline = SourcePipeline(
                adapter=adapter,
                http=http,
                cpu=cpu,
                stores=stores,
                products=self.products,
                catalog=self._catalog_name or catalog,
                max_attempts=cfg.max_attempts,
                analysis=self.cfg.analysis,
                histograms=self.histograms,
            )
            self._lanes[name] = _LaneRuntime(name, cfg, adapter, http, pipeline)

    def _fresh_scratch(self, lane: str) -> Path:
        """This process's scratch folder of the lane (other processes' folders are theirs)."""
        folder = paths.scratch_dir(self.data_root, lane, owners.owner_token())
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def wait_for_sweep(self) -> None:
        """Wait until the start-up sweep of temporary files has finished (tests, tools)."""
        if self._sweeper is not None:
            await anyio.to_thread.run_sync(self._sweeper.join)

    async def _claim_data_root(self, stack: AsyncExitStack) -> None:
        """Hold this process's owner lock on DATA_ROOT; sweep what dead owners left behind.

        Scratch folders are few: swept now. Temporary files are looked for only where this
        engine writes (its observatory folders and product folder, one level of RA folders), in
        a background thread: with a million files there, a start must not wait for the walk.
        """
        stack.enter_context(owners.holding(self.data_root))
        swept = await anyio.to_thread.run_sync(owners.sweep_scratch, self.data_root)
        if swept:
            log.info("removed %d scratch folders of processes that are gone", swept)
        folders = [self.data_root / paths.safe_name(name.upper()) for name in self.observatories]
        if self.products.reduce:
            folders.append(paths.resolve(self.data_root, self.products.folder))
        self._sweeper = owners.Sweeper(self.data_root, folders)
        stack.push_async_callback(anyio.to_thread.run_sync, self._sweeper.stop)

    def _start_lanes(
        self, tg: TaskGroup, lanes: Mapping[str, _LaneRuntime], batches: AsyncIterator[list[Target]]
    ) -> None:
        batch_senders = []
        for name, lane in lanes.items():
            batch_send, batch_recv = anyio.create_memory_object_stream[list[Target]](2)
            work_send, work_recv = anyio.create_memory_object_stream[Decision](self.cfg.engine.queue_size)
            lane.queue = work_send
            batch_senders.append(batch_send)
            tg.start_soon(self._skip_checker, lane, batch_recv, work_send, name=f"skip-check:{name}")
            with work_recv:
                for i in range(lane.cfg.max_concurrency):
                    tg.start_soon(self._fetcher, lane, work_recv.clone(), name=f"fetcher:{name}:{i}")
        tg.start_soon(self._produce, batches, batch_senders, name="producer")

    # -- stages --------------------------------------------------------------------------------

    async def _produce(
        self, batches: AsyncIterator[list[Target]], senders: list[MemoryObjectSendStream[list[Target]]]
    ) -> None:
        """Hand every lane each batch of targets, until the batches end or a stop is requested."""
        async with AsyncExitStack() as stack:
            for sender in senders:
                stack.enter_context(sender)
            async for batch in batches:
                if self._stopping.is_set():
                    break
                for sender in senders:
                    with contextlib.suppress(anyio.BrokenResourceError):  # that lane has stopped
                        await sender.send(batch)

    async def _catalog_batches(
        self, catalog: Catalog, start: int, stop: int | None, stores: Stores
    ) -> AsyncIterator[list[Target]]:
        """The catalog's rows as skip-check-sized batches of targets; bad rows are recorded."""
        size = self.cfg.engine.skip_batch
        chunks = catalog.iter_chunks(start, stop)
        while not self._stopping.is_set():
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            targets, bad = chunk_to_targets(chunk, self.cfg.catalog.columns)
            await self._record_bad_rows(bad, stores)
            for lo in range(0, len(targets), size):
                yield targets[lo : lo + size]

    async def _shared_batches(
        self, catalog: Catalog, start: int, stop: int | None, stores: Stores
    ) -> AsyncIterator[list[Target]]:
        """Enqueue the range (idempotent), then claim batches until every item is done."""
        if self._sessions is None:  # pragma: no cover - opened first
            raise RuntimeError("engine: not opened")
        queue = WorkQueue(self._sessions, catalog.name, lease_s=self.cfg.engine.lease_s)
        self._queue = queue
        async for targets in self._catalog_batches(catalog, start, stop, stores):
            await retry_transient(functools.partial(queue.enqueue, targets), what="work queue: enqueue")
        size = self.cfg.engine.claim_batch
        while not self._stopping.is_set():
            if len(queue.held) >= 2 * size:  # hold no more than we work on: the others need some
                await anyio.sleep(0.05)
                continue
            claimed = await retry_transient(functools.partial(queue.claim, size), what="work queue: claim")
            if claimed:
                self._pending.update({t.name: self._lanes_in_run for t in claimed})
                yield claimed
            elif await retry_transient(queue.open_items, what="work queue: count") == 0:
                return
            else:  # held by others (or our own, in flight): wait for them to finish or lapse
                await anyio.sleep(min(1.0, self.cfg.engine.lease_s / 4))

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.cfg.engine.lease_s / 3)
            if self._queue is not None:
                await retry_transient(self._queue.heartbeat, what="work queue: heartbeat")

    async def _mark_done(self, result: SourceResult) -> None:
        """Once every lane has reported a claimed source, mark its item done (after its rows)."""
        if self._queue is None or self._stores is None or result.source not in self._pending:
            return
        self._pending[result.source] -= 1
        if self._pending[result.source] > 0:
            return
        del self._pending[result.source]
        done = self._queue.done(result.source)
        if done is not None:
            await self._stores.rows.put(done)

    async def _record_bad_rows(self, bad: list[BadRow], stores: Stores) -> None:
        for row in bad:
            log.warning("catalog: row %d (%s): %s", row.index, row.name, row.reason)
            reason = "bad_coordinates" if row.reason.startswith("bad coordinates") else "bad_row"
            self.summary.bad_rows[reason] += 1
            await stores.rows.put(catalog_failure(row.name, reason, row.reason))

    async def _skip_checker(
        self,
        lane: _LaneRuntime,
        batches: MemoryObjectReceiveStream[list[Target]],
        work: MemoryObjectSendStream[Decision],
    ) -> None:
        """Decide in bulk what each source needs; skipped sources never reach a fetcher."""
        sessions = self.sessions
        if sessions is None:  # pragma: no cover - lanes run only while the engine is open
            raise RuntimeError("engine: not opened")
        async with batches, work:
            async for batch in batches:
                freshness = Freshness.of(
                    self.cfg.engine.refresh_after_days, self.cfg.engine.retry_failed_after_s, self._clock()
                )
                decisions = await retry_transient(
                    functools.partial(
                        check_batch,
                        sessions,
                        lane.name,
                        batch,
                        self.products,
                        self.data_root,
                        verify=self.cfg.engine.verify,
                        freshness=freshness,
                    ),
                    what=f"{lane.name}: skip check",
                )
                for decision in decisions:
                    if self._stopping.is_set():
                        return
                    try:
                        await work.send(decision)
                    except anyio.BrokenResourceError:  # every fetcher has stopped
                        return

    async def _fetcher(self, lane: _LaneRuntime, work: MemoryObjectReceiveStream[Decision]) -> None:
        """Take the next decision as soon as the last one is done: no batch barrier."""
        async with work:
            async for decision in work:
                result = await lane.pipeline.handle(decision)
                await self._record(result)
                if self._stopping.is_set():
                    return

    async def _record(self, result: SourceResult) -> None:
        self.summary.lane(result.observatory).add(result.outcome, result.reason or None)
        for callback in self._callbacks:
            callback(result)
        if self._listener is not None:
            await self._listener(result)
        await self._mark_done(result)

    async def _save_histograms(self) -> None:
        while self.histograms is not None:
            await anyio.sleep(self.cfg.engine.histogram_save_s)
            await self.histograms.save()

    async def _grace_watchdog(self) -> None:
        await self._stopping.wait()
        await anyio.sleep(self.cfg.engine.grace_s)
        log.warning("grace period over: cancelling in-flight work")
        self._work_scope.cancel()

    def _collect_lane_stats(self, lanes: Mapping[str, _LaneRuntime], before: Mapping[str, LaneStats]) -> None:
        for name, lane in lanes.items():
            summary, now, then = self.summary.lane(name), lane.http.stats, before[name]
            summary.requests = now.requests - then.requests
            summary.retries = now.retries - then.retries
            summary.statuses = dict(now.statuses - then.statuses)

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
        return {
            name: LaneState(
                _snapshot(lane.http.stats),
                lane.queue.statistics().current_buffer_used if lane.queue is not None else 0,
                self.lane_rate(name),
            )
            for name, lane in self._lanes.items()
        }

    @property
    def row_writer(self) -> RowWriter | None:
        """The row writer while the engine is open (its ``pending`` and ``lag_s`` are metrics)."""
        return self._stores.rows if self._stores is not None else None

    @property
    def sessions(self) -> Sessions | None:
        """The database sessions while the engine is open, else None."""
        return self._sessions if self._stores is not None else None
