"""Database engine, migrations, sessions, and the bulk statements of the row writer.

SQLite by default, PostgreSQL via asyncpg. Nothing here connects at import or when an engine is
created; the first query does. Rows are written only by :class:`aretriever.store.writers.RowWriter`
(through :class:`BulkWriter`); readers open their own short sessions from :func:`session_factory`
(one session per task, never shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from aretriever.errors import StorageFault, StoreError
from aretriever.redact import redact
from aretriever.retry import call_retrying, decide
from aretriever.settings import StoreConfig

from .models import NOW_OPTION, UPDATED_COLUMNS, Base, UTCDateTime

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger("aretriever.store")
T = TypeVar("T")

DB_URL_ENV = "ARETRIEVER_DB_URL"
SQLITE_FILENAME = "aretriever.sqlite"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_BEGIN_IMMEDIATE = "aretriever_sqlite_begin_immediate"  # execution option
STATEMENT_TIMEOUT_S = StoreConfig.model_fields["statement_timeout_s"].default
# asyncpg's own (client-side) timeout fires this long after the server's: the server's error
# (SQLSTATE 57014, naming the statement timeout) is the clearer one; the client's catches a
# server that stopped answering altogether
_CLIENT_TIMEOUT_MARGIN_S = 30.0
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# any constant shared by all aretriever processes: serializes concurrent migrations on PostgreSQL
_MIGRATION_LOCK_ID = 0x61726574
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


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, without importing numpy here
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in a JSON column")


def json_dumps(value: Any) -> str:
    """Serialize a JSON column value; NaN and infinities become null (PostgreSQL refuses them)."""
    return json.dumps(_finite(value), default=_json_default, allow_nan=False)


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


def alembic_config(url: str | None = None) -> AlembicConfig:
    """Return an Alembic config for aretriever's migrations (``url`` for command-line style use)."""
    from alembic.config import Config  # imported when needed: alembic costs ~0.3 s of start-up

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["target_metadata"] = Base.metadata
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


# Alembic's ``context`` is one proxy per process: two migrations interleaving on one loop (or
# running on two threads) would each see the other's connection. One at a time per process.
_MIGRATING = threading.Lock()


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in one transaction; concurrent callers wait their turn.

    PostgreSQL serializes them with an advisory lock, SQLite with ``BEGIN IMMEDIATE``, and callers
    in one process (two engines on two databases) with a lock around Alembic's global context.
    """
    await check_reachable(engine)
    with anyio.CancelScope(shield=True):  # never leave the lock taken by a cancelled waiter
        await anyio.to_thread.run_sync(_MIGRATING.acquire)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            async with conn.begin():
                await conn.run_sync(_upgrade, revision)
    finally:
        _MIGRATING.release()


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


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the database to ``revision`` (``"base"`` drops every table)."""
    async with engine.connect() as conn:
        await conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        async with conn.begin():
            await conn.run_sync(_downgrade, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at (None for an empty database)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


# SQLSTATE classes worth retrying: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, restart), lock not available
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P", "55P03")
_RETRY_CAP_S = 5.0  # a database back within seconds is not kept waiting long
# SQLite result codes that retrying cannot fix (SQLITE_ERROR is e.g. "no such table")
_PERMANENT_SQLITE = frozenset({"SQLITE_ERROR", "SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _orig_attr(exc: sa.exc.DBAPIError, name: str) -> str | None:
    value = getattr(exc.orig, name, None)
    return value if isinstance(value, str) else None


def is_transient(exc: BaseException) -> bool:
    """Return True if a database error is transient (:mod:`aretriever.retry`'s one meaning).

    The connection, a lock or the server failed, not the data or the statement. Decided by
    exception type and by the driver's error code (PostgreSQL SQLSTATE, SQLite result name),
    never by the message text.
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if _orig_attr(exc, "sqlite_errorname") in _PERMANENT_SQLITE:
            return False
        sqlstate = _orig_attr(exc, "sqlstate") or _orig_attr(exc, "pgcode")
        if sqlstate is not None:
            return sqlstate.startswith(_TRANSIENT_SQLSTATES)
        return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
    return isinstance(exc, (sa.exc.TimeoutError, OSError))


async def retry_transient(
    call: Callable[[], Awaitable[T]], *, what: str, for_s: float = 120.0, base_s: float = 0.05
) -> T:
    """``await call()``, again while it fails for a transient reason, for up to ``for_s`` seconds.

    For the engine's reads and claims (skip checks, the work queue) and the row writer's batches:
    a database restarting for a few seconds pauses the run instead of ending it. The schedule is
    the shared rule (:func:`aretriever.retry.decide`); this module only says what is transient.
    """
    return await call_retrying(
        call,
        transient=is_transient,
        what=f"store: {what}",
        for_s=for_s,
        base_s=base_s,
        max_s=_RETRY_CAP_S,
        log=log,
    )


def retry_delay(
    exc: BaseException, attempt: int, remaining_s: float, base_s: float = 0.05, cap_s: float = _RETRY_CAP_S
) -> float | None:
    """Return how long to wait before retry number ``attempt`` (1-based), or None to give up.

    :func:`aretriever.retry.decide` with the database's classification: gives up on errors that
    are not transient and once ``remaining_s`` is spent; the delay doubles from ``base_s`` up to
    ``cap_s``.
    """
    d = decide(
        attempt=attempt,
        transient=is_transient(exc),
        remaining_s=remaining_s,
        base_s=base_s,
        max_s=cap_s,
        jitter=1.0,  # no randomness: a few processes at most wait on one database
    )
    return d.delay_s if d.retry else None


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


# --------------------------------------------------------------------------------- bulk writes
# The row writer's statements bypass SQLAlchemy's per-row parameter processing and per-statement
# cursor handling (measured: 600 us per statement and ~100 us per row through ``conn.execute`` on
# aiosqlite, against ~120 us and ~10 us here). Statements are still built and compiled by
# SQLAlchemy, once per shape; only parameter conversion is done here, for the two types that need
# it (JSON text, UTC timestamps).

Row = Mapping[str, Any]


def _where_required(where: Mapping[str, Any]) -> None:
    if not where:
        raise ValueError("an empty `where` would touch every row; name the rows to change")


@dataclass(frozen=True, slots=True)
class Upsert:
    """INSERT rows; on a conflict on ``keys`` (a unique constraint), update instead.

    ``update=None`` updates every non-key column given in the rows, ``update=()`` keeps the stored
    row (DO NOTHING). Columns in ``add`` are added to the stored value (counters such as
    ``Failure.attempts``). An update also stamps ``updated_at``/``last_at`` when the table has them.
    """

    model: type[Base]
    rows: Sequence[Row]
    keys: tuple[str, ...]
    update: tuple[str, ...] | None = None
    add: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("an upsert needs the columns of a unique constraint as `keys`")


@dataclass(frozen=True, slots=True)
class Replace:
    """DELETE the rows where every column of ``where`` equals its value, then INSERT ``rows``."""

    model: type[Base]
    where: Mapping[str, Any]
    rows: Sequence[Row] = ()

    def __post_init__(self) -> None:
        _where_required(self.where)


@dataclass(frozen=True, slots=True)
class Delete:
    """DELETE the rows where every column of ``where`` equals its value."""

    model: type[Base]
    where: Mapping[str, Any]

    def __post_init__(self) -> None:
        _where_required(self.where)


Op = Upsert | Replace | Delete


def model_table(model: type[Base]) -> sa.Table:
    """Return the table of a model."""
    table = model.__table__
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def op_rows(op: Op) -> int:
    """Rows an op writes, for batch sizes (a delete counts as one)."""
    return 1 if isinstance(op, Delete) else max(len(op.rows), 1)


@dataclass(slots=True)
class Step:
    """One statement of a batch: ``kind`` is "upsert", "insert" or "delete".

    ``rows`` are the rows to write, or for a delete the ``where`` mappings (one per op).
    """

    kind: str
    op: Op
    columns: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    # rows' values of some columns, to tell fast whether a delete may hit any of them
    _index: dict[tuple[str, ...], set[tuple[Any, ...]] | None] = field(default_factory=dict, repr=False)

    @property
    def table(self) -> sa.Table:
        """The table the statement writes."""
        return model_table(self.op.model)

    def shape(self) -> tuple[Any, ...]:
        """Steps of equal shape share one compiled statement and can run as one executemany."""
        op = self.op
        if isinstance(op, Upsert):
            return (self.kind, op.model, op.keys, op.update, op.add, self.columns)
        if isinstance(op, (Replace, Delete)) and self.kind == "delete":
            return (self.kind, op.model, tuple(op.where), self.columns)
        return (self.kind, op.model, self.columns)

    def extend(self, rows: Sequence[Row]) -> None:
        """Add rows (of a merged step)."""
        self.rows.extend(rows)
        for keys, index in self._index.items():
            if index is not None:
                self._index[keys] = _index_rows(keys, rows, index)

    def may_match(self, where: Mapping[str, Any]) -> bool:
        """Return True unless no row can match ``where`` (a row lacking a column may match)."""
        keys = tuple(where)
        if keys not in self._index:
            self._index[keys] = _index_rows(keys, self.rows, set())
        index = self._index[keys]
        if index is None:
            return any(_may_match(row, where) for row in self.rows)
        return tuple(where.values()) in index


def _index_rows(
    keys: tuple[str, ...], rows: Sequence[Row], index: set[tuple[Any, ...]]
) -> set[tuple[Any, ...]] | None:
    try:
        index.update(tuple(row[k] for k in keys) for row in rows)
    except (KeyError, TypeError):  # a missing column, or an unhashable value: compare row by row
        return None
    return index


def _row_steps(kind: str, op: Op, rows: Sequence[Row]) -> list[Step]:
    steps: list[Step] = []
    for row in rows:
        columns = tuple(sorted(row))
        if steps and steps[-1].columns == columns:
            steps[-1].rows.append(row)
        else:
            steps.append(Step(kind, op, columns, [row]))
    return steps


def _op_steps(op: Op) -> list[Step]:
    if isinstance(op, Upsert):
        return _row_steps("upsert", op, op.rows)
    # the columns compared with NULL are part of the statement (IS NULL), not parameters
    nulls = tuple(sorted(k for k, v in op.where.items() if v is None))
    steps = [Step("delete", op, nulls, [op.where])]
    if isinstance(op, Replace):
        steps += _row_steps("insert", op, op.rows)
    return steps


@functools.cache
def _descendants(table: sa.Table) -> frozenset[sa.Table]:
    """Tables whose rows refer, directly or not, to rows of ``table`` (cascades reach them)."""
    found: set[sa.Table] = set()
    todo = [table]
    while todo:
        parent = todo.pop()
        for child in table.metadata.tables.values():
            if child is not table and child not in found and _refers(child, parent):
                found.add(child)
                todo.append(child)
    return frozenset(found)


def _refers(child: sa.Table, parent: sa.Table) -> bool:
    return any(fk.references(parent) for fk in child.foreign_keys)


def _may_match(row: Row, where: Mapping[str, Any]) -> bool:
    return all(k not in row or row[k] == v for k, v in where.items())


def _same_table_commutes(a: Step, b: Step) -> bool:
    if a.kind == "delete" and b.kind == "delete":
        return True
    if a.kind == "insert" and b.kind == "delete":  # plain inserts none of which the delete hits
        return not any(a.may_match(where) for where in b.rows)
    return False  # upserts may meet stored rows a delete would have removed: keep the order


def commutes(a: Step, b: Step) -> bool:
    """Return True if ``b``, which comes after ``a``, may run before it with the same result.

    Writes never move before writes or deletes of their parent tables (foreign keys, cascades),
    deletes never move before writes into tables they cascade to, and statements on one table
    keep their order unless they are deletes, or a delete that matches none of an insert's rows.
    """
    if a.table is b.table:
        return _same_table_commutes(a, b)
    if b.kind == "delete":
        return a.kind == "delete" or a.table not in _descendants(b.table)
    return b.table not in _descendants(a.table)


def plan(ops: Sequence[Op]) -> list[Step]:
    """Turn ops into statements, merging statements of the same shape where the order allows.

    A statement joins the latest earlier statement of its shape (one executemany) if it commutes
    with every statement in between (:func:`commutes`), so interleaved ops such as
    (source, raw, lightcurves) x N become three or four statements instead of 3-4 N.
    """
    steps: list[Step] = []
    for op in ops:
        for step in _op_steps(op):
            _place(steps, step)
    return steps


def _place(steps: list[Step], step: Step) -> None:
    shape = step.shape()
    for earlier in reversed(steps):
        if earlier.shape() == shape:
            earlier.extend(step.rows)
            return
        if not commutes(earlier, step):
            break
    steps.append(step)


def _param_columns(table: sa.Table, columns: Sequence[str]) -> list[str]:
    # the given columns, plus those with a Python-side default (filled in by BulkWriter)
    extra = [c.name for c in table.columns if c.default is not None and c.name not in columns]
    return [*columns, *extra]


def _insert(table: sa.Table, names: Sequence[str], dialect: str) -> Any:
    unknown = sorted(set(names) - set(table.c.keys()))
    if unknown:
        raise StoreError(f"store: table {table.name} has no column(s) {unknown}")
    values = {n: sa.bindparam(n, type_=table.c[n].type) for n in names}
    if dialect == "postgresql":
        return postgresql_insert(table).values(values)
    if dialect == "sqlite":
        return sqlite_insert(table).values(values)
    raise StoreError(f"store: the row writer needs SQLite or PostgreSQL (got {dialect})")


def upsert_statement(op: Upsert, columns: Sequence[str], names: Sequence[str], dialect: str) -> sa.Insert:
    """Build the INSERT .. ON CONFLICT statement of ``op``.

    ``columns`` are those the rows give, ``names`` every bind parameter (``columns`` plus the
    columns filled by their Python-side default); only given columns are updated on a conflict.
    """
    table = model_table(op.model)
    stmt = _insert(table, names, dialect)
    update = op.update if op.update is not None else [c for c in columns if c not in op.keys]
    set_: dict[str, Any] = {n: stmt.excluded[n] for n in update if n not in op.add}
    set_.update({n: table.c[n] + stmt.excluded[n] for n in op.add})
    if op.update == () or not set_:
        return stmt.on_conflict_do_nothing(index_elements=list(op.keys))  # type: ignore[no-any-return]
    # updated_at/last_at are always parameters (their default is the batch time)
    set_.update({n: stmt.excluded[n] for n in UPDATED_COLUMNS & set(names) if n not in set_})
    return stmt.on_conflict_do_update(index_elements=list(op.keys), set_=set_)  # type: ignore[no-any-return]


def _delete_statement(op: Replace | Delete, nulls: Sequence[str]) -> sa.Delete:
    table = model_table(op.model)
    where = [
        table.c[k].is_(None) if k in nulls else table.c[k] == sa.bindparam(k, type_=table.c[k].type)
        for k in op.where
    ]
    return sa.delete(table).where(*where)


Converter = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    converters: tuple[Converter, ...]


def _json_param(nullable: bool) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return None if value is None and nullable else json_dumps(value)

    return convert


class BulkWriter:
    """Compiles the row writer's statements once per shape and runs a batch of them.

    Parameters are converted here for the types that need it on this dialect (JSON as text, UTC
    timestamps), and Python-side column defaults are evaluated once per statement with the batch
    time (all the schema's defaults are constants or that time).
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], _Compiled] = {}

    def _converter(self, column: sa.Column[Any], dialect: sa.Dialect) -> Converter:
        if isinstance(column.type, (sa.Integer, sa.Float, sa.Boolean)):
            return _plain  # numpy scalars: sqlite3 would store an np.int64 as a BLOB
        if isinstance(column.type, sa.JSON):
            return _json_param(bool(column.type.none_as_null))
        if isinstance(column.type, UTCDateTime):
            naive = dialect.name == "sqlite"  # stored like SQLAlchemy's own SQLite DATETIME
            bind = column.type.process_bind_param
            return lambda v: _timestamp(bind(v, dialect), naive)
        return None

    def _compile(self, step: Step, dialect: sa.Dialect) -> _Compiled:
        key = (dialect.name, *step.shape())
        if key not in self._cache:
            op, table = step.op, model_table(step.op.model)
            if step.kind == "delete" and isinstance(op, (Replace, Delete)):
                stmt: Any = _delete_statement(op, step.columns)
            else:
                names = _param_columns(table, step.columns)
                if isinstance(op, Upsert):
                    stmt = upsert_statement(op, step.columns, names, dialect.name)
                else:
                    stmt = _insert(table, names, dialect.name)
            compiled = stmt.compile(dialect=dialect)
            order = tuple(compiled.positiontup or ())
            converters = tuple(self._converter(table.c[n], dialect) for n in order)
            self._cache[key] = _Compiled(str(compiled), order, converters)
        return self._cache[key]

    def _params(self, step: Step, compiled: _Compiled, now: datetime) -> list[tuple[Any, ...]]:
        rows: Sequence[Row] = step.rows
        table = model_table(step.op.model)
        context = SimpleNamespace(execution_options={NOW_OPTION: now})
        parts: list[tuple[bool, Any, Converter]] = []
        for name, convert in zip(compiled.names, compiled.converters, strict=True):
            if rows and name in rows[0]:
                parts.append((True, name, convert))
            else:  # a Python-side default, the same for every row of this statement
                value = _default_value(table.c[name], context)
                parts.append((False, convert(value) if convert else value, None))
        return [
            tuple((conv(row[v]) if conv else row[v]) if from_row else v for from_row, v, conv in parts)
            for row in rows
        ]

    def run(self, conn: Connection, steps: Sequence[Step], now: datetime) -> None:
        """Execute ``steps`` on ``conn`` (inside its transaction), in order.

        Raises
        ------
        sqlalchemy.exc.DBAPIError
            The driver's error, wrapped as SQLAlchemy would (IntegrityError, OperationalError...);
            a lost connection is invalidated.
        """
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is None:
            raise StoreError("store: the database connection is closed")
        cursor = dbapi_connection.cursor()
        try:
            for step in steps:
                compiled = self._compile(step, conn.dialect)
                self._execute(conn, cursor, compiled, self._params(step, compiled, now))
        finally:
            cursor.close()

    @staticmethod
    def _execute(conn: Connection, cursor: Any, compiled: _Compiled, params: list[Any]) -> None:
        try:
            if len(params) == 1:
                cursor.execute(compiled.sql, params[0])
            else:
                cursor.executemany(compiled.sql, params)
        except Exception as exc:
            raise _wrap_error(conn, cursor, compiled.sql, exc) from exc


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _timestamp(value: datetime | None, naive: bool) -> Any:
    if value is None or not naive:
        return value
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _default_value(column: sa.Column[Any], context: Any) -> Any:
    default = column.default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    return arg(context) if callable(arg) else arg


def _wrap_error(conn: Connection, cursor: Any, sql: str, exc: Exception) -> Exception:
    dbapi = conn.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return exc
    lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        sql, None, exc, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
    )
