"""Quality cuts: flag points the archive flagged and points measured far from the source's position.

:class:`QualityChecker` is the default quality-cut class (``analysis.quality_module`` /
``analysis.quality_class``); a project may name its own subclass there. Each step is a method,
so a subclass overrides only the step it changes: :meth:`QualityChecker.archive_flags`,
:meth:`QualityChecker.offsets` or :meth:`QualityChecker.offset_flags`.

Position offsets (:func:`position_offset`)
-------------------------------------------
Each point's position is projected on the tangent plane at the lightcurve's median position
(gnomonic projection: exact at any declination and across RA 0/360), giving its distance ``d`` in
arcsec from the median position. The offset is ``(d - median(d)) / (1.4826 * MAD(d))``, the robust
analogue of a z-score of the distance: about 0 for a typical point, large and positive for a
point measured far from where the source usually is (a blend, a ghost, a bad centroid).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel

from aretriever.science.columns import Table, assign, column, has
from aretriever.science.moments import median
from aretriever.science.plugins import SeedMethod, adopt_seed_names
from aretriever.settings import QualityConfig

Array = np.ndarray[Any, Any]

MAD_TO_SIGMA: Final = 1.4826  # a Gaussian's standard deviation is 1.4826 times its MAD
ARCSEC_PER_RAD: Final = 180.0 * 3600.0 / math.pi
#: archive flag columns: ZTF ``catflags``, TESS ``quality``; any non-zero value flags the point
FLAG_COLUMNS: Final = ("catflags", "quality")

# The seed's QualityChecker.check took every lightcurve of a source and changed them in place. Ours
# has the name but the analysis calls columns(): an override of check would never run, so it is refused.
SEED_METHODS: dict[str, SeedMethod] = {
    "check": SeedMethod(
        None,
        "the analysis calls columns(lc) -> {'offset', 'flagged'}: override it "
        "(or archive_flags, offsets, offset_flags)",
    ),
}


def position_offset(ra: Array, dec: Array) -> Array:
    """Each point's distance from the median position, in scaled-MAD units (see module docstring).

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Positions in degrees (not modified). RA may wrap around 0/360 within the lightcurve.

    Returns
    -------
    numpy.ndarray
        One float per point: ``(d - median(d)) / (1.4826 * MAD(d))`` with ``d`` the distance in
        arcsec from the median position. NaN for points without a finite position, and for every
        point when the scaled MAD is zero or undefined (no scatter to measure offsets against).
    """
    distance = median_distance_arcsec(ra, dec)
    finite = distance[np.isfinite(distance)]
    out = np.full(distance.shape, np.nan)
    if finite.size == 0:
        return out
    center = median(finite)
    scale = MAD_TO_SIGMA * median(np.abs(finite - center))
    if scale > 0:
        out = (distance - center) / scale
    return out


def median_distance_arcsec(ra: Array, dec: Array) -> Array:
    """Distance (arcsec, on the tangent plane) of each point from the median position.

    The median RA is taken of the RA differences from the first finite point, wrapped into
    [-180, 180), so points at 359.9999 and 0.0001 deg are neighbours, not half a sky apart.
    """
    ra_deg = np.asarray(ra, dtype=np.float64)
    dec_deg = np.asarray(dec, dtype=np.float64)
    finite = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    if not finite.any():
        return np.full(ra_deg.shape, np.nan)
    ref = ra_deg[finite][0]
    wrapped = (ra_deg - ref + 180.0) % 360.0 - 180.0
    ra0 = ref + median(wrapped[finite])
    dec0 = median(dec_deg[finite])
    east, north = tangent_plane(ra_deg, dec_deg, ra0, dec0)
    distance: Array = np.hypot(east, north) * ARCSEC_PER_RAD
    return distance


def tangent_plane(ra_deg: Array, dec_deg: Array, ra0_deg: float, dec0_deg: float) -> tuple[Array, Array]:
    """Gnomonic (east, north) coordinates, in radians, of positions about (ra0, dec0).

    For small offsets ``east ~ dRA * cos(dec)`` and ``north ~ dDec``; sines and cosines of the RA
    difference make it insensitive to the 0/360 wrap.
    """
    dra = np.radians(ra_deg - ra0_deg)
    dec, dec0 = np.radians(dec_deg), math.radians(dec0_deg)
    # each sine and cosine once: this runs on every lightcurve
    sin_dec, cos_dec, cos_dra = np.sin(dec), np.cos(dec), np.cos(dra)
    cos_c = math.sin(dec0) * sin_dec + math.cos(dec0) * cos_dec * cos_dra
    east = cos_dec * np.sin(dra) / cos_c
    north = (math.cos(dec0) * sin_dec - math.sin(dec0) * cos_dec * cos_dra) / cos_c
    return east, north


class QualityChecker:
    """The default quality cuts: archive flags, and position offsets above a threshold.

    Parameters
    ----------
    cfg : QualityConfig
        ``offset_threshold``: points with ``|offset|`` above it are flagged.

    Notes
    -----
    Instances run in pool workers, so a subclass must stay picklable (plain attributes only).
    """

    #: the model of a subclass's own parameters (``quality_kwargs``), read as ``self.cfg.<name>``
    parameters: ClassVar[type[BaseModel] | None] = None
    seed_methods: ClassVar[dict[str, SeedMethod]] = SEED_METHODS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        adopt_seed_names(cls, cls.seed_methods)

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def check(self, lc: Table) -> Table:
        """A copy of ``lc`` (of the same type) with the :meth:`columns` ``offset`` and ``flagged``.

        ``lc`` is not modified. The analysis calls :meth:`columns` and builds its table once.
        """
        return assign(lc, self.columns(lc))

    def columns(self, lc: Table) -> dict[str, Array]:
        """``offset`` (float) and ``flagged`` (bool) of each point: ``flagged`` =
        :meth:`archive_flags` OR :meth:`offset_flags` of :meth:`offsets`."""
        offset = self.offsets(lc)
        return {"offset": offset, "flagged": self.archive_flags(lc) | self.offset_flags(offset)}

    def archive_flags(self, lc: Table) -> Array:
        """True where a :data:`FLAG_COLUMNS` column is non-zero. A missing value (NaN, NA) is
        not a flag: the archive did not flag the point."""
        flagged = np.zeros(len(lc), dtype=bool)
        for name in FLAG_COLUMNS:
            if has(lc, name):
                flagged |= _nonzero(lc, name)
        return flagged

    def offsets(self, lc: Table) -> Array:
        """:func:`position_offset` of the ``ra``/``dec`` columns; all NaN without them."""
        if not has(lc, "ra") or not has(lc, "dec"):
            return np.full(len(lc), np.nan)
        return position_offset(column(lc, "ra"), column(lc, "dec"))

    def offset_flags(self, offset: Array) -> Array:
        """True where ``|offset| > cfg.offset_threshold`` (a NaN offset is not flagged)."""
        flagged: Array = np.abs(offset) > self.cfg.offset_threshold  # NaN compares False
        return flagged


def _nonzero(lc: Table, name: str) -> Array:
    """True where column ``name`` is non-zero and not missing."""
    if not isinstance(lc, pd.DataFrame) and lc.dtype[name].kind in "biu":
        nonzero: Array = lc[name] != 0  # integer flags (ZTF catflags): no float copy needed
        return nonzero
    values = column(lc, name)
    flagged: Array = (values != 0) & ~np.isnan(values)
    return flagged
