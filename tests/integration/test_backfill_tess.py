"""End to end: ZTF and TESS lanes together through the fake archive, on SQLite and PostgreSQL.

The expected TESS lightcurves are counted from astropy's reading of the real SPOC files, not by
the reducer under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from aretriever.store import owners
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.mast_replay import (
    ALERT_FILE,
    DOWNLOAD_PATH,
    INVOKE_PATH,
    PI_MEN,
    PI_MEN_FILE,
    TIC_55652896,
)

from .test_backfill import query

ZTF = "/cgi-bin/ZTF/nph_light_curves"
DEFAULT_BITMASK = 17087
BTJD_TO_MJD = 2457000.0 - 2400000.5


def _kept_times(recorded: str) -> np.ndarray:
    """TIME of the cadences a default reduction keeps, in BTJD, from astropy's reading."""
    data = fits.getdata(DATA_DIR / "tess" / recorded, 1)
    time, flux, quality = (np.asarray(data[name], dtype=float) for name in ("TIME", "PDCSAP_FLUX", "QUALITY"))
    keep = np.isfinite(time) & np.isfinite(flux) & ((quality.astype(np.int64) & DEFAULT_BITMASK) == 0)
    return np.sort(time[keep])


def _catalog(tmp_path: Path) -> Path:
    rows = [
        # the recorded TIC rows have no GAIAmag: without a catalog mag the match is by distance
        {"name": "pi Men", "ra": PI_MEN.ra_deg, "dec": PI_MEN.dec_deg, "mag": np.nan},
        {"name": "TOI host", "ra": TIC_55652896.ra_deg, "dec": TIC_55652896.dec_deg, "mag": np.nan},
        {"name": "WD northern", "ra": 200.1, "dec": 30.2, "mag": 20.3},  # the recorded ZTF star
    ]
    path = tmp_path / "targets.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _lightcurves(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = {}
    sql = (
        "select source_name, observatory, filename, filekey, num_rows, time_start_mjd, time_end_mjd,"
        " series_total from lightcurves order by source_name, series_number"
    )
    for row in query(db_url, sql):
        found.setdefault(f"{row[1]}:{row[0]}", []).append(tuple(row))
    return found


def test_ztf_and_tess_lanes_backfill_a_catalog_together(run_cli, archive, db_url, tmp_path) -> None:
    archive.archive.mast.executing_polls = 1  # every MAST query answers EXECUTING once
    archive.archive.mast.default_gaia_mag = 20.1  # the TIC copy found near "WD northern"
    summary_path = tmp_path / "summary.json"
    # what a SIGKILLed run leaves behind: its own scratch folder, named by its owner token
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    dead_owner = f"{owners.HOST_TAG}.{dead_pid}.0123abcd"
    stale = tmp_path / "data" / ".scratch" / "tess" / dead_owner / "aretriever-tess-killed" / "half_lc.fits"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"SIMPLE  =                    T")
    args = ("--catalog", str(_catalog(tmp_path)), "--observatory", "ztf", "--observatory", "tess")
    assert run_cli(*args, "--summary-json", str(summary_path)) == 0
    assert list((tmp_path / "data" / ".scratch" / "tess").iterdir()) == []  # swept, and nothing left

    summary = json.loads(summary_path.read_text())["observatories"]
    assert summary["tess"]["fetched"] == 3
    assert summary["ztf"]["fetched"] == 1 and summary["ztf"]["no_data"] == 2  # south of ZTF's sky
    assert archive.archive.count(ZTF) == 1
    assert archive.archive.count(DOWNLOAD_PATH) == 3
    assert query(db_url, "select count(*) from failures")[0][0] == 0

    root = tmp_path / "data"
    lcs = _lightcurves(db_url)
    assert {key for key in lcs if key.startswith("tess:")} == {
        "tess:pi Men",
        "tess:TOI host",
        "tess:WD northern",
    }
    assert "ztf:WD northern" in lcs
    expected = {
        "pi Men": PI_MEN_FILE.recorded,
        "TOI host": ALERT_FILE.recorded,
        "WD northern": ALERT_FILE.recorded,
    }
    for name, recorded in expected.items():
        (lc,) = lcs[f"tess:{name}"]  # one sector in each file: one lightcurve
        _, _, filename, key, num_rows, start, end, total = lc
        times = _kept_times(recorded)
        assert total == 1 and num_rows == len(times)
        assert start == _approx(times[0] + BTJD_TO_MJD)
        assert end == _approx(times[-1] + BTJD_TO_MJD)
        with h5py.File(root / filename) as f:
            stored = pd.DataFrame(f[key][:])
            attrs = dict(f[key].attrs)
        assert len(stored) == len(times)
        assert np.isfinite(stored["mjd"]).all() and np.isfinite(stored["flux"]).all()
        assert ((stored["quality"].to_numpy() & DEFAULT_BITMASK) == 0).all()
        assert np.allclose(stored["mjd"].to_numpy(), times + BTJD_TO_MJD, rtol=0, atol=1e-6)
        assert int(attrs["sector"]) == 1 and attrs["filter"] == "tess"

    # TIC 55652896's file has 815 cadences without a time: none of them is stored
    alert = fits.getdata(DATA_DIR / "tess" / ALERT_FILE.recorded, 1)
    assert int(np.isnan(np.asarray(alert["TIME"], dtype=float)).sum()) == 815
    assert lcs["tess:TOI host"][0][4] <= len(alert) - 815

    raw = query(
        db_url, "select source_name, filename, filekey, meta from raw_photometry where observatory = 'tess'"
    )
    for name, filename, key, _ in raw:
        with h5py.File(root / filename) as f:
            attrs = dict(f[key].attrs)
        archive_meta = json.loads(attrs["archive"]) if isinstance(attrs["archive"], str) else attrs["archive"]
        (headers,) = archive_meta["headers"]
        assert headers["TICID"] == (PI_MEN.tic if name == "pi Men" else TIC_55652896.tic)
        assert headers["SECTOR"] == 1 and {"CAMERA", "CCD", "TESSMAG", "RA_OBJ", "DEC_OBJ"} <= set(headers)

    # a second run asks neither archive anything
    archive.archive.reset_counts()
    assert run_cli(*args, "--summary-json", str(summary_path)) == 0
    assert archive.archive.count() == 0
    summary = json.loads(summary_path.read_text())["observatories"]
    assert summary["tess"]["skipped"] == 3 and summary["ztf"]["skipped"] == 3


def test_fetch_by_tic_files_the_star_under_the_nearest_catalog_row(
    run_cli, archive, db_url, tmp_path
) -> None:
    catalog = _catalog(tmp_path)
    assert run_cli("--catalog", str(catalog), "--tic", str(PI_MEN.tic)) == 0
    assert query(db_url, "select name from sources") == [("pi Men",)]
    lcs = _lightcurves(db_url)
    assert list(lcs) == ["tess:pi Men"]
    # no cone search: the TIC row by id, then CAOM, products and the file
    assert archive.archive.count(INVOKE_PATH) == 3 and archive.archive.count(DOWNLOAD_PATH) == 1


def test_fetch_by_tic_without_a_catalog_names_the_source_after_the_tic(
    run_cli, archive, db_url, tmp_path
) -> None:
    assert run_cli("--catalog", "", "--tic", str(TIC_55652896.tic)) == 0
    ((name, ra, dec),) = query(db_url, "select name, ra_deg, dec_deg from sources")
    assert name == f"TIC {TIC_55652896.tic}"
    assert (ra, dec) == (_approx(TIC_55652896.ra_deg), _approx(TIC_55652896.dec_deg))
    assert list(_lightcurves(db_url)) == [f"tess:TIC {TIC_55652896.tic}"]


def test_wd_catalog_from_the_cli_with_both_lanes(run_cli, archive, db_url, tmp_path) -> None:
    summary_path = tmp_path / "summary.json"
    args = (
        "--catalog",
        "wd",
        "--observatory",
        "ztf",
        "--observatory",
        "tess",
        "--start",
        "0",
        "--stop",
        "10",
    )
    archive.archive.mast.default_gaia_mag = 7.2  # the fixture's Gaia rows have G = 7.0 (or none)
    assert run_cli(*args, "--summary-json", str(summary_path)) == 0
    names = {row[0] for row in query(db_url, "select name from sources")}
    assert len(names) == 3 and all(name.startswith("WDJ") for name in names)  # the fixture's 3 rows
    summary = json.loads(summary_path.read_text())["observatories"]
    assert summary["tess"]["fetched"] == 3
    assert sum(summary["ztf"].get(key, 0) for key in ("fetched", "no_data")) == 3
    assert {key.split(":")[0] for key in _lightcurves(db_url)} >= {"tess"}


def _approx(value: float) -> Any:
    return pytest.approx(value, rel=0, abs=1e-6)
