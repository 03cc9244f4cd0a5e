"""Plots of lightcurves (the library behind ``Lightcurve.plot()`` and ``python -m aretriever.plot``).

A source's figure has one axis per observatory holding all its lightcurves (seasons, sectors,
filters): magnitude against MJD with error bars, coloured by filter, y axis inverted. Points the
science stage ``flagged`` are hollow and grey; each lightcurve has a shaded robust band (mean ± rms)
over its own time range; detections are a shaded time range with a marker at the peak, injected
(simulated) ones hatched and in another colour. When lightcurves carry a ``dsnr`` column, a panel
of it sits under the magnitudes. Nothing here needs a display: figures are made without pyplot
and saved through Agg.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from aretriever.errors import AretrieverError
from aretriever.numbers import finite_or_none
from aretriever.store.hdf5 import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Array = np.ndarray[Any, Any]

TIME, MAG, MAGERR, FLAGGED, DSNR, FLUX = "mjd", "mag", "magerr", "flagged", "dsnr", "flux"
MAD_TO_SIGMA: Final = 1.4826
_MAG_PER_LN: Final = 2.5 / math.log(10.0)
FILTER_COLORS: Final[dict[str, str]] = {"zg": "tab:green", "g": "tab:green", "zr": "tab:red", "r": "tab:red",
                                        "zi": "darkorange", "i": "darkorange", "tess": "purple"}  # fmt: skip
#: what a plot reads of a detection (``observatory`` and ``series_number`` find its lightcurve)
DETECTION_FIELDS: Final = ("observatory", "cfg_hash", "series_number", "simulation_number",
                           "time_start_mjd", "time_end_mjd", "time_peak_mjd", "snr", "peak_mag", "dmag",
                           "simulated")  # fmt: skip


class PlotError(AretrieverError, ValueError):
    """A plot cannot be made."""


class NoLightcurvesError(PlotError):
    """The source has no lightcurves to plot."""


class RawLike(Protocol):
    """What a raw plot needs of a ``raw_photometry`` row."""

    observatory: str
    source_name: str


class LightcurveLike(Protocol):
    """What a plot needs of a ``lightcurves`` row (:class:`~aretriever.store.models.Lightcurve`).

    ``robust_mean``/``robust_rms`` are in flux units, as the science stage stores them.
    """

    observatory: str
    filter: str | None
    series_number: int
    robust_mean: float | None
    robust_rms: float | None


@dataclass(frozen=True, slots=True)
class _Style:
    color: str
    marker: str
    hatch: str | None
    label: str


_DETECTED = _Style("goldenrod", "*", None, "detection")
_SIMULATED = _Style("tab:cyan", "X", "//", "simulated detection")


# --------------------------------------------------------------------------------------------
# pure helpers


def filter_color(name: str | None) -> str:
    """Colour of a filter: fixed for ZTF g/r/i and TESS, else a stable pick from the colour cycle."""
    key = (name or "").lower()
    if key in FILTER_COLORS:
        return FILTER_COLORS[key]
    fixed = {to_hex(c) for c in FILTER_COLORS.values()}
    cycle = [c for c in mpl.rcParams["axes.prop_cycle"].by_key().get("color", []) if to_hex(c) not in fixed]
    # crc32, not hash(): the same filter gets the same colour in every process
    return str(cycle[zlib.crc32(key.encode()) % len(cycle)]) if cycle else "tab:blue"


def _floats(data: pd.DataFrame, column: str) -> Array:
    if column not in data:
        return np.full(len(data), np.nan)
    return data[column].to_numpy(dtype=np.float64, na_value=np.nan)


def flagged_mask(data: pd.DataFrame) -> Array:
    """The ``flagged`` column as booleans (all False without one; a missing value is not flagged)."""
    if FLAGGED not in data:
        return np.zeros(len(data), dtype=bool)
    return data[FLAGGED].to_numpy(dtype=bool, na_value=False)


def robust_band(mag: Array) -> tuple[float, float] | None:
    """(median, 1.4826 × MAD) of the finite ``mag``; None when there is none."""
    values = np.asarray(mag, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    median = float(np.median(values))
    return median, MAD_TO_SIGMA * float(np.median(np.abs(values - median)))


def mag_band_from_flux(
    data: pd.DataFrame, mean_flux: float | None, rms_flux: float | None
) -> tuple[float, float] | None:
    """A robust band stored in flux, as (mean mag, rms mag); None when it cannot be converted.

    The zero point is read off the data (median of ``mag + 2.5 log10(flux)``), so the band uses
    whatever zero point made the ``flux`` column; the rms is linearised (1.0857 × rms / mean).
    """
    if mean_flux is None or rms_flux is None or not mean_flux > 0 or FLUX not in data:
        return None
    flux, mag = _floats(data, FLUX), _floats(data, MAG)
    ok = np.isfinite(flux) & np.isfinite(mag) & (flux > 0)
    if not ok.any():
        return None
    zero_point = float(np.median(mag[ok] + 2.5 * np.log10(flux[ok])))
    return zero_point - 2.5 * math.log10(mean_flux), _MAG_PER_LN * rms_flux / mean_flux


def detection_mapping(detection: Mapping[str, Any] | object) -> Mapping[str, Any]:
    """A detection as a mapping (a :class:`Detection` row becomes a dict of its plotted fields)."""
    if isinstance(detection, Mapping):
        return detection
    return {name: getattr(detection, name, None) for name in DETECTION_FIELDS}


# --------------------------------------------------------------------------------------------
# one lightcurve on one axis


def _new_axes() -> Axes:
    import matplotlib.pyplot as plt  # only for interactive use: pyplot shows figures in notebooks

    _fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    return ax


def plot_lightcurve(
    data: pd.DataFrame,
    *,
    filter: str | None,
    robust_mean_mag: float | None = None,
    robust_rms_mag: float | None = None,
    detections: Sequence[Mapping[str, Any]] = (),
    ax: Axes | None = None,
    label: str | None = None,
) -> Axes:
    """Plot one lightcurve: magnitude against MJD with error bars.

    Parameters
    ----------
    data : pandas.DataFrame
        Needs ``mjd`` and ``mag``; uses ``magerr`` and ``flagged`` when present.
    filter : str or None
        Filter name; picks the colour (:func:`filter_color`) and the default label.
    robust_mean_mag, robust_rms_mag : float, optional
        The robust band, in magnitudes. Default: median and 1.4826 × MAD of the unflagged points.
    detections : sequence of mapping
        ``time_start_mjd``, ``time_end_mjd`` (shaded), ``time_peak_mjd`` (marker), and optionally
        ``peak_mag`` (else the nearest point's magnitude), ``snr`` (annotated) and ``simulated``.
    ax : matplotlib.axes.Axes, optional
        Axis to draw on (several lightcurves may share one); default a new pyplot figure.
    label : str, optional
        Legend label of the points (default the filter name).

    Returns
    -------
    matplotlib.axes.Axes
        With one errorbar container for the unflagged points, one more if any point is flagged,
        and the y axis inverted.
    """
    missing = [c for c in (TIME, MAG) if c not in data]
    if missing:
        raise PlotError(f"plot: the lightcurve has no column(s) {missing} (columns: {list(data.columns)})")
    ax = ax if ax is not None else _new_axes()
    time, mag = _floats(data, TIME), _floats(data, MAG)
    yerr = _floats(data, MAGERR) if MAGERR in data else None
    flagged = flagged_mask(data)
    color = filter_color(filter)
    for rows, hollow in ((~flagged, False), (flagged, True)):
        if hollow and not rows.any():
            continue
        ax.errorbar(time[rows], mag[rows], yerr=None if yerr is None else yerr[rows], fmt="o", markersize=3,
                    color="grey" if hollow else color, markerfacecolor="none" if hollow else color,
                    elinewidth=0.6, alpha=0.6 if hollow else 0.85,
                    label="flagged" if hollow else label or filter or MAG)  # fmt: skip
    band = (robust_mean_mag, robust_rms_mag)
    if band[0] is None or band[1] is None:
        band = robust_band(mag[~flagged]) or (None, None)
    _draw_band(ax, time, band, color)
    for detection in detections:
        _draw_detection(ax, detection_mapping(detection), time, mag)
    _finish_axes(ax, "magnitude")
    return ax


def _draw_band(ax: Axes, time: Array, band: tuple[float | None, float | None], color: str) -> None:
    mean, rms = band
    times = time[np.isfinite(time)]
    if mean is None or rms is None or not times.size:
        return
    span = [float(times.min()), float(times.max())]
    ax.fill_between(span, mean - rms, mean + rms, color=color, alpha=0.15, linewidth=0)
    ax.hlines(mean, span[0], span[1], colors=color, linestyles="--", linewidth=0.8)


def _draw_detection(ax: Axes, detection: Mapping[str, Any], time: Array, mag: Array) -> None:
    style = _SIMULATED if detection.get("simulated") else _DETECTED
    start = finite_or_none(detection.get("time_start_mjd"))
    end = finite_or_none(detection.get("time_end_mjd"))
    if start is not None and end is not None:
        # an edge line keeps a one-point event (start == end) visible
        ax.axvspan(start, end, facecolor=style.color, edgecolor=style.color, alpha=0.25, hatch=style.hatch)
    peak = finite_or_none(detection.get("time_peak_mjd"))
    if peak is None and start is not None and end is not None:
        peak = (start + end) / 2
    y = finite_or_none(detection.get("peak_mag"))
    y = y if y is not None or peak is None else _nearest(time, mag, peak)
    if peak is None or y is None:
        return
    ax.plot([peak], [y], linestyle="none", marker=style.marker, markersize=11, color=style.color,
            markeredgecolor="black", label=style.label, zorder=5)  # fmt: skip
    snr = finite_or_none(detection.get("snr"))
    if snr is not None:
        ax.annotate(f"S/N {snr:.1f}", (peak, y), xytext=(4, 4), textcoords="offset points", fontsize=7)


def _nearest(time: Array, mag: Array, t: float) -> float | None:
    ok = np.isfinite(time) & np.isfinite(mag)
    if not ok.any():
        return None
    return float(mag[ok][np.argmin(np.abs(time[ok] - t))])


def _finish_axes(ax: Axes, ylabel: str, invert: bool = True) -> None:
    if invert and not ax.yaxis_inverted():  # invert_yaxis() toggles: a second call must not undo it
        ax.invert_yaxis()
    ax.set_xlabel("MJD")
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per filter, not per season
    marks = {_DETECTED.label, _SIMULATED.label}
    unique = {k: unique[k] for k in sorted(unique, key=lambda k: k in marks)}  # points first
    if unique:
        # outside the axis: "best" placement scans every point, slow for a TESS sector
        ax.legend(list(unique.values()), list(unique), fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))  # fmt: skip


def plot_dsnr(data: pd.DataFrame, *, filter: str | None, ax: Axes, label: str | None = None) -> Axes:
    """Plot the science stage's ``dsnr`` (S/N of the deviation from the robust mean) against MJD."""
    time, dsnr, flagged = _floats(data, TIME), _floats(data, DSNR), flagged_mask(data)
    color = filter_color(filter)
    ax.plot(time[~flagged], dsnr[~flagged], ".", markersize=3, color=color, label=label or filter or DSNR)
    if flagged.any():
        ax.plot(time[flagged], dsnr[flagged], "o", markersize=3, markerfacecolor="none", color="grey")
    ax.axhline(0.0, color="black", linewidth=0.6)
    _finish_axes(ax, "ΔS/N", invert=False)
    return ax


def plot_row(
    lc: LightcurveLike,
    data: pd.DataFrame,
    *,
    detections: Sequence[Mapping[str, Any] | object] = (),
    ax: Axes | None = None,
    label: str | None = None,
) -> Axes:
    """Plot a stored lightcurve with its row's robust band (flux, converted to magnitudes)."""
    band = mag_band_from_flux(data, lc.robust_mean, lc.robust_rms) or (None, None)
    return plot_lightcurve(
        data,
        filter=lc.filter or lc.observatory,
        robust_mean_mag=band[0],
        robust_rms_mag=band[1],
        detections=[detection_mapping(d) for d in detections],
        ax=ax,
        label=label,
    )


# --------------------------------------------------------------------------------------------
# a source: one axis per observatory


def plot_source(
    lightcurves: Sequence[tuple[LightcurveLike, pd.DataFrame]],
    detections: Sequence[Mapping[str, Any] | object] = (),
    title: str | None = None,
) -> Figure:
    """A figure with one axis per observatory, each holding all of its lightcurves.

    Detections go to the lightcurve with their ``observatory`` and ``series_number``. The
    figure is made without pyplot (no display, nothing left open): save it with :func:`save_png`.

    Raises
    ------
    PlotError
        If ``lightcurves`` is empty.
    """
    groups: dict[str, list[tuple[LightcurveLike, pd.DataFrame]]] = {}
    for lc, data in lightcurves:
        groups.setdefault(lc.observatory, []).append((lc, data))
    if not groups:
        raise PlotError("plot: no lightcurves to plot")
    ratios = [r for members in groups.values() for r in ([3, 1] if _has_dsnr(members) else [3])]
    fig = Figure(figsize=(11, 1.2 + 1.1 * sum(ratios)), layout="constrained")
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    row = 0
    marks = [detection_mapping(d) for d in detections]
    for observatory, members in groups.items():
        ax = fig.add_subplot(grid[row])
        _plot_observatory(ax, observatory, members, marks)
        row += 1
        if _has_dsnr(members):
            dax = fig.add_subplot(grid[row], sharex=ax)
            for lc, data in members:
                plot_dsnr(data, filter=lc.filter or observatory, ax=dax)
            ax.set_xlabel("")  # the panel below carries it
            row += 1
    if title:
        fig.suptitle(title)
    return fig


def _has_dsnr(members: Sequence[tuple[LightcurveLike, pd.DataFrame]]) -> bool:
    return any(DSNR in data for _, data in members)


def _plot_observatory(
    ax: Axes,
    observatory: str,
    members: Sequence[tuple[LightcurveLike, pd.DataFrame]],
    detections: Sequence[Mapping[str, Any]],
) -> None:
    for lc, data in members:
        mine = [
            d
            for d in detections
            if d.get("observatory") in (None, observatory) and d.get("series_number") == lc.series_number
        ]
        plot_row(lc, data, detections=mine, ax=ax)
    points = sum(len(data) for _, data in members)
    ax.set_title(f"{observatory.upper()}: {len(members)} lightcurve(s), {points} points", fontsize="medium")


def save_png(fig: Figure, out: Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG atomically (a temporary file in the same folder, then a rename).

    Raises
    ------
    WriteError
        If the file cannot be written.
    """
    out = Path(out)
    FigureCanvasAgg(fig)  # Agg whatever pyplot's backend would be: no display needed
    with atomic_path(out, "plot") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


def plot_raw(raw: RawLike, data: pd.DataFrame, *, ax: Axes | None = None) -> Axes | None:
    """Raw photometry: magnitude against MJD, one colour per filter (``filtercode``, ``filter`` or
    none); None when there is nothing to plot. Registered as the ``raw`` plotter."""
    column = next((c for c in ("filtercode", "filter") if c in data), None)
    groups = data.groupby(column, sort=True) if column else [(raw.observatory, data)]
    for band, part in groups:
        ax = plot_lightcurve(part, filter=str(band), ax=ax, label=f"{raw.source_name} {band}")
    return ax
