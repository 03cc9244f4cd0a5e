"""A lightcurve's scores placed in the score histograms' bins, in the pool worker.

Binning is the histograms' per-point work; done beside the analysis it costs the event-loop
process only a :class:`~aretriever.science.binning.Binned` (a few bytes a point) per lightcurve,
instead of the score columns and ~0.5 ms of binning each on its core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from aretriever.science.binning import Binned
from aretriever.science.histograms import ScoreHistograms

Records = np.ndarray[Any, Any]
#: The columns an analysed table has; a table without them was not analysed and is not counted.
SCORE_COLUMNS = ("snr", "dmag", "offset", "flagged")


def bin_scores(
    histograms: ScoreHistograms,
    records: Records,
    stats: Mapping[str, Any],
    source_mag: float | None,
    filter: str,
) -> Binned | None:
    """The scores of one processed table in the bins of ``histograms`` (None: not analysed).

    Points carry their own exposure time when the table has an ``exptime`` column, else the
    lightcurve's (``stats["exptime_s"]``).
    """
    names = records.dtype.names or ()
    if not all(column in names for column in SCORE_COLUMNS):
        return None
    # the structured array itself: a DataFrame of its score columns cost ~1 ms a lightcurve
    exptime = np.asarray(records["exptime"], dtype=float) if "exptime" in names else stats.get("exptime_s")
    return histograms.bin(records, source_mag, exptime, filter)
