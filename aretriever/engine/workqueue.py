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

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.adapters.base import Target
from aretriever.store.models import WorkItem

log = logging.getLogger("aretriever.engine.workqueue")


def worker_id() -> str:
    """``host:pid``: unique among live workers, and says where to look for one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def target_doc(target: Target) -> dict[str, Any]:
    doc = asdict(target)
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

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalog: str, *, lease_s: float, worker: str = ""
    ) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.lease = timedelta(seconds=lease_s)
        self.worker = worker or worker_id()
        self.held: dict[str, Target] = {}  # the items this worker claimed and has not finished

    async def enqueue(self, targets: Sequence[Target]) -> int:
        """Add these sources (those already queued are left as they are); returns how many were new."""
        if not targets:
            return 0
        rows = [{"catalog": self.catalog, "source_name": t.name, "target": target_doc(t)} for t in targets]
        statement = insert(WorkItem).values(rows).on_conflict_do_nothing(constraint="uq_work_items_key")
        async with self.sessions() as session, session.begin():
            result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def claim(self, size: int) -> list[Target]:
        """Up to ``size`` pending items, or items whose lease lapsed, now held by this worker."""
        now = datetime.now(UTC)
        free = (
            sa.select(WorkItem.id)
            .where(
                WorkItem.catalog == self.catalog,
                sa.or_(
                    WorkItem.state == "pending",
                    sa.and_(WorkItem.state == "claimed", WorkItem.lease_until < now),
                ),
            )
            .order_by(WorkItem.id)
            .limit(size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            sa.update(WorkItem)
            .where(WorkItem.id.in_(free))
            .values(
                state="claimed",
                worker=self.worker,
                lease_until=now + self.lease,
                claims=WorkItem.claims + 1,
                updated_at=now,
            )
            .returning(WorkItem.id, WorkItem.target, WorkItem.claims)
        )
        async with self.sessions() as session, session.begin():
            claimed = (await session.execute(statement)).all()
        targets = []
        for _, doc, claims in sorted(claimed):
            target = target_of(doc)
            self.held[target.name] = target
            if claims > 1:
                log.warning("%s: taken over from a worker whose lease lapsed", target.name)
            targets.append(target)
        return targets

    async def heartbeat(self) -> int:
        """Renew the lease of every item this worker holds; returns how many."""
        statement = (
            sa.update(WorkItem)
            .where(WorkItem.worker == self.worker, WorkItem.state == "claimed")
            .values(lease_until=datetime.now(UTC) + self.lease)
        )
        async with self.sessions() as session, session.begin():
            result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    def done_row(self, name: str) -> dict[str, Any] | None:
        """The row that marks a held item done (an upsert on its key, for the row writer)."""
        target = self.held.pop(name, None)
        if target is None:
            return None
        return {
            "catalog": self.catalog,
            "source_name": name,
            "target": target_doc(target),
            "state": "done",
            "worker": self.worker,
            "lease_until": None,
        }

    async def open_items(self) -> int:
        """Items of this catalog not done yet (pending, or claimed by anyone)."""
        query = sa.select(sa.func.count()).where(WorkItem.catalog == self.catalog, WorkItem.state != "done")
        async with self.sessions() as session:
            return int(await session.scalar(query) or 0)
