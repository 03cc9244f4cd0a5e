"""The TESS adapter against the fake MAST over real HTTP, through a real ``aretriever.http.Lane``."""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from astropy.io import fits

from aretriever.adapters.base import Target
from aretriever.adapters.tess import TessAdapter
from aretriever.engine.pool import CpuJob, run_job
from aretriever.errors import MalformedResponse, PermanentFetchError
from aretriever.http import Lane
from aretriever.settings import TessConfig
from aretriever.store import paths
from aretriever.store.hdf5 import read_image
from aretriever.testing.fake_archive import DATA_DIR, FakeArchive
from aretriever.testing.mast_replay import (
    ALERT_FILE,
    DOWNLOAD_PATH,
    INVOKE_PATH,
    PI_MEN,
    PRODUCT_PREFIX,
    Star,
)

TESS = DATA_DIR / "tess"
ALERT = TESS / ALERT_FILE.name
CUT = TESS / "test-lc-tess-pimen-corrupted.fits"
RECORDED_TIC = json.loads((DATA_DIR / "mast" / "tic.json").read_text())
MASK = 17087
SOMEWHERE = Target("WD somewhere", 123.4, -45.6)


class SleepLog:
    """The lane's sleep: recorded, never waited."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture()
async def archive() -> AsyncIterator[FakeArchive]:
    async with FakeArchive() as fake:
        yield fake


@pytest.fixture()
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture()
def cfg(archive: FakeArchive) -> TessConfig:
    return TessConfig(
        base_url=archive.url,
        timeout_s=5.0,
        max_attempts=3,
        backoff_base_s=0.001,
        backoff_max_s=0.01,
        rate_per_s=1000.0,
        poll_interval_s=3.0,
    )


@pytest.fixture()
def sleeps() -> SleepLog:
    return SleepLog()


@pytest.fixture()
def lane(cfg: TessConfig, session: aiohttp.ClientSession, sleeps: SleepLog, tmp_path: Path) -> Lane:
    return Lane("tess", cfg, session, sleep=sleeps, scratch_dir=str(tmp_path))


def _kept(path: Path) -> int:
    """Cadences the reduction must keep, counted from astropy's reading of the file."""
    data = fits.getdata(path, 1)
    time, flux, quality = (np.asarray(data[name]) for name in ("TIME", "PDCSAP_FLUX", "QUALITY"))
    return int((np.isfinite(time) & np.isfinite(flux) & (quality & MASK == 0)).sum())


def _bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _bytes_exist(path: str | Path) -> bool:
    return Path(path).exists()


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def _invokes(archive: FakeArchive) -> int:
    return archive.count(INVOKE_PATH)


async def test_fetch_parse_reduce_one_target(archive: FakeArchive, cfg: TessConfig, lane: Lane) -> None:
    adapter = TessAdapter(cfg)
    fetched = await adapter.fetch(SOMEWHERE, lane)
    assert fetched.body == b"" and fetched.meta["tic"] == 55652896
    assert fetched.meta["tic_distance_arcsec"] == pytest.approx(0.7, abs=0.01)
    assert [path for path, _, _ in archive.requests] == [INVOKE_PATH] * 3 + [DOWNLOAD_PATH]
    assert archive.requests[-1][1] == {"uri": PRODUCT_PREFIX + ALERT_FILE.name}
    (path,) = fetched.meta["files"]
    assert _bytes(path) == _bytes(ALERT)
    # through the pool's entry point, after a pickle round trip as to a worker process
    job = pickle.loads(pickle.dumps(CpuJob(adapter, SOMEWHERE, fetched)))
    result = run_job(job)
    assert result.raw_image is not None and result.num_raw_rows == 20076
    (lc,) = result.lightcurves
    assert result.reduced_image is not None and lc.num_rows == _kept(ALERT)
    table, _ = read_image(result.reduced_image, paths.reduction_key(SOMEWHERE.name, 1, 1))
    assert len(table) == lc.num_rows and not np.isnan(table["mjd"]).any()
    assert lc.meta["sector"] == 1 and lc.filter == "tess"
    assert not _bytes_exist(path)
    assert lane.stats.retries == 0


async def test_a_registered_star_with_a_magnitude(archive: FakeArchive, cfg: TessConfig, lane: Lane) -> None:
    archive.mast.add_star(Star(PI_MEN.tic, PI_MEN.ra_deg, PI_MEN.dec_deg, 5.51, PI_MEN.files))
    adapter = TessAdapter(cfg)
    near = PI_MEN.dec_deg + 2.0 / 3600  # 2 arcsec north of pi Men
    fetched = await adapter.fetch(Target("pi Men", PI_MEN.ra_deg, near, mag=5.6), lane)
    assert fetched.meta["tic"] == 261136679 and fetched.meta["tic_gaia_mag"] == 5.51
    assert fetched.meta["tic_distance_arcsec"] == pytest.approx(2.0, abs=0.01)
    (lc,) = adapter.reduce(adapter.parse(fetched), fetched.target)
    assert len(lc.data) == _kept(TESS / "test-lc-tess-pimen-100-cadences.fits")
    wrong_mag = await adapter.fetch(Target("pi Men", PI_MEN.ra_deg, near, mag=8.0), lane)
    assert wrong_mag.body is None and wrong_mag.no_data_reason is not None
    assert "GAIAmag" in wrong_mag.no_data_reason
    far = await adapter.fetch(Target("pi Men", PI_MEN.ra_deg, PI_MEN.dec_deg + 20.0 / 3600, mag=5.6), lane)
    assert far.no_data_reason == "no TIC star within 10 arcsec (nearest: TIC 261136679 at 20.00 arcsec)"
    assert archive.count(DOWNLOAD_PATH) == 1


async def test_fetch_by_tic(archive: FakeArchive, cfg: TessConfig, lane: Lane) -> None:
    adapter = TessAdapter(cfg)
    fetched = await adapter.fetch_by_tic(261136679, lane)
    assert fetched.target.name == "TIC 261136679"
    assert (fetched.target.ra_deg, fetched.target.dec_deg) == pytest.approx(
        (PI_MEN.ra_deg, PI_MEN.dec_deg), abs=1e-6
    )
    assert fetched.meta["sectors"] == [1]
    adapter.parse(fetched)
    with pytest.raises(PermanentFetchError, match="no star with ID 1234"):
        await adapter.fetch_by_tic(1234, lane)


async def test_executing_then_complete(
    archive: FakeArchive, cfg: TessConfig, lane: Lane, sleeps: SleepLog
) -> None:
    archive.mast.executing_polls = 1
    adapter = TessAdapter(cfg)
    fetched = await adapter.fetch(SOMEWHERE, lane)
    assert fetched.meta["tic"] == 55652896 and fetched.meta["sectors"] == [1]
    assert _invokes(archive) == 6  # TIC, CAOM and products: each EXECUTING once, then COMPLETE
    assert sleeps.calls == [3.0, 3.0, 3.0]  # the poll interval, through the lane's sleep
    assert lane.stats.retries == 0
    adapter.parse(fetched)


async def test_paged_answers(archive: FakeArchive, cfg: TessConfig, lane: Lane) -> None:
    archive.mast.pages = 2
    adapter = TessAdapter(cfg)
    fetched = await adapter.fetch(SOMEWHERE, lane)
    # 3 TIC rows in 360 arcsec (2 pages), 1 observation (1 page), 2 products (2 pages)
    assert _invokes(archive) == 5
    assert fetched.meta["products"] == [ALERT_FILE.name]
    assert fetched.meta["tic_distance_arcsec"] == pytest.approx(0.7, abs=0.01)
    adapter.parse(fetched)


def test_the_fake_pages_its_rows(archive: FakeArchive) -> None:
    archive.mast.pages = 2
    query = {"service": "Mast.Catalogs.Tic.Cone", "params": {"ra": 10.0, "dec": 20.0, "radius": 0.1}}
    pages = [json.loads(archive.mast.answer({**query, "page": page})[1]) for page in (1, 2)]
    assert [p["paging"]["pagesFiltered"] for p in pages] == [2, 2]
    assert [len(p["data"]) for p in pages] == [2, 1]
    rows = pages[0]["data"] + pages[1]["data"]
    assert [row["dstArcSec"] for row in rows] == sorted(row["dstArcSec"] for row in rows)
    # templated rows keep the recorded fields; only ids, positions and what follows from them change
    recorded = RECORDED_TIC["data"]
    assert all(set(row) == {*recorded[0], "dstArcSec"} for row in rows)
    moved = {"ID", "ra", "dec", "gallong", "gallat", "eclong", "eclat", "dstArcSec"}
    first = rows[0]
    assert first["ID"] == 55652896
    assert {k: v for k, v in first.items() if k not in moved} == {
        k: v for k, v in recorded[0].items() if k not in moved
    }
    assert {row["ID"] for row in rows[1:]} <= {row["ID"] for row in recorded}


async def test_error_answer(archive: FakeArchive, cfg: TessConfig, lane: Lane) -> None:
    message = "Error in Mast.Caom.Filtered: column 'target_nam' does not exist"
    archive.mast.errors["Mast.Caom.Filtered"] = message
    with pytest.raises(PermanentFetchError) as caught:
        await TessAdapter(cfg).fetch(SOMEWHERE, lane)
    assert message in str(caught.value)
    assert str(caught.value).startswith("tess: MAST answered Mast.Caom.Filtered for WD somewhere")
    assert _invokes(archive) == 2  # the TIC cone, then one CAOM query: not retried
    assert lane.stats.retries == 0
    assert archive.count(DOWNLOAD_PATH) == 0


async def test_truncated_fits_is_downloaded_again(
    archive: FakeArchive, cfg: TessConfig, lane: Lane, tmp_path: Path
) -> None:
    archive.script(DOWNLOAD_PATH, [(200, CUT.read_bytes(), {"Content-Type": "application/octet-stream"})])
    adapter = TessAdapter(cfg)
    fetched = await adapter.fetch(SOMEWHERE, lane)
    assert archive.count(DOWNLOAD_PATH) == 2  # exactly one extra download
    assert lane.stats.retries == 1  # the lane retried it: rate limit and back-off apply
    assert lane.stats.errors == {"MalformedResponse": 1}
    downloads = [query for path, query, _ in archive.requests if path == DOWNLOAD_PATH]
    assert downloads[0] == downloads[1] == {"uri": PRODUCT_PREFIX + ALERT_FILE.name}
    (path,) = fetched.meta["files"]
    assert _bytes(path) == _bytes(ALERT)
    raw = adapter.parse(fetched)
    assert len(raw) == 20076
    assert _listing(tmp_path) == []  # scratch files gone once parsed


async def test_always_truncated_fits_fails_as_malformed(
    archive: FakeArchive, cfg: TessConfig, lane: Lane, tmp_path: Path
) -> None:
    archive.script(DOWNLOAD_PATH, [(200, CUT.read_bytes(), {})] * cfg.max_attempts)
    with pytest.raises(MalformedResponse, match="broken lightcurve file"):
        await TessAdapter(cfg).fetch(SOMEWHERE, lane)
    assert archive.count(DOWNLOAD_PATH) == cfg.max_attempts
    assert _listing(tmp_path) == []


async def test_unknown_download_is_a_404(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    url = archive.url + DOWNLOAD_PATH
    async with session.get(url, params={"uri": PRODUCT_PREFIX + "nope_lc.fits"}) as response:
        assert response.status == 404
    params: dict[str, Any] = {"uri": PRODUCT_PREFIX + ALERT_FILE.name}
    async with session.get(url, params=params) as response:
        assert response.status == 200 and await response.read() == ALERT.read_bytes()
