"""The stages of a run, the bounded streams between them, and the run's side tasks.

::

    batches ─► producer ─► per lane: skip checker ─► N fetchers ─► record (summary, listeners)

The producer hands every lane each batch; a lane's skip checker decides the batch in bulk and
sends the sources that need work to its fetchers, which each take the next decision as soon as
they are free (no batch barrier). Every stage checks the run's stop event between items, so a
stop request lets in-flight work finish instead of cutting it off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aretriever.adapters.base import Target
from aretriever.catalogs.core import BadRow, Catalog, chunk_to_targets
from aretriever.engine.histogram_file import HistogramFile
from aretriever.engine.lanes import LaneRuntime
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.skipcheck import Decision, Freshness, Products, check_batch
from aretriever.engine.summary import RunSummary
from aretriever.settings import ColumnMap, EngineConfig
from aretriever.store.queries import Sessions
from aretriever.store.rows import catalog_failure
from aretriever.store.transient import retry_transient
from aretriever.store.writers import RowWriter

log = logging.getLogger("aretriever.engine.core")  # the engine's logger: users filter on it

SkipCheck = Callable[[str, list[Target]], Awaitable[list[Decision]]]  # (lane, batch) -> decisions
Record = Callable[[SourceResult], Awaitable[None]]
BadRows = Callable[[list[BadRow]], Awaitable[None]]

# Batches waiting per lane: two lets the producer read the next chunk while a lane checks one,
# without holding more than that in memory when a lane is slow.
BATCHES_IN_FLIGHT = 2


def start_lanes(
    tg: TaskGroup,
    lanes: Mapping[str, LaneRuntime],
    batches: AsyncIterator[list[Target]],
    *,
    queue_size: int,
    check: SkipCheck,
    record: Record,
    stopping: anyio.Event,
) -> None:
    """Start one producer, and per lane a skip checker and ``max_concurrency`` fetchers, in ``tg``."""
    batch_senders = []
    for name, lane in lanes.items():
        batch_send, batch_recv = anyio.create_memory_object_stream[list[Target]](BATCHES_IN_FLIGHT)
        work_send, work_recv = anyio.create_memory_object_stream[Decision](queue_size)
        lane.queue = work_send  # kept for metrics: its buffer is the lane's queue length
        lane.http.expect_work()
        batch_senders.append(batch_send)
        tg.start_soon(check_skips, lane, batch_recv, work_send, check, stopping, name=f"skip-check:{name}")
        # each fetcher holds a clone; the original closes here, so the stream ends with the last fetcher
        with work_recv:
            for i in range(lane.cfg.max_concurrency):
                tg.start_soon(fetch, lane, work_recv.clone(), record, stopping, name=f"fetcher:{name}:{i}")
    tg.start_soon(produce, batches, batch_senders, stopping, name="producer")


async def produce(
    batches: AsyncIterator[list[Target]],
    senders: list[MemoryObjectSendStream[list[Target]]],
    stopping: anyio.Event,
) -> None:
    """Hand every lane each batch of targets, until the batches end or a stop is requested."""
    # closing the senders is what ends the skip checkers, so they close on every way out
    async with AsyncExitStack() as stack:
        for sender in senders:
            stack.enter_context(sender)
        async for batch in batches:
            if stopping.is_set():
                break
            for sender in senders:
                with contextlib.suppress(anyio.BrokenResourceError):  # that lane has stopped
                    await sender.send(batch)


async def catalog_batches(
    catalog: Catalog,
    start: int,
    stop: int | None,
    *,
    columns: ColumnMap,
    size: int,
    on_bad: BadRows,
    stopping: anyio.Event,
) -> AsyncIterator[list[Target]]:
    """The catalog's rows as skip-check-sized batches of targets; bad rows go to ``on_bad``."""
    chunks = catalog.iter_chunks(start, stop)
    while not stopping.is_set():
        # reading a chunk parses a file: in a thread, so the loop keeps serving the fetchers
        chunk = await anyio.to_thread.run_sync(next, chunks, None)
        if chunk is None:
            return
        targets, bad = chunk_to_targets(chunk, columns)
        await on_bad(bad)
        for lo in range(0, len(targets), size):
            yield targets[lo : lo + size]


async def check_skips(
    lane: LaneRuntime,
    batches: MemoryObjectReceiveStream[list[Target]],
    work: MemoryObjectSendStream[Decision],
    check: SkipCheck,
    stopping: anyio.Event,
) -> None:
    """Decide in bulk what each source needs; skipped sources never reach a fetcher."""
    async with batches, work:
        async for batch in batches:
            for decision in await check(lane.name, batch):
                if stopping.is_set():
                    return
                try:
                    await work.send(decision)
                except anyio.BrokenResourceError:  # every fetcher has stopped
                    return


async def fetch(
    lane: LaneRuntime, work: MemoryObjectReceiveStream[Decision], record: Record, stopping: anyio.Event
) -> None:
    """Take the next decision as soon as the last one is done: no batch barrier."""
    async with work:
        async for decision in work:
            if drained(work):
                lane.http.work_drained()
            result = await lane.pipeline.handle(decision)
            await record(result)
            if stopping.is_set():
                return
    lane.http.work_drained()


def drained(work: MemoryObjectReceiveStream[Decision]) -> bool:
    """No decision waits and none will come: the skip checker closed the stream and it is empty.

    From then on the lane has rate to spare, so its late requests may be hedged (aretriever.hedge).
    """
    stats = work.statistics()
    return stats.open_send_streams == 0 and stats.current_buffer_used == 0


async def record_bad_rows(bad: list[BadRow], *, summary: RunSummary, rows: RowWriter) -> None:
    """Count and log catalog rows that cannot be used, and record each as a failure row."""
    for row in bad:
        log.warning("catalog: row %d (%s): %s", row.index, row.name, row.reason)
        # the reason's text is ours (chunk_to_targets), so its prefix is a stable kind
        reason = "bad_coordinates" if row.reason.startswith("bad coordinates") else "bad_row"
        summary.bad_rows[reason] += 1
        await rows.put(catalog_failure(row.name, reason, row.reason))


async def grace_watchdog(stopping: anyio.Event, grace_s: float, work: anyio.CancelScope) -> None:
    """Once a stop is requested, give in-flight work ``grace_s`` seconds, then cancel it."""
    await stopping.wait()
    await anyio.sleep(grace_s)
    log.warning("grace period over: cancelling in-flight work")
    work.cancel()


async def save_histograms(histograms: HistogramFile | None, every_s: float) -> None:
    """Save the score histograms every ``every_s`` seconds, so a crash loses at most that much,
    and sooner when many lightcurves wait (their bins stay in memory until saved)."""
    if histograms is None:
        return
    while True:
        await histograms.wait_due(every_s)
        await histograms.save()


def bulk_skip_check(
    sessions: Sessions, products: Products, data_root: Path, cfg: EngineConfig, clock: Callable[[], datetime]
) -> SkipCheck:
    """A lane's skip check of one batch, retried through transient database errors."""

    async def check(lane: str, batch: list[Target]) -> list[Decision]:
        # the clock is read per batch: in a long run, refresh ages move with it
        freshness = Freshness.of(cfg.refresh_after_days, cfg.retry_failed_after_s, clock())
        call = functools.partial(
            check_batch, sessions, lane, batch, products, data_root, verify=cfg.verify, freshness=freshness
        )
        return await retry_transient(call, what=f"{lane}: skip check")

    return check
