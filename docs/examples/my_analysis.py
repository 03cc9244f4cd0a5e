"""Custom analysis code, the way the seed README describes it (``extensions/my_analysis.py``).

Load it with::

    Project(
        name="flares",
        analysis_module="my_analysis",  # importable: on sys.path, or installed
        analysis_class="NewAnalysis",
        analysis_kwargs={"window": 9, "finder_module": "my_analysis", "finder_class": "BrighteningsOnly"},
    )

``window`` is a parameter ``NewAnalysis`` declares (``parameters``): it is validated, recorded in
the config and its hash, and read as ``self.cfg.window``. A key the class does not declare fails.
A method keeping the seed's name (``analyze_photometry``, a finder's ``detect``) is called as our
step of the same meaning; ``docs/design.md`` ("Custom science classes") has the table.

Only the steps that change are overridden; everything else (quality cuts, scores, statistics,
injections, the rows written) stays the default.

Tables are DataFrames or NumPy structured arrays (the processed one always is one): read a
column with ``column(table, name)`` (float64) and extend the processed table with
``add_column``; pandas stays at hand for the computing itself.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from aretriever.science.analysis import Analysis
from aretriever.science.columns import Records, Table, add_column, column
from aretriever.science.finder import Event, Finder
from aretriever.settings import Part


class BrighteningsOnly(Finder):
    """The default S/N finder, keeping flares and dropping dimmings."""

    def find(self, lc: Table) -> list[Event]:
        return [event for event in super().find(lc) if event.snr > 0]


class RunningMedianParameters(Part):
    """The parameters NewAnalysis adds to the built-in ones (the seed's ``ParsMyAnalysis``)."""

    window: int = Field(5, ge=1, description="points in the running median of mag")


class NewAnalysis(Analysis):
    """The default analysis, with one more column: a running median of the magnitude."""

    parameters = RunningMedianParameters

    def process(self, data: Table, zero_point_mag: float) -> Records:
        processed = super().process(data, zero_point_mag)
        window = self.cfg.window
        rolling = pd.Series(column(processed, "mag")).rolling(window, center=True, min_periods=1)
        return add_column(processed, "mag_running_median", rolling.median().to_numpy())
