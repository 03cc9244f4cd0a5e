"""One TESS lightcurve per sector from the raw table (pure, picklable: runs in the process pool)."""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd

from aretriever.numbers import finite_or_none

from .base import ReducedLightcurve, Target
from .tess_config import TessReducerConfig

# relative: this folder installs as aretriever.adapters, and mypy reads it as ``adapters``
from .tess_fits import cadence_exposure_s

FILTER: Final = "tess"
_MAG_PER_LN: Final = 2.5 / math.log(10.0)
_OPTIONAL_OUTPUT: Final = {"CADENCENO": "cadenceno", "SAP_BKG": "bkg", "SAP_BKG_ERR": "bkgerr"}

Array = np.ndarray[Any, Any]

# pure reduction


def reduce_lightcurves(raw: pd.DataFrame, target: Target, cfg: TessReducerConfig) -> list[ReducedLightcurve]:
    """One lightcurve per sector, ordered by start time (pure).

    Parameters
    ----------
    raw : pandas.DataFrame
        The raw table from :func:`read_raw_table` (not modified).
    target : Target
        The source (unused: the TIC match already chose the star).
    cfg : TessReducerConfig
        Rows with NaN TIME or NaN flux, or with ``QUALITY & quality_bitmask != 0``, are dropped;
        ``flux_column`` is the flux; ``mag = zero_point_mag - 2.5 log10(flux)``.

    Returns
    -------
    list of ReducedLightcurve
        Times in MJD (TDB): ``TIME + BJDREFI + BJDREFF - 2400000.5``; filter ``"tess"``. A sector
        without any good row gives no lightcurve.
    """
    # by TIC too: a raw table never mixes stars, but if it did their sectors must stay apart
    curves = [sector_lightcurve(part, cfg) for _, part in raw.groupby(["SECTOR", "TICID"], sort=True)]
    return sorted((lc for lc in curves if lc is not None), key=lambda lc: lc.time_start_mjd)


def sector_lightcurve(part: pd.DataFrame, cfg: TessReducerConfig) -> ReducedLightcurve | None:
    """The lightcurve of one sector's raw rows, or None when no row survives the cuts."""
    time = part["TIME"].to_numpy(dtype=np.float64)
    flux = part[cfg.flux_column].to_numpy(dtype=np.float64)
    quality = part["QUALITY"].to_numpy().astype(np.int64)
    finite = np.isfinite(time) & np.isfinite(flux)
    keep = finite & ((quality & cfg.quality_bitmask) == 0)
    if not keep.any():
        return None
    first = part.iloc[0]
    # the integer day offset first, so TIME's precision survives in the sum
    mjd = time[keep] + (float(first["BJDREFI"]) - 2400000.0) + (float(first["BJDREFF"]) - 0.5)
    order = np.argsort(mjd, kind="stable")
    data = _lightcurve_table(part, keep, mjd, cfg).iloc[order].reset_index(drop=True)
    meta = _lightcurve_meta(first, data, cfg)
    meta.update(num_dropped_nan=int((~finite).sum()), num_dropped_quality=int((finite & ~keep).sum()))
    return ReducedLightcurve(
        data=data,
        filter=FILTER,
        time_start_mjd=float(data["mjd"].iloc[0]),
        time_end_mjd=float(data["mjd"].iloc[-1]),
        meta=meta,
    )


def _lightcurve_table(part: pd.DataFrame, keep: Array, mjd: Array, cfg: TessReducerConfig) -> pd.DataFrame:
    flux = part[cfg.flux_column].to_numpy(dtype=np.float64)[keep]
    fluxerr = part[cfg.flux_column + "_ERR"].to_numpy(dtype=np.float64)[keep]
    positive = flux > 0  # a negative flux has no magnitude (NaN), but the point stays
    safe = np.where(positive, flux, 1.0)
    columns: dict[str, Array] = {
        "mjd": mjd,
        "flux": flux,
        "fluxerr": fluxerr,
        "mag": np.where(positive, cfg.zero_point_mag - 2.5 * np.log10(safe), np.nan),
        "magerr": np.where(positive, _MAG_PER_LN * fluxerr / safe, np.nan),
        "quality": part["QUALITY"].to_numpy()[keep].astype(np.int32),
    }
    for raw_name, name in _OPTIONAL_OUTPUT.items():
        if raw_name in part:
            columns[name] = part[raw_name].to_numpy()[keep]
    return pd.DataFrame(columns)


def _lightcurve_meta(first: pd.Series[Any], data: pd.DataFrame, cfg: TessReducerConfig) -> dict[str, Any]:
    tess_mag = finite_or_none(first["TESSMAG"])
    mags = data["mag"].to_numpy()
    mags = mags[np.isfinite(mags)]
    measured = None
    if tess_mag is not None and mags.size:
        # the zero point that would put the median instrumental mag on the TIC's TESS mag
        measured = cfg.zero_point_mag + tess_mag - float(np.median(mags))
    cadence_s, exposure_s = cadence_exposure_s(first["TIMEDEL"], first["DEADC"])
    return {
        "sector": int(first["SECTOR"]),
        "tic": int(first["TICID"]),
        "camera": int(first["CAMERA"]),
        "ccd": int(first["CCD"]),
        "num_points": len(data),
        "flux_column": cfg.flux_column,
        "quality_bitmask": cfg.quality_bitmask,
        "zero_point_mag": cfg.zero_point_mag,
        "measured_zero_point_mag": measured,
        "tess_mag": tess_mag,
        "exposure_s": exposure_s,
        "cadence_s": cadence_s,
        "time_scale": "tdb",
    }
