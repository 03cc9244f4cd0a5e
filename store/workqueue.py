"""The work queue's statements (table ``work_items``, PostgreSQL only).

:class:`aretriever.engine.workqueue.WorkQueue` decides what to claim and when; these functions are
the SQL it runs: enqueue with ``ON CONFLICT DO NOTHING``, claim with ``FOR UPDATE SKIP LOCKED``,
renew leases, count what is open. Targets travel as JSON documents (``target``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import WorkItem, WorkState

Sessions: TypeAlias = async_sessionmaker[AsyncSession]


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def enqueue(sessions: Sessions, catalog: str, docs: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """Add (source name, target document) items; those already queued stay as they are. How many were new."""
    rows = [{"catalog": catalog, "source_name": name, "target": doc} for name, doc in docs]
    statement = insert(WorkItem).values(rows).on_conflict_do_nothing(constraint="uq_work_items_key")
    async with sessions() as session, session.begin():
        return _rowcount(await session.execute(statement))


async def claim(
    sessions: Sessions, catalog: str, worker: str, size: int, now: datetime, lease_until: datetime
) -> list[tuple[int, dict[str, Any], int]]:
    """Claim up to ``size`` pending or lapsed items for ``worker``: (id, target document, claims) each."""
    free = (
        sa.select(WorkItem.id)
        .where(
            WorkItem.catalog == catalog,
            sa.or_(
                WorkItem.state == WorkState.PENDING,
                sa.and_(WorkItem.state == WorkState.CLAIMED, WorkItem.lease_until < now),
            ),
        )
        # Ids follow enqueue order, so workers move through the catalog roughly in row order.
        .order_by(WorkItem.id)
        .limit(size)
        # SKIP LOCKED: rows another worker is claiming right now are passed over instead of waited on.
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        sa.update(WorkItem)
        .where(WorkItem.id.in_(free))
        .values(
            state=WorkState.CLAIMED,
            worker=worker,
            lease_until=lease_until,
            claims=WorkItem.claims + 1,
            updated_at=now,
        )
        .returning(WorkItem.id, WorkItem.target, WorkItem.claims)
    )
    async with sessions() as session, session.begin():
        claimed = (await session.execute(statement)).all()
    # RETURNING rows come in no guaranteed order; sorting by id restores the catalog order.
    return sorted((int(i), doc, int(n)) for i, doc, n in claimed)


async def renew(sessions: Sessions, worker: str, lease_until: datetime) -> int:
    """Extend the lease of every item ``worker`` holds; how many."""
    statement = (
        sa.update(WorkItem)
        # By worker, not by id list: one statement renews any number of held items.
        .where(WorkItem.worker == worker, WorkItem.state == WorkState.CLAIMED)
        .values(lease_until=lease_until)
    )
    async with sessions() as session, session.begin():
        return _rowcount(await session.execute(statement))


async def open_items(sessions: Sessions, catalog: str) -> int:
    """Items of ``catalog`` not done yet (pending, or claimed by anyone)."""
    query = sa.select(sa.func.count()).where(WorkItem.catalog == catalog, WorkItem.state != WorkState.DONE)
    async with sessions() as session:
        return int(await session.scalar(query) or 0)
