"""How score histograms bin: edges, slots (NaN, underflow, overflow), exposure-time categories.

Pure NumPy, shared by :class:`aretriever.science.histograms.ScoreHistograms` and its tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import pandas as pd

from aretriever.errors import ConfigError, ScienceError

Array = np.ndarray[Any, Any]
ExptimeLike: TypeAlias = "float | Array | pd.Series[Any] | Sequence[float | None] | None"
NAN_SLOT: Final = 0  # NaN score, or unknown source magnitude
EXTRA_SLOTS: Final = 3  # NaN, underflow, overflow


class HistogramError(ScienceError):
    """Score histograms cannot be combined or used as asked."""


def make_edges(bins: Sequence[float], name: str) -> Array:
    """Bin edges from ``[low, high, step]``; the range must hold a whole number of steps.

    Raises
    ------
    ConfigError
        If ``bins`` is not three numbers with ``low < high``, ``step > 0`` and
        ``(high - low) / step`` a whole number (to 1e-6).
    """
    where = f"config: analysis.histograms.{name}"
    if len(bins) != 3:
        raise ConfigError(f"{where}: expected [low, high, step] (got {list(bins)})")
    low, high, step = (float(v) for v in bins)
    if not (math.isfinite(low) and math.isfinite(high) and high > low and step > 0):
        raise ConfigError(f"{where}: expected finite low < high and step > 0 (got {list(bins)})")
    count = (high - low) / step
    n = round(count)
    if n < 1 or abs(count - n) > 1e-6:
        raise ConfigError(f"{where}: high - low must be a whole number of steps (got {list(bins)})")
    return np.linspace(low, high, n + 1)


def slot_of(values: Array, edges: Array) -> Array:
    """Slot of each value: 0 NaN, 1 underflow, 2..n+1 bins ``[a, b)``, n+2 overflow.

    Same answer as ``searchsorted(edges, values, side="right") + 1``, but computed from the
    uniform step and then corrected against the edges themselves (one step is enough: rounding
    is far below one bin): 8x faster on unsorted values.
    """
    n = len(edges) - 1
    lower = np.concatenate([[np.nan, -np.inf], edges])  # lower bound of each slot
    upper = np.concatenate([[np.nan], edges, [np.inf]])  # upper bound of each slot
    nan = np.isnan(values)
    with np.errstate(invalid="ignore", over="ignore"):
        guess = np.floor((values - edges[0]) * (n / (edges[-1] - edges[0]))) + 2
    slots = np.clip(np.where(nan, 1, guess), 1, n + 2).astype(np.intp)
    slots -= values < lower[slots]
    slots += (values >= upper[slots]) & (slots <= n + 1)  # +inf stays in the overflow slot
    slots[nan] = NAN_SLOT
    return slots


def exptime_key(exptime_s: float | None) -> float:
    if exptime_s is None or not math.isfinite(float(exptime_s)):
        return math.nan
    return round(float(exptime_s), 1)


def sorted_exptimes(values: Sequence[float]) -> list[float]:
    known = sorted({v for v in values if not math.isnan(v)})
    return known + ([math.nan] if any(math.isnan(v) for v in values) else [])


def index_of(categories: Sequence[Any], value: Any) -> int:
    for i, existing in enumerate(categories):
        if existing == value or (isinstance(value, float) and math.isnan(value) and math.isnan(existing)):
            return i
    raise KeyError(value)


def exptime_keys(exptime_s: ExptimeLike, n_rows: int) -> tuple[tuple[float, ...], Array]:
    """Exposure-time categories of a lightcurve and, per row, the index of its category."""
    if exptime_s is None or isinstance(exptime_s, int | float | np.number):
        key = exptime_key(None if exptime_s is None else float(exptime_s))
        return (key,), np.zeros(n_rows, dtype=np.uint8)
    raw = np.asarray(exptime_s, dtype=np.float64)
    if raw.shape != (n_rows,):
        raise HistogramError(f"histograms: exptime_s has shape {raw.shape}; expected ({n_rows},)")
    unique, inverse = np.unique(raw, return_inverse=True)
    index = inverse.reshape(n_rows).astype(np.min_scalar_type(max(len(unique) - 1, 0)))
    return tuple(exptime_key(float(v)) for v in unique), index


@dataclass(frozen=True, slots=True)
class Binned:
    """One lightcurve's points in their slots (:meth:`ScoreHistograms.bin`), ready to count."""

    filter: str
    mag_slot: int
    exptimes_s: tuple[float, ...]  # exposure-time categories (NaN: unknown); may repeat
    exptime_index: Array  # per point: index into exptimes_s
    slots: dict[str, Array]  # per score: the slot of each point
    good: Array  # per point: not flagged
