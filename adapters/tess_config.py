"""The ``observatories.tess`` section: MAST's lane and the TESS reducer's parameters.

Apart from :mod:`.tess` so that :mod:`aretriever.settings` can build the section without importing
the adapter (astropy, pandas), and because :mod:`.tess` is long enough already.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from aretriever.lane_config import OPERATIONAL, LaneConfig, Part

__all__ = ["TessConfig", "TessReducerConfig"]


class TessReducerConfig(Part):
    """How TESS SPOC lightcurve files become lightcurves."""

    quality_bitmask: int = Field(
        17087, ge=0, description="cadences with these QUALITY bits are dropped (lightkurve's 'default')"
    )
    flux_column: Literal["PDCSAP_FLUX", "SAP_FLUX"] = Field("PDCSAP_FLUX", description="which flux to use")
    zero_point_mag: float = Field(20.44, description="TESS instrumental zero point (mag)")


class TessConfig(LaneConfig):
    """TESS lightcurves from MAST (TIC match, CAOM observations, SPOC *_lc.fits products)."""

    section_description: ClassVar[str] = "TESS via MAST"

    base_url: str = Field(
        "https://mast.stsci.edu", description="MAST base URL", json_schema_extra=OPERATIONAL
    )
    rate_per_s: float = Field(
        5.0, gt=0, description="requests per second, at most, to MAST", json_schema_extra=OPERATIONAL
    )
    # Larger than IRSA's limit: a FITS file is streamed to disk, not held in memory, and the
    # limit only has to stop a runaway answer.
    max_body_bytes: int = Field(
        128 * 1024 * 1024,
        gt=0,
        description="largest MAST answer read, JSON or streamed FITS (lightcurve files are ~2 MB)",
        json_schema_extra=OPERATIONAL,
    )
    # Two radii: the cone (cat_query) only gathers candidates, the nearest one must then be within
    # distance_thresh; a wide cone lets a miss name the nearest star and its distance.
    cat_query_radius_arcsec: float = Field(360.0, gt=0, description="TIC cone radius around the source")
    distance_thresh_arcsec: float = Field(10.0, gt=0, description="nearest TIC row must be closer than this")
    magdiff_thresh: float = Field(
        0.75, gt=0, description="|GAIAmag - catalog mag| must be below this when the catalog has a mag"
    )
    limiting_magnitude: float | None = Field(
        None, description="sources fainter than this (catalog mag) are stored as no data, unasked (None: all)"
    )
    poll_interval_s: float = Field(
        2.0,
        gt=0,
        description="wait between two polls of an EXECUTING MAST query",
        json_schema_extra=OPERATIONAL,
    )
    poll_deadline_s: float = Field(
        300.0,
        gt=0,
        description="give up on an EXECUTING MAST query after this",
        json_schema_extra=OPERATIONAL,
    )
    # Nested, not flat: the reducer runs in the process pool and gets only this part, pickled.
    reducer: TessReducerConfig = Field(default_factory=TessReducerConfig, description="reduction parameters")
