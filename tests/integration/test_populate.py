"""``populate``: rows rebuilt from the raw files after the database was lost, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.cli.populate import main as populate_main
from aretriever.config import load_config
from aretriever.errors import ConfigError
from aretriever.service.populate import StoredRaw, keep_stored, populate
from aretriever.settings import Config
from aretriever.store import db, paths
from aretriever.store.hdf5 import write_h5
from aretriever.store.models import Base

from .test_backfill import query

RAW_SQL = (
    "select source_name, observatory, status, filename, filekey, num_rows, nbytes, url "
    "from raw_photometry order by source_name, observatory"
)
SOURCE_SQL = "select name, ra_deg, dec_deg, mag, pmra_mas_yr, pmdec_mas_yr, catalog, cat_index from sources order by name"


def drop_database(db_url: str) -> None:
    """Lose the database: SQLite deletes the file, PostgreSQL drops every table."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
        return

    async def drop() -> None:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
                await conn.execute(sa.text("DROP TABLE alembic_version"))
        finally:
            await engine.dispose()

    asyncio.run(drop())


def run_populate(db_url: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``python -m aretriever.populate`` in-process; return its exit code and JSON summary."""
    summary = tmp_path / "populate.json"
    summary.unlink(missing_ok=True)
    argv = [
        "--quiet",
        "--data-root", str(tmp_path / "data"),
        "--db-url", db_url,
        "--set", "catalog.test_size=8",
        "--summary-json", str(summary),
        *args,
    ]  # fmt: skip
    code = populate_main(argv)
    return code, json.loads(summary.read_text()) if summary.exists() else {}


def lane_summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())["observatories"]["ztf"]
    return summary


def test_after_the_database_is_lost_populate_restores_rows_and_the_next_run_asks_nothing(
    run_cli, archive, db_url, tmp_path
) -> None:
    assert run_cli(size=8) == 0
    raws, sources = query(db_url, RAW_SQL), query(db_url, SOURCE_SQL)
    assert len(raws) == len(sources) == 8
    assert {r[6] for r in raws} == {(tmp_path / "data" / r[3]).stat().st_size for r in raws}

    drop_database(db_url)
    code, summary = run_populate(db_url, tmp_path, "--catalog", "test")
    assert code == 0
    assert (summary["files"], summary["keys"], summary["sources"], summary["raw_rows"]) == (8, 8, 8, 8)
    assert (summary["unreadable"], summary["not_in_catalog"], summary["kept"]) == ([], 0, 0)
    assert query(db_url, RAW_SQL) == raws
    assert query(db_url, SOURCE_SQL) == sources  # catalog name, row number, proper motion
    metas = [
        json.loads(m) if isinstance(m, str) else m
        for (m,) in query(db_url, "select meta from raw_photometry")
    ]
    assert all(m["populated"] is True for m in metas)

    archive.archive.reset_counts()
    run_summary = tmp_path / "run.json"
    assert run_cli("--summary-json", str(run_summary), size=8) == 0
    assert archive.archive.count() == 0
    ztf = lane_summary(run_summary)
    assert (ztf["fetched"], ztf["refetched"], ztf["relinked"]) == (0, 0, 0)
    assert ztf["reduced"] == 8  # lightcurve rows are not rebuilt: reduced again from disk, no request


def test_unreadable_file_is_reported_others_populated_and_scratch_ignored(run_cli, db_url, tmp_path) -> None:
    assert run_cli("--no-reduce", size=8) == 0
    root = tmp_path / "data"
    before = query(db_url, RAW_SQL)
    sources = {name: (ra, dec) for name, ra, dec, *_ in query(db_url, SOURCE_SQL)}
    files = sorted(root.glob("ZTF/RA*/*.h5"))
    broken = files[0].parent / "ZTF_photometry_BROKEN.h5"
    broken.write_bytes(b"not an HDF5 file")
    stray = root / ".scratch" / "ztf" / files[1].name  # a half download is never a product
    stray.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(files[1], stray)
    shutil.copy(files[2], files[2].with_name(f".{files[2].name}.123.0badcafe.tmp"))  # a write in progress
    (root / "ZTF" / "notes").mkdir()
    shutil.copy(files[3], root / "ZTF" / "notes" / files[3].name)  # not an RA folder

    drop_database(db_url)
    code, summary = run_populate(db_url, tmp_path)  # no catalog: sources named from the files
    assert code == 1
    assert [path for path, _ in summary["unreadable"]] == [broken.relative_to(root).as_posix()]
    assert "signature" in summary["unreadable"][0][1]
    assert (summary["files"], summary["raw_rows"], summary["sources"]) == (8, 8, 8)
    assert query(db_url, RAW_SQL) == before
    rows = query(db_url, SOURCE_SQL)
    assert {name: (ra, dec) for name, ra, dec, *_ in rows} == sources
    assert {tuple(r[3:]) for r in rows} == {(None, None, None, None, None)}  # mag, pm, catalog, index


def test_populate_keeps_good_rows_and_corrects_wrong_ones(run_cli, db_url, tmp_path) -> None:
    assert run_cli("--no-reduce", size=4) == 0
    before = query(db_url, RAW_SQL)
    sources = query(db_url, SOURCE_SQL)
    name = before[0][0]
    query(db_url, f"update raw_photometry set nbytes = 1, num_rows = 0 where source_name = '{name}'")

    code, summary = run_populate(db_url, tmp_path)  # no catalog: must not erase catalog values
    assert code == 0
    assert (summary["kept"], summary["raw_rows"]) == (3, 1)
    assert query(db_url, RAW_SQL) == before
    assert query(db_url, SOURCE_SQL) == sources
    metas = dict(query(db_url, "select source_name, meta from raw_photometry"))
    untouched = [json.loads(m) if isinstance(m, str) else m for n, m in metas.items() if n != name]
    assert untouched == [{}, {}, {}]  # the fetch's own rows, not rewritten

    code, summary = run_populate(db_url, tmp_path)
    assert (code, summary["kept"], summary["raw_rows"]) == (0, 4, 0)


def _raw_attrs(name: str, ra: float, dec: float, observatory: str = "ztf", **extra: Any) -> dict[str, Any]:
    attrs = {
        "source_name": name,
        "observatory": observatory,
        "ra_deg": ra,
        "dec_deg": dec,
        "mag": None,
        "url": f"http://archive.test/{name}",
        "fetched_at": "2024-05-01T12:00:00+00:00",
        "archive": {"release": "dr23"},
    }
    return {**attrs, **extra}


def _write_raw(
    root: Path, name: str, ra: float, attrs: dict[str, Any], rows: int = 3, obs: str = "ztf"
) -> Path:
    path = root / paths.raw_relpath(obs, name, ra)
    table = pd.DataFrame({"mjd": np.arange(rows, dtype=float), "mag": np.full(rows, 18.0)})
    write_h5(path, {paths.raw_key(name): (table, attrs)})
    return path


def _config(root: Path, db_url: str) -> Config:
    return load_config(
        False, sets=[f"store.data_root={root}", f"store.db_url={db_url}", "catalog.test_size=3"]
    )


async def _query(db_url: str, sql: str) -> list[Any]:
    engine = db.create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(sql))).all())
    finally:
        await engine.dispose()


async def test_catalog_names_and_file_attributes(db_url, data_root) -> None:
    catalog = GeneratedCatalog(3)
    frame = pd.concat(list(catalog.iter_chunks()))
    for _, row in frame.iterrows():
        _write_raw(data_root, row["name"], row["ra"], _raw_attrs(row["name"], row["ra"] + 1e-4, row["dec"]))
    _write_raw(data_root, "stranger 1", 10.5, _raw_attrs("stranger 1", 10.5, 20.0, mag=17.25), rows=0)
    _write_raw(data_root, "TIC 1", 200.0, _raw_attrs("TIC 1", 200.0, -60.0, "tess"), obs="tess")
    nameless = _write_raw(data_root, "anon", 50.0, {"observatory": "ztf"})

    summary = await populate(_config(data_root, db_url), catalog, observatories=["ztf"])
    assert (summary.files, summary.keys, summary.sources, summary.raw_rows) == (5, 5, 4, 4)
    assert summary.not_in_catalog == 1
    assert summary.unreadable == [
        (nameless.relative_to(data_root).as_posix(), "key 'anon' has no source_name attribute")
    ]
    assert "unreadable: 1" in summary.format() and not summary.ok

    rows = {r[0]: r[1:] for r in await _query(db_url, SOURCE_SQL)}
    for index, row in frame.iterrows():  # the catalog's position, not the file's
        assert rows[row["name"]] == (row["ra"], row["dec"], None, row["pmra"], row["pmdec"], "test", index)
    assert rows["stranger 1"] == (10.5, 20.0, 17.25, None, None, None, None)
    raw = {r[0]: r for r in await _query(db_url, RAW_SQL)}
    assert raw["stranger 1"][1:4] == ("ztf", "empty", paths.raw_relpath("ztf", "stranger 1", 10.5))
    assert raw["stranger 1"][4:] == (
        paths.raw_key("stranger 1"),
        0,
        (data_root / raw["stranger 1"][3]).stat().st_size,
        "http://archive.test/stranger 1",
    )
    assert "TIC 1" not in raw  # TESS was not asked for
    (fetched_at,) = (
        r[0]
        for r in await _query(
            db_url, "select fetched_at from raw_photometry where source_name = 'stranger 1'"
        )
    )
    assert str(fetched_at).startswith("2024-05-01 12:00:00")

    summary = await populate(_config(data_root, db_url), None, observatories=["TESS"])
    assert (summary.raw_rows, summary.sources) == (1, 1)
    assert (await _query(db_url, "select observatory from raw_photometry where source_name = 'TIC 1'")) == [
        ("tess",)
    ]


async def test_unknown_observatory_and_missing_data_root(db_url, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown observatory 'hubble'"):
        await populate(_config(tmp_path, db_url), observatories=["hubble"])
    with pytest.raises(ConfigError, match="is not a folder"):
        await populate(_config(tmp_path / "nowhere", db_url))


def test_cli_exit_code_2_on_a_bad_catalog(db_url, tmp_path) -> None:
    (tmp_path / "data").mkdir()
    code, summary = run_populate(db_url, tmp_path, "--catalog", str(tmp_path / "cat.xyz"))
    assert (code, summary) == (2, {})
    (tmp_path / "cat.xyz").write_text("name,ra\n")
    code, _ = run_populate(db_url, tmp_path, "--catalog", str(tmp_path / "cat.xyz"))
    assert code == 2


T0 = datetime(2024, 1, 1, tzinfo=UTC)
FILE_ROW = {"filename": "ZTF/RA010/ZTF_photometry_a.h5", "nbytes": 100, "fetched_at": T0}


@pytest.mark.parametrize(
    ("stored", "intact", "kept"),
    [
        (None, False, False),
        (StoredRaw("ok", "ZTF/RA010/ZTF_photometry_a.h5", 100, T0 - timedelta(days=1)), True, True),
        (StoredRaw("ok", "ZTF/RA010/ZTF_photometry_a.h5", 90, T0 + timedelta(days=1)), False, False),
        (StoredRaw("ok", "ZTF/RA011/ZTF_photometry_a.h5", 80, T0 + timedelta(days=1)), True, True),
        (StoredRaw("ok", "ZTF/RA011/ZTF_photometry_a.h5", 80, T0 - timedelta(days=1)), True, False),
        (StoredRaw("no_data", None, 0, T0 + timedelta(days=1)), True, True),
        (StoredRaw("no_data", None, 0, T0 - timedelta(days=1)), True, False),
    ],
    ids=[
        "none",
        "same-file",
        "broken",
        "newer-other-file",
        "older-other-file",
        "newer-no-data",
        "older-no-data",
    ],
)
def test_a_stored_row_is_kept_only_when_at_least_as_good(stored, intact, kept) -> None:
    assert keep_stored(stored, FILE_ROW, intact) is kept


def test_a_source_named_like_a_reduced_file_keeps_its_raw_file_and_is_populated(
    run_cli, db_url, tmp_path
) -> None:
    catalog = tmp_path / "twins.csv"
    catalog.write_text("name,ra,dec\nWDX,120.25,30.5\nWDX_reduced,120.75,30.5\n")
    assert run_cli("--catalog", str(catalog)) == 0
    root = tmp_path / "data"
    raw = {p.name for p in root.glob("ZTF/RA120/*.h5")}
    assert raw == {"ZTF_photometry_WDX.h5", "ZTF_photometry_WDX_reduced.h5"}
    with h5py.File(root / "ZTF" / "RA120" / "ZTF_photometry_WDX_reduced.h5", "r") as f:
        assert list(f) == ["WDX_reduced"]  # its own raw table, never WDX's lightcurves
    reduced = {p.name for p in root.glob("DEFAULT/RA120/*.h5")}
    assert reduced == {"ZTF_photometry_WDX_reduced.h5", "ZTF_photometry_WDX_reduced_reduced.h5"}
    before = query(db_url, RAW_SQL)

    drop_database(db_url)
    code, summary = run_populate(db_url, tmp_path)
    assert code == 0 and (summary["files"], summary["raw_rows"]) == (2, 2)
    assert query(db_url, RAW_SQL) == before
