"""Median, mean and standard deviation of small 1-D float64 arrays, as NumPy computes them.

``np.median`` and ``np.std`` spend ~10 µs each in Python-level checks before any arithmetic;
on a 200-point lightcurve that is most of their cost, and the analysis calls them dozens of
times per lightcurve. These do the same arithmetic in the same order (a partition for the
median; a pairwise sum for the mean, then the mean of squared deviations), so the results are
bit-for-bit NumPy's (``tests/unit/test_science_moments.py`` checks it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def median(values: Array) -> float:
    """``np.median`` of a 1-D float64 array: NaN when empty or when it holds a NaN."""
    size = values.size
    if size == 0:
        return math.nan
    half = size // 2
    # np.partition sorts NaN last: np.median answers NaN then, and so do we
    part = np.partition(values, [half - 1, half, size - 1] if size % 2 == 0 else [half, size - 1])
    last, upper = float(part[-1]), float(part[half])
    if math.isnan(last):
        return math.nan
    return upper if size % 2 else (float(part[half - 1]) + upper) / 2


def mean(values: Array) -> float:
    """``np.mean`` of a 1-D float64 array (NaN when empty, without NumPy's warning)."""
    if values.size == 0:
        return math.nan
    # the same pairwise sum as np.mean, and a float64 division is a float64 division
    return float(_SUM(values)) / values.size


def std(values: Array) -> float:
    """``np.std`` (ddof=0) of a 1-D float64 array (NaN when empty, without NumPy's warning)."""
    size = values.size
    if size == 0:
        return math.nan
    deviations = values - float(_SUM(values)) / size
    np.multiply(deviations, deviations, out=deviations)
    return math.sqrt(float(_SUM(deviations)) / size)


_SUM = np.add.reduce
