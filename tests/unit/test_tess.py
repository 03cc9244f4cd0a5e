"""TESS adapter: request building, Mashup parsing, TIC choice, FITS checks, parse and reduce.

Everything runs on the real recorded MAST answers and SPOC files, through fake ports (no socket,
no real sleep). Expected values are computed here with astropy/numpy, not with the adapter.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import pickle
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from aretriever.adapters.base import Fetched, Request, Response, Target
from aretriever.adapters.mast import (
    CAOM_FILTERED,
    CAOM_PRODUCTS,
    PAGE_SIZE,
    TIC_BY_ID,
    TIC_CONE,
    build_download_request,
    build_invoke_request,
    caom_params,
    mast_query,
    parse_mashup,
    products_params,
    tic_cone_params,
    tic_id_params,
)
from aretriever.adapters.tess import (
    LightcurveProduct,
    TessAdapter,
    choose_tic,
    no_data_reason,
    observation_cadences,
    sector_from_name,
    select_lightcurves,
)
from aretriever.adapters.tess_fits import TABLE_HEADERS, checked_headers, read_lightcurve_file, read_raw_table
from aretriever.adapters.tess_reduce import reduce_lightcurves
from aretriever.errors import ArchiveErrorPage, MalformedResponse, PermanentFetchError, TransientFetchError
from aretriever.settings import TessConfig, TessReducerConfig
from aretriever.store.hdf5 import read_h5, write_h5
from aretriever.testing.fake_archive import DATA_DIR

MAST = DATA_DIR / "mast"
TESS = DATA_DIR / "tess"
ALERT = TESS / "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits"
PI_MEN = TESS / "test-lc-tess-pimen-100-cadences.fits"
CUT_IN_DATA = TESS / "test-lc-tess-pimen-corrupted.fits"
CUT_IN_HEADER = TESS / "test-lc-tess-pimen-corrupted-at-header.fits"
BASE = "https://mast.example"
DEFAULT_MASK = 17087  # lightkurve's TessQualityFlags.DEFAULT_BITMASK
STAR = Target("WD 0455-632", 73.980231, -63.260063)


def _recorded(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((MAST / name).read_text())
    return doc


def _body(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _payload(request: Request) -> dict[str, Any]:
    assert request.data is not None and set(request.data) == {"request"}
    payload: dict[str, Any] = json.loads(request.data["request"])
    return payload


def _table(path: Path) -> tuple[fits.Header, fits.Header, Any]:
    """The file read directly with astropy (the independent reference)."""
    with fits.open(path, memmap=False) as hdul:
        return hdul[0].header.copy(), hdul[1].header.copy(), hdul[1].data.copy()


def _write(path: str, body: bytes) -> None:
    Path(path).write_bytes(body)


def _bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir())


class ScriptedPort:
    """A port answering requests in order from a script; streamed bodies go to the file."""

    def __init__(self, answers: list[bytes]) -> None:
        self.scratch_dir: str | None = None
        self.answers = answers
        self.requests: list[Request] = []
        self.sleeps: list[float] = []

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        body = self.answers.pop(0)
        if request.stream_to is not None:
            _write(request.stream_to, body)
            checked = request.check(request.stream_to) if request.check is not None else None
            return Response(200, b"", request.url, checked=checked)
        return Response(200, body, request.url)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class RoutingPort(ScriptedPort):
    """A port answering each Mashup service from its own queue, and downloads from a file map."""

    def __init__(self, services: dict[str, list[dict[str, Any]]], files: dict[str, Path]) -> None:
        super().__init__([])
        self.services = services
        self.files = files

    async def send(self, request: Request) -> Response:
        if request.stream_to is None:
            doc = self.services[_payload(request)["service"]].pop(0)
            self.answers.append(_body(doc))
        else:
            uri = dict(request.params)["uri"]
            self.answers.append(self.files[uri.rsplit("/", 1)[-1]].read_bytes())
        return await super().send(request)

    def services_asked(self) -> list[str]:
        return [_payload(r)["service"] for r in self.requests if r.stream_to is None]


def _complete(rows: list[dict[str, Any]], page: int = 1, pages: int = 1) -> dict[str, Any]:
    paging = {"page": page, "pageSize": 50000, "pagesFiltered": pages, "rows": len(rows)}
    return {"status": "COMPLETE", "msg": "", "data": rows, "fields": [], "paging": paging}


def _tic_rows(distances: list[float], gaia: list[float | None]) -> list[dict[str, Any]]:
    """Recorded TIC rows with ``dstArcSec`` added (as a cone search adds it) and GAIAmag set."""
    rows: list[dict[str, Any]] = copy.deepcopy(_recorded("tic.json")["data"])[: len(distances)]
    for row, distance, mag in zip(rows, distances, gaia, strict=True):
        row["dstArcSec"] = distance
        row["GAIAmag"] = mag
    return rows


def _tess_observation(tic: int, obsid: int, t_exptime: float) -> dict[str, Any]:
    row: dict[str, Any] = copy.deepcopy(_recorded("caom.json")["data"][0])
    row.update(obs_collection="TESS", dataproduct_type="timeseries", target_name=str(tic), obsid=obsid)
    row.update(t_exptime=t_exptime)
    return row


def _product(obsid: int, name: str) -> dict[str, Any]:
    row: dict[str, Any] = copy.deepcopy(_recorded("products.json")["data"][0])
    row.update(obsID=obsid, productFilename=name, dataURI=f"mast:TESS/product/{name}")
    return row


# ------------------------------------------------------------------ request building


def test_invoke_request_is_a_form_post_of_json() -> None:
    cfg = TessConfig(base_url=BASE + "/")
    request = build_invoke_request(cfg, "Mast.Caom.Products", {"obsid": "1,2"}, page=3)
    assert request.method == "POST"
    assert request.url == BASE + "/api/v0/invoke"
    assert request.params == () and request.stream_to is None
    assert _payload(request) == {
        "service": "Mast.Caom.Products",
        "params": {"obsid": "1,2"},
        "format": "json",
        "pagesize": PAGE_SIZE,
        "page": 3,
    }


def test_service_names_and_params() -> None:
    cfg = TessConfig(cat_query_radius_arcsec=360.0)
    assert (TIC_CONE, TIC_BY_ID, CAOM_FILTERED, CAOM_PRODUCTS) == (
        "Mast.Catalogs.Tic.Cone",
        "Mast.Catalogs.Filtered.Tic.Rows",
        "Mast.Caom.Filtered",
        "Mast.Caom.Products",
    )
    cone = tic_cone_params(Target("w", 360.25, -12.5), cfg)
    assert cone == {"ra": pytest.approx(0.25), "dec": -12.5, "radius": pytest.approx(0.1)}
    assert caom_params(55652896) == {
        "columns": "*",
        "filters": [
            {"paramName": "obs_collection", "values": ["TESS"]},
            {"paramName": "dataproduct_type", "values": ["timeseries"]},
            {"paramName": "target_name", "values": ["55652896"]},
        ],
    }
    assert products_params(["27", "28"]) == {"obsid": "27,28"}
    assert tic_id_params(261136679) == {
        "columns": "*",
        "filters": [{"paramName": "ID", "values": ["261136679"]}],
    }


def test_download_request_streams_to_a_file(tmp_path: Path) -> None:
    uri = "mast:TESS/product/tess2018206045859-s0001-0000000261136679-0120-s_lc.fits"
    request = build_download_request(TessConfig(base_url=BASE), uri, tmp_path / "x.fits")
    assert (request.method, request.url) == ("GET", BASE + "/api/v0.1/Download/file")
    assert request.params == (("uri", uri),)
    assert request.stream_to == str(tmp_path / "x.fits")
    assert request.display_url().endswith("?uri=mast%3ATESS%2Fproduct%2F" + uri.rsplit("/", 1)[1])


# ------------------------------------------------------------------ parsing Mashup answers


@pytest.mark.parametrize(("name", "count"), [("caom.json", 19), ("products.json", 22), ("tic.json", 7)])
def test_parse_recorded_answers(name: str, count: int) -> None:
    body = (MAST / name).read_bytes()
    answer = parse_mashup(body, service="s")
    assert answer.status == "COMPLETE"
    assert (answer.page, answer.pages) == (1, 1)
    assert len(answer.rows) == count
    assert answer.rows == json.loads(body)["data"]


def test_parse_executing_error_and_broken_answers() -> None:
    assert parse_mashup(b'{"status": "EXECUTING", "msg": "", "data": []}', service="s").status == "EXECUTING"
    error = _body({"status": "ERROR", "msg": "Request Object is Missing 'service' property", "data": []})
    with pytest.raises(PermanentFetchError, match="Missing 'service' property") as caught:
        parse_mashup(error, service=CAOM_FILTERED, source="WD 1", url=BASE)
    assert not isinstance(caught.value, TransientFetchError)
    assert "tess: MAST answered Mast.Caom.Filtered for WD 1" in str(caught.value)
    recorded = (MAST / "caom.json").read_bytes()
    with pytest.raises(MalformedResponse, match="not JSON"):
        parse_mashup(recorded[: len(recorded) // 2], service="s")
    with pytest.raises(MalformedResponse, match="'WEIRD'"):
        parse_mashup(b'{"status": "WEIRD", "data": []}', service="s")
    with pytest.raises(ArchiveErrorPage, match="Service Unavailable"):
        parse_mashup(b"<html><body><h1>Service Unavailable</h1></body></html>", service="s")


def test_paging_is_read() -> None:
    doc = _recorded("tic.json")
    doc["paging"].update(page=2, pagesFiltered=3)
    answer = parse_mashup(_body(doc), service="s")
    assert (answer.page, answer.pages) == (2, 3)


# ------------------------------------------------------------------ polling and paging


async def test_executing_is_polled_with_the_port_sleep() -> None:
    cfg = TessConfig(poll_interval_s=2.5, poll_deadline_s=60.0)
    executing = _body({"status": "EXECUTING", "msg": "", "data": []})
    port = ScriptedPort([executing, executing, (MAST / "tic.json").read_bytes()])
    rows = await mast_query(port, cfg, TIC_CONE, {"ra": 1.0, "dec": 2.0, "radius": 0.1}, "src")
    assert len(rows) == 7
    assert port.sleeps == [2.5, 2.5]
    assert [_payload(r)["page"] for r in port.requests] == [1, 1, 1]


async def test_polling_gives_up_at_the_deadline() -> None:
    cfg = TessConfig(poll_interval_s=1.0, poll_deadline_s=3.0)
    port = ScriptedPort([_body({"status": "EXECUTING", "data": []})] * 10)
    with pytest.raises(TransientFetchError, match="still EXECUTING after 3 s"):
        await mast_query(port, cfg, CAOM_FILTERED, caom_params(1), "src")
    assert port.sleeps == [1.0, 1.0, 1.0]
    assert len(port.requests) == 4


async def test_pages_are_fetched_in_turn() -> None:
    rows = _recorded("tic.json")["data"]
    port = ScriptedPort([_body(_complete(rows[:4], 1, 2)), _body(_complete(rows[4:], 2, 2))])
    found = await mast_query(port, TessConfig(), TIC_CONE, {"ra": 1.0}, "src")
    assert found == rows
    assert [_payload(r)["page"] for r in port.requests] == [1, 2]
    assert port.sleeps == []


async def test_error_answer_stops_the_query() -> None:
    port = ScriptedPort([_body({"status": "ERROR", "msg": "Unknown service: Mast.Nope", "data": []})])
    with pytest.raises(PermanentFetchError, match=r"Unknown service: Mast\.Nope"):
        await mast_query(port, TessConfig(), "Mast.Nope", {}, "src")
    assert len(port.requests) == 1


# ------------------------------------------------------------------ TIC choice


@pytest.mark.parametrize(
    ("distances", "gaia", "mag", "chosen"),
    [
        ([0.4, 3.0], [15.1, 15.0], 15.0, 0),  # nearest, mag within 0.75
        ([0.4, 3.0], [16.0, 15.2], 15.0, 1),  # nearest is 1 mag off: the next one within 10"
        ([0.4, 12.0], [16.0, 15.0], 15.0, None),  # the matching mag is too far away
        ([10.0], [15.0], 15.0, None),  # the threshold itself is out (strictly closer)
        ([9.99], [15.74], 15.0, 0),
        ([0.4], [15.75], 15.0, None),  # the mag threshold is strict too
        ([0.4, 2.0], [None, 15.0], 15.0, 1),  # no GAIAmag: cannot be checked, so not chosen
        ([0.4, 2.0], [None, 30.0], None, 0),  # target without mag: the nearest
        ([0.4], [15.0], math.nan, 0),  # NaN mag counts as none
    ],
)
def test_tic_choice(
    distances: list[float], gaia: list[float | None], mag: float | None, chosen: int | None
) -> None:
    rows = _tic_rows(distances, gaia)
    match = choose_tic(rows[::-1], Target("t", 0.0, 0.0, mag=mag), TessConfig())  # order must not matter
    if chosen is None:
        assert match.tic is None and match.reason
    else:
        assert (match.tic, match.distance_arcsec) == (rows[chosen]["ID"], distances[chosen])
        assert match.reason is None


def test_tic_choice_reasons() -> None:
    cfg = TessConfig()
    assert choose_tic([], STAR, cfg).reason == "no TIC star within 360 arcsec"
    far = choose_tic(_tic_rows([25.0], [15.0]), STAR, cfg)
    assert far.reason == "no TIC star within 10 arcsec (nearest: TIC 10000732589 at 25.00 arcsec)"
    off = choose_tic(_tic_rows([1.0], [17.0]), Target("t", 0, 0, mag=15.0), cfg)
    assert (
        off.reason is not None and "|GAIAmag - 15.000| < 0.75" in off.reason and "GAIAmag 17.0" in off.reason
    )


def test_tic_distance_from_position_when_not_given() -> None:
    rows = copy.deepcopy(_recorded("tic.json")["data"])  # no dstArcSec: as Filtered.Tic answers
    first = rows[0]
    target = Target("t", first["ra"] + 2.0 / 3600 / math.cos(math.radians(first["dec"])), first["dec"])
    match = choose_tic(rows, target, TessConfig())
    assert match.tic == first["ID"]
    assert match.distance_arcsec == pytest.approx(2.0, abs=1e-3)


# ------------------------------------------------------------------ observations and products


def test_hst_observations_are_not_tess() -> None:
    assert observation_cadences(_recorded("caom.json")["data"], 55652896) == {}


def test_one_lightcurve_per_sector_preferring_120_s() -> None:
    rows = [
        _tess_observation(55652896, 11, 120.0),
        _tess_observation(55652896, 12, 20.0),
        _tess_observation(99, 13, 120.0),  # another star
    ]
    cadences = observation_cadences(rows, 55652896)
    assert cadences == {"11": 120.0, "12": 20.0}
    products = [
        _product(12, "tess2018206045859-s0001-0000000055652896-0120-x_lc.fits"),  # sector 1, 20 s
        _product(11, "tess2018206045859-s0001-0000000055652896-0120-s_lc.fits"),  # sector 1, 120 s
        _product(11, "tess2018206045859-s0001-0000000055652896-0120-s_tp.fits"),  # pixels
        _product(12, "tess2020-s0027-0000000055652896-0189-a_fast-lc.fits"),  # 20 s SPOC: not *_lc
        _product(12, "../../escape/tess2018234235059-s0002-0000000055652896-0121-s_lc.fits"),
        _product(13, "tess2018263035959-s0003-0000000055652896-0123-s_lc.fits"),  # not ours
    ]
    chosen = select_lightcurves(products, cadences)
    assert chosen == [
        LightcurveProduct(
            "tess2018206045859-s0001-0000000055652896-0120-s_lc.fits",
            "mast:TESS/product/tess2018206045859-s0001-0000000055652896-0120-s_lc.fits",
            1,
            120.0,
        ),
        LightcurveProduct(
            "tess2018234235059-s0002-0000000055652896-0121-s_lc.fits",
            "mast:TESS/product/../../escape/tess2018234235059-s0002-0000000055652896-0121-s_lc.fits",
            2,
            20.0,
        ),
    ]


@pytest.mark.parametrize(
    ("name", "sector"),
    [
        ("tess2018206045859-s0001-0000000261136679-0120-s_lc.fits", 1),
        ("tess2022-s0055-0000000261136679-0242-s_lc.fits", 55),
        ("hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits", 1),
        ("my_lc.fits", None),
    ],
)
def test_sector_from_name(name: str, sector: int | None) -> None:
    assert sector_from_name(name) == sector


# ------------------------------------------------------------------ FITS checks


@pytest.mark.parametrize("path", [ALERT, PI_MEN])
def test_complete_files_are_accepted(path: Path) -> None:
    primary, table_header, data = _table(path)
    headers, columns = read_lightcurve_file(path, "PDCSAP_FLUX")
    for key in ("TICID", "SECTOR", "CAMERA", "CCD", "TESSMAG", "RA_OBJ", "DEC_OBJ"):
        assert headers[key] == primary[key], key
    for key in ("TIMEDEL", "BJDREFI", "BJDREFF", "TIMESYS"):
        assert headers[key] == table_header[key], key
    assert headers["exposure_s"] == pytest.approx(table_header["TIMEDEL"] * 86400 * table_header["DEADC"])
    assert headers["cadence_s"] == pytest.approx(120.0)
    assert len(columns["TIME"]) == table_header["NAXIS2"] == len(data)
    json.dumps(headers)  # stored as JSON attributes


@pytest.mark.parametrize(
    ("path", "why"),
    [(CUT_IN_DATA, "cut short: 22548 of 31680 bytes"), (CUT_IN_HEADER, "the header of HDU 1 is cut short")],
)
def test_cut_files_are_rejected(path: Path, why: str) -> None:
    with pytest.raises(MalformedResponse, match=why):
        read_lightcurve_file(path, "PDCSAP_FLUX", source="pi Men")


def test_a_file_cut_at_an_hdu_boundary_or_inside_the_last_hdu_is_rejected(tmp_path: Path) -> None:
    data = ALERT.read_bytes()
    with fits.open(ALERT, memmap=False) as hdul:
        aperture = hdul.fileinfo(2)
    cut = tmp_path / "cut_lc.fits"
    cut.write_bytes(data[: aperture["hdrLoc"]])  # the lightcurve is whole, the aperture HDU missing
    with pytest.raises(MalformedResponse, match="1 of 2 extensions"):
        read_lightcurve_file(cut, "PDCSAP_FLUX")
    cut.write_bytes(data[:-2880])  # the last block of the aperture image
    with pytest.raises(MalformedResponse, match=f"cut short: {len(data) - 2880} of {len(data)} bytes"):
        read_lightcurve_file(cut, "PDCSAP_FLUX")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html><body>Service Unavailable</body></html>", "the header of HDU 0 is cut short"),
        (b"x" * 6000, "the header of HDU 0 is cut short"),  # no END card in two whole blocks
        (b"", "empty file"),
    ],
)
def test_what_is_not_fits_is_rejected(tmp_path: Path, body: bytes, why: str) -> None:
    (tmp_path / "page_lc.fits").write_bytes(body)
    with pytest.raises(MalformedResponse, match=why):
        read_lightcurve_file(tmp_path / "page_lc.fits", "PDCSAP_FLUX")


def test_a_file_without_the_flux_column_is_permanent(tmp_path: Path) -> None:
    with fits.open(PI_MEN, memmap=False) as hdul:
        hdul[1].columns.del_col("PDCSAP_FLUX")
        broken = fits.HDUList(
            [hdul[0].copy(), fits.BinTableHDU(hdul[1].data, hdul[1].header), hdul[2].copy()]
        )
        broken.writeto(tmp_path / "no_pdc_lc.fits")
    with pytest.raises(
        PermanentFetchError, match=r"expected column 'PDCSAP_FLUX' in HDU 1 of no_pdc_lc\.fits"
    ):
        read_lightcurve_file(tmp_path / "no_pdc_lc.fits", "PDCSAP_FLUX")
    headers, _ = read_lightcurve_file(tmp_path / "no_pdc_lc.fits", "SAP_FLUX")
    assert headers["TICID"] == 261136679


def test_the_download_request_checks_the_file(tmp_path: Path) -> None:
    """The port runs the request's check: a broken file raises MalformedResponse (retried there)."""
    cfg = TessConfig(base_url=BASE)
    path = tmp_path / "pimen_lc.fits"
    check = functools.partial(checked_headers, flux_column="PDCSAP_FLUX", source="pi Men")
    request = build_download_request(cfg, "mast:TESS/product/pimen_lc.fits", path, check=check)
    assert request.stream_to == str(path) and request.check is check
    for broken in (CUT_IN_DATA, CUT_IN_HEADER):
        _write(str(path), broken.read_bytes())
        with pytest.raises(MalformedResponse, match=r"broken lightcurve file pimen_lc\.fits for pi Men"):
            request.check(str(path))
    _write(str(path), PI_MEN.read_bytes())
    assert request.check(str(path))["TICID"] == 261136679


async def test_download_returns_what_the_port_checked(tmp_path: Path) -> None:
    adapter = TessAdapter(TessConfig(base_url=BASE))
    product = LightcurveProduct("pimen_lc.fits", "mast:TESS/product/pimen_lc.fits", 1, 120.0)
    port = ScriptedPort([PI_MEN.read_bytes()])
    path, headers = await adapter._download(port, product, tmp_path, "pi Men")
    assert _bytes(path) == _bytes(PI_MEN)
    assert headers["TICID"] == 261136679 and headers["SECTOR"] == 1
    assert len(port.requests) == 1


# ------------------------------------------------------------------ fetch with a fake port


def _mast_for(tic: int, rows: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Answers for one star whose file is the recorded alert lightcurve."""
    name = ALERT.name
    return {
        TIC_CONE: [_complete(rows if rows is not None else _tic_rows([0.5, 40.0], [None, None]))],
        CAOM_FILTERED: [_complete([_tess_observation(tic, 501, 120.0)])],
        CAOM_PRODUCTS: [_complete([_product(501, name), _product(501, name.replace("_lc", "_tp"))])],
        TIC_BY_ID: [_complete(_tic_rows([0.0], [None]))],
    }


async def test_fetch_downloads_the_kept_file(tmp_path: Path) -> None:
    tic = 10000732589  # the first recorded TIC row
    port = RoutingPort(_mast_for(tic), {ALERT.name: ALERT})
    port.scratch_dir = str(tmp_path)
    fetched = await TessAdapter(TessConfig(base_url=BASE)).fetch(STAR, port)
    assert port.services_asked() == [TIC_CONE, CAOM_FILTERED, CAOM_PRODUCTS]
    assert _payload(port.requests[1])["params"] == caom_params(tic)
    assert _payload(port.requests[2])["params"] == {"obsid": "501"}
    assert fetched.body == b"" and fetched.no_data_reason is None
    assert fetched.meta["tic"] == tic and fetched.meta["tic_distance_arcsec"] == 0.5
    assert fetched.meta["sectors"] == [1]
    assert fetched.meta["products"] == [ALERT.name]
    (path,) = fetched.meta["files"]
    assert Path(path).parent.parent == tmp_path and _bytes(path) == _bytes(ALERT)
    assert fetched.meta["headers"][0]["TICID"] == 55652896
    assert fetched.url == f"{BASE}/api/v0.1/Download/file?uri=mast%3ATESS%2Fproduct%2F{ALERT.name}"
    json.dumps(dict(fetched.meta))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda m: m.update({TIC_CONE: [_complete(_tic_rows([30.0], [None]))]}),
            "no TIC star within 10 arcsec",
        ),
        (
            lambda m: m.update({CAOM_FILTERED: [_complete([])]}),
            "MAST has no TESS timeseries of TIC 10000732589",
        ),
        (
            lambda m: m.update({CAOM_PRODUCTS: [_complete([_product(501, "x_tp.fits")])]}),
            "no SPOC lightcurve (*_lc.fits) among 1 products of TIC 10000732589",
        ),
    ],
)
async def test_fetch_without_data(change: Callable[[dict[str, Any]], None], reason: str) -> None:
    services = _mast_for(10000732589)
    change(services)
    port = RoutingPort(services, {})
    fetched = await TessAdapter(TessConfig(base_url=BASE)).fetch(STAR, port)
    assert fetched.body is None
    assert fetched.no_data_reason is not None and fetched.no_data_reason.startswith(reason)
    assert all(r.stream_to is None for r in port.requests)


async def test_fetch_by_tic_names_the_source_from_the_tic_row(tmp_path: Path) -> None:
    tic = 10000732589
    port = RoutingPort(_mast_for(tic), {ALERT.name: ALERT})
    adapter = TessAdapter(TessConfig(base_url=BASE))
    fetched = await adapter.fetch_by_tic(tic, port)
    first = _recorded("tic.json")["data"][0]
    assert fetched.target == Target(f"TIC {tic}", first["ra"], first["dec"], ids=(("tic", str(tic)),))
    assert port.services_asked() == [TIC_BY_ID, CAOM_FILTERED, CAOM_PRODUCTS]
    assert _payload(port.requests[0])["params"] == tic_id_params(tic)
    adapter.parse(fetched)  # removes the scratch files
    known = Target("WD from catalog", 1.0, 2.0)
    port = RoutingPort(_mast_for(tic), {ALERT.name: ALERT})
    fetched = await adapter.fetch_by_tic(tic, port, known)
    assert fetched.target is known and port.services_asked() == [CAOM_FILTERED, CAOM_PRODUCTS]
    adapter.parse(fetched)
    # a target that carries its TIC id is fetched without a cone search
    given = Target("WD with a TIC", 1.0, 2.0, ids=(("tic", str(tic)),))
    port = RoutingPort(_mast_for(tic), {ALERT.name: ALERT})
    fetched = await adapter.fetch(given, port)
    assert port.services_asked() == [CAOM_FILTERED, CAOM_PRODUCTS] and fetched.meta["tic"] == tic
    adapter.parse(fetched)
    with pytest.raises(PermanentFetchError, match="no star with ID 42"):
        await adapter.fetch_by_tic(42, RoutingPort({TIC_BY_ID: [_complete([])]}, {}))


async def test_a_failed_download_leaves_no_scratch_files(tmp_path: Path) -> None:
    port = RoutingPort(_mast_for(10000732589), {ALERT.name: CUT_IN_DATA})
    port.scratch_dir = str(tmp_path)
    with pytest.raises(MalformedResponse):
        await TessAdapter(TessConfig(base_url=BASE, max_attempts=2)).fetch(STAR, port)
    assert _listing(tmp_path) == []


def test_no_data_reason() -> None:
    assert (
        no_data_reason(Target("a", 1, 2, mag=17.5), 16.0)
        == "fainter than limiting magnitude (mag 17.500 > 16.0)"
    )
    assert no_data_reason(Target("a", 1, 2, mag=15.5), 16.0) is None
    assert no_data_reason(Target("a", 1, 2, mag=None), 16.0) is None
    assert no_data_reason(Target("a", 1, 2, mag=25.0)) is None  # no limit configured
    assert TessAdapter(TessConfig()).no_data_reason(Target("a", 1, 2, mag=25.0)) is None
    limited = TessAdapter(TessConfig(limiting_magnitude=16.0))
    assert (
        limited.no_data_reason(Target("a", 1, 2, mag=17.5))
        == "fainter than limiting magnitude (mag 17.500 > 16.0)"
    )


# ------------------------------------------------------------------ parse and reduce on real files


def _fetched(tmp_path: Path, *paths: Path) -> Fetched:
    copies: list[str] = []
    for path in paths:
        folder = tmp_path / f"scratch-{len(copies)}"
        folder.mkdir()
        copies.append(str(shutil.copy(path, folder)))
    return Fetched(STAR, b"", meta={"files": copies})


def _expected(path: Path, flux: str = "PDCSAP_FLUX", mask: int = DEFAULT_MASK) -> dict[str, Any]:
    """What the reduction must give, computed from astropy's reading of the file."""
    primary, header, data = _table(path)
    time = np.asarray(data["TIME"], dtype=float)
    values = np.asarray(data[flux], dtype=float)
    quality = np.asarray(data["QUALITY"])
    finite = np.isfinite(time) & np.isfinite(values)
    keep = finite & ((quality & mask) == 0)
    return {
        "keep": keep,
        "nan_time": int(np.isnan(time).sum()),
        "masked": int((finite & ((quality & mask) != 0)).sum()),
        "mjd": time[keep] + 2457000.0 - 2400000.5,
        "flux": values[keep],
        "tessmag": primary["TESSMAG"],
        "exposure_s": header["TIMEDEL"] * 86400.0 * header["DEADC"],
    }


def test_parse_builds_one_native_table_and_removes_the_files(tmp_path: Path) -> None:
    fetched = _fetched(tmp_path, ALERT, PI_MEN)
    adapter = TessAdapter(TessConfig())
    raw = adapter.parse(fetched)
    _, _, alert = _table(ALERT)
    _, _, pimen = _table(PI_MEN)
    assert len(raw) == len(alert) + len(pimen) == 20176
    assert list(raw.columns) == [*alert.names, *TABLE_HEADERS]
    assert all(raw[name].to_numpy().dtype.isnative for name in raw.columns)
    np.testing.assert_array_equal(raw["TIME"].to_numpy()[: len(alert)], alert["TIME"])
    assert raw["SECTOR"].unique().tolist() == [1]
    assert sorted(raw["TICID"].unique().tolist()) == [55652896, 261136679]
    assert raw["BJDREFI"].unique().tolist() == [2457000]
    for path in fetched.meta["files"]:
        assert not Path(path).exists() and not Path(path).parent.exists()


def test_reduce_the_alert_sector(tmp_path: Path) -> None:
    adapter = TessAdapter(TessConfig())
    raw = adapter.parse(_fetched(tmp_path, ALERT))
    expected = _expected(ALERT)
    assert expected["nan_time"] == 815 and expected["masked"] > 0
    (lc,) = adapter.reduce(raw, STAR)
    data = lc.data
    assert len(data) == int(expected["keep"].sum())
    assert not data["mjd"].isna().any()  # none of the 815 NaN-time rows
    assert (data["quality"].to_numpy() & DEFAULT_MASK == 0).all()
    np.testing.assert_allclose(data["mjd"].to_numpy(), expected["mjd"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(data["flux"].to_numpy(), expected["flux"], rtol=1e-7)
    np.testing.assert_allclose(data["mag"].to_numpy(), 20.44 - 2.5 * np.log10(expected["flux"]), rtol=1e-9)
    assert lc.filter == "tess"
    assert lc.time_start_mjd == pytest.approx(expected["mjd"].min(), abs=1e-9)
    assert lc.time_end_mjd == pytest.approx(expected["mjd"].max(), abs=1e-9)
    assert lc.time_start_mjd == pytest.approx(1325.2945 + 56999.5, abs=0.01)  # TSTART, in MJD
    meta = lc.meta
    assert (meta["sector"], meta["tic"], meta["camera"], meta["ccd"]) == (1, 55652896, 4, 1)
    assert meta["exposure_s"] == pytest.approx(expected["exposure_s"]) == pytest.approx(95.04)
    assert meta["cadence_s"] == pytest.approx(120.0)
    assert meta["num_dropped_quality"] == expected["masked"]
    measured = 20.44 + expected["tessmag"] - np.median(20.44 - 2.5 * np.log10(expected["flux"]))
    assert meta["measured_zero_point_mag"] == pytest.approx(measured, abs=1e-6)
    assert meta["zero_point_mag"] == 20.44 and meta["tess_mag"] == pytest.approx(11.504)
    json.dumps(meta)


def test_reduce_sap_flux_and_other_masks(tmp_path: Path) -> None:
    raw = read_raw_table([ALERT], "SAP_FLUX")
    for mask in (DEFAULT_MASK, 0, 65535):
        cfg = TessReducerConfig(flux_column="SAP_FLUX", quality_bitmask=mask)
        (lc,) = reduce_lightcurves(raw, STAR, cfg)
        expected = _expected(ALERT, "SAP_FLUX", mask)
        assert len(lc.data) == int(expected["keep"].sum()), mask
        np.testing.assert_allclose(lc.data["flux"].to_numpy(), expected["flux"], rtol=1e-7)


def test_reduce_pi_men(tmp_path: Path) -> None:
    adapter = TessAdapter(TessConfig())
    (lc,) = adapter.reduce(adapter.parse(_fetched(tmp_path, PI_MEN)), STAR)
    expected = _expected(PI_MEN)
    assert len(lc.data) == int(expected["keep"].sum()) == 99  # the first cadence: NaN flux, QUALITY=8
    np.testing.assert_allclose(lc.data["mjd"].to_numpy(), expected["mjd"], rtol=0, atol=1e-9)
    assert lc.meta["tic"] == 261136679 and lc.meta["tess_mag"] == pytest.approx(5.1054)
    assert lc.meta["measured_zero_point_mag"] == pytest.approx(
        20.44 + expected["tessmag"] - np.median(20.44 - 2.5 * np.log10(expected["flux"])), abs=1e-6
    )


def test_sectors_come_out_by_start_time() -> None:
    alert = read_raw_table([ALERT], "PDCSAP_FLUX")
    pimen = read_raw_table([PI_MEN], "PDCSAP_FLUX")
    pimen["SECTOR"] = np.int16(9)
    pimen["TIME"] -= 100.0  # a later sector number, but earlier in time
    curves = reduce_lightcurves(pd.concat([alert, pimen], ignore_index=True), STAR, TessReducerConfig())
    assert [lc.meta["sector"] for lc in curves] == [9, 1]
    assert curves[0].time_end_mjd < curves[1].time_start_mjd


def test_a_sector_without_good_rows_gives_no_lightcurve() -> None:
    raw = read_raw_table([PI_MEN], "PDCSAP_FLUX")
    raw["QUALITY"] = 1
    assert reduce_lightcurves(raw, STAR, TessReducerConfig()) == []


def test_raw_table_round_trips_through_hdf5(tmp_path: Path) -> None:
    adapter = pickle.loads(pickle.dumps(TessAdapter(TessConfig())))  # it travels to the pool
    raw = read_raw_table([ALERT, PI_MEN], "PDCSAP_FLUX")
    headers = [read_lightcurve_file(p, "PDCSAP_FLUX")[0] for p in (ALERT, PI_MEN)]
    write_h5(tmp_path / "raw.h5", {"src": (raw, {"archive": {"headers": headers}})})
    back, attrs = read_h5(tmp_path / "raw.h5", "src")
    assert attrs["archive"]["headers"] == headers
    before, after = adapter.reduce(raw, STAR), adapter.reduce(back, STAR)
    assert [lc.meta for lc in before] == [lc.meta for lc in after]
    for a, b in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(a.data, b.data)
