"""Batches claimed from the shared work queue, so several workers split one catalog range.

Every worker enqueues the whole range (idempotent: the first one fills the queue), then claims
small batches under a lease it renews with a heartbeat; an item is marked done only after every
lane of the run has reported its source, and the done mark goes through the row writer after
that source's rows, so a crash between the two leaves the item to be claimed again, never lost.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator

import anyio

from aretriever.adapters.base import Target
from aretriever.engine.workqueue import WorkQueue
from aretriever.store.queries import Sessions
from aretriever.store.transient import retry_transient
from aretriever.store.writers import RowWriter


class Claims:
    """This worker's side of the shared work queue, across the runs of one engine.

    Parameters
    ----------
    lease_s
        How long a claim holds without a heartbeat (the heartbeat renews it every third of it).
    claim_batch
        Sources claimed at a time.
    """

    def __init__(self, *, lease_s: float, claim_batch: int) -> None:
        self.lease_s = lease_s
        self.claim_batch = claim_batch
        self.queue: WorkQueue | None = None  # set by the first run: the queue of its catalog
        self.pending: Counter[str] = Counter()  # lane results still due per claimed source
        self.lanes_in_run = 0  # how many lane results each claimed source is due

    async def batches(
        self, sessions: Sessions, catalog: str, rows: AsyncIterator[list[Target]], stopping: anyio.Event
    ) -> AsyncIterator[list[Target]]:
        """Enqueue ``rows`` (idempotent), then claim batches until every item is done."""
        queue = WorkQueue(sessions, catalog, lease_s=self.lease_s)
        self.queue = queue
        async for targets in rows:
            await retry_transient(functools.partial(queue.enqueue, targets), what="work queue: enqueue")
        size = self.claim_batch
        while not stopping.is_set():
            if len(queue.held) >= 2 * size:  # hold no more than we work on: the others need some
                await anyio.sleep(0.05)
                continue
            claimed = await retry_transient(functools.partial(queue.claim, size), what="work queue: claim")
            if claimed:
                self.pending.update({t.name: self.lanes_in_run for t in claimed})
                yield claimed
            elif await retry_transient(queue.open_items, what="work queue: count") == 0:
                return
            else:  # held by others (or our own, in flight): wait for them to finish or lapse
                await anyio.sleep(min(1.0, self.lease_s / 4))

    async def heartbeat(self) -> None:
        """Renew this worker's leases until cancelled (a third of the lease: two beats may miss)."""
        while True:
            await anyio.sleep(self.lease_s / 3)
            if self.queue is not None:
                await retry_transient(self.queue.heartbeat, what="work queue: heartbeat")

    async def mark_done(self, source: str, rows: RowWriter) -> None:
        """Once every lane has reported a claimed source, mark its item done (after its rows)."""
        if self.queue is None or source not in self.pending:
            return
        self.pending[source] -= 1
        if self.pending[source] > 0:
            return
        del self.pending[source]
        done = self.queue.done(source)
        if done is not None:
            # through the row writer, which commits in order: the mark lands after the source's rows
            await rows.put(done)
