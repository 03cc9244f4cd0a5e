"""The S/N peak finder on real lightcurves: flat ones, a real transit, and injected events.

Lightcurves come from the recorded archive data (ZTF: IRSA CSV of one white-dwarf cone; TESS:
SPOC files of pi Men and TIC 55652896) through the adapters' own reducers. The S/N columns are
computed here with astropy's sigma clipping (not with aretriever.science.stats), and events are
injected by hand (not with the simulator), so the finder is checked against independent numbers.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.stats import sigma_clipped_stats

from aretriever.adapters.base import Target
from aretriever.adapters.tess_fits import read_raw_table
from aretriever.adapters.tess_reduce import reduce_lightcurves as reduce_tess
from aretriever.adapters.ztf import reduce_lightcurves as reduce_ztf
from aretriever.science.finder import Event, Finder, MissingColumnsError
from aretriever.settings import FinderConfig, QualityConfig, TessReducerConfig, ZtfReducerConfig
from aretriever.store.hdf5 import records_to_frame
from aretriever.testing.fake_archive import DATA_DIR

ZTF_CSV = DATA_DIR / "ZTF_lightcurve.csv"
PI_MEN = DATA_DIR / "tess" / "test-lc-tess-pimen-100-cadences.fits"
TOI = DATA_DIR / "tess" / "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits"
ZTF_ZP, TESS_ZP = 23.9, 20.44
# the columns AstroRetriever appended to IRSA's CSV in the recorded file
ADDED_COLUMNS = ["Unnamed: 0", "snr", "peak_mag", "flux", "fluxerr"]


# --------------------------------------------------------------------------------------------
# independent S/N columns and real lightcurves


def robust(values: np.ndarray) -> tuple[float, float]:
    """(median, std) after 3-sigma clipping with at most 3 iterations; plain below 5 points."""
    values = values[np.isfinite(values)]
    if values.size < 5:
        return float(np.median(values)), float(np.std(values))
    _, median, std = sigma_clipped_stats(values, sigma=3, maxiters=3)
    return float(median), float(std)


def scores(lc: pd.DataFrame, zero_point: float) -> pd.DataFrame:
    """A copy with flux/fluxerr (when missing), snr, dsnr, dmag and the archive's flags."""
    out = lc.copy()
    if "flux" not in out:
        out["flux"] = 10 ** (-0.4 * (out["mag"] - zero_point))
        out["fluxerr"] = out["flux"] * out["magerr"] * math.log(10) / 2.5
    flags = out["catflags"] if "catflags" in out else out["quality"]
    flagged = out["flagged"].to_numpy() if "flagged" in out else flags.to_numpy() != 0
    mean, rms = robust(out["flux"].to_numpy()[~flagged])
    noise = np.maximum(out["fluxerr"].to_numpy(), rms)
    out["snr"] = out["flux"] / noise
    out["dsnr"] = (out["flux"] - mean) / noise
    out["dmag"] = out["mag"] - robust(out["mag"].to_numpy()[~flagged])[0]
    out["flagged"] = flagged
    return out


def box(lc: pd.DataFrame, t0: float, width: float, amplitude_mag: float, zero_point: float) -> pd.DataFrame:
    """``lc`` with a box event added to mag and flux, and its S/N columns recomputed."""
    out = lc.copy()
    delta = np.where(np.abs(out["mjd"] - t0) <= width / 2, amplitude_mag, 0.0)
    out["mag"] = out["mag"] + delta
    out["flux"] = out["flux"] * 10 ** (-0.4 * delta)
    return scores(out.drop(columns=["snr", "dsnr", "dmag"]), zero_point)


def in_box(lc: pd.DataFrame, t0: float, width: float) -> np.ndarray:
    return np.flatnonzero(np.abs(lc["mjd"].to_numpy() - t0) <= width / 2)


def ztf_lightcurve(band: str, season: int) -> pd.DataFrame:
    raw = pd.read_csv(ZTF_CSV).drop(columns=ADDED_COLUMNS)
    target = Target("WDJ000000", 359.99975, 51.39372)
    curves = reduce_ztf(raw, target, ZtfReducerConfig(drop_bad=False))
    (lc,) = [records_to_frame(lc.data) for lc in curves if lc.filter == band and lc.meta["season"] == season]
    return scores(lc, ZTF_ZP)


def tess_lightcurve(path: Path) -> pd.DataFrame:
    raw = read_raw_table([path], "PDCSAP_FLUX")
    (lc,) = reduce_tess(raw, Target("TIC", 0.0, 0.0), TessReducerConfig())
    return scores(lc.data, TESS_ZP)


@pytest.fixture(scope="module")
def ztf_g0() -> pd.DataFrame:
    """zg, first season: 293 epochs of a 20.2 mag white dwarf, 16 flagged by IRSA."""
    return ztf_lightcurve("zg", 0)


@pytest.fixture(scope="module")
def pi_men() -> pd.DataFrame:
    """pi Men, the first 99 good 2-minute cadences of sector 1."""
    return tess_lightcurve(PI_MEN)


@pytest.fixture(scope="module")
def toi() -> pd.DataFrame:
    """TIC 55652896, sector 1: 18,103 good cadences with one planetary transit."""
    return tess_lightcurve(TOI)


def finder(**pars: float | int) -> Finder:
    return Finder(FinderConfig(**pars), QualityConfig())


# --------------------------------------------------------------------------------------------
# real lightcurves without injections


def test_flat_ztf_lightcurve_has_no_detection(ztf_g0: pd.DataFrame) -> None:
    good = ~ztf_g0["flagged"].to_numpy()
    strongest = np.abs(ztf_g0["dsnr"].to_numpy()[good]).max()
    assert 3.5 < strongest < 5.0  # genuinely flat at the default threshold: 3.86 sigma

    assert finder().find(ztf_g0) == []
    # the same lightcurve with a lower threshold: its strongest good point is the peak
    (event,) = finder(snr_threshold=3.5).find(ztf_g0)
    assert abs(event.snr) == pytest.approx(strongest)


def test_flat_tess_lightcurve_has_no_detection(pi_men: pd.DataFrame) -> None:
    assert len(pi_men) == 99
    assert np.abs(pi_men["dsnr"]).max() < 2.7
    assert finder().find(pi_men) == []


def test_real_transit_is_found_as_a_dimming(toi: pd.DataFrame) -> None:
    (event,) = finder().find(toi)
    rows = np.array(event.rows)
    dsnr = toi["dsnr"].to_numpy()
    # the transit of TIC 55652896 in sector 1, seen by eye in the recorded file
    assert 58330.68 < event.time_start_mjd <= event.time_peak_mjd <= event.time_end_mjd < 58330.89
    assert event.snr == pytest.approx(dsnr.min()) and event.snr < -8
    assert event.dmag is not None and event.dmag > 0.015
    assert event.peak_mag == pytest.approx(toi["mag"].iloc[int(np.argmin(dsnr))])
    # the region: a contiguous run below -3 sigma, bounded by points that are not
    assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
    assert (dsnr[rows] < -3).all()
    assert dsnr[rows[0] - 1] >= -3 and dsnr[rows[-1] + 1] >= -3
    assert event.quality == {"num_points": rows.size, "num_flagged": 0, "max_abs_offset": None}


# --------------------------------------------------------------------------------------------
# injected events: regions, signs, counts


def test_box_dimming_in_tess_is_recovered_with_its_time_range(pi_men: pd.DataFrame) -> None:
    # 7 of 99 points: a wider event would be part of the baseline (3-sigma clipping from the
    # plain std cannot remove a step that holds ~15% of the points)
    t0, width = float(pi_men["mjd"].iloc[50]), 0.01
    lc = box(pi_men, t0, width, 0.01, TESS_ZP)
    expected = in_box(lc, t0, width)
    assert expected.size == 7

    (event,) = finder().find(lc)
    assert event.rows == expected.tolist()
    assert event.time_start_mjd == lc["mjd"].iloc[expected[0]]
    assert event.time_end_mjd == lc["mjd"].iloc[expected[-1]]
    assert event.snr < -50  # 0.01 mag on a 1.2e-4 mag noise
    assert event.dmag == pytest.approx(0.01, abs=1e-3)


def test_box_brightening_in_ztf_is_recovered_over_flagged_epochs(ztf_g0: pd.DataFrame) -> None:
    t0, width = 58375.0, 4.0
    lc = box(ztf_g0, t0, width, -1.5, ZTF_ZP)
    inside = in_box(lc, t0, width)
    flagged = lc["flagged"].to_numpy()
    good = inside[~flagged[inside]]
    assert inside.size == 24 and flagged[inside].sum() == 8 and flagged[inside[-1]]

    (event,) = finder().find(lc)
    # IRSA flagged 8 epochs inside; they neither break the run nor end it (the last one is flagged)
    assert event.rows == list(range(good[0], good[-1] + 1))
    assert event.time_start_mjd == lc["mjd"].iloc[inside[0]]
    assert event.time_end_mjd == lc["mjd"].iloc[good[-1]]
    assert event.quality["num_flagged"] == 6
    assert event.snr > 10 and event.dmag is not None and event.dmag < -1.0

    (kept,) = Finder(FinderConfig(), QualityConfig(drop_flagged=False)).find(lc)
    assert kept.rows == inside.tolist() and kept.quality["num_flagged"] == 8


def test_gaussian_region_brackets_the_event(pi_men: pd.DataFrame) -> None:
    t0, sigma, amplitude = float(pi_men["mjd"].iloc[40]) + 3e-4, 0.006, -0.003
    delta = amplitude * np.exp(-0.5 * ((pi_men["mjd"].to_numpy() - t0) / sigma) ** 2)
    lc = pi_men.copy()
    lc["mag"] += delta
    lc["flux"] *= 10 ** (-0.4 * delta)
    lc = scores(lc.drop(columns=["snr", "dsnr", "dmag"]), TESS_ZP)
    noise = np.maximum(pi_men["fluxerr"].to_numpy(), robust(pi_men["flux"].to_numpy())[1])
    signal = (lc["flux"] - pi_men["flux"]).to_numpy() / noise  # injected S/N of each point

    (event,) = finder().find(lc)
    rows = set(event.rows)
    assert set(np.flatnonzero(signal > 6)) <= rows  # every strong point is in
    # noise here stays under 2.7 sigma, so a point needs > 0.3 sigma of the event to join
    assert rows <= set(np.flatnonzero(signal > 0.3))
    assert event.time_start_mjd < t0 - sigma < t0 + sigma < event.time_end_mjd
    assert event.snr > 0


def test_signs_and_regions_do_not_cross_a_sign_change(pi_men: pd.DataFrame) -> None:
    mjd = pi_men["mjd"].to_numpy()
    # a dimming box right against a brightening box
    dim_t0, bright_t0, width = mjd[30], mjd[30] + 0.01, 0.01 - 1e-5
    lc = box(box(pi_men, dim_t0, width, 0.004, TESS_ZP), bright_t0, width, -0.008, TESS_ZP)
    bright, dim = finder(max_det_per_lc=2).find(lc)

    assert bright.snr > 0 and bright.dmag is not None and bright.dmag < 0
    assert dim.snr < 0 and dim.dmag is not None and dim.dmag > 0
    assert bright.rows == in_box(lc, bright_t0, width).tolist()
    assert dim.rows == in_box(lc, dim_t0, width).tolist()
    assert dim.time_end_mjd < bright.time_start_mjd


def test_max_det_per_lc_keeps_the_strongest(pi_men: pd.DataFrame) -> None:
    mjd = pi_men["mjd"].to_numpy()
    lc = pi_men
    for at, amplitude in ((15, 0.003), (50, -0.012), (85, 0.006)):
        lc = box(lc, mjd[at], 0.01, amplitude, TESS_ZP)

    (one,) = finder(max_det_per_lc=1).find(lc)
    two = finder(max_det_per_lc=2).find(lc)
    three = finder(max_det_per_lc=5).find(lc)
    assert len(three) == 3  # and nothing spurious beyond the three
    assert [e.time_peak_mjd for e in three[:2]] == [e.time_peak_mjd for e in two]
    assert two[0] == one
    assert [abs(e.snr) for e in three] == sorted((abs(e.snr) for e in three), reverse=True)
    assert [round(e.dmag or 0, 2) for e in three] == [-0.01, 0.01, 0.0]  # 0.012, 0.006, 0.003 mag
    for event, at in zip(three, (50, 85, 15), strict=True):
        assert event.rows == in_box(lc, mjd[at], 0.01).tolist()


# --------------------------------------------------------------------------------------------
# flagged points


def test_a_real_flagged_outlier_is_ignored_unless_asked() -> None:
    lc = ztf_lightcurve("zr", 2)
    flagged = lc["flagged"].to_numpy()
    dsnr = np.abs(lc["dsnr"].to_numpy())
    worst = int(np.argmax(dsnr))
    assert flagged[worst] and dsnr[worst] > 6 and dsnr[~flagged].max() < 5  # IRSA's catflags

    assert finder().find(lc) == []
    (event,) = Finder(FinderConfig(), QualityConfig(drop_flagged=False)).find(lc)
    assert event.rows == [worst] and event.quality["num_flagged"] == 1


def test_a_flagged_point_is_passed_over_not_a_break(pi_men: pd.DataFrame) -> None:
    t0, width = float(pi_men["mjd"].iloc[50]), 0.01
    lc = box(pi_men, t0, width, 0.01, TESS_ZP)
    inside = in_box(lc, t0, width)
    middle, first = inside[4], inside[0]
    # a bad epoch inside the event that read the star at its usual brightness, and a flagged edge
    lc.loc[middle, ["dsnr", "flagged"]] = (0.0, True)
    lc.loc[first, "flagged"] = True

    (event,) = finder().find(lc)
    assert event.rows == inside[1:].tolist()
    assert event.time_start_mjd == lc["mjd"].iloc[inside[1]]
    assert event.quality["num_flagged"] == 1

    (cut,) = Finder(FinderConfig(), QualityConfig(drop_flagged=False)).find(lc)
    assert set(cut.rows) < set(inside) and middle not in cut.rows


def test_flagged_peak_candidate_never_peaks_even_when_strongest(pi_men: pd.DataFrame) -> None:
    lc = box(pi_men, float(pi_men["mjd"].iloc[20]), 0.005, 0.01, TESS_ZP)
    lc.loc[80, ["dsnr", "flagged"]] = (500.0, True)
    (event,) = finder(max_det_per_lc=3).find(lc)
    assert event.snr < 0 and 80 not in event.rows


# --------------------------------------------------------------------------------------------
# the contract: no mutation, any row order, plain output, clear errors, subclassing


def test_input_is_not_modified(ztf_g0: pd.DataFrame) -> None:
    lc = box(ztf_g0, 58375.0, 4.0, -1.5, ZTF_ZP)
    before = lc.copy(deep=True)
    assert finder(max_det_per_lc=3).find(lc)
    pd.testing.assert_frame_equal(lc, before)


def test_rows_are_positions_in_the_input_even_when_shuffled(pi_men: pd.DataFrame) -> None:
    lc = box(pi_men, float(pi_men["mjd"].iloc[50]), 0.01, 0.01, TESS_ZP)
    shuffled = lc.sample(frac=1.0, random_state=3)
    (event,) = finder().find(lc)
    (again,) = finder().find(shuffled)
    assert (again.time_start_mjd, again.time_end_mjd, again.snr) == (
        event.time_start_mjd,
        event.time_end_mjd,
        event.snr,
    )
    assert sorted(shuffled.iloc[again.rows].index) == sorted(lc.index[event.rows])


def test_event_as_dict_is_plain_and_pickles(pi_men: pd.DataFrame) -> None:
    lc = box(pi_men, float(pi_men["mjd"].iloc[50]), 0.01, 0.01, TESS_ZP).drop(columns=["mag"])
    lc["offset"] = np.nan
    (event,) = finder().find(lc)
    row = event.as_dict()
    assert row["peak_mag"] is None and row["quality"]["max_abs_offset"] is None
    assert json.loads(json.dumps(row)) == row
    assert all(type(value) is not np.float64 for value in row.values())
    assert pickle.loads(pickle.dumps(event)) == event

    odd = Event(np.float64(1.0), 2.0, 1.5, np.float64(math.nan), None, None, {"n": np.int64(3)}, [1])
    assert odd.as_dict()["snr"] is None and type(odd.as_dict()["quality"]["n"]) is int


def test_missing_columns_and_empty_lightcurves(pi_men: pd.DataFrame) -> None:
    with pytest.raises(MissingColumnsError, match=r"finder: the lightcurve has no \['dsnr'\]"):
        finder().find(pi_men.drop(columns=["dsnr"]))
    assert finder().find(pi_men.iloc[:0]) == []
    nan = pi_men.assign(dsnr=np.nan)
    assert finder().find(nan) == []


def test_a_subclass_changes_one_step(pi_men: pd.DataFrame) -> None:
    class LateOnly(Finder):
        def usable(self, lc: pd.DataFrame) -> np.ndarray:
            late: np.ndarray = super().usable(lc) & (lc["mjd"].to_numpy() > lc["mjd"].iloc[60])
            return late

    mjd = pi_men["mjd"].to_numpy()
    lc = box(box(pi_men, mjd[30], 0.01, 0.02, TESS_ZP), mjd[80], 0.01, 0.004, TESS_ZP)
    (event,) = LateOnly(FinderConfig(), QualityConfig()).find(lc)
    assert event.rows == in_box(lc, mjd[80], 0.01).tolist()
