"""End to end: the CLI against the fake archive, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import sqlalchemy as sa

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.store import db, paths
from aretriever.store.models import RawPhotometry
from aretriever.testing.fake_archive import Faults

ZTF = "/cgi-bin/ZTF/nph_light_curves"


def query(db_url: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(sql))
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(go())


def catalog_rows(size: int) -> pd.DataFrame:
    return pd.concat(list(GeneratedCatalog(size).iter_chunks()))


def test_backfill_stores_every_source_and_resumes_without_requests(
    run_cli, archive, db_url, tmp_path
) -> None:
    summary = tmp_path / "summary.json"
    assert run_cli("--summary-json", str(summary), size=12) == 0
    assert archive.archive.count(ZTF) == 12
    assert json.loads(summary.read_text())["observatories"]["ztf"]["fetched"] == 12

    root = tmp_path / "data"
    raws = {
        r[0]: r
        for r in query(
            db_url, "select source_name, status, filename, filekey, num_rows, nbytes from raw_photometry"
        )
    }
    for _, row in catalog_rows(12).iterrows():
        name, status, filename, filekey, num_rows, nbytes = raws[row["name"]]
        assert status == "ok"
        assert filename == paths.raw_relpath("ztf", name, row["ra"])
        served = archive.served_rows(row["ra"], row["dec"])
        with h5py.File(root / filename) as f:
            table = pd.DataFrame(f[filekey][:])
        assert len(table) == num_rows == served > 0
        assert (root / filename).stat().st_size == nbytes

    lcs = query(
        db_url,
        "select source_name, series_number, series_total, filename, filekey, num_rows from lightcurves",
    )
    assert {lc[0] for lc in lcs} == set(raws)
    for name, number, total, filename, key, n in lcs:
        assert key == paths.reduction_key(name, number, total)
        with h5py.File(root / filename) as f:
            assert len(f[key]) == n > 0
            assert len(f.keys()) == total

    archive.archive.reset_counts()
    assert run_cli("--summary-json", str(summary), size=12) == 0
    assert archive.archive.count() == 0
    assert json.loads(summary.read_text())["observatories"]["ztf"]["skipped"] == 12


def test_missing_or_changed_files_are_fetched_again_and_lost_rows_relinked(
    run_cli, archive, db_url, tmp_path
) -> None:
    assert run_cli(size=6) == 0
    root = tmp_path / "data"
    files = sorted(root.glob("ZTF/RA*/*.h5"))
    files[0].unlink()
    with files[1].open("ab") as f:
        f.write(b"garbage")
    archive.archive.reset_counts()
    summary = tmp_path / "s.json"
    assert run_cli("--summary-json", str(summary), size=6) == 0
    ztf = json.loads(summary.read_text())["observatories"]["ztf"]
    assert (ztf["refetched"], ztf["skipped"], archive.archive.count()) == (2, 4, 2)

    query(db_url, "delete from lightcurves")
    query(db_url, "delete from raw_photometry")
    archive.archive.reset_counts()
    assert run_cli("--summary-json", str(summary), size=6) == 0
    ztf = json.loads(summary.read_text())["observatories"]["ztf"]
    assert (ztf["relinked"], archive.archive.count()) == (6, 0)
    assert query(db_url, "select count(*) from raw_photometry where status = 'ok'") == [(6,)]
    assert query(db_url, "select count(distinct source_name) from lightcurves") == [(6,)]


def test_bad_rows_and_sources_without_coverage(run_cli, archive, db_url, tmp_path) -> None:
    catalog = tmp_path / "cat.csv"
    pd.DataFrame(
        {
            "name": ["good", "nan-ra", "dec-95", "ra-360", "south", "faint"],
            "ra": [10.0, float("nan"), 10.0, 360.0, 10.0, 20.0],
            "dec": [40.0, 10.0, 95.0, 10.0, -45.0, 40.0],
            "mag": [None, None, None, None, None, 21.5],
        }
    ).to_csv(catalog, index=False)
    assert run_cli("--catalog", str(catalog)) == 1  # some rows failed
    assert archive.archive.count(ZTF) == 1
    failures = query(db_url, "select source_name, stage, reason from failures order by source_name")
    assert failures == [
        ("dec-95", "catalog", "bad_coordinates"),
        ("nan-ra", "catalog", "bad_coordinates"),
        ("ra-360", "catalog", "bad_coordinates"),
    ]
    statuses = dict(query(db_url, "select source_name, status from raw_photometry"))
    assert statuses == {"good": "ok", "south": "no_data", "faint": "no_data"}
    archive.archive.reset_counts()
    run_cli("--catalog", str(catalog))
    assert archive.archive.count() == 0


def test_error_page_is_a_recorded_permanent_failure(run_cli, archive, db_url) -> None:
    archive.archive.script(ZTF, [(200, "<html><body><h1>ERROR</h1>Bad POS</body></html>", {})])
    assert run_cli(size=3) == 1
    assert archive.archive.count(ZTF) == 3  # not retried
    (row,) = query(db_url, "select stage, reason, last_error from failures")
    assert row[:2] == ("fetch", "ArchiveErrorPage") and ZTF in row[2]
    assert run_cli(size=3) == 0  # the archive is fine now: the failure is resolved
    assert query(db_url, "select resolved from failures") in ([(1,)], [(True,)])


def test_faulty_archive_every_source_completes_exactly_once(run_cli, archive, db_url, tmp_path) -> None:
    archive.archive.faults = Faults(
        error_rate=0.10, rate_429=0.05, retry_after_s=1, timeout_rate=0.02, truncate_rate=0.02, seed=7
    )
    summary = tmp_path / "s.json"
    code = run_cli(
        "--summary-json", str(summary),
        "--set", "observatories.ztf.timeout_s=1",
        "--set", "observatories.ztf.max_attempts=10",
        "--set", "observatories.ztf.max_concurrency=32",
        "--no-analyze",  # this test is about the archive's faults; analysis would double its time
        size=500,
    )  # fmt: skip
    ztf = json.loads(summary.read_text())["observatories"]["ztf"]
    assert code == 0, ztf
    assert ztf["fetched"] == 500 and ztf["retries"] > 50
    assert archive.archive.count(ZTF) == ztf["requests"] > 550
    assert query(db_url, "select count(*), count(distinct source_name) from raw_photometry") == [(500, 500)]
    assert query(db_url, "select count(*) from failures where resolved = false") == [(0,)]
    dupes = query(
        db_url,
        "select source_name, series_number, count(*) from lightcurves group by source_name, series_number having count(*) > 1",
    )
    assert dupes == []
    root = tmp_path / "data"
    assert len(list(root.glob("ZTF/RA*/*.h5"))) == 500
    assert not list(root.rglob(".*tmp*"))


def test_dry_run_makes_no_request(run_cli, archive, capsys) -> None:
    assert run_cli("--dry-run", size=5) == 0
    assert archive.archive.count() == 0
    assert "ztf: fetch 5" in capsys.readouterr().out


def test_bad_config_exits_2(run_cli, capsys) -> None:
    assert run_cli("--set", "observatories.ztf.ratelimit=3") == 2
    assert "observatories.ztf.ratelimit: unknown key" in capsys.readouterr().err


def test_files_written_by_a_run_open_with_plain_h5py(run_cli, tmp_path: Path) -> None:
    assert run_cli(size=3) == 0
    tables = [f for f in (tmp_path / "data").rglob("*_photometry_*.h5")]
    assert len(tables) == 6  # raw and reduced, per source
    for f in tables:
        with h5py.File(f) as h5:
            for key in h5:
                assert len(pd.DataFrame(h5[key][:]).columns) > 10


def test_verify_opens_files_and_refetches_the_unreadable(run_cli, archive, tmp_path) -> None:
    assert run_cli(size=4) == 0
    victim = sorted((tmp_path / "data").glob("ZTF/RA*/*.h5"))[0]
    size = victim.stat().st_size
    with victim.open("r+b") as f:  # same size, garbage inside: only opening the file can tell
        f.write(b"\0" * 512)
    assert victim.stat().st_size == size
    archive.archive.reset_counts()
    assert run_cli(size=4) == 0
    assert archive.archive.count() == 0  # size and row agree: trusted without --verify
    summary = tmp_path / "s.json"
    assert run_cli("--verify", "--summary-json", str(summary), size=4) == 0
    ztf = json.loads(summary.read_text())["observatories"]["ztf"]
    assert (ztf["refetched"], ztf["skipped"], archive.archive.count()) == (1, 3, 1)
    with h5py.File(victim) as f:
        assert len(f.keys()) == 1


def test_a_data_root_blocked_by_a_file_stops_before_any_request(run_cli, archive, db_url, tmp_path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "ZTF").write_text("a file where the ZTF folder should be")  # every path below is ENOTDIR
    assert run_cli(size=3) == 2
    err = capsys.readouterr().err
    assert f"{root / 'ZTF'}" in err and "is DATA_ROOT mounted and readable?" in err
    assert archive.archive.count() == 0
    assert query(db_url, "select count(*) from raw_photometry") == [(0,)]
    assert query(db_url, "select count(*) from lightcurves") == [(0,)]


def test_a_failing_write_leaves_a_failure_row_and_no_row_without_its_file(
    run_cli, archive, db_url, tmp_path, monkeypatch
) -> None:
    """A disk that fills up mid-run: each source's write fails alone, named, and no row points nowhere."""
    import errno
    import os

    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "/ZTF/" in str(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    summary = tmp_path / "s.json"
    assert run_cli("--summary-json", str(summary), size=3) == 1
    monkeypatch.undo()
    ztf = json.loads(summary.read_text())["observatories"]["ztf"]
    assert ztf["failed"] == 3 and ztf["failures"] == {"WriteError": 3}
    failures = query(db_url, "select stage, last_error from failures order by source_name")
    assert [stage for stage, _ in failures] == ["write"] * 3
    assert all("ZTF" in error and "No space left" in error for _, error in failures), failures
    assert query(db_url, "select count(*) from raw_photometry") == [(0,)]
    assert query(db_url, "select count(*) from lightcurves") == [(0,)]
    assert not list((tmp_path / "data").rglob("ZTF_photometry_*.h5"))  # no file under a final name


def age_raw_rows(db_url: str, days: float) -> None:
    """Move every raw row's ``fetched_at`` ``days`` into the past (no waiting on the wall clock)."""

    async def go() -> None:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as conn:
                rows = (await conn.execute(sa.select(RawPhotometry.id, RawPhotometry.fetched_at))).all()
                for row_id, fetched_at in rows:
                    await conn.execute(
                        sa.update(RawPhotometry)
                        .where(RawPhotometry.id == row_id)
                        .values(fetched_at=fetched_at - timedelta(days=days))
                    )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_refresh_age_and_failure_back_off(run_cli, archive, db_url, tmp_path) -> None:
    summary = tmp_path / "s.json"

    def lane(*args: str) -> dict[str, Any]:
        assert run_cli("--summary-json", str(summary), *args, size=4) in (0, 1)
        return json.loads(summary.read_text())["observatories"]["ztf"]  # type: ignore[no-any-return]

    assert lane()["fetched"] == 4
    age_raw_rows(db_url, days=2)
    assert lane("--set", "engine.refresh_after_days=30")["skipped"] == 4  # 2 days old: kept
    archive.archive.reset_counts()
    refreshed = lane("--set", "engine.refresh_after_days=1")  # 2 days old: fetched again
    assert refreshed["refetched"] == 4 and archive.archive.count(ZTF) == 4
    assert lane("--set", "engine.refresh_after_days=1")["skipped"] == 4  # just refreshed: kept

    # a source that failed waits for the back-off before it is tried again
    age_raw_rows(db_url, days=2)
    archive.archive.faults = Faults(error_rate=1.0)
    failing = ("--set", "observatories.ztf.max_attempts=1", "--set", "engine.refresh_after_days=1")
    assert lane(*failing)["failed"] == 4
    archive.archive.reset_counts()
    waiting = lane(*failing, "--set", "engine.retry_failed_after_s=3600")  # failed seconds ago
    assert waiting["skipped"] == 4 and archive.archive.count(ZTF) == 0
    archive.archive.faults = Faults()
    assert lane("--set", "engine.refresh_after_days=1")["refetched"] == 4  # no back-off set: retried
