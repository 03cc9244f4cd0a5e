"""Small numeric helpers every layer needs once: finite floats and distances on the sky."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def finite_or_none(value: object) -> float | None:
    """``value`` as a float; None when it is missing, not a number (a bool, text), NaN or infinite.

    For values that go into database columns and JSON, where NaN has no place.
    """
    if value is None or isinstance(value, bool | np.bool_):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def separation_deg(ra1: Array | float, dec1: Array | float, ra2: Array | float, dec2: Array | float) -> Array:
    """Great-circle distance in degrees between positions (degrees), element-wise.

    Vincenty's formula: stable near 0 (cone searches of a few arcsec) and near 180 degrees, and
    indifferent to the RA wrap at 0/360.
    """
    lon1, lat1 = np.radians(ra1), np.radians(dec1)
    lon2, lat2 = np.radians(ra2), np.radians(dec2)
    dlon = lon1 - lon2
    num = np.hypot(
        np.cos(lat1) * np.sin(dlon),
        np.cos(lat2) * np.sin(lat1) - np.sin(lat2) * np.cos(lat1) * np.cos(dlon),
    )
    den = np.sin(lat2) * np.sin(lat1) + np.cos(lat2) * np.cos(lat1) * np.cos(dlon)
    return np.asarray(np.degrees(np.arctan2(num, den)))
