"""The database on both backends: migrations, constraints, the row writer, models' lazy data."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import selectinload

from aretriever.errors import StoreError
from aretriever.settings import StoreConfig
from aretriever.store import db, hdf5, paths, schema
from aretriever.store import transient as store_transient
from aretriever.store.models import (
    Base,
    Detection,
    Failure,
    Lightcurve,
    Properties,
    RawPhotometry,
    RawStatus,
    Source,
    Stage,
)
from aretriever.store.writers import Delete, Replace, RowWriter, Upsert

LC_KEYS = ("source_name", "observatory", "project", "cfg_hash", "series_number", "simulation_number")
TABLES = {"sources", "raw_photometry", "lightcurves", "properties", "detections", "failures", "work_items"}
Sessions = async_sessionmaker[AsyncSession]


def source_row(i: int, **extra: Any) -> dict[str, Any]:
    return {"name": f"J{i:06d}.0+10.0", "ra_deg": i * 0.01 % 360, "dec_deg": 10.0, **extra}


def raw_row(i: int, **extra: Any) -> dict[str, Any]:
    name = source_row(i)["name"]
    return {
        "source_name": name,
        "observatory": "ztf",
        "status": RawStatus.OK,
        "filename": paths.raw_relpath("ztf", name, i * 0.01),
        "filekey": paths.raw_key(name),
        "num_rows": 100 + i,
        "nbytes": 4096,
        "url": f"https://irsa.example/lc?POS={i}",
        "meta": {"oids": [i, i + 1]},
        **extra,
    }


def lightcurve_rows(i: int, total: int) -> list[dict[str, Any]]:
    name = source_row(i)["name"]
    return [
        {
            "source_name": name,
            "observatory": "ztf",
            "project": "wd",
            "cfg_hash": "",
            "series_number": n,
            "series_total": total,
            "filename": paths.reduced_relpath("WD", "ztf", name, i * 0.01),
            "filekey": paths.reduction_key(name, n, total),
            "num_rows": 10 * n,
            "filter": "zg" if n % 2 else "zr",
            "time_start_mjd": 58000.0 + n,
            "mag_mean": 18.0 + n / 10,
        }
        for n in range(1, total + 1)
    ]


def source_ops(i: int, total: int = 3) -> list[Upsert | Replace]:
    name = source_row(i)["name"]
    return [
        Upsert(Source, [source_row(i)], keys=("name",)),
        Upsert(RawPhotometry, [raw_row(i)], keys=("source_name", "observatory")),
        Replace(
            Lightcurve,
            {"source_name": name, "observatory": "ztf", "project": "wd", "cfg_hash": ""},
            lightcurve_rows(i, total),
        ),
    ]


async def count(sessions: Sessions, model: type[Base], *where: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)))


def _schema_diff(conn: sa.Connection, metadata: sa.MetaData) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


# ------------------------------------------------------------------------------------ migrations


async def test_migration_from_empty_to_head(db_url: str) -> None:
    engine = db.create_engine(db_url)
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    try:
        assert head == "0003"
        assert await schema.current_revision(engine) is None
        await schema.migrate(engine)
        await schema.migrate(engine)  # idempotent
        assert await schema.current_revision(engine) == head
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == TABLES | {"alembic_version"}
            assert await conn.run_sync(_schema_diff, Base.metadata) == []
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert version == head
        await schema.downgrade(engine, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}
    finally:
        await engine.dispose()


async def test_schema_comparison_can_see_drift(migrated_engine: AsyncEngine) -> None:
    drifted = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    sa.Table("sources", drifted, sa.Column("colour", sa.String), extend_existing=True)
    async with migrated_engine.connect() as conn:
        diff = await conn.run_sync(_schema_diff, drifted)
    assert [d[0] for d in diff] == ["add_column"]


async def test_concurrent_migrations_do_not_collide(db_url: str) -> None:
    engines = [db.create_engine(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(schema.migrate(e) for e in engines))
        assert await schema.current_revision(engines[0]) == "0003"
    finally:
        for engine in engines:
            await engine.dispose()


def test_alembic_without_a_url_migrates_the_database_a_run_would_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrations/env.py resolves the URL through store.locations, as a run does (DATA_ROOT here)."""
    from alembic import command

    monkeypatch.delenv(db.DB_URL_ENV, raising=False)
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path))
    command.upgrade(schema.alembic_config(), "head")
    engine = sa.create_engine(f"sqlite:///{tmp_path / db.SQLITE_FILENAME}")
    try:
        with engine.connect() as conn:
            assert _tables(conn) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()


# ------------------------------------------------------------------------- engine and settings


def test_resolve_db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.DB_URL_ENV, raising=False)
    assert db.resolve_db_url(StoreConfig(), tmp_path) == (f"sqlite+aiosqlite:///{tmp_path}/aretriever.sqlite")
    monkeypatch.setenv(db.DB_URL_ENV, "postgres://u:p@h:5/d")
    assert db.resolve_db_url(StoreConfig(), tmp_path) == "postgresql+asyncpg://u:p@h:5/d"
    cfg = StoreConfig(db_url="postgresql://u@h/d")
    assert db.resolve_db_url(cfg, tmp_path) == "postgresql+asyncpg://u@h/d"
    cfg = StoreConfig(db_url="postgresql+asyncpg://u@h/d")
    assert db.resolve_db_url(cfg, tmp_path) == "postgresql+asyncpg://u@h/d"


async def test_engine_creation_does_not_connect(tmp_path: Path) -> None:
    sqlite_file = tmp_path / "sub" / "db.sqlite"
    engine = db.create_engine(f"sqlite+aiosqlite:///{sqlite_file}")
    unreachable = db.create_engine("postgresql://nobody:x@127.0.0.1:1/none")
    try:
        assert sqlite_file.parent.is_dir() and not sqlite_file.exists()
        assert await db.ping(unreachable, timeout_s=2) is False
        assert await db.ping(engine) is True
        assert sqlite_file.exists()
    finally:
        await engine.dispose()
        await unreachable.dispose()


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("model", "row"),
    [
        (Source, source_row(1)),
        (RawPhotometry, raw_row(1)),
        (Lightcurve, lightcurve_rows(1, 1)[0]),
        (Properties, {"source_name": source_row(1)["name"], "project": "wd", "cfg_hash": ""}),
        (Failure, {"source_name": "x", "observatory": "ztf", "stage": "fetch", "reason": "503"}),
    ],
    ids=["sources", "raw_photometry", "lightcurves", "properties", "failures"],
)
async def test_unique_constraints(sessions: Sessions, model: type[Base], row: dict[str, Any]) -> None:
    async with sessions() as session, session.begin():
        if model is not Source:
            await session.execute(sa.insert(Source), [source_row(1)])
        await session.execute(sa.insert(model), [row])
    with pytest.raises(sa.exc.IntegrityError):
        async with sessions() as session, session.begin():
            await session.execute(sa.insert(model), [row])
    assert await count(sessions, model) == 1


async def test_upsert_updates_instead_of_duplicating(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        await writer.submit(Upsert(Source, [source_row(1, mag=18.0, extra={"gaia": 7})], keys=("name",)))
        first = await _get_source(sessions, 1)
        await asyncio.sleep(0.002)  # timestamps must be able to differ
        await writer.submit(Upsert(Source, [source_row(1, mag=17.5, catalog="wd")], keys=("name",)))
        await writer.submit(Upsert(Source, [source_row(1, mag=99.0)], keys=("name",), update=()))
        await writer.submit(
            Upsert(Source, [source_row(1, dec_deg=-5.0, mag=1.0)], keys=("name",), update=("dec_deg",))
        )
    assert await count(sessions, Source) == 1
    second = await _get_source(sessions, 1)
    assert (second.mag, second.catalog, second.dec_deg, second.id) == (17.5, "wd", -5.0, first.id)
    assert second.extra == {"gaia": 7}  # columns the upserts did not give are kept
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


async def _get_source(sessions: Sessions, i: int) -> Source:
    async with sessions() as session:
        return (await session.scalars(sa.select(Source).filter_by(name=source_row(i)["name"]))).one()


async def test_upsert_adds_counters(sessions: Sessions) -> None:
    key = {"source_name": "bad row 7", "observatory": "", "stage": Stage.CATALOG}
    async with RowWriter(sessions, batch_ms=1) as writer:
        for n in range(3):
            row = {**key, "reason": "no_ra", "attempts": 1, "last_error": f"try {n}"}
            await writer.put(Upsert(Failure, [row], keys=tuple(key), add=("attempts",)))
        await writer.flush()
    async with sessions() as session:
        failure = (await session.scalars(sa.select(Failure))).one()
    assert (failure.attempts, failure.last_error, failure.resolved) == (3, "try 2", False)
    assert failure.last_at >= failure.first_at


async def test_foreign_key_enforced(sessions: Sessions) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with sessions() as session, session.begin():
            await session.execute(sa.insert(RawPhotometry), [raw_row(404)])
    async with RowWriter(sessions, batch_ms=1) as writer:
        future = writer.submit(Upsert(RawPhotometry, [raw_row(404)], keys=("source_name", "observatory")))
        with pytest.raises(StoreError, match=r"IntegrityError|ForeignKey") as info:
            await future
    assert isinstance(info.value.__cause__, sa.exc.IntegrityError)
    assert await count(sessions, RawPhotometry) == 0


async def test_deleting_a_source_cascades(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1) + source_ops(2):
            writer.submit(op)
        await writer.flush()
        name = source_row(1)["name"]
        writer.submit(Upsert(Detection, [_detection(name, 1)], keys=("id",)))
        await writer.flush()
        assert await count(sessions, Detection) == 1
        async with sessions() as session:
            found = await session.scalar(
                sa.select(Detection).options(
                    selectinload(Detection.lightcurve), selectinload(Detection.source)
                )
            )
            assert found is not None and found.lightcurve.series_number == 1 and found.source.name == name
        await writer.submit(Delete(Source, {"name": name}))
    for model in (RawPhotometry, Lightcurve, Detection):
        assert await count(sessions, model, model.source_name == name) == 0
    assert await count(sessions, Lightcurve) == 3


async def test_replacing_a_lightcurve_removes_its_detections(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1):
            writer.submit(op)
        name = source_row(1)["name"]
        writer.submit(Upsert(Detection, [_detection(name, 1)], keys=("id",)))
        await writer.flush()
        assert await count(sessions, Detection) == 1
        await writer.submit(
            Replace(Lightcurve, {"source_name": name, "project": "wd"}, lightcurve_rows(1, 1))
        )
    assert await count(sessions, Detection) == 0
    assert await count(sessions, Lightcurve, Lightcurve.source_name == name) == 1


async def test_a_detection_of_an_unknown_lightcurve_is_refused(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1):
            writer.submit(op)
        future = writer.submit(Upsert(Detection, [_detection(source_row(1)["name"], 7)], keys=("id",)))
        with pytest.raises(StoreError, match=r"IntegrityError|ForeignKey"):
            await future
    assert await count(sessions, Detection) == 0


def _detection(name: str, series_number: int) -> dict[str, Any]:
    return {
        "id": 1,
        "source_name": name,
        "series_number": series_number,
        "observatory": "ztf",
        "project": "wd",
        "cfg_hash": "",
        "snr": 7.5,
        "rows": [3, 4, 5],
        "quality": {"offset": 0.2},
    }


# -------------------------------------------------------------------------------- row writer


async def test_row_writer_batches_many_ops(sessions: Sessions) -> None:
    num = 120
    async with RowWriter(sessions, batch_rows=40, batch_ms=50) as writer:
        futures = [writer.submit(op) for i in range(num) for op in source_ops(i, total=1 + i % 4)]
        assert writer.pending == len(futures)
        await asyncio.gather(*futures)
        assert writer.pending == 0 and writer.lag_s == 0.0
    num_lcs = sum(1 + i % 4 for i in range(num))
    assert writer.committed_rows == 2 * num + num_lcs
    assert 1 < writer.batches < len(futures)  # batched, not one transaction per op
    assert await count(sessions, Source) == num
    assert await count(sessions, RawPhotometry) == num
    assert await count(sessions, Lightcurve) == num_lcs
    await _check_values(sessions, 37)


async def _check_values(sessions: Sessions, i: int) -> None:
    name = source_row(i)["name"]
    async with sessions() as session:
        source = (
            await session.scalars(
                sa.select(Source)
                .filter_by(name=name)
                .options(selectinload(Source.raw_photometry), selectinload(Source.lightcurves))
            )
        ).one()
    assert (source.ra_deg, source.dec_deg, source.extra) == (i * 0.01, 10.0, {})
    (raw,) = source.raw_photometry
    assert (raw.status, raw.num_rows, raw.meta, raw.filekey) == ("ok", 100 + i, {"oids": [i, i + 1]}, name)
    assert raw.filename == f"ZTF/RA000/ZTF_photometry_{name}.h5"
    lcs = sorted(source.lightcurves, key=lambda lc: lc.series_number)
    assert [lc.filekey for lc in lcs] == [paths.reduction_key(name, n, 2) for n in (1, 2)]
    assert [lc.mag_mean for lc in lcs] == [18.1, 18.2]
    assert all(lc.simulation_number == 0 and lc.created_at.tzinfo is UTC for lc in lcs)


async def test_replace_swaps_the_rows(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1, total=5):
            writer.submit(op)
        for op in source_ops(1, total=2):
            writer.submit(op)
        await writer.flush()
    async with sessions() as session:
        totals = (await session.scalars(sa.select(Lightcurve.series_total))).all()
    assert sorted(totals) == [2, 2]


class FlakySessions:
    """A session factory that fails the first ``failures`` calls like a lost/locked database."""

    def __init__(self, real: Sessions, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def __call__(self) -> AsyncSession:
        self.calls += 1
        if self.calls <= self.failures:
            raise sa.exc.OperationalError("BEGIN", {}, Exception("database is locked (simulated)"))
        return self.real()


async def test_transient_error_is_retried(sessions: Sessions) -> None:
    flaky = FlakySessions(sessions, failures=2)
    async with RowWriter(flaky, batch_ms=1, retry_base_s=0.001) as writer:  # type: ignore[arg-type]
        futures = [writer.submit(op) for op in source_ops(1)]
        await asyncio.gather(*futures)
    assert flaky.calls == 3
    assert writer.batches == 1 and writer.failed_ops == 0
    assert await count(sessions, Lightcurve) == 3


async def test_transient_error_gives_up_after_retry_for_s(sessions: Sessions) -> None:
    flaky = FlakySessions(sessions, failures=10**6)
    writer = RowWriter(flaky, batch_ms=1, retry_for_s=1.0, retry_base_s=0.002)  # type: ignore[arg-type]
    async with writer:
        with pytest.raises(StoreError, match="OperationalError") as info:
            await writer.submit(source_ops(1)[0])
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        # retried, with doubling waits (2 ms, 4 ms, ... over 1 s: at most 11 tries on any machine)
        assert 2 <= flaky.calls <= 11
        flaky.failures = 0  # the database is back: the writer goes on
        await writer.submit(source_ops(2)[0])
    assert await count(sessions, Source) == 1


async def test_data_error_fails_only_the_faulty_op(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1000) as writer:
        good1 = writer.submit(Upsert(Source, [source_row(1)], keys=("name",)))
        bad = writer.submit(Upsert(RawPhotometry, [raw_row(404)], keys=("source_name", "observatory")))
        good2 = writer.submit(Upsert(Source, [source_row(2)], keys=("name",)))
        await writer.flush()
        results = await asyncio.gather(good1, bad, good2, return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StoreError)
        await writer.submit(Upsert(Source, [source_row(3)], keys=("name",)))
    assert writer.failed_ops == 1
    assert await count(sessions, Source) == 3


async def test_json_nan_becomes_null_and_timestamps_are_utc(sessions: Sessions) -> None:
    row = source_row(1, extra={"g": math.nan, "list": [1.0, math.inf]})
    async with RowWriter(sessions, batch_ms=1) as writer:
        await writer.submit(Upsert(Source, [row], keys=("name",)))
    source = await _get_source(sessions, 1)
    assert source.extra == {"g": None, "list": [1.0, None]}
    assert source.created_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - source.created_at).total_seconds()) < 60


# ------------------------------------------------------------------------------ models' data


async def test_raw_photometry_loads_its_data_lazily(
    sessions: Sessions, data_root: Path, ztf_csv: Path
) -> None:
    table = pd.read_csv(ztf_csv)
    row = raw_row(1, num_rows=len(table))
    hdf5.write_h5(data_root / row["filename"], {row["filekey"]: (table, {"url": row["url"]})})
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1)[:2]:
            writer.submit(op)
        await writer.flush()
    async with sessions() as session:
        raw = (await session.scalars(sa.select(RawPhotometry))).one()
    raw.bind_data_root(data_root)  # as Session() and the Retriever do for the rows they read
    assert raw.get_fullname() == data_root / row["filename"]
    data = raw.data
    pd.testing.assert_frame_equal(data, table)
    assert raw.data is data  # cached
    standalone = RawPhotometry(filename=str(raw.get_fullname()), filekey=None)
    assert len(standalone.load()) == len(table)
    relative = RawPhotometry(filename=row["filename"], filekey=row["filekey"])
    assert len(relative.load(data_root)) == len(table)
    assert raw.delete_data_from_disk() is True
    assert not raw.get_fullname().exists()
    with pytest.raises(StoreError):
        raw.load()


async def test_relationships_must_be_loaded_explicitly(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        for op in source_ops(1):
            writer.submit(op)
        await writer.flush()
    source = await _get_source(sessions, 1)
    with pytest.raises(sa.exc.InvalidRequestError):
        _ = source.lightcurves


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_lost_postgresql_connection_is_retried(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # no pre-ping: the writer itself meets the dead connection and must recover
    engine = create_async_engine(db.normalize_url(db_url), pool_pre_ping=False)
    url = sa.make_url(db_url)
    try:
        await schema.migrate(engine)
        sessions = db.session_factory(engine)
        async with RowWriter(sessions, batch_ms=1, retry_base_s=0.001) as writer:
            await writer.submit(Upsert(Source, [source_row(1)], keys=("name",)))
            admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
            try:
                killed = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    url.database,
                )
            finally:
                await admin.close()
            assert killed, "the writer's connection should have been open"
            await writer.submit(Upsert(Source, [source_row(2)], keys=("name",)))
        assert writer.failed_ops == 0
        assert await count(sessions, Source) == 2
        retries = [r.getMessage() for r in caplog.records if "retry 1" in r.getMessage()]
        # met the dead connection once; asyncpg reports it as InterfaceError or, when the kill lands
        # mid-operation, as InternalClientError ("another operation is in progress")
        assert len(retries) == 1
    finally:
        await engine.dispose()


async def test_numpy_values_are_stored_as_numbers(sessions: Sessions) -> None:
    row = source_row(1, ra_deg=np.float64(12.5), cat_index=np.int64(7), extra={"n": np.int32(3)})
    raw = raw_row(1, num_rows=np.int64(5), nbytes=np.uint32(9))
    lc = {**lightcurve_rows(1, 1)[0], "uniform_sampling": np.bool_(True), "num_good": np.int16(4)}
    async with RowWriter(sessions, batch_ms=1) as writer:
        writer.submit(Upsert(Source, [row], keys=("name",)))
        writer.submit(Upsert(RawPhotometry, [raw], keys=("source_name", "observatory")))
        writer.submit(Upsert(Lightcurve, [lc], keys=LC_KEYS))
        await writer.flush()
    async with sessions() as session:
        got = (await session.execute(sa.select(Source.ra_deg, Source.cat_index, Source.extra))).one()
        sizes = (await session.execute(sa.select(RawPhotometry.num_rows, RawPhotometry.nbytes))).one()
        flags = (await session.execute(sa.select(Lightcurve.uniform_sampling, Lightcurve.num_good))).one()
    assert tuple(got) == (12.5, 7, {"n": 3}) and type(got[1]) is int
    assert tuple(sizes) == (5, 9) and tuple(flags) == (True, 4)


async def test_unknown_columns_fail_clearly(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_ms=1) as writer:
        with pytest.raises(StoreError, match="colour"):
            await writer.submit(Upsert(Source, [source_row(1, colour="blue")], keys=("name",)))


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _real_sqlite_error() -> Exception:
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("SELECT * FROM missing_table")
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (sa.exc.OperationalError("BEGIN", {}, Exception("database is locked")), True),
        (sa.exc.InterfaceError("SELECT", {}, Exception("connection closed")), True),
        (sa.exc.DBAPIError("SELECT", {}, Exception("gone"), connection_invalidated=True), True),
        (sa.exc.DBAPIError("UPDATE", {}, _PgError("40001")), True),  # serialization failure
        (sa.exc.DBAPIError("UPDATE", {}, _PgError("57P01")), True),  # admin shutdown
        (sa.exc.OperationalError("UPDATE", {}, _PgError("22012")), False),  # division by zero
        (sa.exc.IntegrityError("INSERT", {}, _PgError("23503")), False),
        (sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), False),
        (sa.exc.OperationalError("SELECT", {}, _real_sqlite_error()), False),  # no such table
        (sa.exc.TimeoutError("pool exhausted"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (ValueError("bad row"), False),
        (KeyError("column"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert store_transient.is_transient(exc) is transient


def test_retry_delay_doubles_until_time_runs_out() -> None:
    locked = sa.exc.OperationalError("BEGIN", {}, Exception("database is locked"))
    delays = [store_transient.retry_delay(locked, n, 100.0) for n in range(1, 10)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert store_transient.retry_delay(locked, 3, 0.07) == 0.07
    assert store_transient.retry_delay(locked, 1, 0.0) is None
    assert store_transient.retry_delay(ValueError("data"), 1, 100.0) is None
