"""Fixtures shared by every test: database backends, a migrated engine, a private DATA_ROOT.

Database tests take ``db_url`` (or ``migrated_engine`` / ``sessions``) and run once per backend:

- ``sqlite``: a file in ``tmp_path``;
- ``postgresql``: a fresh database ``aretriever_t_<hex>`` on the server named by
  ``$ARETRIEVER_TEST_PG_URL`` (default: the local development server), dropped afterwards. If the
  server is unreachable the test is skipped, except under ``$CI``, where it fails: CI must never
  silently lose the PostgreSQL half.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aretriever.store import db, schema

PG_URL_ENV = "ARETRIEVER_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+asyncpg://aretriever:aretriever@127.0.0.1:5432/aretriever"
BACKENDS = ["sqlite", "postgresql"]
# the recorded archive data, laid beside the checkout as ../shared/data (CI copies it there too)
SHARED_DATA = Path(
    os.environ.get("ARETRIEVER_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
REPO_TEST_DATA = Path(__file__).parent / "data"


def _current_event_loop() -> asyncio.AbstractEventLoop | None:
    """The loop set for this thread, if any, without creating one (get_event_loop() would)."""
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    loop = getattr(local, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[object]:
    """Close an event loop that plugins create, and leave, around a test function.

    looptime's hook asks the policy for the event loop even around sync tests, which creates one
    and leaves it set; once pytest-asyncio later replaces it, the garbage collector reports it as
    an unclosed loop (ResourceWarning, an error here) in whatever test happens to run then.
    """
    before = _current_event_loop()
    try:
        return (yield)
    finally:
        after = _current_event_loop()
        if after is not None and after is not before and not after.is_running():
            after.close()
            asyncio.set_event_loop(before)


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: "sqlite" or "postgresql"."""
    return str(request.param)


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_admin(base: URL) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(base), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL unreachable at {base.render_as_string()}: {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)


@pytest_asyncio.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of ``backend``, as an async SQLAlchemy URL."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/test.sqlite"
        return
    base = make_url(db.normalize_url(os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)))
    name = f"aretriever_t_{secrets.token_hex(6)}"
    admin = await _pg_admin(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture
async def migrated_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``db_url``, migrated to head; disposed afterwards."""
    engine = db.create_engine(db_url)
    try:
        await schema.migrate(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(migrated_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory on the migrated database."""
    return db.session_factory(migrated_engine)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A private, empty DATA_ROOT; tests pass it explicitly (there is no process-wide one)."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def shared_data() -> Path:
    """The recorded real archive data (``tests/data`` if populated, else ``../shared/data``)."""
    for folder in (REPO_TEST_DATA, SHARED_DATA):
        if (folder / "ztf" / "ZTF_lightcurve.csv").exists():
            return folder
    pytest.fail(f"recorded archive data not found in {REPO_TEST_DATA} or {SHARED_DATA}")


@pytest.fixture
def ztf_csv(shared_data: Path) -> Path:
    """The real recorded ZTF lightcurve (IRSA CSV, 1,852 rows)."""
    return shared_data / "ztf" / "ZTF_lightcurve.csv"
