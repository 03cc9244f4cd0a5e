"""Injected events: how often would the finder have found an event of this width and amplitude?

The simulator draws events (:class:`Injection`: a Gaussian or box flare or occultation), adds each
to a copy of a processed lightcurve, lets the caller recompute the S/N columns and run the same
finder, and records which injections were recovered. :func:`recovery_efficiency` bins the outcome
by width and amplitude.

Conventions
-----------
- ``amplitude_mag`` is added to ``mag`` at the peak: positive is a dimming (occultation),
  negative a brightening (flare). ``flux`` (when present) is multiplied by ``10**(-0.4 * delta)``
  so both stay consistent; the measured errors (``magerr``, ``fluxerr``) are kept: the injected
  signal is noiseless and the noise is the lightcurve's own.
- Gaussian: ``delta = amplitude * exp(-0.5 * ((t - t0) / width)**2)`` (``width`` is sigma);
  box: ``delta = amplitude`` within ``|t - t0| <= width / 2``, else 0.
- Draws: ``t0`` uniform over the lightcurve's time span (so an event may fall in a gap and be
  missed: that is part of the efficiency); ``width`` log-uniform in
  ``[min_width_days, max_width_days]``; ``amplitude`` uniform in
  ``[min_amplitude_mag, max_amplitude_mag]`` except ``|amplitude| <`` :attr:`Simulator.floor_fraction`
  times the largest ``|bound|`` (1% by default): an event that small has no meaningful sign and
  cannot be told from noise, so it would only dilute the lowest amplitude bin.
- Random numbers come from :meth:`Simulator.rng_for`: the config seed, a stable hash of the
  source name (not Python's salted ``hash()``) and the lightcurve's index, so a run is
  reproducible in any worker process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from aretriever.errors import ConfigError
from aretriever.science.columns import Table, assign, column, drop, has, names
from aretriever.science.plugins import SeedMethod
from aretriever.settings import SimulatorConfig

from .finder import Event, MissingColumnsError

Array = np.ndarray[Any, Any]
Find = Callable[[Table], list[Event]]
Prepare = Callable[[Table], Table]

__all__ = [
    "Injection",
    "SimulationResult",
    "Simulator",
    "mark_simulated",
    "recovered_by",
    "recovery_efficiency",
]

_SEED_MODULUS = 2**64  # SeedSequence takes non-negative integers; config seeds may be negative


@dataclass(frozen=True, slots=True)
class Injection:
    """One injected event.

    Attributes
    ----------
    shape : str
        ``"gaussian"`` or ``"box"`` (a subclass of :class:`Simulator` may add shapes).
    time_peak_mjd : float
        Centre of the event.
    width_days : float
        Gaussian sigma, or the full width of the box.
    amplitude_mag : float
        Change of ``mag`` at the peak: positive dims, negative brightens.
    """

    shape: str
    time_peak_mjd: float
    width_days: float
    amplitude_mag: float

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain Python values (stored as a detection's ``sim_pars``)."""
        return {
            "shape": str(self.shape),
            "time_peak_mjd": float(self.time_peak_mjd),
            "width_days": float(self.width_days),
            "amplitude_mag": float(self.amplitude_mag),
        }

    def extent(self) -> tuple[float, float]:
        """``(start, end)`` MJD of the event's core: the box itself, or the Gaussian's +-1 sigma."""
        half = self.width_days / 2 if self.shape == "box" else self.width_days
        return self.time_peak_mjd - half, self.time_peak_mjd + half


def recovered_by(events: Sequence[Event], injection: Injection) -> bool:
    """Whether one of ``events`` recovers ``injection``.

    The rule: an event whose time range ``[time_start_mjd, time_end_mjd]`` overlaps the
    injection's core (:meth:`Injection.extent`) and whose ``snr`` has the injection's sign
    (a dimming gives a negative ``dsnr``). The overlap, rather than "the range contains the
    injected peak time", keeps an event seen on a single point (sparse sampling) from counting
    as missed when no epoch falls exactly on the peak time.
    """
    start, end = injection.extent()
    sign = -1.0 if injection.amplitude_mag > 0 else 1.0
    return any(
        event.time_start_mjd <= end and event.time_end_mjd >= start and event.snr * sign > 0
        for event in events
    )


def stable_rng(seed: int, name: str, *more: int) -> np.random.Generator:
    """A generator determined by ``seed``, ``name`` and ``more`` alone: the same in every process
    and run (a blake2b digest of the name; Python's ``hash()`` is salted per process)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    entropy = [seed % _SEED_MODULUS, int.from_bytes(digest, "little"), *(m % _SEED_MODULUS for m in more)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What :meth:`Simulator.simulate` found for one lightcurve.

    Attributes
    ----------
    injections : list of Injection
        The injections, in the order given.
    recovered : list of bool
        Per injection, :func:`recovered_by` on the events found in its copy.
    events : list of Event
        Every event found in the copies, marked ``simulated`` with ``sim_pars`` = the
        injection's parameters plus ``"matched"`` (whether this event recovers it).
    """

    injections: list[Injection]
    recovered: list[bool]
    events: list[Event]


class Simulator:
    """Draw events, inject them into lightcurves, and measure how many the finder recovers.

    Parameters
    ----------
    cfg : SimulatorConfig
        ``shape``, the width and amplitude ranges, and the seed.

    Raises
    ------
    ConfigError
        A minimum above its maximum, or no amplitude left to draw.
    """

    #: amplitudes with ``|a| <`` this fraction of the largest ``|bound|`` are never drawn
    floor_fraction: ClassVar[float] = 0.01
    #: columns computed from ``mag``/``flux``: dropped from an injected copy, so that a caller who
    #: forgets to recompute them gets a clear error from the finder instead of stale S/N
    derived_columns: ClassVar[tuple[str, ...]] = ("snr", "dsnr", "dmag")
    #: the model of a subclass's own parameters (``simulator_kwargs``), read as ``self.cfg.<name>``
    parameters: ClassVar[type[BaseModel] | None] = None
    #: the seed's Simulator had no method to override (its injection was Analysis.inject_to_lightcurves)
    seed_methods: ClassVar[dict[str, SeedMethod]] = {}

    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg
        if max(abs(cfg.min_amplitude_mag), abs(cfg.max_amplitude_mag)) == 0:
            raise ConfigError("config: analysis.simulator: the amplitude range holds only 0 mag")

    # ----------------------------------------------------------------------------------------
    # drawing

    def rng_for(self, source_name: str, lc_index: int) -> np.random.Generator:
        """A generator determined by ``cfg.seed``, the source name and the lightcurve index."""
        return stable_rng(self.cfg.seed, source_name, lc_index)

    def draw(self, lc: Table, num: int, rng: np.random.Generator) -> list[Injection]:
        """``num`` injections over the time span of ``lc`` (none when it has no finite time).

        The peak times are drawn first, then the widths, then the amplitudes (one vector each),
        so the same generator state and ``num`` give the same injections.
        """
        mjd = column(lc, "mjd") if has(lc, "mjd") else np.empty(0)
        mjd = mjd[np.isfinite(mjd)]
        if num <= 0 or mjd.size == 0:
            return []
        peaks = rng.uniform(mjd.min(), mjd.max(), num)
        low, high = math.log(self.cfg.min_width_days), math.log(self.cfg.max_width_days)
        widths = np.exp(rng.uniform(low, high, num))
        amplitudes = self.amplitudes(rng, num)
        return [
            Injection(self.cfg.shape, float(t0), float(width), float(amp))
            for t0, width, amp in zip(peaks, widths, amplitudes, strict=True)
        ]

    def amplitudes(self, rng: np.random.Generator, num: int) -> Array:
        """``num`` amplitudes, uniform over the configured range without the small ones."""
        lo, hi = self.cfg.min_amplitude_mag, self.cfg.max_amplitude_mag
        floor = self.floor_fraction * max(abs(lo), abs(hi))
        parts = [(a, b) for a, b in ((lo, min(hi, -floor)), (max(lo, floor), hi)) if b >= a]
        lengths = np.array([b - a for a, b in parts])
        if lengths.sum() == 0:  # a single allowed value, e.g. min == max
            return np.full(num, parts[0][0])
        u = rng.uniform(0.0, lengths.sum(), num)
        first = u < lengths[0]
        second = parts[-1][0] + (u - lengths[0])
        drawn: Array = np.where(first, parts[0][0] + u, second)
        return drawn

    # ----------------------------------------------------------------------------------------
    # injecting

    def profile(self, injection: Injection, mjd: Array) -> Array:
        """The event's shape at times ``mjd``: 1 at the peak, towards 0 away from it.

        Raises
        ------
        ConfigError
            An unknown shape.
        """
        x = (mjd - injection.time_peak_mjd) / injection.width_days
        if injection.shape == "gaussian":
            gaussian: Array = np.exp(-0.5 * x**2)
            return gaussian
        if injection.shape == "box":
            box: Array = (np.abs(x) <= 0.5).astype(np.float64)
            return box
        raise ConfigError(
            f"config: analysis.simulator.shape: unknown shape {injection.shape!r} (allowed: gaussian, box)"
        )

    def inject(self, lc: Table, injection: Injection) -> Table:
        """A copy of ``lc`` (of its type) with the event added to ``mag`` and ``flux`` (``lc`` is
        not modified).

        The :attr:`derived_columns` (S/N, ``dmag``) are dropped from the copy: recompute them
        before finding. Other columns (errors, flags, offsets) are kept as they are.

        Raises
        ------
        MissingColumnsError
            ``lc`` has no ``mjd``, or neither ``mag`` nor ``flux``.
        """
        if not has(lc, "mjd") or not (has(lc, "mag") or has(lc, "flux")):
            raise MissingColumnsError(
                f"simulator: cannot inject into a lightcurve with columns {list(names(lc))}"
            )
        delta = injection.amplitude_mag * self.profile(injection, column(lc, "mjd"))
        changed: dict[str, Array] = {}
        if has(lc, "mag"):
            changed["mag"] = column(lc, "mag") + delta
        if has(lc, "flux"):
            changed["flux"] = column(lc, "flux") * 10.0 ** (-0.4 * delta)
        return assign(drop(lc, self.derived_columns), changed)

    def simulate(
        self,
        lc: Table,
        injections: Sequence[Injection],
        find: Find,
        prepare: Prepare | None = None,
    ) -> SimulationResult:
        """Inject each event into its own copy of ``lc``, find events, and score the recovery.

        Parameters
        ----------
        lc : pandas.DataFrame or structured array
            The processed lightcurve (not modified).
        injections : sequence of Injection
            Usually from :meth:`draw`.
        find : callable
            The finder used on real data, e.g. ``Finder(...).find``.
        prepare : callable, optional
            Recomputes the S/N columns of an injected copy (the same functions used on real
            data); required in practice, since :meth:`inject` drops the stale ones.
        """
        recovered: list[bool] = []
        events: list[Event] = []
        for injection in injections:
            copy = self.inject(lc, injection)
            found = find(prepare(copy) if prepare is not None else copy)
            recovered.append(recovered_by(found, injection))
            events.extend(mark_simulated(found, injection))
        return SimulationResult(list(injections), recovered, events)


def mark_simulated(events: Sequence[Event], injection: Injection) -> list[Event]:
    """``events`` marked ``simulated``, with the injection's parameters and ``"matched"``."""
    return [
        replace(
            event,
            simulated=True,
            sim_pars={**injection.as_dict(), "matched": recovered_by([event], injection)},
        )
        for event in events
    ]


def recovery_efficiency(
    injections: Sequence[Injection],
    recovered: Sequence[bool],
    width_edges: Sequence[float],
    amplitude_edges: Sequence[float],
) -> pd.DataFrame:
    """Recovered fraction per width bin and amplitude bin.

    Bins follow :func:`numpy.histogram2d`: ``[lo, hi)``, the last bin of each axis closed; an
    injection outside the edges is not counted.

    Parameters
    ----------
    injections : sequence of Injection
    recovered : sequence of bool
        One per injection.
    width_edges, amplitude_edges : sequence of float
        Increasing bin edges (days, mag).

    Returns
    -------
    pandas.DataFrame
        One row per (width bin, amplitude bin), width-major: ``width_lo``, ``width_hi``,
        ``amplitude_lo``, ``amplitude_hi``, ``injected``, ``recovered``, ``efficiency``
        (NaN for an empty bin).

    Raises
    ------
    ValueError
        ``recovered`` and ``injections`` differ in length, or edges are not increasing.
    """
    if len(injections) != len(recovered):
        raise ValueError(f"simulator: {len(injections)} injections but {len(recovered)} recovered flags")
    w_edges, a_edges = (
        np.asarray(width_edges, dtype=np.float64),
        np.asarray(amplitude_edges, dtype=np.float64),
    )
    widths = np.array([inj.width_days for inj in injections], dtype=np.float64)
    amps = np.array([inj.amplitude_mag for inj in injections], dtype=np.float64)
    hit = np.asarray(recovered, dtype=bool)
    injected, _, _ = np.histogram2d(widths, amps, bins=[w_edges, a_edges])
    found, _, _ = np.histogram2d(widths[hit], amps[hit], bins=[w_edges, a_edges])
    wi, ai = (index.ravel() for index in np.indices(injected.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        efficiency = np.where(injected > 0, found / injected, np.nan)
    return pd.DataFrame(
        {
            "width_lo": w_edges[wi],
            "width_hi": w_edges[wi + 1],
            "amplitude_lo": a_edges[ai],
            "amplitude_hi": a_edges[ai + 1],
            "injected": injected.ravel().astype(np.int64),
            "recovered": found.ravel().astype(np.int64),
            "efficiency": efficiency.ravel(),
        }
    )
