"""The S/N peak finder: events in a processed lightcurve.

A lightcurve that already has the S/N columns (``dsnr``; ``mag``, ``dmag``, ``offset`` and
``flagged`` when available, see the science contract) is searched for peaks of ``|dsnr|``:

1. the strongest remaining point with ``|dsnr| > snr_threshold`` is a peak;
2. its event region is the contiguous run of points around it whose ``dsnr`` has the peak's sign
   and ``|dsnr| > snr_threshold + sidebands`` (with the default ``5 + (-2)``: above 3 sigma);
3. the region is excluded from further peaks (a later region also stops at it), and the search
   goes on until ``max_det_per_lc`` events are found or no point is left above the threshold.

Points that cannot be used (``flagged`` when ``drop_flagged``, or non-finite ``dsnr`` or ``mjd``)
never peak and never extend a region, but they do not break one either: the run is followed over
them, because a flagged epoch in the middle of a real flare (e.g. saturation) should not cut the
flare in two. They are listed in the event's ``rows`` when they sit inside it, and counted in its
``quality``; a region never starts or ends on one.

Each step is a method of :class:`Finder`, so that a subclass (loaded by dotted path from
``analysis.finder_module`` / ``finder_class``) can change one step and keep the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from aretriever.errors import ScienceError
from aretriever.numbers import finite_or_none
from aretriever.science.columns import Table, column, flags, has, names
from aretriever.science.plugins import SeedMethod, adopt_seed_names
from aretriever.settings import FinderConfig, QualityConfig

Array = np.ndarray[Any, Any]

__all__ = ["SEED_METHODS", "Event", "Finder", "MissingColumnsError", "Search", "plain"]

# The seed's Finder methods (AstroRetriever src/finder.py), each mapped to our step or refused.
SEED_METHODS: dict[str, SeedMethod] = {
    "detect": SeedMethod("find", "write it as detect(self, lc) -> list[Event], one lightcurve"),
    "make_detection": SeedMethod("event", "write it as make_detection(self, lc, rows, peak_row) -> Event"),
    "ingest_lightcurves": SeedMethod(None, "override find(lc), called once per lightcurve"),
    "process": SeedMethod(None, "the S/N columns are Analysis.process's; override it in an analysis_class"),
    "estimate_flux_noise": SeedMethod(None, "the noise is in the S/N columns: override Analysis.process"),
    "get_event_indices": SeedMethod(None, "override region(dsnr, usable, taken, peak)"),
}


class MissingColumnsError(ScienceError):
    """The lightcurve lacks a column the science step needs."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event found in a lightcurve; its fields are the columns of a ``Detection`` row.

    Attributes
    ----------
    time_start_mjd, time_end_mjd : float
        Times of the first and last usable points of the event region.
    time_peak_mjd : float
        Time of the peak point.
    snr : float
        ``dsnr`` at the peak: positive for a brightening, negative for a dimming.
    peak_mag : float or None
        ``mag`` at the peak (None when the lightcurve has no ``mag`` column).
    dmag : float or None
        ``dmag`` at the peak: negative for a brightening.
    quality : dict
        ``num_points`` (rows in the region), ``num_flagged`` (of them flagged) and
        ``max_abs_offset`` (largest ``|offset|`` in the region; None when unknown).
    rows : list of int
        Positional indices (``iloc``) of the region's rows in the input frame, ascending.
    simulated : bool
        True when found in a lightcurve with an injected event.
    sim_pars : dict or None
        The injection's parameters when ``simulated``.
    """

    time_start_mjd: float
    time_end_mjd: float
    time_peak_mjd: float
    snr: float
    peak_mag: float | None
    dmag: float | None
    quality: dict[str, Any]
    rows: list[int]
    simulated: bool = False
    sim_pars: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (no numpy scalars; NaN becomes None), JSON-ready."""
        return {
            "time_start_mjd": plain(self.time_start_mjd),
            "time_end_mjd": plain(self.time_end_mjd),
            "time_peak_mjd": plain(self.time_peak_mjd),
            "snr": plain(self.snr),
            "peak_mag": plain(self.peak_mag),
            "dmag": plain(self.dmag),
            "quality": plain(self.quality),
            "rows": plain(self.rows),
            "simulated": bool(self.simulated),
            "sim_pars": plain(self.sim_pars),
        }


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python ones and NaN/inf into None."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


@dataclass(slots=True)
class Search:
    """The state of one search, in time order.

    Attributes
    ----------
    dsnr : numpy.ndarray
        ``dsnr`` of each point.
    usable : numpy.ndarray
        Which points may peak or extend a region.
    order : numpy.ndarray
        Position of each point in the input frame.
    taken : numpy.ndarray
        Points inside the regions found so far.
    """

    dsnr: Array
    usable: Array
    order: Array  # time-ordered position -> position in the input frame
    taken: Array = field(init=False)

    def __post_init__(self) -> None:
        self.taken = np.zeros(self.dsnr.size, dtype=bool)


class Finder:
    """Find S/N peaks and their event regions in processed lightcurves.

    Parameters
    ----------
    cfg : FinderConfig
        ``snr_threshold`` (a peak's ``|dsnr|`` must exceed it), ``sidebands`` (the region
        extends while ``|dsnr| > snr_threshold + sidebands`` on the peak's sign) and
        ``max_det_per_lc``.
    quality : QualityConfig, optional
        ``drop_flagged``: flagged points neither peak nor extend a region.
    """

    #: columns :meth:`find` cannot do without
    required_columns: ClassVar[tuple[str, ...]] = ("mjd", "dsnr")

    #: the model of a subclass's own parameters (``finder_kwargs``), read as ``self.cfg.<name>``
    parameters: ClassVar[type[BaseModel] | None] = None
    seed_methods: ClassVar[dict[str, SeedMethod]] = SEED_METHODS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_seed_names(cls, cls.seed_methods)

    def __init__(self, cfg: FinderConfig, quality: QualityConfig | None = None) -> None:
        self.cfg = cfg
        self.quality_cfg = quality if quality is not None else QualityConfig()

    def find(self, lc: Table) -> list[Event]:
        """The events of one lightcurve, strongest first (the input is not modified).

        Parameters
        ----------
        lc : pandas.DataFrame or structured array
            A processed lightcurve with at least ``mjd`` and ``dsnr``; rows need not be
            time-ordered (regions are runs in time order).

        Returns
        -------
        list of Event
            At most ``max_det_per_lc``, by decreasing ``|snr|``; empty when no point exceeds
            ``snr_threshold``.

        Raises
        ------
        MissingColumnsError
            A required column is missing (the S/N columns were not computed).
        """
        self.check(lc)
        search = self.start(lc)
        events: list[Event] = []
        while len(events) < self.cfg.max_det_per_lc:
            peak = self.peak(search.dsnr, search.usable & ~search.taken)
            if peak is None:
                break
            first, last = self.region(search.dsnr, search.usable, search.taken, peak)
            # The whole span, unusable points inside it included, so no later region can start within it.
            search.taken[first : last + 1] = True
            events.append(self.event(lc, search.order[first : last + 1], int(search.order[peak])))
        return events

    # ----------------------------------------------------------------------------------------
    # the steps, each overridable

    def check(self, lc: Table) -> None:
        """Raise :class:`MissingColumnsError` when a :attr:`required_columns` entry is missing."""
        missing = [name for name in self.required_columns if not has(lc, name)]
        if missing:
            raise MissingColumnsError(
                f"finder: the lightcurve has no {missing} column(s) (found {list(names(lc))}); "
                "compute the S/N columns before finding"
            )

    def start(self, lc: Table) -> Search:
        """The search state: ``dsnr`` and :meth:`usable` in time order."""
        # Stable: points with equal mjd keep their input order, so the same input finds the same events.
        order = np.argsort(column(lc, "mjd"), kind="stable")
        dsnr = column(lc, "dsnr")[order]
        return Search(dsnr=dsnr, usable=self.usable(lc)[order], order=order)

    def usable(self, lc: Table) -> Array:
        """Points that may peak or extend a region (input order): finite ``mjd`` and ``dsnr``,
        and not ``flagged`` when ``drop_flagged`` (a missing ``flagged`` column flags nothing)."""
        good: Array = np.isfinite(column(lc, "mjd")) & np.isfinite(column(lc, "dsnr"))
        if self.quality_cfg.drop_flagged:
            good &= ~self.flags(lc)
        return good

    def flags(self, lc: Table) -> Array:
        """The ``flagged`` column as booleans (all False when there is none; NA counts as flagged)."""
        # An unknown flag counts as bad: a point of unknown quality should not be able to make an event.
        return flags(lc, "flagged")

    def peak(self, dsnr: Array, candidates: Array) -> int | None:
        """Index of the largest ``|dsnr|`` above ``snr_threshold`` among ``candidates``, or None."""
        if not candidates.any():
            return None
        # -inf rather than a boolean index: argmax then returns a position in the full time-ordered array.
        strength = np.where(candidates, np.abs(dsnr), -np.inf)
        best = int(np.argmax(strength))
        return best if strength[best] > self.cfg.snr_threshold else None

    def region(self, dsnr: Array, usable: Array, taken: Array, peak: int) -> tuple[int, int]:
        """``(first, last)`` indices (inclusive) of the event region around ``peak``.

        Members are usable points with ``sign * dsnr > snr_threshold + sidebands`` (the peak is
        always one). The run stops at the first usable non-member, or at a point already taken
        by an earlier event, on each side; unusable points are passed over. ``first`` and
        ``last`` are the outermost members.
        """
        sign = 1.0 if dsnr[peak] > 0 else -1.0
        # NaN dsnr (unusable points) compares False, as wanted; some numpy versions warn, and tests error.
        with np.errstate(invalid="ignore"):
            member = usable & (sign * dsnr > self.cfg.snr_threshold + self.cfg.sidebands)
        # With positive sidebands the peak itself may fall below the region threshold; it is always in.
        member[peak] = True
        # Unusable points are not stops: a flagged epoch inside a flare must not split it in two.
        stops = taken | (usable & ~member)
        before = np.flatnonzero(stops[:peak])
        after = np.flatnonzero(stops[peak + 1 :])
        lo = int(before[-1]) + 1 if before.size else 0
        hi = peak + int(after[0]) if after.size else dsnr.size - 1
        # Trimmed to the outermost members, so a region never starts or ends on an unusable point.
        inside = np.flatnonzero(member[lo : hi + 1]) + lo
        return int(inside[0]), int(inside[-1])

    def event(self, lc: Table, rows: Array, peak_row: int) -> Event:
        """The event of one region; ``rows`` are input positions in time order."""
        mjd = column(lc, "mjd")
        return Event(
            time_start_mjd=float(mjd[rows[0]]),
            time_end_mjd=float(mjd[rows[-1]]),
            time_peak_mjd=float(mjd[peak_row]),
            snr=float(column(lc, "dsnr")[peak_row]),
            peak_mag=_value_at(lc, "mag", peak_row),
            dmag=_value_at(lc, "dmag", peak_row),
            quality=self.quality(lc, rows),
            rows=sorted(int(row) for row in rows),
        )

    def quality(self, lc: Table, rows: Array) -> dict[str, Any]:
        """Quality values of a region: ``num_points``, ``num_flagged``, ``max_abs_offset``."""
        largest = None
        if has(lc, "offset"):
            offsets = np.abs(column(lc, "offset")[rows])
            finite = offsets[np.isfinite(offsets)]
            largest = float(finite.max()) if finite.size else None
        return {
            "num_points": int(rows.size),
            "num_flagged": int(self.flags(lc)[rows].sum()),
            "max_abs_offset": largest,
        }


def _value_at(lc: Table, name: str, row: int) -> float | None:
    """Column ``name`` at positional ``row`` as a float; None when the column is missing or NaN."""
    if not has(lc, name):
        return None
    return finite_or_none(column(lc, name)[row])
