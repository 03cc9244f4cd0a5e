"""SkyPortal export: real ZTF and TESS lightcurves -> photometric-series HDF5, read back.

The file layout mirrors what pandas 3.1.1 + PyTables 3.11.1 write for
``HDFStore.put(key, df, format="table", index=None, track_times=False)`` (checked by reading our
files with ``pd.HDFStore`` and comparing node by node with a file pandas wrote). PyTables is not a
dependency, so most tests read the file with h5py, decoding the pandas layout by hand the way
pandas does; ``test_pandas_hdfstore_reads_it_like_skyportal`` runs where PyTables is installed.
"""

from __future__ import annotations

import base64
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from aretriever.adapters import tess
from aretriever.adapters.base import Target
from aretriever.errors import WriteError
from aretriever.export import DEFAULT_KEY, ExportError, sncosmo_band, to_skyportal
from aretriever.settings import TessReducerConfig

COLUMNS = ["mjd", "mag", "magerr", "limiting_mag", "magsys", "filter", "flux", "fluxerr", "zp"]


@pytest.fixture
def ztf(ztf_csv: Path) -> pd.DataFrame:
    return pd.read_csv(ztf_csv)


@pytest.fixture
def ztf_r(ztf: pd.DataFrame) -> pd.DataFrame:
    return ztf[ztf["filtercode"] == "zr"].reset_index(drop=True)


@pytest.fixture
def tess_lc(shared_data: Path) -> pd.DataFrame:
    path = shared_data / "tess" / "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits"
    raw = tess.read_raw_table([path], "PDCSAP_FLUX")
    (lc,) = tess.reduce_lightcurves(raw, Target("TIC 55652896", 0.0, 0.0), TessReducerConfig())
    assert lc.filter == "tess"
    return lc.data


def _unpickle(value: Any) -> Any:
    return pickle.loads(bytes(value))  # our own file: the attributes are pickles we wrote


def _read_with_h5py(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Decode the pandas ``frame_table`` layout: one column list per ``values_block_<i>``."""
    with h5py.File(path, "r") as h5:
        (key,) = list(h5)
        group = h5[key]
        assert group.attrs["pandas_type"] == b"frame_table"
        assert group.attrs["table_type"] == b"appendable_frame"
        table = group["table"]
        assert table.attrs["CLASS"] == b"TABLE"
        records = table[()]
        columns: dict[str, np.ndarray] = {}
        for block in _unpickle(group.attrs["values_cols"]):
            names = _unpickle(table.attrs[f"{block}_kind"])
            for i, name in enumerate(names):
                values = records[block][:, i]
                columns[name] = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values
        ((axis, order),) = _unpickle(group.attrs["non_index_axes"])
        assert axis == 1
        np.testing.assert_array_equal(records["index"], np.arange(len(records)))
        return pd.DataFrame({name: columns[name] for name in order}), _unpickle(group.attrs["metadata"])


def test_ztf_export_round_trips_through_h5py(tmp_path: Path, ztf_r: pd.DataFrame) -> None:
    path = tmp_path / "ZTF" / "WD_ztfr.h5"
    out = to_skyportal(ztf_r, "zr", "ztf", path, metadata={"series_name": "ztf/season1", "obj_id": "WDJ0000"})
    assert list(out.columns) == [*COLUMNS, "exp_time", "ra", "dec"]
    back, meta = _read_with_h5py(path)
    assert list(back.columns) == list(out.columns)
    assert len(back) == len(ztf_r) == 964

    np.testing.assert_array_equal(back["mjd"], ztf_r["mjd"])
    np.testing.assert_array_equal(back["mag"], ztf_r["mag"])
    np.testing.assert_array_equal(back["magerr"], ztf_r["magerr"])
    np.testing.assert_array_equal(back["limiting_mag"], ztf_r["limitmag"])
    np.testing.assert_array_equal(back["exp_time"], ztf_r["exptime"])
    assert set(back["filter"]) == {"ztfr"} and set(back["magsys"]) == {"ab"} and set(back["zp"]) == {23.9}
    # m = -2.5 log10(flux) + zp, flux in microJansky; the recorded file's own flux column is ignored
    np.testing.assert_allclose(23.9 - 2.5 * np.log10(back["flux"]), ztf_r["mag"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(back["fluxerr"] / back["flux"], ztf_r["magerr"] * np.log(10) / 2.5, rtol=1e-12)
    assert not np.allclose(back["flux"], ztf_r["flux"])

    assert meta["filter"] == "ztfr" and meta["exp_time"] == 30.0
    assert meta["series_name"] == "ztf/season1" and meta["obj_id"] == "WDJ0000"
    assert meta["altdata"] == {"observatory": "ztf", "magsys": "ab"}
    # the source sits at RA ~0: its points straddle 0/360, and the median must not land near 180
    assert ztf_r["ra"].min() < 0.01 and ztf_r["ra"].max() > 359.99
    assert min(meta["ra"], 360 - meta["ra"]) < 0.001
    assert meta["dec"] == pytest.approx(51.3937, abs=1e-3)
    assert out.attrs["metadata"] == meta


def test_tess_export_uses_the_tess_band_and_rescaled_flux(tmp_path: Path, tess_lc: pd.DataFrame) -> None:
    path = tmp_path / "tess.h5"
    out = to_skyportal(tess_lc, "tess", "tess", path, metadata={"exp_time": 120.0})
    back, meta = _read_with_h5py(path)
    assert list(back.columns) == COLUMNS  # no exposure time or position columns in TESS frames
    assert set(back["filter"]) == {"tess"} and set(back["magsys"]) == {"vega"}
    np.testing.assert_array_equal(back["mag"], tess_lc["mag"])
    # the e-/s flux (zero point 20.44) is rescaled to zero point 23.9, negative fluxes included
    scale = 10 ** (0.4 * (23.9 - 20.44))
    np.testing.assert_allclose(back["flux"], tess_lc["flux"] * scale, rtol=1e-12)
    positive = back["flux"] > 0
    np.testing.assert_allclose(
        23.9 - 2.5 * np.log10(back["flux"][positive]), back["mag"][positive], atol=1e-9
    )
    limit = 23.9 - 2.5 * np.log10(5 * back["fluxerr"])
    np.testing.assert_allclose(back["limiting_mag"], limit, rtol=1e-12)
    assert meta == {"filter": "tess", "exp_time": 120.0, "altdata": {"observatory": "tess", "magsys": "vega"}}
    pd.testing.assert_frame_equal(back, out, check_dtype=False)


@pytest.mark.parametrize(
    ("name", "observatory", "band"),
    [
        ("zg", "ztf", "ztfg"), ("zr", "ztf", "ztfr"), ("zi", "ztf", "ztfi"),
        ("g", "ztf", "ztfg"), ("r", "ZTF", "ztfr"), ("I", "ztf", "ztfi"), ("ztfr", "ztf", "ztfr"),
        ("tess", "tess", "tess"), ("TESS", "tess", "tess"), ("g", "demo", "ztfg"),
    ],
)  # fmt: skip
def test_sncosmo_band_names(name: str, observatory: str, band: str) -> None:
    assert sncosmo_band(name, observatory) == band


def test_every_real_ztf_filter_exports_to_its_band(tmp_path: Path, ztf: pd.DataFrame) -> None:
    for code, band in (("zg", "ztfg"), ("zr", "ztfr"), ("zi", "ztfi")):
        part = ztf[ztf["filtercode"] == code]
        to_skyportal(part, code, "ztf", tmp_path / f"{code}.h5")
        back, meta = _read_with_h5py(tmp_path / f"{code}.h5")
        assert set(back["filter"]) == {band} == {meta["filter"]}
        assert len(back) == len(part)


@pytest.mark.parametrize(
    ("name", "observatory", "message"),
    [
        (
            "zq",
            "ztf",
            r"unknown filter 'zq' for observatory 'ztf' \(known: g, i, r, zg, zi, zr, ztfg, ztfi, ztfr\)",
        ),
        ("zg", "tess", r"unknown filter 'zg' for observatory 'tess' \(known: tess\)"),
        ("tess", "ztf", "unknown filter 'tess' for observatory 'ztf'"),
        ("zg", "palomar", r"unknown observatory 'palomar' \(known: demo, tess, ztf\)"),
    ],
)
def test_unknown_filter_or_observatory_is_named(
    ztf_r: pd.DataFrame, name: str, observatory: str, message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        to_skyportal(ztf_r.drop(columns=["filtercode"]), name, observatory)


def test_filtercode_column_must_agree(ztf: pd.DataFrame, ztf_r: pd.DataFrame) -> None:
    with pytest.raises(ExportError, match=r"filtercode column holds \['zg', 'zi', 'zr'\]"):
        to_skyportal(ztf, "zg", "ztf")
    with pytest.raises(ExportError, match=r"holds \['zr'\], which is not the single filter 'ztfg'"):
        to_skyportal(ztf_r, "g", "ztf")


def test_metadata_keys_skyportal_rejects_are_refused(ztf_r: pd.DataFrame) -> None:
    with pytest.raises(ExportError, match=r"SkyPortal rejects metadata keys \['colour'\]"):
        to_skyportal(ztf_r, "zr", "ztf", metadata={"colour": "red", "series_name": "x"})


def test_missing_columns_are_refused(ztf_r: pd.DataFrame) -> None:
    with pytest.raises(ExportError, match="needs 'mjd' and 'mag' or 'flux'"):
        to_skyportal(ztf_r.drop(columns=["mag", "flux"]), "zr", "ztf")


def test_input_is_not_modified_and_nothing_is_written_without_path(
    tmp_path: Path, ztf_r: pd.DataFrame
) -> None:
    before = ztf_r.copy()
    out = to_skyportal(ztf_r, "zr", "ztf")
    pd.testing.assert_frame_equal(ztf_r, before)
    assert len(out) == len(ztf_r)
    assert list(tmp_path.iterdir()) == []


def test_nan_magnitudes_stay_as_nan(ztf_r: pd.DataFrame) -> None:
    lc = ztf_r.copy()
    lc.loc[3, "mag"] = np.nan
    out = to_skyportal(lc, "zr", "ztf")
    assert np.isnan(out.loc[3, "mag"]) and np.isnan(out.loc[3, "flux"]) and len(out) == len(lc)
    assert out.loc[3, "limiting_mag"] == lc.loc[3, "limitmag"]


def test_write_failure_is_a_write_error(tmp_path: Path, ztf_r: pd.DataFrame) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="export: cannot write"):
        to_skyportal(ztf_r, "zr", "ztf", blocker / "x.h5")
    target = tmp_path / "x.h5"
    target.mkdir()  # a folder in the way: the rename fails, the temporary file is removed
    with pytest.raises(WriteError):
        to_skyportal(ztf_r, "zr", "ztf", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "x.h5"]


def test_pandas_hdfstore_reads_it_like_skyportal(tmp_path: Path, ztf_r: pd.DataFrame) -> None:
    """SkyPortal's own reader (skyportal/utils/hdf5_files.py), on the file's bytes."""
    path = tmp_path / "x.h5"
    out = to_skyportal(ztf_r, "zr", "ztf", path, metadata={"series_obj_id": "42"})
    image = base64.b64decode(base64.b64encode(path.read_bytes()))
    with pd.HDFStore(
        "data.h5", mode="r", driver="H5FD_CORE", driver_core_backing_store=0, driver_core_image=image
    ) as store:
        keys = store.keys()
        assert keys == [f"/{DEFAULT_KEY}"]
        data = store[keys[0]]
        metadata = store.get_storer(keys[0]).attrs["metadata"]
    pd.testing.assert_frame_equal(data, out, check_dtype=False)
    assert metadata["filter"] == "ztfr" and metadata["series_obj_id"] == "42"


def test_median_ra_survives_the_wrap() -> None:
    # half the points just below 360, half just above 0: a plain median would say ~180
    lc = pd.DataFrame({
        "mjd": [58000.0, 58001.0, 58002.0, 58003.0, 58004.0],
        "mag": [18.0] * 5,
        "magerr": [0.05] * 5,
        "ra": [359.9990, 0.0010, 359.9996, 0.0004, 0.0002],
        "dec": [10.0] * 5,
    })  # fmt: skip
    meta = to_skyportal(lc, "g", "demo").attrs["metadata"]
    assert meta["ra"] == pytest.approx(0.0002, abs=1e-9)
    assert meta["dec"] == 10.0 and meta["filter"] == "ztfg"
