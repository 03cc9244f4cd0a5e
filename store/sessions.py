"""Synchronous database access for notebooks and scripts: ``Session`` and ``SmartSession``.

The engine writes through async drivers (aiosqlite, asyncpg); interactive code reads and edits
the same database through their synchronous siblings (sqlite3, psycopg), as the seed's README
shows::

    from aretriever.store import Session, SmartSession, Source
    with Session() as session:
        sources = session.scalars(sa.select(Source).where(Source.mag < 17)).all()

The database is the one the engine uses: ``$ARETRIEVER_DB_URL``, else the SQLite file in
DATA_ROOT (``use_database(url)`` points them elsewhere), as :func:`aretriever.store.locations.db_url_of`
resolves them. Rows read here carry their DATA_ROOT (``Session(data_root=...)``, else the
resolved default), so ``lc.data`` reads the right file; this replaces the seed's
``dataset.DATA_ROOT = ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, lazyload, sessionmaker
from sqlalchemy.orm import Session as OrmSession

from aretriever.settings import StoreConfig

from .datafiles import DataFileMixin
from .db import STATEMENT_TIMEOUT_S, normalize_url
from .locations import data_root_of, db_url_of

# ``SmartSession(False)`` and this switch give a session that touches no database (the seed's
# NO_DB_SESSION): code written for a database runs without one.
NO_DB_SESSION = False

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}
_engines: dict[str, sa.Engine] = {}
_url_override: str | None = None


def sync_url(url: str) -> str:
    """The synchronous driver's URL for an engine URL (``sqlite+aiosqlite`` -> ``sqlite``, ...)."""
    parsed = make_url(normalize_url(url))
    driver = _SYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def use_database(url: str | None) -> None:
    """Point ``Session()`` at this database URL (None: back to the default)."""
    global _url_override
    _url_override = url


def default_url() -> str:
    """The database ``Session()`` opens: :func:`use_database`'s, else the configured default."""
    if _url_override:
        return _url_override
    return db_url_of(StoreConfig())


def default_data_root() -> Path:
    """The DATA_ROOT rows of ``Session()`` read from without ``data_root=``."""
    return data_root_of(StoreConfig())


def sync_engine(url: str | None = None) -> sa.Engine:
    """One synchronous engine per database URL (pooled, created on first use)."""
    target = sync_url(url or default_url())
    if target not in _engines:
        # notebooks get the engine's bound too: a runaway query is cancelled by the server
        timeout = {"options": f"-c statement_timeout={int(STATEMENT_TIMEOUT_S * 1000)}"}
        connect_args = timeout if target.startswith("postgresql") else {}
        engine = sa.create_engine(target, pool_pre_ping=True, connect_args=connect_args)
        if target.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
        _engines[target] = engine
    return _engines[target]


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # the engine's cascades hold here too
    cursor.execute("PRAGMA busy_timeout=30000")  # wait for the engine's writer instead of failing
    cursor.close()


def Session(url: str | None = None, *, data_root: Path | None = None) -> OrmSession:
    """A new synchronous ORM session on the engine's database (use it in a ``with`` block)."""
    session = sessionmaker(bind=sync_engine(url), expire_on_commit=False)()
    root = data_root or default_data_root()
    event.listen(session, "loaded_as_persistent", lambda _s, obj: _bind(obj, root))
    event.listen(session, "do_orm_execute", _lazy_relationships)
    return session


def _lazy_relationships(state: ORMExecuteState) -> None:
    # the models raise on implicit loads (async sessions cannot do IO behind an attribute);
    # a notebook's synchronous session can, so ``source.raw_photometry[0]`` works as in the seed
    if state.is_select:
        state.statement = state.statement.options(lazyload("*"))


def _bind(obj: object, root: Path) -> None:
    if isinstance(obj, DataFileMixin):
        obj.bind_data_root(root)


class NoOpSession:
    """A stand-in session that stores nothing and finds nothing (no database)."""

    def __enter__(self) -> NoOpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def nothing(*args: Any, **kwargs: Any) -> Any:
            return _Empty()

        return nothing


class _Empty(list[Any]):
    """What a query of the no-op session returns: no rows, whatever is asked of it."""

    def all(self) -> list[Any]:
        return []

    def first(self) -> None:
        return None

    def scalars(self) -> _Empty:
        return self


@contextmanager
def SmartSession(
    session: OrmSession | NoOpSession | bool | None = None,
) -> Iterator[OrmSession | NoOpSession]:
    """The seed's SmartSession: reuse an open session, else open (and close) one.

    ``None`` (or ``True``): a new session, closed on exit. An open session: passed through,
    left open. ``False``, or the module switch ``NO_DB_SESSION``: a :class:`NoOpSession`.
    """
    if session is False or NO_DB_SESSION:
        yield NoOpSession()
    elif session is None or session is True:
        with Session() as opened:
            yield opened
    else:
        yield session
