"""Several workers on one catalog: a work queue in PostgreSQL (``work_items``).

Every worker enqueues the catalog range it is given (``INSERT ... ON CONFLICT DO NOTHING``: the
first one in creates the items, the others find them), then claims batches with
``SELECT ... FOR UPDATE SKIP LOCKED``, so no two workers hold the same source. A claim carries a
lease that the worker's heartbeat renews; a worker that dies stops renewing, and once its lease
lapses its items are claimed by the others. An item is marked done through the row writer, after
the source's rows, so "done" is never committed before the work it stands for; a source whose
worker died after its rows but before "done" is claimed again and skipped by the skip check.
PostgreSQL is the coordinator: nothing else to run, nothing home-made to trust.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aretriever.adapters.base import Target
from aretriever.store import rows, workqueue
from aretriever.store.queries import Sessions
from aretriever.store.writers import Upsert

log = logging.getLogger("aretriever.engine.workqueue")


def worker_id() -> str:
    """``host:pid``: unique among live workers, and says where to look for one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def target_doc(target: Target) -> dict[str, Any]:
    doc = asdict(target)
    # JSON has no tuples; target_of turns the lists back into the hashable pairs Target needs.
    doc["ids"] = [list(pair) for pair in target.ids]
    return doc


def target_of(doc: dict[str, Any]) -> Target:
    return Target(**{**doc, "ids": tuple((str(k), str(v)) for k, v in doc.get("ids", ()))})


class WorkQueue:
    """One worker's view of the shared queue of one catalog.

    Parameters
    ----------
    sessions
        Sessions on the PostgreSQL database every worker uses.
    catalog
        The catalog's name: items of different catalogs never mix.
    lease_s
        How long a claim holds without a heartbeat (the heartbeat renews it every third of it).
    """

    def __init__(self, sessions: Sessions, catalog: str, *, lease_s: float, worker: str = "") -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.lease = timedelta(seconds=lease_s)
        self.worker = worker or worker_id()
        self.held: dict[str, Target] = {}  # the items this worker claimed and has not finished

    async def enqueue(self, targets: Sequence[Target]) -> int:
        """Add these sources (those already queued are left as they are); returns how many were new."""
        if not targets:
            return 0
        docs = [(t.name, target_doc(t)) for t in targets]
        return await workqueue.enqueue(self.sessions, self.catalog, docs)

    async def claim(self, size: int) -> list[Target]:
        """Up to ``size`` pending items, or items whose lease lapsed, now held by this worker."""
        # Leases are stamped with this host's clock and read by the others: the workers' clocks must
        # agree to well within ``lease_s`` (NTP does), or a live worker's items get taken over.
        now = datetime.now(UTC)
        claimed = await workqueue.claim(self.sessions, self.catalog, self.worker, size, now, now + self.lease)
        targets = []
        for _, doc, claims in claimed:
            target = target_of(doc)
            self.held[target.name] = target
            if claims > 1:
                log.warning("%s: taken over from a worker whose lease lapsed", target.name)
            targets.append(target)
        return targets

    async def heartbeat(self) -> int:
        """Renew the lease of every item this worker holds; returns how many."""
        return await workqueue.renew(self.sessions, self.worker, datetime.now(UTC) + self.lease)

    def done(self, name: str) -> Upsert | None:
        """The upsert that marks a held item done (for the row writer), None if not held."""
        # A source not claimed from the queue (e.g. fetched by id) has no item to mark.
        target = self.held.pop(name, None)
        if target is None:
            return None
        return rows.work_done(self.catalog, name, target_doc(target), self.worker)

    async def open_items(self) -> int:
        """Items of this catalog not done yet (pending, or claimed by anyone)."""
        return await workqueue.open_items(self.sessions, self.catalog)
