"""The stages of a run and the bounded streams between them.

::

    batches ─► producer ─► per lane: skip checker ─► N fetchers ─► record (summary, listeners)

The producer hands every lane each batch; a lane's skip checker decides the batch in bulk and
sends the sources that need work to its fetchers, which each take the next decision as soon as
they are free (no batch barrier). Every stage checks the run's stop event between items, so a
stop request lets in-flight work finish instead of cutting it off.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aretriever.adapters.base import Target
from aretriever.catalogs.core import BadRow, Catalog, chunk_to_targets
from aretriever.engine.lanes import LaneRuntime
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.skipcheck import Decision
from aretriever.settings import ColumnMap

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
            result = await lane.pipeline.handle(decision)
            await record(result)
            if stopping.is_set():
                return
