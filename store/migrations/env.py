"""Alembic environment of the aretriever schema.

Normally run programmatically by :func:`aretriever.store.schema.migrate`, which passes an open
(sync-facing) connection in ``config.attributes["connection"]`` and the models' metadata in
``config.attributes["target_metadata"]``. Without a connection, the URL comes from the
``sqlalchemy.url`` option, else from :func:`aretriever.store.locations.db_url_of` as for a run
(``$ARETRIEVER_DB_URL``, else SQLite in DATA_ROOT; async drivers are fine), so that
``alembic revision --autogenerate`` can run against a scratch database::

    from alembic import command
    from aretriever.store.schema import alembic_config
    cfg = alembic_config("sqlite+aiosqlite:///scratch.sqlite")
    command.revision(cfg, "what changed", autogenerate=True)
"""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from aretriever.settings import StoreConfig
from aretriever.store.locations import db_url_of


def _target_metadata() -> MetaData:
    metadata = context.config.attributes.get("target_metadata")
    if metadata is None:  # command-line use: this file is loaded by path, not as a package module
        metadata = importlib.import_module("aretriever.store.models").Base.metadata
    if not isinstance(metadata, MetaData):
        raise TypeError(f"migrations: target_metadata must be a MetaData (got {metadata!r})")
    return metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=_target_metadata(),
        # SQLite cannot ALTER most things: later revisions rebuild tables in batch mode
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    given = context.config.get_main_option("sqlalchemy.url")
    if given:
        return given
    # the environment is read in one place only: the same database a run with defaults would use
    return db_url_of(StoreConfig())


async def _run_with_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(url=_url(), target_metadata=_target_metadata(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    elif context.is_offline_mode():
        _run_offline()
    else:
        asyncio.run(_run_with_url(_url()))


_run()
