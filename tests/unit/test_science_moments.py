"""The fast median, mean and standard deviation give NumPy's results bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aretriever.science.moments import mean, median, std


@pytest.mark.parametrize("seed", range(5))
def test_bit_for_bit_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for size in [*range(1, 12), 99, 100, 127, 128, 129, 200, 513, 1810]:
        values = rng.normal(rng.uniform(-1e4, 1e4), rng.uniform(1e-3, 1e3), size)
        for x in (values, values[::2], values.astype(np.float32).astype(np.float64)):
            if x.size == 0:
                continue
            assert median(x) == float(np.median(x))
            assert mean(x) == float(np.mean(x))
            assert std(x) == float(np.std(x))


def test_nan_and_empty() -> None:
    assert math.isnan(median(np.array([1.0, np.nan, 2.0])))
    assert math.isnan(median(np.empty(0))) and math.isnan(mean(np.empty(0))) and math.isnan(std(np.empty(0)))
    assert std(np.array([3.0])) == 0.0 and median(np.array([3.0])) == 3.0
