"""Custom analysis code, the way the seed README describes it (``extensions/my_analysis.py``).

Load it with::

    Project(
        name="flares",
        analysis_module="my_analysis",  # importable: on sys.path, or installed
        analysis_class="NewAnalysis",
        analysis_kwargs={"finder_module": "my_analysis", "finder_class": "BrighteningsOnly"},
    )

Only the steps that change are overridden; everything else (quality cuts, scores, statistics,
injections, the rows written) stays the default.
"""

from __future__ import annotations

import pandas as pd

from aretriever.science.analysis import Analysis
from aretriever.science.finder import Event, Finder


class BrighteningsOnly(Finder):
    """The default S/N finder, keeping flares and dropping dimmings."""

    def find(self, lc: pd.DataFrame) -> list[Event]:
        return [event for event in super().find(lc) if event.snr > 0]


class NewAnalysis(Analysis):
    """The default analysis, with one more column: a running median of the magnitude."""

    window = 5

    def process(self, data: pd.DataFrame, zero_point_mag: float) -> pd.DataFrame:
        processed = super().process(data, zero_point_mag)
        rolling = processed["mag"].rolling(self.window, center=True, min_periods=1)
        processed["mag_running_median"] = rolling.median()
        return processed
