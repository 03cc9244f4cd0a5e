"""Catalogs without a network: file formats, column maps, look-ups, proper motion, parsers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import Distance, SkyCoord
from astropy.table import Table
from astropy.time import Time
from hypothesis import given, settings
from hypothesis import strategies as st

from aretriever.catalogs.cache import (
    CATALOGS_ENV,
    RemoteOptions,
    cache_is_valid,
    checked_votable,
    resolve_cache_dir,
)
from aretriever.catalogs.core import (
    FileCatalog,
    GeneratedCatalog,
    SearchableCatalog,
    chunk_to_targets,
    open_catalog,
)
from aretriever.catalogs.formats import (
    ParsedTable,
    parse_phase,
    parse_uws_job,
    read_csv_table,
    read_tap_json,
    read_votable,
    row_limit_reason,
)
from aretriever.catalogs.index import SkyIndex, propagate, propagate_frame, wdj_name
from aretriever.catalogs.remote import WD_COLUMNS, remote_kind, rename_map, vizier_request
from aretriever.catalogs.tap import (
    job_url_of,
    poll_delays,
    reference_epoch_yr,
    release_of,
    submit_request,
    with_names,
)
from aretriever.errors import CatalogError
from aretriever.numbers import separation_deg
from aretriever.settings import CatalogConfig, ColumnMap
from aretriever.store.hdf5 import frame_to_records
from aretriever.testing.fake_archive import DATA_DIR
from aretriever.testing.tap_replay import TapJob, job_document, overflow
from aretriever.testing.vizier_replay import WD_FIXTURE, build_wd_fixture, cut_rows

KANG = DATA_DIR / "kang2010.xml"
GAIA_VOT = DATA_DIR / "1710099405832VAL-result.vot"
GAIA_JSON = DATA_DIR / "launch_job.json"
WD_ROWS = read_votable(DATA_DIR / WD_FIXTURE, "wd").frame  # real Gaia rows, WD column names
WD_MAP = ColumnMap(name="WDJname", ra="RA_ICRS", dec="DE_ICRS", mag="Gmag", pmra="pmRA", pmdec="pmDE")


# -------------------------------------------------------------------------- files and column maps


def _write(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=2)
    elif suffix == ".fits":
        Table.from_pandas(frame).write(path)
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("catalog", data=frame_to_records(frame))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits", ".h5"])
def test_every_file_format_streams_the_real_rows_with_a_column_map(tmp_path: Path, suffix: str) -> None:
    path = _write(WD_ROWS, tmp_path / f"wd{suffix}")
    catalog = FileCatalog(path, chunk_rows=2, columns=WD_MAP)
    assert len(catalog) == 3
    chunks = list(catalog.iter_chunks())
    assert [list(c.index) for c in chunks] == [[0, 1], [2]]
    targets, bad = chunk_to_targets(pd.concat(chunks), WD_MAP)
    assert bad == []
    assert [t.name for t in targets] == list(WD_ROWS["WDJname"])
    assert targets[2].ra_deg == 268.0676646661466 and targets[2].dec_deg == 26.50748605871529
    assert targets[2].pmdec_mas_yr == -27.67299135507808
    assert targets[0].mag == pytest.approx(7.0179033, abs=1e-6)
    assert targets[1].mag is None and targets[1].pmra_mas_yr == 0.0  # the JSON row has no G or pm
    assert int(pd.concat(chunks)["GaiaEDR3"].iloc[1]) == 5937144193345094528


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits", ".h5"])
@pytest.mark.parametrize(("start", "stop", "rows"), [(1, None, [1, 2]), (0, 1, [0]), (2, 3, [2]), (1, 1, [])])
def test_start_and_stop_select_row_numbers(
    tmp_path: Path, suffix: str, start: int, stop: int | None, rows: list[int]
) -> None:
    catalog = FileCatalog(_write(WD_ROWS, tmp_path / f"wd{suffix}"), chunk_rows=2, columns=WD_MAP)
    frames = list(catalog.iter_chunks(start, stop))
    got = pd.concat(frames) if frames else pd.DataFrame()
    assert list(got.index) == rows
    assert list(got.get("WDJname", [])) == list(WD_ROWS["WDJname"].iloc[rows])


def test_a_missing_column_is_named_with_the_columns_the_catalog_has() -> None:
    with pytest.raises(CatalogError) as caught:
        chunk_to_targets(WD_ROWS, ColumnMap(name="WDJname", ra="RA", dec="DE_ICRS"))
    assert str(caught.value).startswith("catalog: column 'RA' not found; the catalog has ['WDJname'")


def test_unknown_file_type_and_unknown_catalog_name(tmp_path: Path) -> None:
    odd = tmp_path / "cat.txt"
    odd.write_text("x")
    with pytest.raises(CatalogError, match=r"unknown file type '\.txt'"):
        list(open_catalog(str(odd), CatalogConfig()).iter_chunks())
    with pytest.raises(CatalogError, match=r"'nope' is neither a file nor a known catalog name"):
        open_catalog("nope", CatalogConfig())


def test_test_catalog_stays_available() -> None:
    catalog = open_catalog("test", CatalogConfig(test_size=7, chunk_rows=3))
    assert isinstance(catalog, GeneratedCatalog) and isinstance(catalog, SearchableCatalog)
    assert [len(c) for c in catalog.iter_chunks()] == [3, 3, 1]
    assert catalog.get_row("TEST000004")["name"] == "TEST000004"


@pytest.mark.parametrize("spec", ["wd", "WD", "white_dwarfs", "White Dwarfs"])
def test_white_dwarf_aliases(spec: str) -> None:
    assert remote_kind(spec, RemoteOptions()) == ("wd", "")


def test_gaia_specs() -> None:
    assert remote_kind("gaia: SELECT 1", RemoteOptions()) == ("gaia", "SELECT 1")
    assert remote_kind("adql:SELECT 2", RemoteOptions()) == ("gaia", "SELECT 2")
    assert remote_kind("gaia", RemoteOptions(gaia_query="SELECT 3")) == ("gaia", "SELECT 3")
    with pytest.raises(CatalogError, match="known: test, wd"):
        remote_kind("gaia", RemoteOptions())


def test_wd_columns_are_renamed_to_the_engine_column_map() -> None:
    assert rename_map(WD_COLUMNS, ColumnMap()) == {
        "WDJname": "name", "GaiaEDR3": "source_id", "RA_ICRS": "ra", "DE_ICRS": "dec", "Gmag": "mag",
        "Plx": "parallax", "pmRA": "pmra", "pmDE": "pmdec", "Pwd": "Pwd",
    }  # fmt: skip
    custom = rename_map(WD_COLUMNS, ColumnMap(name="source", ra="RAJ", mag=None))
    assert (custom["WDJname"], custom["RA_ICRS"], custom["Gmag"]) == ("source", "RAJ", "mag")


def test_cache_folder_from_config_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CATALOGS_ENV, raising=False)
    assert resolve_cache_dir(None) == Path("catalogs")
    monkeypatch.setenv(CATALOGS_ENV, str(tmp_path))
    assert RemoteOptions.from_config(CatalogConfig()).cache_dir == tmp_path
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"


# -------------------------------------------------------------------------- look-ups


def _sky_catalog(tmp_path: Path) -> FileCatalog:
    frame = pd.DataFrame(
        {
            "name": ["east", "west", "north", "plain", "twin"],
            "ra": [0.0001, 359.9999, 10.0, 120.0, 120.0],
            "dec": [10.0, 10.0, 89.9999, -45.0, -45.0],
        }
    )
    return FileCatalog(_write(frame, tmp_path / "sky.parquet"), columns=ColumnMap())


def test_get_row_by_number_and_by_name(tmp_path: Path) -> None:
    catalog = FileCatalog(_write(WD_ROWS, tmp_path / "wd.csv"), columns=WD_MAP)
    assert catalog.get_row(1)["GaiaEDR3"] == 5937144193345094528
    assert catalog.get_row("WDJ175216.24+263027.39")["RA_ICRS"] == 268.0676646661466
    with pytest.raises(CatalogError, match=r"row 3 out of range \(the catalog has 3 rows\)"):
        catalog.get_row(3)
    with pytest.raises(
        CatalogError, match=re.escape("catalog: wd.csv: no row named 'WDJ000000.00+000000.00'")
    ):
        catalog.get_row("WDJ000000.00+000000.00")


def test_nearest_row_across_ra_zero(tmp_path: Path) -> None:
    catalog = _sky_catalog(tmp_path)
    near_zero = catalog.get_nearest_row(0.0, 10.0, 1.0)
    assert near_zero is not None and near_zero["name"] in {"east", "west"}
    assert near_zero["distance_arcsec"] == pytest.approx(0.0001 * 3600 * math.cos(math.radians(10)), rel=1e-6)
    west = catalog.get_nearest_row(359.99995, 10.0, 1.0)
    assert west is not None and west["name"] == "west"
    east = catalog.get_nearest_row(360.00005, 10.0, 1.0)  # same place, written past 360
    assert east is not None and east["name"] == "east"


def test_nearest_row_near_the_pole_and_radius_edges(tmp_path: Path) -> None:
    catalog = _sky_catalog(tmp_path)
    pole = catalog.get_nearest_row(190.0, 89.9999, 1.0)  # RA differs by 180 deg, 0.72" apart
    assert pole is not None and pole["name"] == "north"
    exact = float(separation_deg(np.array([120.0]), np.array([-45.0]), 120.0, -45.001)[0]) * 3600
    assert catalog.get_nearest_row(120.0, -45.001, exact * (1 + 1e-9)) is not None
    assert catalog.get_nearest_row(120.0, -45.001, exact * (1 - 1e-9)) is None
    twin = catalog.get_nearest_row(120.0, -45.0, 0.1)
    assert twin is not None and twin["name"] == "plain"  # two rows at one place: the first
    with pytest.raises(CatalogError, match="search radius must be positive"):
        catalog.get_nearest_row(0, 0, 0)


@settings(max_examples=40, deadline=None)
@given(
    ra=st.floats(0, 360, exclude_max=True),
    dec=st.floats(-90, 90),
    radius=st.floats(1, 20_000),
    seed=st.integers(0, 10),
)
def test_sky_index_agrees_with_a_full_scan(ra: float, dec: float, radius: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cat_ra = rng.uniform(0, 360, 500)
    cat_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    found = SkyIndex.build(cat_ra, cat_dec).nearest(ra, dec, radius)
    distance = separation_deg(cat_ra, cat_dec, ra, dec) * 3600
    best = int(np.argmin(distance))
    if distance[best] > radius:
        assert found is None
    else:
        assert found is not None and found[0] == best and found[1] == pytest.approx(distance[best])


# -------------------------------------------------------------------------- proper motion and names


def test_propagation_matches_an_independent_astropy_computation() -> None:
    row = WD_ROWS.iloc[2]  # Gaia DR3 4583627001381815936: a good parallax and proper motion
    ra, dec = propagate(
        np.array([row["RA_ICRS"]]), np.array([row["DE_ICRS"]]), np.array([row["pmRA"]]),
        np.array([row["pmDE"]]), np.array([row["Plx"]]), 2016.0, 2024.5,
    )  # fmt: skip
    reference = SkyCoord(
        ra=row["RA_ICRS"] * u.deg,
        dec=row["DE_ICRS"] * u.deg,
        distance=Distance(parallax=row["Plx"] * u.mas),
        pm_ra_cosdec=row["pmRA"] * u.mas / u.yr,
        pm_dec=row["pmDE"] * u.mas / u.yr,
        obstime=Time("J2016.0"),
    ).apply_space_motion(dt=8.5 * u.year)
    assert SkyCoord(ra[0] * u.deg, dec[0] * u.deg).separation(reference).to(u.uas).value < 1.0
    moved = SkyCoord(ra[0] * u.deg, dec[0] * u.deg).separation(
        SkyCoord(row["RA_ICRS"], row["DE_ICRS"], unit="deg")
    )
    assert moved.to(u.mas).value == pytest.approx(8.5 * math.hypot(row["pmRA"], row["pmDE"]), rel=1e-4)


def test_propagation_without_parallax_or_proper_motion() -> None:
    ra, dec = propagate(np.array([10.0, 20.0]), np.array([5.0, -5.0]), np.array([1000.0, np.nan]),
                        np.array([0.0, np.nan]), None, 2016.0, 2000.0)  # fmt: skip
    assert ra[1] == pytest.approx(20.0, abs=1e-12) and dec[1] == pytest.approx(-5.0, abs=1e-12)
    expected = 10.0 - 16 * 1000.0 / 3.6e6 / math.cos(math.radians(5.0))  # 16 yr at 1"/yr eastward
    assert ra[0] == pytest.approx(expected, abs=1e-9)


def test_propagate_frame_keeps_the_reference_positions() -> None:
    frame = WD_ROWS.rename(columns={"RA_ICRS": "ra", "DE_ICRS": "dec", "pmRA": "pmra", "pmDE": "pmdec"})
    moved = propagate_frame(frame.rename(columns={"Plx": "parallax"}), ColumnMap(), 2016.0, 2026.0)
    assert list(moved["ra_ref"]) == list(frame["ra"])
    assert moved["dec"].iloc[2] == pytest.approx(
        frame["dec"].iloc[2] - 10 * 27.67299135507808 / 3.6e6, abs=1e-8
    )
    assert moved["ra"].iloc[1] == frame["ra"].iloc[1]  # no proper motion: not moved


def test_streaming_can_move_positions_to_an_observation_epoch(tmp_path: Path) -> None:
    from aretriever.catalogs.core import EpochShift

    path = _write(WD_ROWS, tmp_path / "wd.parquet")
    catalog = FileCatalog(path, columns=WD_MAP, epoch=EpochShift(2016.0, 2000.0))
    row = catalog.get_row(2)
    assert row["DE_ICRS_ref"] == 26.50748605871529
    assert row["DE_ICRS"] == pytest.approx(26.50748605871529 + 16 * 27.67299135507808 / 3.6e6, abs=1e-8)


def test_wdj_names_truncate_and_carry_the_sign() -> None:
    assert wdj_name(0.0264, 51.3738) == "WDJ000006.33+512225.68"
    assert wdj_name(359.99999999, -0.5) == "WDJ235959.99-003000.00"
    assert wdj_name(15.0, -0.0000001) == "WDJ010000.00-000000.00"
    assert list(WD_ROWS["WDJname"]) == sorted(WD_ROWS["WDJname"])
    assert WD_ROWS["WDJname"].iloc[2] == "WDJ175216.24+263027.39"  # 16 yr of pm back from 2016


def test_the_wd_fixture_rebuilds_byte_for_byte_from_the_recorded_gaia_rows(shared_data: Path) -> None:
    assert build_wd_fixture(shared_data / "catalogs") == (DATA_DIR / WD_FIXTURE).read_bytes()
    assert build_wd_fixture(DATA_DIR) == (DATA_DIR / WD_FIXTURE).read_bytes()


# -------------------------------------------------------------------------- recorded answers


def test_vizier_votable_kang2010_is_read_and_its_row_limit_named() -> None:
    parsed = read_votable(KANG, "kang")
    assert parsed.table_name == "J/ApJ/706/83/ysos"
    assert len(parsed.frame) == 50 and parsed.frame["SSTGLMC"].iloc[0] == "G048.7567-00.6341"
    assert parsed.info("-out.max") == ["50"]
    assert row_limit_reason(parsed, None) == (
        "VizieR stopped at its row limit: -out.max=50 and 50 rows came back"
    )
    with pytest.raises(
        CatalogError, match=re.escape("catalog: kang: VizieR stopped at its row limit: -out.max=50")
    ):
        checked_votable(KANG, "kang", None, allow_truncated=False)
    assert len(checked_votable(KANG, "kang", None, allow_truncated=True).frame) == 50


def test_gaia_tap_votable_is_read_exactly() -> None:
    parsed = read_votable(GAIA_VOT.read_bytes(), "gaia")
    frame = parsed.frame
    assert len(frame) == 2 and len(frame.columns) == 152
    assert list(frame["source_id"]) == [4583627001381815936, 5348723816842275584]
    assert frame["source_id"].dtype == np.int64
    assert frame["ra"].iloc[1] == 171.55081173633306
    assert parsed.epoch == "J2016.0" and reference_epoch_yr("", parsed.epoch) == 2016.0
    assert parsed.info("QUERY_STATUS") == ["OK"] and parsed.info("JOBID") == ["1710099673321VAL"]
    assert row_limit_reason(parsed, None) is None
    assert row_limit_reason(parsed, 2) == "2 rows came back, as many as the row limit (MAXREC=2)"
    assert list(with_names(frame, "")["name"]) == list(frame["designation"])


def test_an_overflowing_tap_result_names_the_limit() -> None:
    parsed = read_votable(overflow(GAIA_VOT.read_bytes(), 1), "gaia")
    assert len(parsed.frame) == 1
    assert parsed.info("QUERY_STATUS") == ["OK", "OVERFLOW"]
    assert row_limit_reason(parsed, 1) == (
        "the archive says QUERY_STATUS=OVERFLOW: the result was cut at 1 rows (MAXREC=1)"
    )
    assert "the archive's own limit" in str(row_limit_reason(parsed, None))


def test_cut_votables_are_refused(tmp_path: Path) -> None:
    body = (DATA_DIR / WD_FIXTURE).read_bytes()
    with pytest.raises(CatalogError, match="catalog: wd: not a complete VOTable"):
        read_votable(body[: len(body) // 2], "wd")
    cut = tmp_path / "cut.vot"
    cut.write_bytes(body[:-40])
    with pytest.raises(CatalogError, match=r"not a complete VOTable \(\d+ bytes\); not cached"):
        checked_votable(cut, "wd", None, allow_truncated=False)
    one = tmp_path / "one.vot"
    one.write_bytes(cut_rows(body, 1))
    with pytest.raises(CatalogError, match=re.escape("-out.max=1 and 1 rows came back")):
        checked_votable(one, "wd", None, allow_truncated=False)
    empty = tmp_path / "empty.vot"
    empty.write_bytes(cut_rows(body, 0))
    with pytest.raises(CatalogError, match="no rows"):
        checked_votable(empty, "wd", None, allow_truncated=True)


def test_gaia_tap_json_keeps_64_bit_ids() -> None:
    frame = read_tap_json(GAIA_JSON.read_bytes(), "gaia")
    assert list(frame.columns) == ["source_id", "ra", "dec", "parallax"]
    assert frame["source_id"].iloc[0] == 5937144193345094528 and frame["source_id"].dtype == np.int64
    assert frame["parallax"].iloc[0] == 0.029992199777711163
    named = with_names(frame, "SELECT source_id, ra, dec FROM gaiadr3.gaia_source")
    assert named["name"].iloc[0] == "Gaia DR3 5937144193345094528"
    with pytest.raises(CatalogError, match="not a TAP JSON result"):
        read_tap_json(b'{"data": []}', "gaia")


def test_csv_results_and_missing_coordinates() -> None:
    frame = read_csv_table(
        b"source_id,ra,dec\n5937144193345094528,251.46088614856114,-50.77147594086373\n", "g"
    )
    assert frame["source_id"].iloc[0] == 5937144193345094528
    with pytest.raises(
        CatalogError, match=r"catalog: gaia: column 'dec' not found; the query returned \['ra'\]"
    ):
        with_names(pd.DataFrame({"ra": [1.0]}), "")


# -------------------------------------------------------------------------- requests and jobs (pure)


def test_vizier_request_asks_for_the_whole_table_uncompressed() -> None:
    request = vizier_request("https://vizier.cds.unistra.fr/", "J/MNRAS/508/3877/maincat", ["WDJname", "Pwd"])
    assert request.url == "https://vizier.cds.unistra.fr/viz-bin/votable"
    assert dict(request.params) == {
        "-source": "J/MNRAS/508/3877/maincat", "-out": "WDJname,Pwd", "-out.max": "unlimited"
    }  # fmt: skip
    assert request.headers["Accept-Encoding"] == "identity"


def test_tap_submit_and_job_urls() -> None:
    request = submit_request("https://gea.esac.esa.int/tap-server/tap", "SELECT 1", "votable", 10)
    assert (request.method, request.url) == ("POST", "https://gea.esac.esa.int/tap-server/tap/async")
    assert request.data == {
        "REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "votable", "PHASE": "RUN", "QUERY": "SELECT 1",
        "MAXREC": "10",
    }  # fmt: skip
    with pytest.raises(CatalogError, match="result format 'fits'"):
        submit_request("x", "SELECT 1", "fits")
    job = parse_uws_job(job_document(TapJob("17X", "q", "votable", None, "EXECUTING", 1), "u"), "g")
    assert job_url_of("http://h/tap/async/17X", "http://h/tap", job) == "http://h/tap/async/17X"
    assert job_url_of("http://h/tap/async", "http://h/tap/", job) == "http://h/tap/async/17X"


def test_uws_job_documents_and_phases() -> None:
    done = TapJob(
        "1710099405832VAL", "SELECT 1", "votable", 5, "ERROR", 0, "table not found", {"maxrec": "5"}
    )
    job = parse_uws_job(job_document(done, "http://h/tap/async/1710099405832VAL"), "gaia")
    assert (job.job_id, job.phase, job.error, job.parameters) == (
        "1710099405832VAL", "ERROR", "table not found", {"maxrec": "5"}
    )  # fmt: skip
    assert parse_phase(b"EXECUTING\n") == "EXECUTING"
    with pytest.raises(CatalogError, match="not a UWS job document"):
        parse_uws_job(b"<html>", "gaia")


def test_polling_backs_off_up_to_a_ceiling_within_the_deadline() -> None:
    assert list(poll_delays(1.0, 3.0, 12.0)) == [1.0, 1.5, 2.25, 3.0, 3.0]
    assert sum(poll_delays(0.5, 30.0, 3600.0)) <= 3600.0
    assert list(poll_delays(5.0, 5.0, 4.0)) == []


def test_gaia_release_and_epoch_from_the_query() -> None:
    assert release_of("select * from gaiadr3.gaia_source") == "DR3"
    assert release_of("SELECT * FROM gaiaedr3.gaia_source") == "EDR3"
    assert reference_epoch_yr("SELECT * FROM gaiadr2.gaia_source") == 2015.5
    assert reference_epoch_yr("SELECT * FROM gaiadr3.gaia_source") == 2016.0


def test_parsed_table_infos() -> None:
    parsed = ParsedTable(pd.DataFrame({"a": [1]}), (("X", "1"), ("X", "2")))
    assert parsed.info("X") == ["1", "2"] and parsed.info("Y") == []


def test_a_corrupt_cache_file_is_not_valid(tmp_path: Path) -> None:
    path = _write(WD_ROWS, tmp_path / "wd.parquet")
    assert cache_is_valid(path, {"WDJname"})
    assert not cache_is_valid(path, {"WDJname", "nope"})
    path.write_bytes(path.read_bytes()[:-20])
    assert not cache_is_valid(path, {"WDJname"})
    assert not cache_is_valid(tmp_path / "absent.parquet", set())


class _CatalogConfigWithRemoteFields(CatalogConfig):
    """CatalogConfig as the proposed settings diff makes it (see the catalog report)."""

    cache_dir: Path | None = None
    vizier_url: str = "https://vizier.cds.unistra.fr"
    tap_max_rows: int | None = None
    pm_epoch_yr: float | None = None


def test_remote_options_follow_config_fields_once_they_exist(tmp_path: Path) -> None:
    cfg = _CatalogConfigWithRemoteFields(
        cache_dir=tmp_path, vizier_url="http://127.0.0.1:1", tap_max_rows=5, pm_epoch_yr=2020.0
    )
    opts = RemoteOptions.from_config(cfg)
    assert (opts.cache_dir, opts.vizier_url, opts.tap_max_rows, opts.pm_epoch_yr) == (
        tmp_path, "http://127.0.0.1:1", 5, 2020.0
    )  # fmt: skip
    assert opts.gaia_tap_url == "https://gea.esac.esa.int/tap-server/tap"  # not in cfg: default
