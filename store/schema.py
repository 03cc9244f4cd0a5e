"""The schema's migrations: Alembic's config, upgrades one at a time, downgrades, the revision.

The revisions live in ``store/migrations`` (Alembic's script folder). Every process that opens a
database runs :func:`migrate` first, so several may start it at once: it takes a lock (PostgreSQL
advisory lock, SQLite ``BEGIN IMMEDIATE``, a process-wide lock for Alembic's global context).
"""

from __future__ import annotations

import ast
import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import SQLITE_BEGIN_IMMEDIATE, check_reachable
from .models import Base

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# any constant shared by all aretriever processes: serializes concurrent migrations on PostgreSQL
_MIGRATION_LOCK_ID = 0x61726574


def alembic_config(url: str | None = None) -> AlembicConfig:
    """Return an Alembic config for aretriever's migrations (``url`` for command-line style use)."""
    from alembic.config import Config  # imported when needed: alembic costs ~0.3 s of start-up

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["target_metadata"] = Base.metadata
    if url is not None:
        # Alembic's options are ConfigParser values: a literal % (URL-escaped passwords) is doubled
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # a transaction-scoped lock: released by the commit or rollback, even if the process dies
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
    if await at_head(engine):
        return  # the usual start: nothing to do, and Alembic (~0.1 s to import) is never loaded
    with anyio.CancelScope(shield=True):  # never leave the lock taken by a cancelled waiter
        await anyio.to_thread.run_sync(_MIGRATING.acquire)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            async with conn.begin():
                await conn.run_sync(_upgrade, revision)
    finally:
        _MIGRATING.release()


@functools.cache
def script_head() -> str | None:
    """The head revision of ``store/migrations/versions``, read from the files without Alembic.

    Only a plain chain is understood (one head; no merges, branch labels or dependencies; literal
    values): anything else gives None, and :func:`migrate` leaves the decision to Alembic.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        fields = _revision_fields(path)
        if not fields:
            continue  # __init__.py
        revision, down = fields.get("revision"), fields.get("down_revision")
        plain = fields.get("branch_labels") is None and fields.get("depends_on") is None
        if not (isinstance(revision, str) and (down is None or isinstance(down, str)) and plain):
            return None
        revisions.add(revision)
        if down is not None:
            parents.add(down)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


_FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")
_NOT_LITERAL = object()  # a computed value: not the plain chain script_head() understands


def _revision_fields(path: Path) -> dict[str, object]:
    fields: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets: list[ast.expr]
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in _FIELDS:
                fields[target.id] = _literal(value)
    return fields


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NOT_LITERAL


def _versions(connection: Connection) -> set[str] | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return {str(v) for v in connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()}


async def at_head(engine: AsyncEngine) -> bool:
    """The database is at the scripts' one head (read without Alembic), so there is nothing to migrate.

    Only a "yes" is trusted: a database at head stays there (migrations only move forward), while
    any other answer, a fresh database included, goes through Alembic under the migration locks.
    """
    head = script_head()
    if head is None:
        return False
    async with engine.connect() as conn:
        return await conn.run_sync(_versions) == {head}


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
