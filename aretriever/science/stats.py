"""Lightcurve statistics: flux from magnitudes, a robust baseline, per-point scores, a summary row.

Everything here is pure and runs in the process pool; no function modifies its input table.
Tables are DataFrames or structured arrays (:mod:`aretriever.science.columns`); the functions
returning a table return the type they were given.

Definitions (shared with the rest of :mod:`aretriever.science`)
----------------------------------------------------------------
- ``flux = 10**(-0.4 * (mag - zero_point_mag))`` and ``fluxerr = flux * magerr * ln(10) / 2.5``, added
  only when the frame has no such column. With the AB zero point 23.9 the flux is in microjansky.
- Robust mean and rms (:func:`robust_mean_rms`): iterative 3-sigma clipping about the median, at
  most 3 iterations, stopping early when nothing more is clipped; the robust mean is the *median* of
  the values kept and the robust rms their standard deviation (ddof=0). Fewer than 5 finite values
  are not clipped: plain median and standard deviation. Using the median in both regimes means
  the baseline does not change character when a lightcurve crosses 5 points.
- ``noise = max(fluxerr, robust_rms)`` per point, so neither underestimated archive errors nor a
  handful of lucky points can inflate the significance; ``snr = flux / noise``,
  ``dsnr = (flux - robust_mean) / noise``; ``dmag = mag - robust mean of mag``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np

from aretriever.errors import ScienceError
from aretriever.science.columns import Table, assign, column, has, names
from aretriever.science.moments import mean, median, std

Array = np.ndarray[Any, Any]

AB_ZERO_POINT_MAG: Final = 23.9  # AB magnitude -> flux in microjansky
CLIP_SIGMA: Final = 3.0
CLIP_MAX_ITERATIONS: Final = 3
MIN_CLIP_POINTS: Final = 5
UNIFORM_TOLERANCE: Final = 0.01  # time steps within 1% of the median step count as uniform
SECONDS_PER_DAY: Final = 86400.0
_MAG_TO_FLUX_ERR: Final = math.log(10.0) / 2.5
SCORE_COLUMNS: Final = ("flux", "fluxerr", "snr", "dsnr", "dmag")


class LightcurveInputError(ScienceError):
    """A lightcurve lacks what a statistic needs."""


# --------------------------------------------------------------------------------------------
# robust statistics


def robust_mean_rms(values: Array) -> tuple[float, float]:
    """Robust mean and rms of the finite ``values`` (see the module docstring).

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; NaN and infinities are ignored.

    Returns
    -------
    (float, float)
        The median of the values kept by iterative 3-sigma clipping (at most 3 iterations) and
        their standard deviation (ddof=0); with fewer than 5 finite values, their plain median and
        standard deviation; ``(nan, nan)`` without any finite value.
    """
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan, math.nan
    kept = finite if finite.size < MIN_CLIP_POINTS else _clipped(finite)
    return median(kept), std(kept)


def flux_baseline(flux: Array) -> tuple[float, float]:
    """:func:`robust_mean_rms` of ``flux`` (the good points' flux), computed once per content.

    The scores and the statistics of a lightcurve both need this baseline of the same values;
    remembering the last few answers, keyed by the values themselves, gives the statistics the
    one the scores computed without passing it through every overridable step in between (and
    cannot hand back a stale one: other values are another key).
    """
    finite = np.asarray(flux, dtype=np.float64).ravel()
    return _baseline_of(finite[np.isfinite(finite)].tobytes())


@functools.lru_cache(maxsize=16)
def _baseline_of(finite: bytes) -> tuple[float, float]:
    return robust_mean_rms(np.frombuffer(finite, dtype=np.float64))


def _clipped(values: Array) -> Array:
    """The values left by iterative clipping about the median; never empty for non-empty input.

    A zero spread (identical or underflowing values) can put every value outside the band when the
    median falls between two of them: clipping then stops with what it has.
    """
    kept = values
    for _ in range(CLIP_MAX_ITERATIONS):
        inside = np.abs(kept - median(kept)) <= CLIP_SIGMA * std(kept)
        count = np.count_nonzero(inside)
        if count in (0, kept.size):
            break
        kept = kept[inside]
    return kept


# --------------------------------------------------------------------------------------------
# per-point columns


def flux_columns(lc: Table, zero_point_mag: float) -> dict[str, Array]:
    """The ``flux`` and ``fluxerr`` columns :func:`with_flux` adds (only those ``lc`` lacks).

    Raises
    ------
    LightcurveInputError
        ``lc`` has neither a ``flux`` nor a ``mag`` column.
    """
    out: dict[str, Array] = {}
    if has(lc, "flux"):
        flux = column(lc, "flux")
    elif has(lc, "mag"):
        flux = out["flux"] = 10.0 ** (-0.4 * (column(lc, "mag") - zero_point_mag))
    else:
        raise LightcurveInputError(
            f"science: a lightcurve needs a 'flux' or 'mag' column; found {list(names(lc))}"
        )
    if not has(lc, "fluxerr"):
        out["fluxerr"] = flux * column(lc, "magerr") * _MAG_TO_FLUX_ERR
    return out


def with_flux(lc: Table, zero_point_mag: float) -> Table:
    """A copy of ``lc`` with ``flux`` and ``fluxerr`` columns, computed from ``mag``/``magerr`` only
    when absent (a missing ``magerr`` gives a NaN ``fluxerr``).

    Parameters
    ----------
    lc : pandas.DataFrame or structured array
        A processed lightcurve (not modified); the copy is of the same type.
    zero_point_mag : float
        Magnitude of unit flux: 23.9 for AB magnitudes (flux in microjansky), the instrument's
        otherwise (TESS: 20.44, flux in e-/s).

    Raises
    ------
    LightcurveInputError
        ``lc`` has neither a ``flux`` nor a ``mag`` column.
    """
    return assign(lc, flux_columns(lc, zero_point_mag))


def score_columns(lc: Table, zero_point_mag: float, good: Array | None = None) -> dict[str, Array]:
    """The columns :func:`scores` adds: ``flux``/``fluxerr`` when absent, ``snr``, ``dsnr``, ``dmag``."""
    out = flux_columns(lc, zero_point_mag)
    mask = good_mask(lc, good)
    flux = out["flux"] if "flux" in out else column(lc, "flux")
    fluxerr = out["fluxerr"] if "fluxerr" in out else column(lc, "fluxerr")
    center, rms = flux_baseline(flux[mask])
    noise = np.fmax(fluxerr, rms)  # fmax: a NaN on one side yields the other
    mag = column(lc, "mag")
    mag_center, _ = robust_mean_rms(mag[mask])
    out["snr"] = _ratio(flux, noise)
    out["dsnr"] = _ratio(flux - center, noise)
    out["dmag"] = mag - mag_center
    return out


def scores(lc: Table, zero_point_mag: float, good: Array | None = None) -> Table:
    """A copy of ``lc`` with ``flux``, ``fluxerr``, ``snr``, ``dsnr`` and ``dmag`` columns.

    Parameters
    ----------
    lc : pandas.DataFrame or structured array
        A processed lightcurve (not modified); the copy is of the same type.
    zero_point_mag : float
        See :func:`with_flux`.
    good : numpy.ndarray of bool, optional
        Rows the robust baseline is computed from (e.g. ``~flagged``), so that flagged points do
        not bias it; every row gets a score. Default: every row (non-finite values are always
        left out of the baseline).

    Returns
    -------
    pandas.DataFrame or structured array
        ``snr = flux / max(fluxerr, robust_rms)``, ``dsnr = (flux - robust_mean) / max(fluxerr,
        robust_rms)`` (robust statistics of the flux), ``dmag = mag - robust mean mag`` (NaN
        without a ``mag`` column). A point whose noise is zero or unknown scores NaN.
    """
    return assign(lc, score_columns(lc, zero_point_mag, good))


def good_mask(lc: Table, good: Array | None) -> Array:
    """``good`` as a boolean array of one entry per row (all True when None)."""
    if good is None:
        return np.ones(len(lc), dtype=bool)
    mask = np.asarray(good, dtype=bool)
    if mask.shape != (len(lc),):
        raise LightcurveInputError(
            f"science: the good-row mask has shape {mask.shape}; the lightcurve has {len(lc)} rows"
        )
    return mask


def _ratio(numerator: Array, denominator: Array) -> Array:
    """numerator / denominator, NaN where the denominator is not positive (no warnings)."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


# --------------------------------------------------------------------------------------------
# the per-lightcurve summary


@dataclass(frozen=True, slots=True)
class LightcurveStats:
    """Summary statistics of one lightcurve: exactly the statistic columns of a ``lightcurves`` row.

    Floats are plain Python floats or None (never NaN or infinite). Means and rms are over the
    good rows (see :func:`lightcurve_stats`); rms values are standard deviations with ddof=0.
    """

    mag_mean: float | None
    mag_rms: float | None
    flux_mean: float | None
    flux_rms: float | None
    flux_err_mean: float | None
    robust_mean: float | None
    robust_rms: float | None
    num_good: int
    snr: float | None
    dsnr_max: float | None
    dsnr_min: float | None
    dmag_max: float | None
    dmag_min: float | None
    exptime_s: float | None
    frame_rate_hz: float | None
    uniform_sampling: bool | None

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, ready for a ``lightcurves`` row."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def lightcurve_stats(
    lc: Table,
    zero_point_mag: float,
    exptime_s: float | None = None,
    good: Array | None = None,
    *,
    scored: bool = False,
) -> LightcurveStats:
    """Summary statistics of one processed lightcurve.

    Parameters
    ----------
    lc : pandas.DataFrame or structured array
        A processed lightcurve (not modified); ``mjd`` gives the sampling.
    zero_point_mag : float
        See :func:`with_flux`.
    exptime_s : float, optional
        Exposure time in seconds. Default: the median of a finite ``exptime`` column (ZTF), else
        None.
    good : numpy.ndarray of bool, optional
        The rows that count (e.g. ``~flagged``); default every row.
    scored : bool
        ``lc`` already holds the columns of :func:`scores` computed with this ``good`` (saves
        computing them again).

    Returns
    -------
    LightcurveStats
        Over the good rows with finite values: ``mag_mean``/``mag_rms``, ``flux_mean``/``flux_rms``,
        ``flux_err_mean``, the robust flux ``robust_mean``/``robust_rms``, ``num_good`` (good rows
        with a finite flux), the extremes of ``dsnr`` and ``dmag`` (see :func:`scores`), and the
        lightcurve's ``snr = robust_mean / max(flux_err_mean, robust_rms)``: the S/N of the source
        as a whole, the per-point noise scale being the larger of the typical archive error and
        the measured scatter, as for the per-point ``snr``. The sampling uses every row with a
        finite ``mjd``: ``frame_rate_hz = 1 / median time step`` and ``uniform_sampling`` is True
        when every step is within 1% of the median step; both None with fewer than 2 times or a
        zero median step.
    """
    if not scored:
        lc = scores(lc, zero_point_mag, good)
    mask = good_mask(lc, good)
    all_flux = column(lc, "flux")
    flux = _finite(all_flux[mask])
    mag_mean, mag_rms = _moments(_finite(column(lc, "mag")[mask]))
    flux_mean, flux_rms = _moments(flux)
    err_mean, _ = _moments(_finite(column(lc, "fluxerr")[mask & np.isfinite(all_flux)]))
    robust_mean, robust_rms = flux_baseline(flux)
    dsnr_max, dsnr_min = _extremes(column(lc, "dsnr")[mask])
    dmag_max, dmag_min = _extremes(column(lc, "dmag")[mask])
    frame_rate_hz, uniform = sampling(column(lc, "mjd"))
    return LightcurveStats(
        mag_mean=_opt(mag_mean),
        mag_rms=_opt(mag_rms),
        flux_mean=_opt(flux_mean),
        flux_rms=_opt(flux_rms),
        flux_err_mean=_opt(err_mean),
        robust_mean=_opt(robust_mean),
        robust_rms=_opt(robust_rms),
        num_good=int(flux.size),
        snr=_opt(_ratio(np.array([robust_mean]), np.fmax(np.array([err_mean]), robust_rms))[0]),
        dsnr_max=_opt(dsnr_max),
        dsnr_min=_opt(dsnr_min),
        dmag_max=_opt(dmag_max),
        dmag_min=_opt(dmag_min),
        exptime_s=_opt(exptime_s) if exptime_s is not None else _median_exptime(lc),
        frame_rate_hz=_opt(frame_rate_hz),
        uniform_sampling=uniform,
    )


def sampling(mjd: Array) -> tuple[float | None, bool | None]:
    """(frame rate in Hz, uniform-sampling flag) of the finite times ``mjd`` (days, any order).

    The frame rate is 1 / the median step between consecutive times; sampling is uniform when
    every step is within 1% of that median. (None, None) with fewer than 2 times or a zero
    median step (repeated times).
    """
    times = np.sort(_finite(np.asarray(mjd, dtype=np.float64)))
    if times.size < 2:
        return None, None
    steps = np.diff(times) * SECONDS_PER_DAY
    step = median(steps)
    if step <= 0:
        return None, None
    uniform = bool(np.all(np.abs(steps - step) <= UNIFORM_TOLERANCE * step))
    return 1.0 / step, uniform


def _median_exptime(lc: Table) -> float | None:
    values = _finite(column(lc, "exptime"))
    return median(values) if values.size else None


def _finite(values: Array) -> Array:
    finite: Array = values[np.isfinite(values)]
    return finite


def _moments(values: Array) -> tuple[float, float]:
    """(mean, std with ddof=0) of finite values; NaN for none, without numpy's warnings."""
    if values.size == 0:
        return math.nan, math.nan
    return mean(values), std(values)


def _extremes(values: Array) -> tuple[float, float]:
    """(max, min) of the finite values; NaN for none."""
    finite = _finite(values)
    if finite.size == 0:
        return math.nan, math.nan
    return float(np.max(finite)), float(np.min(finite))


def _opt(value: float | None) -> float | None:
    """A plain float for a database column: None instead of NaN or infinity."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
