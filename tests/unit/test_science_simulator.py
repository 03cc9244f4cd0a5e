"""The simulator on real lightcurves: draws, injections, recovery by the finder, efficiency tables.

The S/N columns of injected copies are recomputed here with astropy's sigma clipping (the same
recipe as the science contract), not with aretriever.science.stats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from astropy.stats import sigma_clipped_stats
from pydantic import ValidationError

from aretriever.adapters.base import Target
from aretriever.adapters.tess_fits import read_raw_table
from aretriever.adapters.tess_reduce import reduce_lightcurves as reduce_tess
from aretriever.adapters.ztf import reduce_lightcurves as reduce_ztf
from aretriever.errors import ConfigError
from aretriever.science.finder import Event, Finder, MissingColumnsError
from aretriever.science.simulator import Injection, Simulator, recovered_by, recovery_efficiency
from aretriever.settings import (
    FinderConfig,
    QualityConfig,
    SimulatorConfig,
    TessReducerConfig,
    ZtfReducerConfig,
)
from aretriever.store.hdf5 import records_to_frame
from aretriever.testing.fake_archive import DATA_DIR

PI_MEN = DATA_DIR / "tess" / "test-lc-tess-pimen-100-cadences.fits"
ZTF_CSV = DATA_DIR / "ZTF_lightcurve.csv"
TESS_ZP, ZTF_ZP = 20.44, 23.9
NAME = "WDJ000006.33+512226.63"


def robust(values: np.ndarray) -> tuple[float, float]:
    """(median, std) after 3-sigma clipping with at most 3 iterations; plain below 5 points."""
    values = values[np.isfinite(values)]
    if values.size < 5:
        return float(np.median(values)), float(np.std(values))
    _, median, std = sigma_clipped_stats(values, sigma=3, maxiters=3)
    return float(median), float(std)


def scorer(zero_point: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A ``prepare`` step: flux (when missing), snr, dsnr, dmag and flags on a copy."""

    def prepare(lc: pd.DataFrame) -> pd.DataFrame:
        out = lc.copy()
        if "flux" not in out:
            out["flux"] = 10 ** (-0.4 * (out["mag"] - zero_point))
            out["fluxerr"] = out["flux"] * out["magerr"] * math.log(10) / 2.5
        flags = out["catflags"] if "catflags" in out else out["quality"]
        flagged = flags.to_numpy() != 0
        mean, rms = robust(out["flux"].to_numpy()[~flagged])
        noise = np.maximum(out["fluxerr"].to_numpy(), rms)
        out["snr"] = out["flux"] / noise
        out["dsnr"] = (out["flux"] - mean) / noise
        out["dmag"] = out["mag"] - robust(out["mag"].to_numpy()[~flagged])[0]
        out["flagged"] = flagged
        return out

    return prepare


def tess_lightcurve(path: Path) -> pd.DataFrame:
    (lc,) = reduce_tess(read_raw_table([path], "PDCSAP_FLUX"), Target("TIC", 0.0, 0.0), TessReducerConfig())
    prepared: pd.DataFrame = scorer(TESS_ZP)(lc.data)
    return prepared


@pytest.fixture(scope="module")
def pi_men() -> pd.DataFrame:
    """pi Men, the first 99 good 2-minute cadences of sector 1 (flat: |dsnr| < 3)."""
    return tess_lightcurve(PI_MEN)


@pytest.fixture(scope="module")
def ztf_g0() -> pd.DataFrame:
    raw = pd.read_csv(ZTF_CSV).drop(columns=["Unnamed: 0", "snr", "peak_mag", "flux", "fluxerr"])
    curves = reduce_ztf(raw, Target("WD", 359.99975, 51.39372), ZtfReducerConfig(drop_bad=False))
    (lc,) = [records_to_frame(lc.data) for lc in curves if lc.filter == "zg" and lc.meta["season"] == 0]
    prepared: pd.DataFrame = scorer(ZTF_ZP)(lc)
    return prepared


def simulator(**pars: Any) -> Simulator:
    return Simulator(SimulatorConfig(**pars))


def event(start: float, end: float, snr: float) -> Event:
    return Event(start, end, (start + end) / 2, snr, None, None, {}, [])


# --------------------------------------------------------------------------------------------
# random numbers and draws


def test_rng_for_is_stable_across_processes_and_distinct_per_input() -> None:
    sim = simulator()
    # fixed values: pytest runs under a random PYTHONHASHSEED, so a salted hash() would break them
    assert sim.rng_for(NAME, 0).integers(0, 2**32, 3).tolist() == [1323958030, 778015638, 1362457286]
    assert sim.rng_for(NAME, 1).integers(0, 2**32, 3).tolist() == [1611143971, 1337541715, 1773786231]
    assert simulator(seed=-1).rng_for("a", 0).integers(0, 2**32) == 2450492481
    first = [
        g.random()
        for g in (sim.rng_for(NAME, 0), sim.rng_for(NAME + " ", 0), simulator(seed=1).rng_for(NAME, 0))
    ]
    assert len(set(first)) == 3


def test_draws_follow_the_configured_distributions(ztf_g0: pd.DataFrame) -> None:
    sim = simulator(
        shape="box", min_width_days=0.1, max_width_days=10.0, min_amplitude_mag=-2, max_amplitude_mag=1
    )
    drawn = sim.draw(ztf_g0, 4000, sim.rng_for(NAME, 0))
    assert drawn == sim.draw(ztf_g0, 4000, sim.rng_for(NAME, 0))
    t0 = np.array([d.time_peak_mjd for d in drawn])
    width = np.array([d.width_days for d in drawn])
    amp = np.array([d.amplitude_mag for d in drawn])

    assert {d.shape for d in drawn} == {"box"}
    assert ztf_g0["mjd"].min() <= t0.min() and t0.max() <= ztf_g0["mjd"].max()
    assert width.min() >= 0.1 and width.max() <= 10.0
    assert np.mean(width < 1.0) == pytest.approx(0.5, abs=0.03)  # log-uniform: 1 day is the middle
    assert amp.min() >= -2 and amp.max() <= 1 and np.abs(amp).min() >= 0.02  # 1% of 2 mag
    assert np.mean(amp > 0) == pytest.approx(0.98 / 2.96, abs=0.03)  # uniform over what is left
    assert sim.draw(ztf_g0.iloc[:0], 5, sim.rng_for(NAME, 0)) == []


def test_draws_in_a_one_sided_or_tiny_range() -> None:
    lc = pd.DataFrame({"mjd": [1.0, 2.0]})
    rng = np.random.default_rng(0)
    dims = simulator(min_amplitude_mag=1e-4, max_amplitude_mag=3e-4).draw(lc, 200, rng)
    assert min(d.amplitude_mag for d in dims) >= 1e-4 and max(d.amplitude_mag for d in dims) <= 3e-4
    fixed = simulator(min_amplitude_mag=-0.5, max_amplitude_mag=-0.5).draw(lc, 3, rng)
    assert [d.amplitude_mag for d in fixed] == [-0.5] * 3


@pytest.mark.parametrize(
    ("pars", "message"),
    [
        ({"min_width_days": 5.0, "max_width_days": 1.0}, r"min_width_days 5\.0 > max_width_days 1\.0"),
        (
            {"min_amplitude_mag": 1.0, "max_amplitude_mag": -1.0},
            r"min_amplitude_mag 1\.0 > max_amplitude_mag -1\.0",
        ),
    ],
)
def test_bad_ranges_are_refused_by_the_config(pars: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SimulatorConfig(**pars)


def test_an_amplitude_range_of_only_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"only 0 mag"):
        simulator(min_amplitude_mag=0.0, max_amplitude_mag=0.0)


# --------------------------------------------------------------------------------------------
# injection


def test_box_injection_changes_mag_and_flux_consistently(ztf_g0: pd.DataFrame) -> None:
    before = ztf_g0.copy(deep=True)
    injection = Injection("box", 58375.0, 4.0, -1.5)
    out = simulator().inject(ztf_g0, injection)

    pd.testing.assert_frame_equal(ztf_g0, before)
    inside = np.abs(ztf_g0["mjd"] - 58375.0) <= 2.0
    delta = (out["mag"] - ztf_g0["mag"]).to_numpy()
    np.testing.assert_allclose(delta[inside], -1.5)
    assert (delta[~inside] == 0).all() and inside.sum() == 24
    np.testing.assert_allclose(-2.5 * np.log10(out["flux"] / ztf_g0["flux"]), delta, atol=1e-12)
    for kept in ("magerr", "fluxerr", "flagged", "catflags", "ra", "dec"):
        pd.testing.assert_series_equal(out[kept], ztf_g0[kept])
    assert not {"snr", "dsnr", "dmag"} & set(out.columns)  # stale scores are dropped
    with pytest.raises(MissingColumnsError, match="dsnr"):
        Finder(FinderConfig()).find(out)


def test_gaussian_injection_profile(pi_men: pd.DataFrame) -> None:
    t0 = float(pi_men["mjd"].iloc[40])
    out = simulator().inject(pi_men, Injection("gaussian", t0, 0.01, 0.2))
    expected = 0.2 * np.exp(-0.5 * ((pi_men["mjd"].to_numpy() - t0) / 0.01) ** 2)
    np.testing.assert_allclose((out["mag"] - pi_men["mag"]).to_numpy(), expected, atol=1e-9)
    assert (out["mag"] - pi_men["mag"]).iloc[40] == pytest.approx(0.2)
    np.testing.assert_allclose(out["flux"] / pi_men["flux"], 10 ** (-0.4 * expected), rtol=1e-12)
    with pytest.raises(ConfigError, match="unknown shape 'ramp'"):
        simulator().inject(pi_men, Injection("ramp", t0, 0.01, 0.2))


# --------------------------------------------------------------------------------------------
# recovery


def test_recovered_by_needs_overlap_and_sign() -> None:
    dimming = Injection("box", 100.0, 2.0, 0.5)  # core 99..101
    assert recovered_by([event(100.5, 100.5, -7.0)], dimming)  # one point, not on the peak time
    assert recovered_by([event(98.0, 99.0, -7.0)], dimming)  # touches the core
    assert not recovered_by([event(101.2, 102.0, -7.0)], dimming)
    assert not recovered_by([event(99.5, 100.5, 7.0)], dimming)  # a brightening is not a dimming
    flare = Injection("gaussian", 100.0, 0.5, -1.0)  # core 99.5..100.5 (+-1 sigma)
    assert recovered_by([event(101.2, 102.0, -9.0), event(100.4, 100.6, 9.0)], flare)
    assert not recovered_by([event(100.6, 101.0, 9.0)], flare)
    assert not recovered_by([], flare)


def test_strong_injections_are_recovered_with_their_time_range(ztf_g0: pd.DataFrame) -> None:
    finder = Finder(FinderConfig(), QualityConfig())
    injection = Injection("box", 58375.0, 4.0, -1.5)
    result = simulator().simulate(ztf_g0, [injection], finder.find, scorer(ZTF_ZP))

    assert result.recovered == [True]
    (found,) = result.events
    assert found.simulated and found.sim_pars == {**injection.as_dict(), "matched": True}
    # the box's first epoch to its last unflagged one (IRSA flagged the last epoch in the box)
    assert found.time_start_mjd == pytest.approx(58373.3725, abs=1e-4)
    assert found.time_end_mjd == pytest.approx(58376.316655, abs=1e-6)
    assert finder.find(ztf_g0) == []  # the events came from the injection


def test_efficiency_on_a_grid_of_injections(pi_men: pd.DataFrame) -> None:
    noise_mag = 2.5 / math.log(10) * robust(pi_men["flux"].to_numpy())[1] / pi_men["flux"].median()
    assert 1e-4 < noise_mag < 1.5e-4
    mjd = pi_men["mjd"].to_numpy()
    # strong: 0.005 mag is ~40 sigma; weak: 2e-5 mag is ~0.2 sigma, lost in a flat lightcurve
    grid = [
        Injection("gaussian", float(mjd[at]) + 3e-4, width, amp)
        for width in (0.003, 0.008)
        for amp in (-0.005, -2e-5, 2e-5, 0.005)
        for at in (20, 50, 80)
    ]
    finder = Finder(FinderConfig(), QualityConfig())
    result = simulator().simulate(pi_men, grid, finder.find, scorer(TESS_ZP))
    table = recovery_efficiency(grid, result.recovered, [0.002, 0.005, 0.01], [-0.01, -1e-3, 0.0, 1e-3, 0.01])

    assert len(table) == 8 and table["injected"].tolist() == [3] * 8
    strong = table["amplitude_hi"].abs().eq(0.01) | table["amplitude_lo"].abs().eq(0.01)
    assert table.loc[strong, "efficiency"].tolist() == [1.0] * 4
    assert table.loc[~strong, "recovered"].tolist() == [0] * 4
    assert all(e.simulated and e.sim_pars and e.sim_pars["matched"] for e in result.events)
    assert len(result.events) == 12  # one per strong injection, none from the weak ones


def test_drawn_injections_end_to_end(pi_men: pd.DataFrame) -> None:
    sim = simulator(
        min_width_days=0.002, max_width_days=0.008, min_amplitude_mag=-0.02, max_amplitude_mag=0.02
    )
    drawn = sim.draw(pi_men, 40, sim.rng_for("pi Men", 0))
    finder = Finder(FinderConfig(), QualityConfig())
    result = sim.simulate(pi_men, drawn, finder.find, scorer(TESS_ZP))
    table = recovery_efficiency(drawn, result.recovered, [0.002, 0.008], [-0.02, -0.002, 0.002, 0.02])

    assert table["injected"].sum() == 40
    outer = table[table["amplitude_lo"] != -0.002]
    assert outer["efficiency"].tolist() == [1.0, 1.0]  # beyond 0.002 mag (~17 sigma): all found
    assert table["recovered"].sum() == sum(result.recovered)


def test_recovery_efficiency_bins() -> None:
    injections = [
        Injection("box", 0.0, w, a)
        for w, a in [(0.5, 0.1), (0.5, 0.1), (1.5, 0.1), (1.5, 0.9), (2.0, 1.0), (3.0, 0.5), (0.5, -0.5)]
    ]
    recovered = [True, False, True, True, False, True, True]
    table = recovery_efficiency(injections, recovered, [0.0, 1.0, 2.0], [0.0, 0.5, 1.0])

    assert table[["width_lo", "amplitude_lo"]].values.tolist() == [[0, 0], [0, 0.5], [1, 0], [1, 0.5]]
    assert table["injected"].tolist() == [2, 0, 1, 2]  # 2.0 and 1.0 fall in the closed last bins
    assert table["recovered"].tolist() == [1, 0, 1, 1]
    assert table["efficiency"].tolist()[0] == 0.5 and math.isnan(table["efficiency"].iloc[1])
    assert table["efficiency"].tolist()[2:] == [1.0, 0.5]
    with pytest.raises(ValueError, match="7 injections but 2"):
        recovery_efficiency(injections, [True, False], [0, 1], [0, 1])
    empty = recovery_efficiency([], [], [0.0, 1.0], [0.0, 1.0])
    assert empty["injected"].tolist() == [0] and math.isnan(empty["efficiency"].iloc[0])


def test_injection_as_dict_and_extent() -> None:
    box = Injection("box", np.float64(10.0), 2.0, np.float64(-0.5))
    assert box.as_dict() == {"shape": "box", "time_peak_mjd": 10.0, "width_days": 2.0, "amplitude_mag": -0.5}
    assert type(box.as_dict()["time_peak_mjd"]) is float
    assert box.extent() == (9.0, 11.0)
    assert Injection("gaussian", 10.0, 2.0, 1.0).extent() == (8.0, 12.0)
