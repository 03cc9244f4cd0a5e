"""Database URLs and engines, JSON columns, sessions, reachability, and read-only access.

SQLite by default, PostgreSQL via asyncpg. Nothing here connects at import or when an engine is
created; the first query does. The rest of the database lives beside this module:
:mod:`aretriever.store.schema` (migrations), :mod:`aretriever.store.transient` (which errors are
worth a retry), :mod:`aretriever.store.ops` and :mod:`aretriever.store.bulk` (the row writer's
statements). Rows are written only by :class:`aretriever.store.writers.RowWriter`; readers open
their own short sessions from :func:`session_factory` (one session per task, never shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from aretriever.errors import StorageFault, StoreError
from aretriever.numbers import finite_or_none
from aretriever.redact import redact
from aretriever.settings import StoreConfig

DB_URL_ENV = "ARETRIEVER_DB_URL"
SQLITE_FILENAME = "aretriever.sqlite"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_BEGIN_IMMEDIATE = "aretriever_sqlite_begin_immediate"  # execution option
STATEMENT_TIMEOUT_S = StoreConfig.model_fields["statement_timeout_s"].default
# asyncpg's own (client-side) timeout fires this long after the server's: the server's error
# (SQLSTATE 57014, naming the statement timeout) is the clearer one; the client's catches a
# server that stopped answering altogether
_CLIENT_TIMEOUT_MARGIN_S = 30.0
_URL_REWRITES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str) -> str:
    """Rewrite ``postgres(ql)://`` to ``postgresql+asyncpg://`` and ``sqlite://`` to aiosqlite."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{_URL_REWRITES.get(scheme, scheme)}://{rest}"


def resolve_db_url(cfg: StoreConfig, data_root: Path) -> str:
    """The async database URL of ``cfg`` with DATA_ROOT ``data_root`` (unless ``cfg`` names one).

    Kept for callers of the store alone; the computation is :func:`aretriever.store.locations.db_url_of`.
    """
    from aretriever.store.locations import db_url_of  # it imports this module's constants

    return db_url_of(cfg if cfg.data_root else cfg.model_copy(update={"data_root": data_root}))


def _nonfinite_to_none(value: Any) -> Any:
    # recursive because JSON columns hold nested meta; only floats change (ints, text, bools pass)
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: _nonfinite_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nonfinite_to_none(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, without importing numpy here
    if hasattr(value, "tolist"):
        return _nonfinite_to_none(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in a JSON column")


def json_dumps(value: Any) -> str:
    """Serialize a JSON column value; NaN and infinities become null (PostgreSQL refuses them)."""
    return json.dumps(_nonfinite_to_none(value), default=_json_default, allow_nan=False)


def _enable_wal(cursor: Any, attempts: int = 100) -> None:
    # Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked"
    # at once (no busy handler) when another connection is doing the same: wait and ask again.
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, decides where transactions begin (see _sqlite_begin):
    # the module's own implicit BEGIN skips DDL, which would leave migrations non-transactional
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: may lose, never corrupt
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to busy_timeout): used by migrations
    immediate = conn.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _create_sqlite(url: sa.URL) -> AsyncEngine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, json_serializer=json_dumps)
    sa.event.listen(engine.sync_engine, "connect", _sqlite_connect)
    sa.event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def create_engine(url: str, *, statement_timeout_s: float = STATEMENT_TIMEOUT_S) -> AsyncEngine:
    """Create an async engine for ``url`` (see :func:`resolve_db_url`); does not connect.

    SQLite: WAL journal, a 30 s busy timeout and enforced foreign keys on every connection,
    transactions begun by SQLAlchemy (so DDL is transactional too); the folder of the database
    file is created. PostgreSQL: asyncpg with a modest pool (5 + 5),
    pre-ping so that connections dropped by a server restart are replaced, and every statement
    cancelled by the server after ``statement_timeout_s`` (``store.statement_timeout_s``).
    """
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite(parsed)
    if statement_timeout_s <= 0:
        raise StoreError(f"store: statement_timeout_s must be > 0 (got {statement_timeout_s})")
    connect_args: dict[str, Any] = {}
    if parsed.get_driver_name() == "asyncpg":
        connect_args = {
            "server_settings": {"statement_timeout": str(math.ceil(statement_timeout_s * 1000))},
            "command_timeout": statement_timeout_s + _CLIENT_TIMEOUT_MARGIN_S,
        }
    return create_async_engine(
        parsed,
        json_serializer=json_dumps,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


async def check_reachable(engine: AsyncEngine) -> None:
    """Connect once, so that a wrong URL, password or server fails with one clear line.

    Raises
    ------
    StorageFault
        Naming the database (password masked) and the driver's reason.
    """
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (OSError, sa.exc.DBAPIError) as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()))
        raise StorageFault(f"store: cannot open the database {shown}: {reason}") from exc


def require_existing(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist: opening it would create an empty database.

    Raises
    ------
    StoreError
        Naming the missing file.
    """
    parsed = make_url(url)
    database = parsed.database or ""
    local = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if local and not database.startswith("file:") and not Path(database).expanduser().exists():
        raise StoreError(f"store: no database at {database} (run python -m aretriever.fetch first)")


@contextlib.asynccontextmanager
async def reading(url: str, *, statement_timeout_s: float) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on an existing database, for tools that only read (plots, exports).

    Raises
    ------
    StoreError
        The database is missing, or a read failed (the URL shown without its password).
    """
    require_existing(url)
    engine = create_engine(url, statement_timeout_s=statement_timeout_s)
    try:
        yield session_factory(engine)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise StoreError(f"store: cannot read {shown}: {exc}") from exc
    finally:
        await engine.dispose()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Return a session factory; objects stay usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, timeout_s: float = 5.0) -> bool:
    """Return True if the database answers ``SELECT 1`` within ``timeout_s``; never raises."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception:
        return False
    return True
