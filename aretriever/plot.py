"""Plots of lightcurves: ``Lightcurve.plot()`` and ``python -m aretriever.plot <source> --out lc.png``.

A source's figure has one axis per observatory holding all its lightcurves (seasons, sectors,
filters): magnitude against MJD with error bars, coloured by filter, y axis inverted. Points the
science stage ``flagged`` are hollow and grey; each lightcurve has a shaded robust band (mean ± rms)
over its own time range; detections are a shaded time range with a marker at the peak, injected
(simulated) ones hatched and in another colour. When lightcurves carry a ``dsnr`` column, a panel
of it sits under the magnitudes. Nothing here needs a display: figures are made without pyplot
and saved through Agg.

Exit codes: 0 PNG written; 1 nothing to plot (unknown source, no lightcurves) or storage failed;
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import matplotlib as mpl
import numpy as np
import pandas as pd
import sqlalchemy as sa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.config import load_config
from aretriever.errors import AretrieverError, StoreError
from aretriever.exits import EXIT_OK, exit_code
from aretriever.settings import Config
from aretriever.store import db, paths
from aretriever.store.hdf5 import atomic_path
from aretriever.store.models import Detection, Lightcurve, Source

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


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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
    start, end = _opt_float(detection.get("time_start_mjd")), _opt_float(detection.get("time_end_mjd"))
    if start is not None and end is not None:
        # an edge line keeps a one-point event (start == end) visible
        ax.axvspan(start, end, facecolor=style.color, edgecolor=style.color, alpha=0.25, hatch=style.hatch)
    peak = _opt_float(detection.get("time_peak_mjd"))
    if peak is None and start is not None and end is not None:
        peak = (start + end) / 2
    y = _opt_float(detection.get("peak_mag"))
    y = y if y is not None or peak is None else _nearest(time, mag, peak)
    if peak is None or y is None:
        return
    ax.plot([peak], [y], linestyle="none", marker=style.marker, markersize=11, color=style.color,
            markeredgecolor="black", label=style.label, zorder=5)  # fmt: skip
    snr = _opt_float(detection.get("snr"))
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


# --------------------------------------------------------------------------------------------
# reading a source from the store


@dataclass(frozen=True, slots=True)
class SourcePlotInputs:
    """A source's stored lightcurves with their tables, and their detections (as dicts)."""

    name: str
    project: str
    cfg_hash: str
    lightcurves: list[tuple[Lightcurve, pd.DataFrame]]
    detections: list[dict[str, Any]]
    source: Source | None = None

    def title(self) -> str:
        """``<name> (RA .., Dec .., mag ..) - project <project>[ <cfg hash>]``."""
        where = ""
        if self.source is not None:
            mag = "" if self.source.mag is None else f", mag {self.source.mag:.2f}"
            where = f" (RA {self.source.ra_deg:.5f}, Dec {self.source.dec_deg:+.5f}{mag})"
        version = f" {self.cfg_hash}" if self.cfg_hash else ""
        return f"{self.name}{where} - project {self.project}{version}"


def _lightcurve_query(name: str, project: str | None, observatory: str | None) -> sa.Select[Any]:
    query = sa.select(Lightcurve).where(Lightcurve.source_name == name, Lightcurve.simulation_number == 0)
    if project is not None:
        query = query.where(Lightcurve.project == project)
    if observatory is not None:
        query = query.where(Lightcurve.observatory == observatory)
    return query.order_by(Lightcurve.observatory, Lightcurve.time_start_mjd, Lightcurve.series_number)


def _newest_product_set(lcs: list[Lightcurve]) -> list[Lightcurve]:
    """Only the (project, config hash) written last: versions of one product never share a plot."""
    newest = max(lcs, key=lambda lc: lc.created_at)
    return [lc for lc in lcs if (lc.project, lc.cfg_hash) == (newest.project, newest.cfg_hash)]


async def _detections(session: AsyncSession, lcs: list[Lightcurve]) -> list[dict[str, Any]]:
    first = lcs[0]
    rows = await session.scalars(
        sa.select(Detection)
        .where(
            Detection.source_name == first.source_name,
            Detection.project == first.project,
            Detection.cfg_hash == first.cfg_hash,
            Detection.observatory.in_(sorted({lc.observatory for lc in lcs})),
        )
        .order_by(Detection.observatory, Detection.series_number, Detection.time_peak_mjd)
    )
    return [dict(detection_mapping(d)) for d in rows]


def _no_lightcurves(name: str, project: str | None, observatory: str | None, why: str) -> NoLightcurvesError:
    where = f"project {project!r}" if project is not None else "any project"
    if observatory is not None:
        where += f", observatory {observatory!r}"
    return NoLightcurvesError(f"plot: no lightcurves for source {name!r} in {where}: {why}")


async def _explain_missing(session: AsyncSession, name: str) -> str:
    if await session.scalar(sa.select(Source.name).where(Source.name == name)) is None:
        return "no source of that name in the database"
    query = sa.select(Lightcurve.project).where(Lightcurve.source_name == name).distinct()
    projects = sorted(await session.scalars(query))
    if not projects:
        return "the source has none in any project (no data, or not reduced)"
    return f"the source has some in project(s) {', '.join(map(repr, projects))} (use --project)"


def _read_tables(lcs: Sequence[Lightcurve], data_root: Path | None) -> list[tuple[Lightcurve, pd.DataFrame]]:
    return [(lc, lc.load(data_root)) for lc in lcs]


async def load_source_plot_inputs(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    *,
    project: str | None = None,
    observatory: str | None = None,
    data_root: Path | None = None,
) -> SourcePlotInputs:
    """Read a source's lightcurves (rows and HDF5 tables) and detections for :func:`plot_source`.

    Only real lightcurves (``simulation_number`` 0) are read; with several projects or config
    hashes, the set written last. Detections of any simulation number are kept (drawn by
    ``simulated``). Tables are read in a worker thread.

    Raises
    ------
    NoLightcurvesError
        The source is unknown or has no lightcurves there; the message says which, and where else
        it has some.
    StoreError
        A table cannot be read from its file.
    """
    async with sessions() as session:
        lcs = list(await session.scalars(_lightcurve_query(name, project, observatory)))
        if not lcs:
            raise _no_lightcurves(name, project, observatory, await _explain_missing(session, name))
        lcs = _newest_product_set(lcs)
        detections = await _detections(session, lcs)
        source = await session.scalar(sa.select(Source).where(Source.name == name))
    tables = await asyncio.to_thread(_read_tables, lcs, data_root)
    return SourcePlotInputs(name, lcs[0].project, lcs[0].cfg_hash, tables, detections, source)


# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aretriever.plot", description=__doc__.split("\n")[0])
    p.add_argument("source", help="source name, exactly as in the catalog")
    p.add_argument("--out", type=Path, help="PNG to write (default: <source>.png)")
    p.add_argument("--project", help="project name (default: the config's, else 'default')")
    p.add_argument("--observatory", help="only this observatory (default: all)")
    p.add_argument("--data-root", type=Path, help="DATA_ROOT (default: $RETRIEVER_DATA or ./data)")
    p.add_argument("--db-url", help="database URL (default: $ARETRIEVER_DB_URL or SQLite in DATA_ROOT)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG")
    return p


def load(args: argparse.Namespace) -> Config:
    """The resolved config: file, then command-line flags, then ``--set``."""
    sets = list(args.set)
    if args.data_root is not None:
        sets.append(f"store.data_root={args.data_root}")
    if args.db_url:
        sets.append(f"store.db_url={args.db_url}")
    overrides = {"project": {"name": args.project}} if args.project else None
    return load_config(args.config or None, project=args.project, overrides=overrides, sets=sets)


def _check_database(url: str) -> None:
    # opening a missing SQLite file would create an empty database (and its folder)
    parsed = make_url(url)
    database = parsed.database or ""
    local = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if local and not database.startswith("file:") and not Path(database).expanduser().exists():
        raise StoreError(f"store: no database at {database} (run python -m aretriever.fetch first)")


async def read_source(cfg: Config, name: str, observatory: str | None) -> SourcePlotInputs:
    """Open the configured store and read what :func:`plot_source` needs for ``name``."""
    root = paths.data_root(cfg.store.data_root)
    url = db.resolve_db_url(cfg.store, root)
    _check_database(url)
    engine = db.create_engine(url, statement_timeout_s=cfg.store.statement_timeout_s)
    try:
        sessions = db.session_factory(engine)
        return await load_source_plot_inputs(
            sessions, name, project=cfg.project.name, observatory=observatory, data_root=root
        )
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise StoreError(f"store: cannot read {shown}: {exc}") from exc
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path(f"{paths.safe_name(args.source)}.png")

    def body() -> int:
        cfg = load(args)
        inputs = asyncio.run(read_source(cfg, args.source, args.observatory))
        save_png(plot_source(inputs.lightcurves, inputs.detections, inputs.title()), out, dpi=args.dpi)
        print(out)
        return EXIT_OK

    return exit_code(body)


if __name__ == "__main__":
    sys.exit(main())
