"""Lightcurve statistics on the real recorded ZTF and TESS lightcurves.

Every expected value is computed here on its own terms (astropy units for AB magnitudes,
astropy's ``sigma_clipped_stats``, a plain-loop clipper, pandas reductions), never by calling
the code under test.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.stats import sigma_clipped_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from aretriever.adapters import tess
from aretriever.adapters.base import Target
from aretriever.adapters.ztf import parse_lightcurve_table, reduce_lightcurves
from aretriever.science.stats import (
    LightcurveInputError,
    LightcurveStats,
    flux_baseline,
    lightcurve_stats,
    robust_mean_rms,
    scores,
    with_flux,
)
from aretriever.settings import TessReducerConfig, ZtfReducerConfig
from aretriever.store.hdf5 import records_to_frame
from aretriever.store.models import Lightcurve
from aretriever.testing.ztf_replay import recorded_irsa_csv

AB = 23.9
TESS_ZP = TessReducerConfig().zero_point_mag
STAR = Target("WDJ000000+512337", 0.0, 51.3937, 20.28)


# ------------------------------------------------------------------ the real lightcurves


@pytest.fixture()
def ztf_curves(ztf_csv: Path) -> list[pd.DataFrame]:
    """Every season/filter lightcurve of the recorded star, flagged epochs kept."""
    raw = parse_lightcurve_table(recorded_irsa_csv(ztf_csv.parent))
    cfg = ZtfReducerConfig(mag_range=None, drop_bad=False)
    return [records_to_frame(lc.data) for lc in reduce_lightcurves(raw, STAR, cfg)]


def _tess(shared_data: Path, name: str) -> pd.DataFrame:
    raw = tess.read_raw_table([shared_data / "tess" / name], "PDCSAP_FLUX")
    (curve,) = tess.reduce_lightcurves(raw, Target("x", 0.0, 0.0), TessReducerConfig())
    data: pd.DataFrame = curve.data
    return data


@pytest.fixture()
def alert(shared_data: Path) -> pd.DataFrame:
    """18,103 cadences of TIC 55652896, sector 1 (with a mid-sector gap)."""
    return _tess(shared_data, "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits")


@pytest.fixture()
def pi_men(shared_data: Path) -> pd.DataFrame:
    """99 consecutive 2-minute cadences of pi Men."""
    return _tess(shared_data, "test-lc-tess-pimen-100-cadences.fits")


# ------------------------------------------------------------------ independent references


def _clipped_reference(values: np.ndarray) -> tuple[float, float]:
    """astropy: 3 sigma about the median, std, at most 3 iterations; plain below 5 points."""
    finite = values[np.isfinite(values)]
    if finite.size < 5:
        return float(np.median(finite)), float(np.std(finite))
    _mean, median, std = sigma_clipped_stats(finite, sigma=3, maxiters=3, cenfunc="median", stdfunc="std")
    return float(median), float(std)


def _loop_clip(values: list[float], iterations: int = 3) -> tuple[float, float]:
    """The same clipping written as a plain loop over Python lists."""
    kept = [v for v in values if math.isfinite(v)]
    if len(kept) < 5:
        return float(np.median(kept)), float(np.std(kept))
    for _ in range(iterations):
        center, spread = float(np.median(kept)), float(np.std(kept))
        survivors = [v for v in kept if abs(v - center) <= 3 * spread]
        if len(survivors) in (len(kept), 0):  # 0: a zero spread and a median between two values
            break
        kept = survivors
    return float(np.median(kept)), float(np.std(kept))


def _ab_to_microjansky(mag: np.ndarray) -> np.ndarray:
    return np.asarray((mag * u.ABmag).to_value(u.uJy))


def _numeric_flux_err(mag: np.ndarray, magerr: np.ndarray, zp: float) -> np.ndarray:
    """|d flux / d mag| * magerr by a central difference."""
    step = 1e-6
    brighter, fainter = 10 ** ((zp - mag + step) / 2.5), 10 ** ((zp - mag - step) / 2.5)
    return np.asarray((brighter - fainter) / (2 * step) * magerr)


# ------------------------------------------------------------------ robust_mean_rms


def test_robust_matches_astropy_on_every_real_ztf_lightcurve(ztf_curves: list[pd.DataFrame]) -> None:
    assert len(ztf_curves) == 10
    for lc in ztf_curves:
        mag = lc["mag"].to_numpy()
        flux = _ab_to_microjansky(mag)
        for values in (mag, flux):
            assert robust_mean_rms(values) == pytest.approx(_clipped_reference(values), rel=1e-9)


def test_robust_on_tess_needs_exactly_three_iterations(alert: pd.DataFrame) -> None:
    flux = alert["flux"].to_numpy()
    got = robust_mean_rms(flux)
    assert got == pytest.approx(_clipped_reference(flux), rel=1e-12)
    assert got == pytest.approx(_loop_clip(flux.tolist()), rel=1e-12)
    # this lightcurve tells 1, 3 and unlimited iterations apart: the count matters
    one = sigma_clipped_stats(flux, sigma=3, maxiters=1, cenfunc="median", stdfunc="std")[2]
    unlimited = sigma_clipped_stats(flux, sigma=3, maxiters=None, cenfunc="median", stdfunc="std")[2]
    assert got[1] != pytest.approx(one, rel=1e-6)
    assert got[1] != pytest.approx(unlimited, rel=1e-6)
    assert got[1] < float(np.std(flux))  # clipping removed real outliers


def test_robust_clips_an_outlier_against_a_loop() -> None:
    values = [10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.3, 9.7, 10.05, 9.95, 55.0]
    mean, rms = robust_mean_rms(np.array(values))
    assert (mean, rms) == pytest.approx(_loop_clip(values))
    assert (mean, rms) == pytest.approx((10.0, float(np.std(values[:-1]))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6) | st.just(math.nan), max_size=40))
def test_robust_agrees_with_the_loop_on_any_values(values: list[float]) -> None:
    if not any(math.isfinite(v) for v in values):
        mean, rms = robust_mean_rms(np.array(values, dtype=float))
        assert math.isnan(mean) and math.isnan(rms)
        return
    expected = _loop_clip(values)
    assert robust_mean_rms(np.array(values, dtype=float)) == pytest.approx(expected, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [1.0, 2.0, 30.0], [1.0, 2.0, 4.0, 1000.0]])
def test_robust_under_five_points_is_plain_median_and_std(values: list[float]) -> None:
    assert robust_mean_rms(np.array(values)) == pytest.approx((np.median(values), np.std(values)))


def test_robust_ignores_nan_and_inf() -> None:
    values = np.array([np.nan, 1.0, np.inf, 2.0, 3.0, -np.inf, 4.0, 5.0, np.nan])
    assert robust_mean_rms(values) == pytest.approx(_loop_clip([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert robust_mean_rms(np.array([np.nan, 7.0, np.nan])) == (7.0, 0.0)


@pytest.mark.parametrize("values", [[], [np.nan, np.nan], [np.inf]])
def test_robust_without_finite_values_is_nan(values: list[float]) -> None:
    mean, rms = robust_mean_rms(np.array(values, dtype=float))
    assert math.isnan(mean) and math.isnan(rms)


# ------------------------------------------------------------------ flux and scores


def test_ztf_flux_is_ab_microjansky(ztf_curves: list[pd.DataFrame]) -> None:
    lc = ztf_curves[0]
    before = lc.copy()
    out = with_flux(lc, AB)
    pd.testing.assert_frame_equal(lc, before)
    assert "flux" not in lc
    mag, magerr = lc["mag"].to_numpy(), lc["magerr"].to_numpy()
    np.testing.assert_allclose(out["flux"], _ab_to_microjansky(mag), rtol=1e-4)
    np.testing.assert_allclose(out["fluxerr"], _numeric_flux_err(mag, magerr, AB), rtol=1e-6)


def test_tess_flux_is_kept_not_recomputed(alert: pd.DataFrame) -> None:
    out = with_flux(alert.assign(mag=alert["mag"] + 1.0), TESS_ZP)
    np.testing.assert_array_equal(out["flux"], alert["flux"])
    np.testing.assert_array_equal(out["fluxerr"], alert["fluxerr"])


def test_flux_needs_flux_or_mag() -> None:
    with pytest.raises(LightcurveInputError, match="'flux' or 'mag'"):
        with_flux(pd.DataFrame({"mjd": [1.0]}), AB)


def test_fluxerr_without_magerr_is_nan() -> None:
    out = with_flux(pd.DataFrame({"mag": [20.0, 21.0]}), AB)
    assert out["fluxerr"].isna().all()
    assert out["flux"].tolist() == pytest.approx([10**1.56, 10**1.16])


def _expected_scores(lc: pd.DataFrame, flux: np.ndarray, fluxerr: np.ndarray) -> dict[str, list[float]]:
    mean, rms = _clipped_reference(flux)
    mag_center, _ = _clipped_reference(lc["mag"].to_numpy())
    snr, dsnr = [], []
    for f, e in zip(flux, fluxerr, strict=True):
        noise = max(e, rms)
        snr.append(f / noise)
        dsnr.append((f - mean) / noise)
    return {"snr": snr, "dsnr": dsnr, "dmag": [m - mag_center for m in lc["mag"]]}


def test_scores_on_real_ztf(ztf_curves: list[pd.DataFrame]) -> None:
    for lc in ztf_curves:
        before = lc.copy()
        out = scores(lc, AB)
        pd.testing.assert_frame_equal(lc, before)
        flux = _ab_to_microjansky(lc["mag"].to_numpy())
        fluxerr = _numeric_flux_err(lc["mag"].to_numpy(), lc["magerr"].to_numpy(), AB)
        for name, values in _expected_scores(lc, flux, fluxerr).items():
            np.testing.assert_allclose(out[name], values, rtol=1e-4, atol=1e-9, err_msg=name)


def test_scores_on_real_tess(alert: pd.DataFrame) -> None:
    out = scores(alert, TESS_ZP)
    expected = _expected_scores(alert, alert["flux"].to_numpy(), alert["fluxerr"].to_numpy())
    for name, values in expected.items():
        np.testing.assert_allclose(out[name], values, rtol=1e-9, atol=1e-12, err_msg=name)
    # the robust rms is the noise wherever it beats the archive's error
    _, rms = _clipped_reference(alert["flux"].to_numpy())
    assert (alert["fluxerr"] < rms).any() and (alert["fluxerr"] > rms).any()


def test_good_mask_keeps_flagged_points_out_of_the_baseline(pi_men: pd.DataFrame) -> None:
    lc = pi_men.copy()
    lc.loc[10, "flux"] = 1e9  # a wild point, flagged
    good = np.ones(len(lc), dtype=bool)
    good[10] = False
    out = scores(lc, TESS_ZP, good=good)
    clean_mean, clean_rms = _clipped_reference(np.delete(lc["flux"].to_numpy(), 10))
    noise = np.maximum(lc["fluxerr"].to_numpy(), clean_rms)
    np.testing.assert_allclose(out["dsnr"], (lc["flux"] - clean_mean) / noise, rtol=1e-9)
    assert out["dsnr"].iloc[10] > 1e3  # still scored
    with pytest.raises(LightcurveInputError, match="mask has shape"):
        scores(lc, TESS_ZP, good=good[:-1])


def test_scores_handle_nan_and_zero_noise() -> None:
    lc = pd.DataFrame(
        {
            "flux": [10.0, np.nan, 10.0, 10.0],
            "fluxerr": [np.nan, 1.0, 0.0, 2.0],
            "mag": [20.0, np.nan, 20.0, 20.0],
        }
    )
    out = scores(lc, AB)  # robust rms of the flux is 0: noise is fluxerr, or nothing
    assert out["snr"].iloc[0] != out["snr"].iloc[0]  # NaN error, zero rms: no noise, no score
    assert math.isnan(out["snr"].iloc[1])
    assert math.isnan(out["snr"].iloc[2])  # zero noise
    assert out["snr"].iloc[3] == 5.0
    assert out["dsnr"].iloc[3] == 0.0
    assert out["dmag"].fillna(-1).tolist() == [0.0, -1, 0.0, 0.0]


# ------------------------------------------------------------------ the summary row


def _expected_stats(lc: pd.DataFrame, flux: pd.Series, fluxerr: pd.Series, zp: float) -> dict[str, Any]:
    robust_mean, robust_rms = _clipped_reference(flux.to_numpy())
    scored = _expected_scores(lc, flux.to_numpy(), fluxerr.to_numpy())
    step_s = lc["mjd"].diff().median() * 86400
    return {
        "mag_mean": lc["mag"].mean(),
        "mag_rms": lc["mag"].std(ddof=0),
        "flux_mean": flux.mean(),
        "flux_rms": flux.std(ddof=0),
        "flux_err_mean": fluxerr.mean(),
        "robust_mean": robust_mean,
        "robust_rms": robust_rms,
        "num_good": len(lc),
        "snr": robust_mean / max(fluxerr.mean(), robust_rms),
        "dsnr_max": max(scored["dsnr"]),
        "dsnr_min": min(scored["dsnr"]),
        "dmag_max": max(scored["dmag"]),
        "dmag_min": min(scored["dmag"]),
        "frame_rate_hz": 1 / step_s,
    }


def test_stats_on_real_ztf(ztf_curves: list[pd.DataFrame]) -> None:
    lc = max(ztf_curves, key=len)
    good = (lc["catflags"] == 0).to_numpy()
    assert 0 < (~good).sum() < len(lc)
    stats = lightcurve_stats(lc, AB, good=good)
    kept = lc[good].reset_index(drop=True)
    flux = pd.Series(_ab_to_microjansky(kept["mag"].to_numpy()))
    fluxerr = pd.Series(_numeric_flux_err(kept["mag"].to_numpy(), kept["magerr"].to_numpy(), AB))
    expected = _expected_stats(kept, flux, fluxerr, AB)
    expected["frame_rate_hz"] = 1 / (lc["mjd"].diff().median() * 86400)  # sampling: every row
    for name, value in expected.items():
        assert getattr(stats, name) == pytest.approx(value, rel=1e-4), name
    assert stats.exptime_s == 30.0  # ZTF's usual exposure, the median of the column
    assert stats.uniform_sampling is False


def test_stats_on_real_tess(alert: pd.DataFrame, pi_men: pd.DataFrame) -> None:
    for lc, uniform in ((alert, False), (pi_men, True)):
        stats = lightcurve_stats(lc, TESS_ZP, exptime_s=95.04)
        expected = _expected_stats(lc, lc["flux"], lc["fluxerr"], TESS_ZP)
        for name, value in expected.items():
            assert getattr(stats, name) == pytest.approx(value, rel=1e-9), name
        assert stats.exptime_s == 95.04
        assert stats.uniform_sampling is uniform
        assert stats.frame_rate_hz == pytest.approx(1 / 120, rel=1e-4)
    assert lightcurve_stats(pi_men, TESS_ZP).exptime_s is None  # no column, no argument


def test_stats_are_plain_python_values_for_a_db_row(alert: pd.DataFrame) -> None:
    stats = lightcurve_stats(alert, TESS_ZP, exptime_s=95.04)
    row = stats.as_dict()
    columns = set(Lightcurve.__table__.columns.keys())
    assert set(row) <= columns
    assert set(row) == {name for name in columns if name in LightcurveStats.__dataclass_fields__}
    assert len(row) == 16
    for name, value in row.items():
        assert type(value) in (float, int, bool), (name, type(value))
    assert type(row["num_good"]) is int and type(row["uniform_sampling"]) is bool
    assert pickle.loads(pickle.dumps(stats)) == stats
    with pytest.raises(AttributeError):
        stats.snr = 1.0  # type: ignore[misc]


def test_stats_of_an_empty_lightcurve(pi_men: pd.DataFrame) -> None:
    stats = lightcurve_stats(pi_men.iloc[:0], TESS_ZP)
    row = stats.as_dict()
    assert row.pop("num_good") == 0
    assert set(row.values()) == {None}


def test_stats_when_every_value_is_nan(pi_men: pd.DataFrame) -> None:
    lc = pi_men.assign(flux=np.nan, fluxerr=np.nan, mag=np.nan)
    stats = lightcurve_stats(lc, TESS_ZP)
    assert stats.num_good == 0
    assert stats.robust_mean is None and stats.snr is None and stats.dmag_min is None
    assert stats.frame_rate_hz == pytest.approx(1 / 120, rel=1e-4)  # the times are still there
    assert stats.uniform_sampling is True


def test_stats_with_one_point_and_repeated_times() -> None:
    one = lightcurve_stats(pd.DataFrame({"mjd": [60000.0], "mag": [18.0], "magerr": [0.1]}), AB)
    assert one.num_good == 1
    assert one.robust_rms == 0.0 and one.frame_rate_hz is None and one.uniform_sampling is None
    assert one.snr == pytest.approx(one.flux_mean / one.flux_err_mean)  # type: ignore[operator]
    same = pd.DataFrame({"mjd": [1.0, 1.0, 1.0, 2.0], "flux": [1.0, 2.0, 3.0, 4.0], "fluxerr": 1.0})
    stats = lightcurve_stats(same, AB)
    assert stats.frame_rate_hz is None and stats.uniform_sampling is None
    assert stats.mag_mean is None and stats.dmag_max is None  # no mag column


def test_robust_statistics_of_values_whose_spread_underflows() -> None:
    # found by hypothesis: std underflows to 0 and the median sits between two values
    values = np.array(
        [0.0, 0.0, 0.0, -8.410845864163685e-224, -9.234179871295479e-233, -2.225073858507203e-309]
    )
    mean, rms = robust_mean_rms(values)
    assert math.isfinite(mean) and math.isfinite(rms) and abs(mean) < 1e-300


def test_the_flux_baseline_is_remembered_by_content_only() -> None:
    rng = np.random.default_rng(3)
    flux = rng.normal(100.0, 5.0, 200)
    moved = flux.copy()
    moved[0] += 50.0
    assert flux_baseline(flux) == robust_mean_rms(flux)
    assert flux_baseline(moved) == robust_mean_rms(moved) != robust_mean_rms(flux)
    flux[1] = np.nan  # non-finite values are left out, as robust_mean_rms leaves them out
    assert flux_baseline(flux) == robust_mean_rms(flux)
