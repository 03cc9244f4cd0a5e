"""Quality cuts on the real recorded ZTF lightcurve (a star sitting on RA 0/360) and TESS files.

Expected offsets are computed with astropy (SkyCoord separations from an astropy-wrapped median
position), independently of the code under test.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits

from aretriever.adapters import tess
from aretriever.adapters.base import Target
from aretriever.adapters.ztf import parse_lightcurve_table, reduce_lightcurves
from aretriever.science.quality import QualityChecker, position_offset
from aretriever.settings import QualityConfig, TessReducerConfig, ZtfReducerConfig
from aretriever.store.hdf5 import records_to_frame
from aretriever.testing.ztf_replay import recorded_irsa_csv

STAR = Target("WDJ000000+512337", 0.0, 51.3937, 20.28)
ALERT = "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits"


@pytest.fixture()
def ztf_curves(ztf_csv: Path) -> list[pd.DataFrame]:
    raw = parse_lightcurve_table(recorded_irsa_csv(ztf_csv.parent))
    cfg = ZtfReducerConfig(mag_range=None, drop_bad=False)
    return [records_to_frame(lc.data) for lc in reduce_lightcurves(raw, STAR, cfg)]


@pytest.fixture()
def checker() -> QualityChecker:
    return QualityChecker(QualityConfig())


def _expected_offsets(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Great-circle distances (astropy) from the wrap-safe median position, in scaled MADs."""
    angles = Angle(ra, u.deg)
    shifts = (angles - angles[0]).wrap_at(180 * u.deg)
    center = SkyCoord(angles[0] + np.median(shifts), np.median(dec) * u.deg)
    distance = SkyCoord(ra * u.deg, dec * u.deg).separation(center).arcsec
    median = np.median(distance)
    return np.asarray((distance - median) / (1.4826 * np.median(np.abs(distance - median))))


# ------------------------------------------------------------------ position_offset


def test_real_ztf_lightcurves_straddle_ra_zero(ztf_curves: list[pd.DataFrame]) -> None:
    ra = np.concatenate([lc["ra"].to_numpy() for lc in ztf_curves])
    assert ra.min() < 0.001 and ra.max() > 359.999  # the recording really wraps


def test_offsets_on_real_ztf_match_astropy(ztf_curves: list[pd.DataFrame]) -> None:
    for lc in ztf_curves:
        ra, dec = lc["ra"].to_numpy(), lc["dec"].to_numpy()
        ra_before, dec_before = ra.copy(), dec.copy()
        got = position_offset(ra, dec)
        np.testing.assert_allclose(got, _expected_offsets(ra, dec), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ra, ra_before)
        np.testing.assert_array_equal(dec, dec_before)
        assert np.abs(got).max() < 20  # a wrap mistake would put points 180 deg away


def test_offsets_are_the_same_on_either_side_of_the_wrap() -> None:
    rng = np.random.default_rng(5)
    east = rng.normal(0.0, 0.1, 40) / 3600  # 0.1 arcsec scatter
    north = rng.normal(0.0, 0.1, 40) / 3600
    dec = 51.39 + north
    at_zero = position_offset((east / np.cos(np.radians(dec))) % 360.0, dec)
    at_180 = position_offset(180.0 + east / np.cos(np.radians(dec)), dec)
    np.testing.assert_allclose(at_zero, at_180, atol=1e-6)
    assert np.abs(at_zero).max() < 6


def test_two_sides_of_ra_zero_are_close() -> None:
    ra = np.array([359.9999, 0.0001, 359.99995, 0.00005, 0.0])
    dec = np.array([10.0, 10.0, 10.00001, 9.99999, 10.0])
    offsets = position_offset(ra, dec)
    assert np.all(np.isfinite(offsets))
    np.testing.assert_allclose(offsets, _expected_offsets(ra, dec), rtol=1e-6, atol=1e-6)
    assert np.abs(offsets).max() < 5


def test_offsets_with_nan_and_without_scatter() -> None:
    ra = np.array([10.0, np.nan, 10.0001, 10.0002, 10.0, 10.0003])
    dec = np.array([20.0, 20.0, np.nan, 20.0001, 20.0002, 20.0])
    got = position_offset(ra, dec)
    finite = [0, 3, 4, 5]
    assert np.isnan(got[[1, 2]]).all()
    np.testing.assert_allclose(got[finite], _expected_offsets(ra[finite], dec[finite]), rtol=1e-6)
    assert np.isnan(position_offset(np.full(3, 5.0), np.full(3, 5.0))).all()  # no scatter
    assert np.isnan(position_offset(np.full(2, np.nan), np.full(2, np.nan))).all()
    assert position_offset(np.array([]), np.array([])).shape == (0,)


# ------------------------------------------------------------------ QualityChecker


def test_check_on_real_ztf(ztf_curves: list[pd.DataFrame], checker: QualityChecker) -> None:
    lc = max(ztf_curves, key=len)
    before = lc.copy()
    out = checker.check(lc)
    pd.testing.assert_frame_equal(lc, before)
    assert "offset" not in lc and "flagged" not in lc
    expected_offset = _expected_offsets(lc["ra"].to_numpy(), lc["dec"].to_numpy())
    np.testing.assert_allclose(out["offset"], expected_offset, rtol=1e-6, atol=1e-6)
    expected_flag = (lc["catflags"].to_numpy() != 0) | (np.abs(expected_offset) > 3.5)
    np.testing.assert_array_equal(out["flagged"].to_numpy(), expected_flag)
    assert out["flagged"].dtype == bool
    assert (lc["catflags"] != 0).sum() > 0  # both kinds of flag occur
    assert (np.abs(expected_offset) > 3.5).sum() > 0


def test_a_point_moved_by_ten_arcsec_is_flagged(
    ztf_curves: list[pd.DataFrame], checker: QualityChecker
) -> None:
    first = ztf_curves[0]
    lc = first[first["catflags"] == 0].reset_index(drop=True)
    row = int(np.argmin(np.abs(checker.check(lc)["offset"].to_numpy())))  # the most typical point
    assert not checker.check(lc)["flagged"].iloc[row]
    for column, shift in (("dec", 10 / 3600), ("ra", 10 / 3600 / np.cos(np.radians(lc["dec"].iloc[row])))):
        moved = lc.copy()
        moved.loc[row, column] = (moved.loc[row, column] + shift) % 360.0
        out = checker.check(moved)
        assert out["flagged"].iloc[row], column
        assert int(np.argmax(out["offset"].to_numpy())) == row  # the furthest point of all


def test_threshold_is_configurable(ztf_curves: list[pd.DataFrame]) -> None:
    lc = max(ztf_curves, key=len)
    loose = QualityChecker(QualityConfig(offset_threshold=1000.0)).check(lc)
    np.testing.assert_array_equal(loose["flagged"], lc["catflags"] != 0)
    tight = QualityChecker(QualityConfig(offset_threshold=1.0)).check(lc)
    expected = (lc["catflags"] != 0).to_numpy() | (np.abs(tight["offset"].to_numpy()) > 1.0)
    np.testing.assert_array_equal(tight["flagged"], expected)
    assert tight["flagged"].sum() > QualityChecker(QualityConfig()).check(lc)["flagged"].sum()


def test_tess_quality_flags_without_positions(shared_data: Path, checker: QualityChecker) -> None:
    path = shared_data / "tess" / ALERT
    raw = tess.read_raw_table([path], "PDCSAP_FLUX")
    (curve,) = tess.reduce_lightcurves(raw, Target("x", 0.0, 0.0), TessReducerConfig(quality_bitmask=0))
    out = checker.check(curve.data)
    assert out["offset"].isna().all()
    with fits.open(path) as hdul:
        table = hdul[1].data
        keep = np.isfinite(table["TIME"]) & np.isfinite(table["PDCSAP_FLUX"])
        expected = np.asarray(table["QUALITY"][keep]) != 0
    np.testing.assert_array_equal(out["flagged"].to_numpy(), expected)
    assert out["flagged"].sum() == 1


def test_missing_flags_and_positions_are_not_flags(checker: QualityChecker) -> None:
    lc = pd.DataFrame({"mag": [1.0, 2.0, 3.0], "catflags": pd.array([0, None, 4], dtype="Int64")})
    out = checker.check(lc)
    assert out["flagged"].tolist() == [False, False, True]
    assert out["offset"].isna().all()
    empty = checker.check(pd.DataFrame({"ra": [], "dec": []}))
    assert len(empty) == 0 and empty["flagged"].dtype == bool


class _NoOffsets(QualityChecker):
    """A user's subclass: positions are ignored."""

    def offsets(self, lc: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(lc))


def test_subclass_overrides_one_step(ztf_curves: list[pd.DataFrame]) -> None:
    lc = max(ztf_curves, key=len)
    out = _NoOffsets(QualityConfig(offset_threshold=0.5)).check(lc)
    assert (out["offset"] == 0).all()
    np.testing.assert_array_equal(out["flagged"], lc["catflags"] != 0)


def test_checker_pickles(checker: QualityChecker) -> None:
    again = pickle.loads(pickle.dumps(checker))
    assert again.cfg.offset_threshold == 3.5
