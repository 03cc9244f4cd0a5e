"""store.queries and store.rows against both databases: the reads the service runs, by name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.adapters.base import Target
from aretriever.errors import StoreError
from aretriever.store import db, queries, rows
from aretriever.store.models import Stage
from aretriever.store.writers import RowWriter

T = Target("WD 1", 10.0, -5.0, mag=15.0)


async def test_rows_written_by_the_builders_are_read_back_by_the_queries(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = rows.product_key(T.name, "ztf", "P", "h")
    async with RowWriter(sessions) as writer:
        await writer.put(rows.upsert_sources([rows.source_row(T, "WD")]))
        await writer.put(rows.upsert_raw([rows.raw_row(T.name, "ztf", "ZTF/a.h5", num_rows=2, nbytes=7)]))
        await writer.put(rows.upsert_properties(key, {"num_lightcurves": 0, "meta": {"injections": [{"w": 1}]}}))
        await writer.put(rows.record_failure(rows.failure_row(T.name, "ztf", Stage.FETCH, "http_503")))
        await writer.flush()
    async with sessions() as session:
        raw = await queries.stored_raw(session, "ztf", [T.name, "other"])
        analysed = await queries.analysed(session, "ztf", [T.name], "P", "h")
        failures, latest = await queries.open_failures(session, "ztf", [T.name])
        assert await queries.source_exists(session, T.name)
    assert (raw[T.name].status, raw[T.name].filename, raw[T.name].nbytes) == ("ok", "ZTF/a.h5", 7)
    assert analysed == {T.name: 0}
    assert failures == {T.name: frozenset({"fetch"})} and latest[T.name] <= datetime.now(UTC)
    assert await queries.injections(sessions, "P", "h") == [{"w": 1}]
    assert await queries.delete_products(sessions, "P", "h") == {"detections": 0, "properties": 1, "lightcurves": 0}
    source = await queries.source_with_products(sessions, T.name)
    assert source is not None and [r.observatory for r in source.raw_photometry] == ["ztf"]
    await queries.check_database(sessions)


async def test_check_database_names_an_unreachable_database() -> None:
    # port 1 on this machine: nothing listens, the connection is refused at once
    engine = db.create_engine("postgresql+asyncpg://u:p@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreError, match="does not answer"):
            await queries.check_database(db.session_factory(engine))
    finally:
        await engine.dispose()
