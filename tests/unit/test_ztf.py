"""ZTF adapter: request building, CSV parsing and reduction, on the real recorded IRSA answer."""

from __future__ import annotations

import base64
import itertools
import math
import pickle
from collections.abc import Coroutine
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import Angle, SkyCoord

from aretriever.adapters.base import Fetched, Request, Response, Target
from aretriever.adapters.ztf import (
    COLUMNS,
    ZtfAdapter,
    build_lightcurve_request,
    cone_radius_deg,
    empty_lightcurve_table,
    no_data_reason,
    oid_medians,
    parse_lightcurve_table,
    reduce_lightcurves,
)
from aretriever.errors import ArchiveErrorPage, MalformedResponse, TransientFetchError
from aretriever.settings import Credentials, ZtfConfig, ZtfReducerConfig
from aretriever.store.hdf5 import frame_to_records, records_to_frame
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.ztf_replay import RECORDED_FILE, recorded_irsa_csv

T = TypeVar("T")
URL = "https://irsa.example/cgi-bin/ZTF/nph_light_curves?POS=CIRCLE+0+51+0.0006"


# ------------------------------------------------------------------ fixtures from the recording


@pytest.fixture(scope="module")
def body() -> bytes:
    return recorded_irsa_csv(DATA_DIR)


@pytest.fixture(scope="module")
def recorded() -> pd.DataFrame:
    """The recorded file as AstroRetriever saved it, read by pandas on its own."""
    return pd.read_csv(DATA_DIR / RECORDED_FILE)


@pytest.fixture()
def parsed(body: bytes) -> np.ndarray[Any, Any]:
    return parse_lightcurve_table(body, source="WD", url=URL)


@pytest.fixture()
def raw(parsed: np.ndarray[Any, Any]) -> pd.DataFrame:
    """The parsed table as a DataFrame (what notebooks hand the reducer), for pandas-made checks."""
    return records_to_frame(parsed)


def _median_position(frame: pd.DataFrame) -> SkyCoord:
    """Wrap-safe median position, done with astropy (independent of the adapter's code)."""
    ra = Angle(frame["ra"].to_numpy(), u.deg)
    ref = ra[0]
    offsets = (ra - ref).wrap_at(180 * u.deg)
    return SkyCoord((ref + np.median(offsets)).wrap_at(360 * u.deg), np.median(frame["dec"]) * u.deg)


def _good(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["catflags"] == 0) & frame["mag"].notna()]


def _expected_oids(frame: pd.DataFrame, target: Target, radius_arcsec: float) -> set[int]:
    here = SkyCoord(target.ra_deg * u.deg, target.dec_deg * u.deg)
    good = _good(frame)
    return {
        int(oid)
        for oid, rows in good.groupby("oid")
        if _median_position(rows).separation(here).arcsec <= radius_arcsec
    }


@pytest.fixture(scope="module")
def star(recorded: pd.DataFrame) -> Target:
    """The recorded star, at the median position of all its good epochs."""
    center = _median_position(_good(recorded))
    return Target("WDJ000000+512337", float(center.ra.deg), float(center.dec.deg), mag=20.28)


# ------------------------------------------------------------------ request building


def test_request_url_and_params() -> None:
    cfg = ZtfConfig(base_url="http://fake.local:8080/")
    request = build_lightcurve_request(Target("a", 12.3456789012, -5.1234567891), cfg)
    assert request.method == "GET"
    assert request.url == "http://fake.local:8080/cgi-bin/ZTF/nph_light_curves"
    params = dict(request.params)
    assert list(params) == ["POS", "BAD_CATFLAGS_MASK", "FORMAT"]
    assert params["BAD_CATFLAGS_MASK"] == "32768"
    assert params["FORMAT"] == "csv"
    shape, ra, dec, radius = params["POS"].split(" ")
    assert shape == "CIRCLE"
    assert abs(float(ra) - 12.3456789012) < 1e-8
    assert abs(float(dec) - -5.1234567891) < 1e-8
    assert float(radius) == pytest.approx(2.0 / 3600, rel=1e-6)
    assert dict(request.headers) == {}
    query = parse_qs(urlsplit(request.display_url()).query)
    assert query["POS"] == [params["POS"]]


def test_radius_grows_with_proper_motion() -> None:
    cfg = ZtfConfig(cone_search_radius_arcsec=2.5)
    target = Target("pm", 10.0, 20.0, pmra_mas_yr=300.0, pmdec_mas_yr=-400.0)  # 500 mas/yr
    assert cone_radius_deg(target, cfg) == pytest.approx((2.5 + 1.5) / 3600, rel=1e-12)
    radius = float(dict(build_lightcurve_request(target, cfg).params)["POS"].split()[3])
    assert radius == pytest.approx(4.0 / 3600, rel=1e-6)


def test_ra_is_sent_in_range() -> None:
    pos = dict(build_lightcurve_request(Target("w", 360.0000001, 1.0), ZtfConfig()).params)["POS"]
    assert 0.0 <= float(pos.split()[1]) < 1e-6


def test_collection_is_sent_when_set() -> None:
    request = build_lightcurve_request(Target("a", 1.0, 2.0), ZtfConfig(collection="ztf_dr23"))
    assert ("COLLECTION", "ztf_dr23") in request.params


def test_credentials_go_in_a_header_only() -> None:
    creds = Credentials(username="alice", password="s3cret-pw")
    request = build_lightcurve_request(Target("a", 1.0, 2.0), ZtfConfig(credentials=creds))
    auth = request.headers["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()
    for shown in (request.display_url(), repr(request), str(request.params)):
        assert "s3cret-pw" not in shown
        assert base64.b64encode(b"alice:s3cret-pw").decode() not in shown


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (Target("south", 10.0, -45.0, mag=15.0), "below minimal declination"),
        (Target("faint", 10.0, 20.0, mag=21.0), "fainter than limiting magnitude"),
        (Target("ok", 10.0, -29.9, mag=20.4), None),
        (Target("nomag", 10.0, 20.0, mag=None), None),
        (Target("nanmag", 10.0, 20.0, mag=math.nan), None),
    ],
)
def test_no_data_reason(target: Target, reason: str | None) -> None:
    found = no_data_reason(target, ZtfConfig())
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason)


# ------------------------------------------------------------------ parsing


def test_parse_real_answer(parsed: np.ndarray[Any, Any], raw: pd.DataFrame, recorded: pd.DataFrame) -> None:
    irsa_columns = list(recorded.columns[1:-4])  # the file's own oid..programid
    assert list(parsed.dtype.names) == irsa_columns == list(COLUMNS)
    assert len(parsed) == 1852
    for name in ("oid", "expid", "catflags", "filefracday", "field", "programid"):
        assert parsed[name].dtype == np.int64, name
    for name in ("hjd", "mjd", "mag", "ra", "dec", "sharp", "exptime", "airmass", "magzp"):
        assert parsed[name].dtype == np.float64, name
    # text as the raw file stores it: bytes, as wide as the longest value
    assert [parsed.dtype[name].str for name in ("filtercode", "ccdid", "qid")] == ["|S2", "|S3", "|S3"]
    assert raw["oid"].value_counts().to_dict() == {
        736215200001589: 531,
        736115200001082: 525,
        805201300017324: 433,
        805101300013289: 344,
        736315200051262: 19,
    }
    assert raw["filtercode"].value_counts().to_dict() == {"zr": 964, "zg": 869, "zi": 19}
    assert set(raw["qid"]) == {"0x2", "0x3"}  # kept as IRSA's hex text
    assert set(raw["ccdid"]) == {"0xf", "0x1"}
    assert raw["hjd"].to_numpy() == pytest.approx(recorded["hjd"].to_numpy(), abs=0, rel=0)
    assert raw["mjd"].min() == pytest.approx(58246.4848032)


def test_header_only_is_an_empty_table(body: bytes) -> None:
    header = body[: body.index(b"\n") + 1]
    empty = parse_lightcurve_table(header)
    assert len(empty) == 0
    assert list(empty.dtype.names) == list(COLUMNS)
    assert empty["oid"].dtype == np.int64
    assert empty["mag"].dtype == np.float64
    assert empty["filtercode"].dtype == np.dtype("S1")  # as the writer stored an empty text column
    assert empty.dtype == empty_lightcurve_table().dtype


@pytest.mark.parametrize(
    ("page", "quoted"),
    [
        (
            b"\n  <html><head><title>Error</title><style>p {color: red}</style></head>"
            b"<body><h1>Error</h1><p>Invalid POS: could not parse CIRCLE</p></body></html>",
            "Invalid POS: could not parse CIRCLE",
        ),
        (
            b'<?xml version="1.0"?><VOTABLE version="1.3"><RESOURCE type="results">'
            b'<INFO name="QUERY_STATUS" value="ERROR">Table ztf_dr99 does not exist</INFO>'
            b"</RESOURCE></VOTABLE>",
            "Table ztf_dr99 does not exist",
        ),
    ],
)
def test_error_pages(page: bytes, quoted: str) -> None:
    with pytest.raises(ArchiveErrorPage) as caught:
        parse_lightcurve_table(page, source="WDJ000006.33+512226.63", url=URL)
    message = str(caught.value)
    assert message.startswith("ztf: ")
    assert "WDJ000006.33+512226.63" in message
    assert URL in message
    assert quoted in message
    assert caught.value.url == URL


def test_text_that_is_not_irsa_csv() -> None:
    with pytest.raises(ArchiveErrorPage, match="expected IRSA's columns"):
        parse_lightcurve_table(b"ERROR: service down for maintenance\n", source="s", url=URL)
    with pytest.raises(ArchiveErrorPage, match="expected IRSA's columns"):
        parse_lightcurve_table(b"a,b,c\n1,2,3\n", source="s", url=URL)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_body_cut_mid_line_is_malformed(body: bytes, fraction: float) -> None:
    cut = int(len(body) * fraction)
    if body[cut - 1 : cut] == b"\n":
        cut -= 5
    with pytest.raises(MalformedResponse) as caught:
        parse_lightcurve_table(body[:cut], source="WD", url=URL)
    assert isinstance(caught.value, TransientFetchError)
    assert "WD" in str(caught.value) and URL in str(caught.value)


def test_body_cut_after_a_comma_is_malformed(body: bytes) -> None:
    last_comma = body.rstrip(b"\n").rindex(b",")
    with pytest.raises(MalformedResponse):
        parse_lightcurve_table(body[: last_comma + 1])


@pytest.mark.parametrize("cut", [0, 1, 40])
def test_body_cut_in_header_is_malformed(body: bytes, cut: int) -> None:
    with pytest.raises(MalformedResponse):
        parse_lightcurve_table(body[:cut])


def test_unparseable_number_is_malformed(body: bytes) -> None:
    lines = body.split(b"\n")
    fields = lines[10].split(b",")
    fields[4] += b"x"  # mag
    lines[10] = b",".join(fields)
    with pytest.raises(MalformedResponse, match=r"mag|double"):
        parse_lightcurve_table(b"\n".join(lines))


# ------------------------------------------------------------------ reduction


def test_seasons_and_filters(raw: pd.DataFrame, star: Target) -> None:
    cfg = ZtfReducerConfig()
    curves = reduce_lightcurves(raw, star, cfg)
    # expected, independently: good rows of matching oids, seasons cut at gaps > gap_days
    kept = _good(raw)[_good(raw)["oid"].isin(_expected_oids(raw, star, cfg.radius_arcsec))]
    mjd = np.sort(kept["mjd"].to_numpy())
    season_starts = mjd[np.r_[0, np.flatnonzero(np.diff(mjd) > cfg.gap_days) + 1]]
    season_of = np.searchsorted(season_starts, kept["mjd"].to_numpy(), side="right") - 1
    pairs = set(zip(season_of.tolist(), kept["filtercode"].tolist(), strict=True))
    assert len(season_starts) >= 3
    assert len(curves) == len(pairs) == 10
    assert sum(len(lc.data) for lc in curves) == len(kept)
    for lc in curves:
        data = records_to_frame(lc.data)
        assert list(data.columns) == list(COLUMNS)
        assert data["filtercode"].nunique() == 1 and data["filtercode"].iloc[0] == lc.filter
        assert data["mjd"].is_monotonic_increasing
        assert data.index.equals(pd.RangeIndex(len(data)))
        assert lc.time_start_mjd == data["mjd"].iloc[0]
        assert lc.time_end_mjd == data["mjd"].iloc[-1]
        assert lc.meta["oids"] == sorted(set(data["oid"].tolist()))
        assert lc.meta["season"] == int(np.searchsorted(season_starts, lc.time_start_mjd, "right") - 1)
    starts = [(lc.time_start_mjd, lc.filter) for lc in curves]
    assert starts == sorted(starts)
    for earlier, later in itertools.pairwise(curves):
        if later.meta["season"] != earlier.meta["season"]:
            assert later.meta["season"] == earlier.meta["season"] + 1
    by_season: dict[int, list[float]] = {}
    for lc in curves:
        by_season.setdefault(lc.meta["season"], []).extend([lc.time_start_mjd, lc.time_end_mjd])
    for k in range(1, len(by_season)):
        assert min(by_season[k]) - max(by_season[k - 1]) > cfg.gap_days


def test_ra_wrap_keeps_oids_on_both_sides(raw: pd.DataFrame, star: Target) -> None:
    straddling = {
        int(oid) for oid, rows in raw.groupby("oid") if (rows["ra"] < 1).any() and (rows["ra"] > 359).any()
    }
    assert len(straddling) == 3  # the recording sits on RA 0/360
    expected = _expected_oids(raw, star, 3.0)
    assert straddling <= expected
    kept = {oid for lc in reduce_lightcurves(raw, star, ZtfReducerConfig()) for oid in lc.meta["oids"]}
    assert kept == expected


@pytest.mark.parametrize("target_ra", [0.0, 359.9999999, 1e-7])
def test_ra_wrap_with_rows_split_evenly(raw: pd.DataFrame, star: Target, target_ra: float) -> None:
    # Move the recording so the star sits exactly on RA 0: about half of each oid's epochs land
    # near 359.9999 and half near 0.0001, where a naive median would point at RA ~180.
    moved = raw.assign(ra=(raw["ra"] - star.ra_deg) % 360.0)
    assert 0.2 < (moved["ra"] < 180).mean() < 0.8
    target = Target("on-zero", target_ra, star.dec_deg, mag=star.mag)
    expected = _expected_oids(moved, target, 3.0)
    kept = {oid for lc in reduce_lightcurves(moved, target, ZtfReducerConfig()) for oid in lc.meta["oids"]}
    assert kept == expected == _expected_oids(raw, star, 3.0)


def test_oid_medians_straddling_ra_zero(raw: pd.DataFrame) -> None:
    # Each oid moved so that its median sits on RA 0 with as many epochs just below 360 as just
    # above 0: a plain median of the RA values would say RA ~180.
    tested = 0
    for oid, all_rows in _good(raw).groupby("oid"):
        rows = all_rows.iloc[: len(all_rows) // 2 * 2]
        ra = rows["ra"].to_numpy()
        offsets = np.sort(Angle(ra - ra[0], u.deg).wrap_at(180 * u.deg).deg)
        half = len(offsets) // 2
        if offsets[half - 1] == offsets[half]:
            continue
        moved = (ra - ra[0] - (offsets[half - 1] + offsets[half]) / 2) % 360.0
        assert (moved < 180).sum() == (moved > 180).sum()
        assert abs(np.median(moved) - 180.0) < 1.0  # the trap
        oids, median_ra, median_dec, _ = oid_medians(
            rows["oid"].to_numpy(), moved, rows["dec"].to_numpy(), rows["mag"].to_numpy()
        )
        assert oids.tolist() == [oid]
        assert Angle(median_ra[0], u.deg).wrap_at(180 * u.deg).deg == pytest.approx(0, abs=1e-9)
        assert median_dec[0] == np.median(rows["dec"])
        tested += 1
    assert tested >= 2


def test_target_elsewhere_gives_nothing(raw: pd.DataFrame, star: Target) -> None:
    assert reduce_lightcurves(raw, Target("far", 180.0, 10.0, mag=20.3), ZtfReducerConfig()) == []
    assert reduce_lightcurves(empty_lightcurve_table(), star, ZtfReducerConfig()) == []


def test_radius_cut(raw: pd.DataFrame, star: Target) -> None:
    offset = Target("off", star.ra_deg, star.dec_deg + 5.0 / 3600, mag=star.mag)
    assert reduce_lightcurves(raw, offset, ZtfReducerConfig(radius_arcsec=3.0)) == []
    wide = reduce_lightcurves(raw, offset, ZtfReducerConfig(radius_arcsec=8.0))
    assert {o for lc in wide for o in lc.meta["oids"]} == _expected_oids(raw, offset, 8.0)
    assert len(_expected_oids(raw, offset, 8.0)) == 5


def test_mag_range(raw: pd.DataFrame, star: Target) -> None:
    medians = _good(raw).groupby("oid")["mag"].median()
    target = Target("m", star.ra_deg, star.dec_deg, mag=20.25)
    narrow = reduce_lightcurves(raw, target, ZtfReducerConfig(mag_range=0.02))
    expected = {int(oid) for oid, mag in medians.items() if abs(mag - 20.25) <= 0.02}
    assert 0 < len(expected) < 5
    assert {o for lc in narrow for o in lc.meta["oids"]} == expected
    too_bright = Target("b", star.ra_deg, star.dec_deg, mag=18.0)
    assert reduce_lightcurves(raw, too_bright, ZtfReducerConfig()) == []
    for unchecked in (
        Target("n", star.ra_deg, star.dec_deg, mag=None),
        Target("n", star.ra_deg, star.dec_deg, mag=math.nan),
    ):
        assert (
            len({o for lc in reduce_lightcurves(raw, unchecked, ZtfReducerConfig()) for o in lc.meta["oids"]})
            == 5
        )
    no_range = reduce_lightcurves(raw, too_bright, ZtfReducerConfig(mag_range=None))
    assert len({o for lc in no_range for o in lc.meta["oids"]}) == 5


def test_drop_bad(raw: pd.DataFrame, star: Target) -> None:
    bad = (raw["catflags"] != 0) | raw["mag"].isna()
    assert bad.sum() == 51
    dropped = reduce_lightcurves(raw, star, ZtfReducerConfig(drop_bad=True))
    kept_all = reduce_lightcurves(raw, star, ZtfReducerConfig(drop_bad=False))
    rows_dropped = pd.concat([records_to_frame(lc.data) for lc in dropped])
    rows_all = pd.concat([records_to_frame(lc.data) for lc in kept_all])
    assert (rows_dropped["catflags"] == 0).all() and rows_dropped["mag"].notna().all()
    assert len(rows_dropped) == (~bad).sum()
    assert len(rows_all) == len(raw)
    assert set(rows_all.loc[rows_all["catflags"] != 0, "catflags"]) == {32768, 1, 16, 516}


def test_input_is_not_mutated(raw: pd.DataFrame, star: Target) -> None:
    before = raw.copy(deep=True)
    curves = reduce_lightcurves(raw, star, ZtfReducerConfig(drop_bad=False))
    curves[0].data["mag"][0] = -99.0  # results are not views of the input either
    pd.testing.assert_frame_equal(raw, before)


def test_adapter_and_results_pickle(raw: pd.DataFrame, star: Target) -> None:
    creds = Credentials(username="u", password="p")
    adapter = ZtfAdapter(ZtfConfig(base_url="http://x", credentials=creds))
    clone = pickle.loads(pickle.dumps(adapter))
    assert clone.cfg == adapter.cfg and clone.name == "ztf"
    curves = adapter.reduce(raw, star)
    again = pickle.loads(pickle.dumps(curves))
    assert [lc.filter for lc in again] == [lc.filter for lc in curves]
    assert again[3].data.dtype == curves[3].data.dtype
    np.testing.assert_array_equal(again[3].data, curves[3].data)
    assert again[3].meta == curves[3].meta


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (the port below answers at once), without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise AssertionError("the coroutine waited for something")


class _Port:
    """An HttpPort that answers every request with the recorded body, at once."""

    def __init__(self, body: bytes) -> None:
        self.scratch_dir: str | None = None
        self.body = body
        self.sent: list[Request] = []

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        return Response(200, self.body, request.display_url())

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the ZTF adapter never sleeps")


def test_adapter_fetch_parse_reduce(body: bytes, star: Target) -> None:
    adapter = ZtfAdapter(ZtfConfig(base_url="http://fake"))
    port = _Port(body)
    fetched = _run(adapter.fetch(star, port))
    assert len(port.sent) == 1
    assert fetched.body == body and fetched.url == port.sent[0].display_url()
    table = adapter.parse(fetched)
    assert len(table) == 1852
    assert len(adapter.reduce(table, star)) == 10


def test_adapter_skips_what_ztf_cannot_see(body: bytes) -> None:
    adapter = ZtfAdapter(ZtfConfig())
    port = _Port(body)
    fetched = _run(adapter.fetch(Target("south", 1.0, -60.0), port))
    assert port.sent == []
    assert fetched.body is None
    assert fetched.no_data_reason is not None
    assert fetched.no_data_reason.startswith("below minimal declination")
    assert len(adapter.parse(Fetched(fetched.target, None))) == 0


@pytest.mark.parametrize("wide_ccd", [False, True])
def test_lightcurves_are_what_the_writer_made_of_pandas_frames(
    raw: pd.DataFrame, star: Target, wide_ccd: bool
) -> None:
    if wide_ccd:  # one filter's text one byte wider: only its lightcurves get the wider field
        raw = raw.assign(ccdid=raw["ccdid"].where(raw["filtercode"] != "zr", "0x10"))
    curves = reduce_lightcurves(raw, star, ZtfReducerConfig(drop_bad=False))
    widths = set()
    for lc in curves:
        # independently: the rows picked and ordered by pandas, converted as the HDF5 writer does
        picked = raw[
            raw["oid"].isin(lc.meta["oids"]) & raw["mjd"].between(lc.time_start_mjd, lc.time_end_mjd)
        ]
        expected = frame_to_records(picked.sort_values("mjd", kind="stable").reset_index(drop=True))
        assert isinstance(lc.data, np.ndarray)
        assert lc.data.dtype == expected.dtype and lc.data.tobytes() == expected.tobytes()
        widths.add(lc.data.dtype["ccdid"].itemsize)
    assert widths == ({3, 4} if wide_ccd else {3})
