"""The per-source record of what made the products, read back on both databases (JSON in SQL)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.adapters.base import Target
from aretriever.store import queries, rows
from aretriever.store.writers import RowWriter

NEW, OLD, LEGACY, DONE = (Target(f"WD {i}", 10.0 + i, -5.0) for i in range(4))


async def test_sources_made_with_another_hash_or_none_recorded_are_outdated(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with RowWriter(sessions) as writer:
        await writer.put(rows.upsert_sources([rows.source_row(t, "WD") for t in (NEW, OLD, LEGACY, DONE)]))
        for target, stamp in ((OLD, "old"), (LEGACY, None), (DONE, "new")):
            key = rows.product_key(target.name, "ztf", "P", "")
            await writer.put(rows.upsert_properties(key, {"num_lightcurves": 0}, stamp))
        # another version's row is not this project folder's business
        versioned = rows.product_key(NEW.name, "ztf", "P", "v1")
        await writer.put(rows.upsert_properties(versioned, {"num_lightcurves": 0}, "old"))
        await writer.flush()
    names = [t.name for t in (NEW, OLD, LEGACY, DONE)]
    async with sessions() as session:
        stamps = await queries.made_with(session, "ztf", names, "P", "", analysed=True)
        lcs = await queries.made_with(session, "ztf", names, "P", "", analysed=False)
    assert stamps == {OLD.name: {"old"}, LEGACY.name: {None}, DONE.name: {"new"}}
    assert lcs == {}
    found = await queries.outdated(sessions, "ztf", "P", "", "new", analysed=True)
    assert found.sources == 2 and set(found.hashes) == {"old", None}
    assert await queries.outdated(sessions, "tess", "P", "", "new", analysed=True) == queries.Outdated(0, [])
