"""Histograms of the per-point scores (``snr``, ``dmag``, ``offset``), mergeable across runs.

Each score has one integer count array with the axes

    kind (``all``, ``good``) x filter x exposure time x source magnitude x score

- ``all`` counts every point added; ``good`` only the points marked good (not flagged). The seed
  filled both with the same points; here ``good`` is a real subset.
- filter and exposure time are categories that grow as new values appear: filters are strings,
  exposure times are rounded to 0.1 s, and an unknown exposure time (None/NaN) is its own
  category, stored as NaN. Categories are kept sorted (NaN last), so the layout does not depend
  on the order in which data arrived.
- source magnitude and score are binned by ``HistogramConfig`` (``[low, high, step]``, bins
  half-open ``[a, b)``). Both axes have extra slots, so that no point is ever dropped:

  ====== =========================================================
  slot   holds
  ====== =========================================================
  0      NaN score / unknown source magnitude (None or NaN)
  1      underflow: value < low (including -inf)
  2..n+1 the n regular bins
  n+2    overflow: value >= high (including +inf)
  ====== =========================================================

  so every score axis has ``n + 3`` slots and the totals over a score axis always equal the number
  of points added. (Unlike ``np.histogram``, a value equal to ``high`` is overflow.)

Adding is a ``searchsorted`` and a ``bincount`` per score, since one call adds one lightcurve (one
filter, exposure time and source magnitude). Two histograms with the same binning add up
(``a + b``, :meth:`ScoreHistograms.merge`, ``sum([...])``) to the histogram of both runs; their
category sets may differ. Histograms with different binning refuse to merge.

Files (:meth:`ScoreHistograms.save`) are HDF5, written to a temporary name and renamed: one int64
dataset per score (the axes above), ``filters`` (UTF-8 bytes), ``exptimes_s`` (float64, NaN =
unknown), the binning as root attributes ``<name>_bins`` = ``[low, high, step]``, and optionally
``counted`` (sorted uint64: which lightcurves the counts hold; see ``aretriever.engine.histogram_file``).
By default they live in the project folder as :data:`HISTOGRAM_FILENAME`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from aretriever.science.binning import (
    EXTRA_SLOTS,
    Binned,
    ExptimeLike,
    exptime_keys,
    index_of,
    make_edges,
    slot_of,
    sorted_exptimes,
)
from aretriever.science.binning import HistogramError as HistogramError
from aretriever.science.columns import Table, column, flags, has, names
from aretriever.settings import HistogramConfig

Array = np.ndarray[Any, Any]
Kind = Literal["all", "good"]

SCORES: Final = ("snr", "dmag", "offset")
KINDS: Final[tuple[Kind, ...]] = ("all", "good")
BIN_FIELDS: Final = ("snr_bins", "dmag_bins", "offset_bins", "mag_bins")
FORMAT_NAME: Final = "aretriever.score_histograms"
FORMAT_VERSION: Final = 1


class ScoreHistograms:
    """Counts of ``snr``, ``dmag`` and ``offset`` by source mag, exposure time and filter.

    Parameters
    ----------
    config : HistogramConfig, optional
        The binning (defaults: ``HistogramConfig()``).

    Examples
    --------
    One lightcurve's processed frame (``snr``, ``dmag``, ``offset``, ``flagged``, ``exptime``)::

        h = ScoreHistograms(cfg.analysis.histograms)
        h.add(lc, source_mag=17.2, exptime_s=lc["exptime"], filter="zg")  # good = ~lc["flagged"]
        total = ScoreHistograms.load(path) + h  # the histogram of both runs
        total.save(path)
    """

    def __init__(self, config: HistogramConfig | None = None) -> None:
        self.config = (config or HistogramConfig()).model_copy(deep=True)
        self._edges: dict[str, Array] = {
            field.removesuffix("_bins"): make_edges(getattr(self.config, field), field)
            for field in BIN_FIELDS
        }
        self.filters: list[str] = []
        self.exptimes_s: list[float] = []
        self._counts: dict[str, Array] = {score: self._empty(score, 0, 0) for score in SCORES}

    # --- layout -----------------------------------------------------------------------------

    def edges(self, name: str) -> Array:
        """Bin edges of ``snr``, ``dmag``, ``offset`` or ``mag`` (a copy)."""
        return self._edges[name].copy()

    def binning(self) -> dict[str, list[float]]:
        """The binning as ``{"snr_bins": [low, high, step], ...}``."""
        return {field: [float(v) for v in getattr(self.config, field)] for field in BIN_FIELDS}

    def _n_slots(self, name: str) -> int:
        return len(self._edges[name]) - 1 + EXTRA_SLOTS

    def _empty(self, score: str, n_filters: int, n_exptimes: int) -> Array:
        shape = (len(KINDS), n_filters, n_exptimes, self._n_slots("mag"), self._n_slots(score))
        return np.zeros(shape, dtype=np.int64)

    def _filter_index(self, name: str) -> int:
        if name not in self.filters:
            position = bisect.bisect_left(self.filters, name)
            self.filters.insert(position, name)
            self._grow(axis=1, position=position)
        return self.filters.index(name)

    def _exptime_index(self, key: float) -> int:
        try:
            return index_of(self.exptimes_s, key)
        except KeyError:
            self.exptimes_s = sorted_exptimes([*self.exptimes_s, key])
            position = index_of(self.exptimes_s, key)
            self._grow(axis=2, position=position)
            return position

    def _grow(self, axis: int, position: int) -> None:
        for score, counts in self._counts.items():
            self._counts[score] = np.insert(counts, position, 0, axis=axis)

    # --- filling ----------------------------------------------------------------------------

    def add(
        self,
        scores: Table,
        source_mag: float | None,
        exptime_s: ExptimeLike,
        filter: str,
        good: Array | pd.Series[bool] | None = None,
    ) -> None:
        """Count one lightcurve's scores.

        Parameters
        ----------
        scores : pandas.DataFrame or structured array
            Columns ``snr``, ``dmag`` and ``offset`` (any may hold NaN: counted in the NaN slot).
            Not modified.
        source_mag : float or None
            The catalog magnitude of the source; None or NaN counts under "unknown".
        exptime_s : float, None, or array of float
            Exposure time, rounded to 0.1 s; None or NaN is its own category. An array gives one
            value per row (ZTF lightcurves mix 30 s and longer exposures).
        filter : str
            The filter name, a category.
        good : array of bool, optional
            True for points that are not flagged (one per row). When omitted, ``~scores["flagged"]``
            if that column exists, else every point counts as good.

        Raises
        ------
        HistogramError
            A score column is missing, or ``good`` or ``exptime_s`` does not have one value per row.
        """
        self.count(self.bin(scores, source_mag, exptime_s, filter, good))

    def bin(
        self,
        scores: Table,
        source_mag: float | None,
        exptime_s: ExptimeLike,
        filter: str,
        good: Array | pd.Series[bool] | None = None,
    ) -> Binned:
        """One lightcurve's points placed in their slots, not yet counted (see :meth:`add`).

        Counting it later (:meth:`count`) gives the same counts as :meth:`add`; until then it
        holds a few bytes per point, so a caller can decide late whether to count it.
        """
        missing = [score for score in SCORES if not has(scores, score)]
        if missing:
            raise HistogramError(f"histograms: scores lack columns {missing} (have {list(names(scores))})")
        slots = {}
        for score in SCORES:
            values = column(scores, score)
            small = np.min_scalar_type(self._n_slots(score))  # 2 bytes a point for the usual bins
            slots[score] = slot_of(values, self._edges[score]).astype(small)
        keys, index = exptime_keys(exptime_s, len(scores))
        mask = self._good_mask(scores, good)
        return Binned(str(filter), self._mag_slot(source_mag), keys, index, slots, mask)

    def count(self, binned: Binned) -> None:
        """Add the counts of a lightcurve binned by :meth:`bin` (of histograms with this binning)."""
        f = self._filter_index(binned.filter)
        for key in binned.exptimes_s:  # insert first: an insertion shifts the indices after it
            self._exptime_index(key)
        category = np.array([index_of(self.exptimes_s, key) for key in binned.exptimes_s], dtype=np.intp)
        per_point = category[binned.exptime_index]
        groups = [(int(e), per_point == e) for e in np.unique(per_point)]
        for score in SCORES:
            slots = binned.slots[score].astype(np.intp)
            n = self._n_slots(score)
            counts = self._counts[score]
            for e, rows in groups:
                counts[0, f, e, binned.mag_slot] += np.bincount(slots[rows], minlength=n)
                counts[1, f, e, binned.mag_slot] += np.bincount(slots[rows & binned.good], minlength=n)

    @staticmethod
    def _good_mask(scores: Table, good: Array | pd.Series[bool] | None) -> Array:
        if good is None:
            return ~flags(scores, "flagged")
        mask = np.asarray(good, dtype=bool)
        if mask.shape != (len(scores),):
            raise HistogramError(f"histograms: good has shape {mask.shape}; expected ({len(scores)},)")
        return mask

    def _mag_slot(self, source_mag: float | None) -> int:
        value = np.nan if source_mag is None or pd.isna(source_mag) else float(source_mag)
        return int(slot_of(np.array([value]), self._edges["mag"])[0])

    # --- reading ----------------------------------------------------------------------------

    def counts(self, score: str, kind: Kind = "all") -> Array:
        """Counts of one score, a copy of shape (filters, exposure times, mag slots, score slots).

        The axes are labelled by :attr:`filters`, :attr:`exptimes_s`, and the slots of
        ``edges("mag")`` and ``edges(score)`` (see the module docstring).

        Raises
        ------
        HistogramError
            Unknown score or kind.
        """
        if score not in self._counts:
            raise HistogramError(f"histograms: unknown score {score!r} (known: {list(SCORES)})")
        if kind not in KINDS:
            raise HistogramError(f"histograms: unknown kind {kind!r} (known: {list(KINDS)})")
        counts: Array = self._counts[score][KINDS.index(kind)].copy()
        return counts

    def score_counts(self, score: str, kind: Kind = "all") -> Array:
        """Counts of one score over every filter, exposure time and source mag (score slots)."""
        total: Array = self.counts(score, kind).sum(axis=(0, 1, 2))
        return total

    def n_points(self, kind: Kind = "all") -> int:
        """Points added (``all``) or good points added (``good``)."""
        return int(self.counts("snr", kind).sum())

    def _slot_bounds(self, name: str) -> tuple[Array, Array]:
        edges = self._edges[name]
        low = np.concatenate([[np.nan, -np.inf], edges[:-1], [edges[-1]]])
        high = np.concatenate([[np.nan, edges[0]], edges[1:], [np.inf]])
        return low, high

    def to_frame(self, score: str, kind: Kind = "all") -> pd.DataFrame:
        """The non-zero cells of one score as a long table.

        Columns: ``filter``, ``exptime_s`` (NaN: unknown), ``mag_low``/``mag_high`` (NaN/NaN:
        unknown mag; -inf or inf: under/overflow), ``score_low``/``score_high`` (NaN/NaN: NaN
        score; same convention) and ``count``.
        """
        counts = self.counts(score, kind)
        f, e, m, s = np.nonzero(counts)
        mag_low, mag_high = self._slot_bounds("mag")
        score_low, score_high = self._slot_bounds(score)
        return pd.DataFrame(
            {
                "filter": np.array(self.filters, dtype=object)[f] if len(f) else np.array([], dtype=object),
                "exptime_s": np.array(self.exptimes_s, dtype=np.float64)[e] if len(e) else np.array([]),
                "mag_low": mag_low[m],
                "mag_high": mag_high[m],
                "score_low": score_low[s],
                "score_high": score_high[s],
                "count": counts[f, e, m, s],
            }
        )

    # --- combining --------------------------------------------------------------------------

    def _check_binning(self, other: ScoreHistograms) -> None:
        mine, theirs = self.binning(), other.binning()
        differ = [f"{k} {mine[k]} vs {theirs[k]}" for k in BIN_FIELDS if mine[k] != theirs[k]]
        if differ:
            raise HistogramError(
                "histograms: cannot merge histograms with different binning: " + "; ".join(differ)
            )

    def merge(self, other: ScoreHistograms) -> ScoreHistograms:
        """A new histogram holding the counts of both (neither operand changes).

        Raises
        ------
        HistogramError
            If the binning differs (the message names what differs).
        """
        if not isinstance(other, ScoreHistograms):
            raise HistogramError(f"histograms: cannot merge with {type(other).__name__}")
        self._check_binning(other)
        out = ScoreHistograms(self.config)
        out.filters = sorted(set(self.filters) | set(other.filters))
        out.exptimes_s = sorted_exptimes([*self.exptimes_s, *other.exptimes_s])
        for score in SCORES:
            out._counts[score] = out._empty(score, len(out.filters), len(out.exptimes_s))
            for part in (self, other):
                out._scatter(score, part)
        return out

    def _scatter(self, score: str, part: ScoreHistograms) -> None:
        f_map = np.array([self.filters.index(name) for name in part.filters], dtype=np.intp)
        e_map = np.array([index_of(self.exptimes_s, v) for v in part.exptimes_s], dtype=np.intp)
        # the maps are one-to-one, so fancy-indexed += adds every cell exactly once
        self._counts[score][:, f_map[:, None], e_map[None, :]] += part._counts[score]

    def __add__(self, other: object) -> ScoreHistograms:
        if not isinstance(other, ScoreHistograms):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> ScoreHistograms:
        if isinstance(other, int) and other == 0:  # lets sum([h1, h2, ...]) start from 0
            return self.merge(ScoreHistograms(self.config))
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreHistograms):
            return NotImplemented
        return (
            self.binning() == other.binning()
            and self.filters == other.filters
            and np.array_equal(np.array(self.exptimes_s), np.array(other.exptimes_s), equal_nan=True)
            and all(np.array_equal(self._counts[s], other._counts[s]) for s in SCORES)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"ScoreHistograms({self.n_points('all')} points, {self.n_points('good')} good, "
            f"filters={self.filters}, exptimes_s={self.exptimes_s})"
        )

    # --- as plain arrays (files are written by aretriever.engine.histogram_io) -------------

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, Array]]:
        """``(attributes, datasets)``: everything a file needs to hold these counts."""
        attrs: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "axes": "kind,filter,exptime_s,mag_slot,score_slot",
            "kinds": ",".join(KINDS),
        }
        attrs.update({field: np.array(bins, dtype=np.float64) for field, bins in self.binning().items()})
        data: dict[str, Array] = {
            "filters": np.array([f.encode("utf-8") for f in self.filters], dtype=bytes),
            "exptimes_s": np.array(self.exptimes_s, dtype=np.float64),
        }
        data.update({score: self._counts[score] for score in SCORES})
        return attrs, data

    @staticmethod
    def is_format(attrs: Mapping[str, Any]) -> bool:
        """True when ``attrs`` describe score histograms of this format version."""
        return bool(attrs.get("format") == FORMAT_NAME and int(attrs.get("version", -1)) == FORMAT_VERSION)

    @classmethod
    def from_arrays(cls, attrs: Mapping[str, Any], data: Mapping[str, Array]) -> ScoreHistograms:
        """The histograms :meth:`to_arrays` described.

        Raises
        ------
        HistogramError
            The arrays are not score histograms of this format version, or their shapes disagree.
        """
        if not cls.is_format(attrs):
            raise HistogramError(f"not an {FORMAT_NAME} v{FORMAT_VERSION} file")
        bins: Mapping[str, list[float]] = {f: [float(v) for v in attrs[f]] for f in BIN_FIELDS}
        out = cls(HistogramConfig(**bins))
        out.filters = [f.decode("utf-8") for f in data["filters"]]
        out.exptimes_s = [float(v) for v in data["exptimes_s"]]
        for score in SCORES:
            counts = np.asarray(data[score], dtype=np.int64)
            expected = out._empty(score, len(out.filters), len(out.exptimes_s)).shape
            if counts.shape != expected:
                raise HistogramError(f"{score} has shape {counts.shape}, expected {expected}")
            out._counts[score] = counts
        return out
