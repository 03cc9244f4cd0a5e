"""The analysis of one source's reduced lightcurves: quality cuts, scores, statistics, events.

:class:`Analysis` runs in a pool worker right after the reduction. For each lightcurve it flags
points (:class:`~aretriever.science.quality.QualityChecker`), adds per-point scores
(:func:`~aretriever.science.stats.scores`), summarises it
(:func:`~aretriever.science.stats.lightcurve_stats`), finds events
(:class:`~aretriever.science.finder.Finder`), and, with ``num_injections``, injects events into
copies and runs the same finder on them (:class:`~aretriever.science.simulator.Simulator`).

Every step is a method, so a subclass named by ``analysis.analysis_module``/``analysis_class``
can replace one step and keep the rest; the quality, finder and simulator classes are loaded
the same way. Instances must stay picklable (they travel to pool workers).

Tables: a reduced lightcurve's ``data`` is a DataFrame or a NumPy structured array; every step
reads columns through :mod:`aretriever.science.columns`, and the processed table is a structured
array built once per lightcurve (:meth:`Analysis.process`): the input columns, then ``offset``,
``flagged``, ``flux``, ``fluxerr``, ``snr``, ``dsnr``, ``dmag``. A subclass adds a column with
:func:`~aretriever.science.columns.add_column` (``docs/examples/my_analysis.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from aretriever.adapters.base import ReducedLightcurve, Target
from aretriever.numbers import finite_or_none
from aretriever.science.columns import Records, Table, add_columns, flags, to_records
from aretriever.science.finder import Event, Finder
from aretriever.science.plugins import SeedMethod, adopt_seed_names, load_class
from aretriever.science.quality import QualityChecker
from aretriever.science.simulator import Injection, Simulator, recovery_efficiency
from aretriever.science.stats import (
    AB_ZERO_POINT_MAG,
    LightcurveStats,
    lightcurve_stats,
    score_columns,
    scores,
)
from aretriever.settings import AnalysisConfig

Array = np.ndarray[Any, Any]

_ENGINE_OWNS = "the engine batches, stores and histograms the sources (nothing to override)"

# The seed's Analysis methods (AstroRetriever src/analysis.py), each mapped to our step or refused.
SEED_METHODS: dict[str, SeedMethod] = {
    "analyze_photometry": SeedMethod("analyze", "write it as analyze_photometry(self, target, lightcurves)"),
    "calc_props_from_lightcurves": SeedMethod("properties", "write it as (self, results) -> dict"),
    "analyze_sources": SeedMethod(None, f"{_ENGINE_OWNS}; override analyze(target, lightcurves)"),
    "check_lightcurves": SeedMethod(None, "override QualityChecker.columns(lc) in a quality_class"),
    "process_lightcurves": SeedMethod(None, "override process(data, zero_point_mag)"),
    "detect_in_lightcurves": SeedMethod(None, "override Finder.find(lc) in a finder_class"),
    "make_detection": SeedMethod(None, "override Finder.event(lc, rows, peak_row) in a finder_class"),
    "inject_to_lightcurves": SeedMethod(None, "override simulate(...) or a simulator_class's inject"),
    "get_num_injections": SeedMethod(None, "num_injections is per lightcurve; override simulate(...)"),
    "update_histograms": SeedMethod(None, f"{_ENGINE_OWNS}; they count the columns process(...) makes"),
    "save_histograms": SeedMethod(None, _ENGINE_OWNS),
    "restore_histogram_backup": SeedMethod(None, _ENGINE_OWNS),
}


@dataclass(frozen=True, slots=True)
class LightcurveResult:
    """One analysed lightcurve: the processed table (stored in place of the reduced one) and rows."""

    processed: Records  # a structured array, as the HDF5 file stores it
    stats: dict[str, Any]  # LightcurveStats.as_dict(): columns of the ``lightcurves`` row
    detections: list[dict[str, Any]]  # Event.as_dict(): real events, then simulated ones
    injections: list[dict[str, Any]] = field(default_factory=list)  # Injection.as_dict() + "recovered"


@dataclass(frozen=True, slots=True)
class SourceAnalysis:
    """A source's analysed lightcurves (in the order given) and its ``properties`` row values."""

    lightcurves: list[LightcurveResult]
    properties: dict[str, Any]


class Analysis:
    """The default analysis (see the module docstring).

    Parameters
    ----------
    cfg : AnalysisConfig
        Parameters, and the modules and classes of the quality cuts, finder and simulator.
        A subclass's own parameters (:attr:`parameters`) are read as ``self.cfg.<name>``.
    """

    #: the model of a subclass's own parameters (``analysis_kwargs``), e.g. ``num_kernels``
    parameters: ClassVar[type[BaseModel] | None] = None
    #: seed method names a subclass may define (see :mod:`aretriever.science.plugins`)
    seed_methods: ClassVar[dict[str, SeedMethod]] = SEED_METHODS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_seed_names(cls, cls.seed_methods)

    def __init__(self, cfg: AnalysisConfig) -> None:
        self.cfg = cfg
        quality = load_class(cfg.quality_module, cfg.quality_class, QualityChecker, "analysis.quality_class")
        finder = load_class(cfg.finder_module, cfg.finder_class, Finder, "analysis.finder_class")
        simulator = load_class(
            cfg.simulator_module, cfg.simulator_class, Simulator, "analysis.simulator_class"
        )
        self.quality = quality(cfg.quality)
        self.finder = finder(cfg.finder, cfg.quality)
        self.simulator = simulator(cfg.simulator)

    # -- the steps -----------------------------------------------------------------------------

    def analyze(self, target: Target, lightcurves: Sequence[ReducedLightcurve]) -> SourceAnalysis:
        """Analyse every lightcurve of one source, then summarise the source."""
        results = [self.analyze_lightcurve(target, lc, number) for number, lc in enumerate(lightcurves, 1)]
        return SourceAnalysis(results, self.properties(results))

    def analyze_lightcurve(self, target: Target, lc: ReducedLightcurve, number: int) -> LightcurveResult:
        """Quality cuts, scores, statistics, events and injections of one lightcurve."""
        zero_point = self.zero_point_mag(lc)
        # to_records: a subclass written for DataFrames may still return one
        processed = to_records(self.process(lc.data, zero_point))
        good = ~flags(processed, "flagged")
        stats = self.statistics(processed, zero_point, self.exptime_s(lc), good)
        events = self.finder.find(processed)
        simulated, injections = self.simulate(target, processed, zero_point, number)
        detections = [event.as_dict() for event in [*events, *simulated]]
        return LightcurveResult(processed, stats.as_dict(), detections, injections)

    def process(self, data: Table, zero_point_mag: float) -> Records:
        """The lightcurve with ``offset``, ``flagged``, ``flux``, ``fluxerr``, ``snr``, ``dsnr``, ``dmag``.

        The quality and score columns are computed on arrays and the table is built once, as a
        structured array (``data`` itself is not modified).
        """
        quality = self.quality.columns(data)
        scored = score_columns(data, zero_point_mag, good=~np.asarray(quality["flagged"], dtype=bool))
        return add_columns(data, {**quality, **scored})

    def statistics(
        self,
        processed: Records,
        zero_point_mag: float,
        exptime_s: float | None,
        good: np.ndarray[Any, Any],
    ) -> LightcurveStats:
        """The ``lightcurves`` row statistics (flagged points left out)."""
        return lightcurve_stats(processed, zero_point_mag, exptime_s, good, scored=True)

    def simulate(
        self, target: Target, processed: Records, zero_point_mag: float, number: int
    ) -> tuple[list[Event], list[dict[str, Any]]]:
        """``num_injections`` injected copies, searched like real data: (events, injections)."""
        if self.cfg.num_injections == 0 or len(processed) == 0:
            return [], []
        rng = self.simulator.rng_for(target.name, number)
        injections = self.simulator.draw(processed, self.cfg.num_injections, rng)
        rescore = partial(_rescore, zero_point_mag=zero_point_mag)
        result = self.simulator.simulate(processed, injections, self.finder.find, prepare=rescore)
        table = [
            {**injection.as_dict(), "recovered": hit}
            for injection, hit in zip(result.injections, result.recovered, strict=True)
        ]
        return result.events, table

    def properties(self, results: Sequence[LightcurveResult]) -> dict[str, Any]:
        """The ``properties`` row values of a source from its analysed lightcurves.

        ``best_snr`` is the largest ``|dsnr|`` of a good point in any lightcurve (how far the
        source strayed from its baseline, in S/N, detected or not); ``variability`` is the largest
        ratio of robust flux rms to mean flux error (about 1 for a steady source).
        """
        stats = [r.stats for r in results]
        extremes = [abs(v) for s in stats for v in (s["dsnr_max"], s["dsnr_min"]) if v is not None]
        ratios = [
            s["robust_rms"] / s["flux_err_mean"]
            for s in stats
            if s["robust_rms"] is not None and s["flux_err_mean"]
        ]
        real = [d for r in results for d in r.detections if not d["simulated"]]
        injections = [i for r in results for i in r.injections]
        num_points = sum(s["num_good"] or 0 for s in stats)
        return {
            "has_data": num_points > 0,
            "num_lightcurves": len(results),
            "num_points": num_points,
            "best_snr": max(extremes, default=None),
            "variability": finite_or_none(max(ratios, default=math.nan)),
            "meta": {
                "num_detections": len(real),
                "num_simulated_detections": sum(len(r.detections) for r in results) - len(real),
                "injections": injections,
            },
        }

    # -- facts about a lightcurve --------------------------------------------------------------

    def zero_point_mag(self, lc: ReducedLightcurve) -> float:
        """The instrument's zero point when the reducer gave one (TESS), else AB (23.9: µJy)."""
        value = lc.meta.get("zero_point_mag")
        return float(value) if isinstance(value, int | float) else AB_ZERO_POINT_MAG

    def exptime_s(self, lc: ReducedLightcurve) -> float | None:
        """Exposure time from the reducer's metadata (TESS); None lets the statistics use a column."""
        value = lc.meta.get("exposure_s")
        return float(value) if isinstance(value, int | float) else None


def _rescore(copy: Table, zero_point_mag: float) -> Table:
    return scores(copy, zero_point_mag, good=~flags(copy, "flagged"))


_CACHE: dict[str, Analysis] = {}


def analysis_for(cfg: AnalysisConfig) -> Analysis:
    """The (custom or default) Analysis for ``cfg``, built once per process and config."""
    key = cfg.model_dump_json()
    if key not in _CACHE:
        cls = load_class(cfg.analysis_module, cfg.analysis_class, Analysis, "analysis.analysis_class")
        _CACHE[key] = cls(cfg)
    return _CACHE[key]


def efficiency_table(injections: Sequence[Mapping[str, Any]], bins: int = 5) -> pd.DataFrame:
    """Recovery efficiency per width and amplitude bin, from injections with ``recovered``.

    Width bins are logarithmic (widths are drawn log-uniform), amplitude bins linear; both span
    the injections given.
    """

    if not injections:
        return pd.DataFrame(
            columns=[
                "width_lo",
                "width_hi",
                "amplitude_lo",
                "amplitude_hi",
                "injected",
                "recovered",
                "efficiency",
            ]
        )
    drawn = [
        Injection(
            str(i["shape"]), float(i["time_peak_mjd"]), float(i["width_days"]), float(i["amplitude_mag"])
        )
        for i in injections
    ]
    widths = np.array([i.width_days for i in drawn])
    amplitudes = np.array([i.amplitude_mag for i in drawn])
    width_edges = np.geomspace(widths.min(), widths.max() * (1 + 1e-9), bins + 1)
    amplitude_edges = np.linspace(amplitudes.min(), amplitudes.max() + 1e-9, bins + 1)
    recovered = [bool(i["recovered"]) for i in injections]
    return recovery_efficiency(drawn, recovered, width_edges.tolist(), amplitude_edges.tolist())
