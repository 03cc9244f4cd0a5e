"""PostgreSQL cancels every statement that runs longer than ``store.statement_timeout_s``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aretriever.config import load_config
from aretriever.engine.core import Engine
from aretriever.store import db, transient
from aretriever.store.sessions import Session

# the timeout is a PostgreSQL setting: these tests run on that backend only
pytestmark = pytest.mark.parametrize("backend", ["postgresql"])


async def _show(engine: sa.ext.asyncio.AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str(await conn.scalar(sa.text("SHOW statement_timeout")))


async def test_every_connection_has_the_statement_timeout(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        assert await _show(engine) == "5min"  # the default, 300 s
    finally:
        await engine.dispose()
    engine = db.create_engine(db_url, statement_timeout_s=2.5)
    try:
        assert await _show(engine) == "2500ms"
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            # asyncpg's own timeout backs the server's up, a little later
            assert raw.driver_connection._config.command_timeout == pytest.approx(32.5)  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def test_a_statement_over_the_timeout_fails_and_is_not_retried(db_url: str) -> None:
    engine = db.create_engine(db_url, statement_timeout_s=0.2)
    calls = 0

    async def sleepy() -> None:
        nonlocal calls
        calls += 1
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_sleep(600)"))

    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            await transient.retry_transient(sleepy, what="test", base_s=0.001)
        assert calls == 1  # cancelled by the server, not retried (SQLSTATE 57014 is not transient)
        assert "statement timeout" in str(caught.value)
        assert getattr(caught.value.orig, "sqlstate", None) == "57014"
        assert not transient.is_transient(caught.value)
    finally:
        await engine.dispose()


async def test_the_engine_takes_the_timeout_from_the_config(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(
        False,
        overrides={
            "store": {"data_root": str(tmp_path / "data"), "db_url": db_url, "statement_timeout_s": 7},
            "project": {"obs_names": ["demo"]},
        },
    )
    engine = Engine(cfg)
    async with engine.opened():
        sessions = engine.sessions
        assert sessions is not None
        async with sessions() as session:
            assert (await session.scalar(sa.text("SHOW statement_timeout"))) == "7s"


def test_notebook_sessions_have_the_statement_timeout(db_url: str) -> None:
    with Session(db_url) as session:
        assert session.scalar(sa.text("SHOW statement_timeout")) == "5min"
