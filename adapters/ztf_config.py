"""The ``observatories.ztf`` section: IRSA's lane and the ZTF reducer's parameters.

Apart from :mod:`.ztf` so that :mod:`aretriever.settings` can build the section without importing
the adapter (pandas, pyarrow): ``config show`` stays light.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from aretriever.lane_config import OPERATIONAL, LaneConfig, Part

__all__ = ["ZtfConfig", "ZtfReducerConfig"]


class ZtfReducerConfig(Part):
    """How raw ZTF photometry becomes lightcurves."""

    radius_arcsec: float = Field(
        3.0,
        gt=0,
        validation_alias=AliasChoices("radius_arcsec", "radius"),
        description="drop oids whose median position is further than this from the source",
    )
    # In magnitudes, against the catalog's mag: a neighbour of another brightness in the same
    # cone is a different star even when its position is within radius_arcsec.
    mag_range: float | None = Field(
        0.75,
        gt=0,
        description="drop oids whose median mag differs more than this from the catalog mag (None: keep)",
    )
    gap_days: float = Field(
        40.0,
        gt=0,
        validation_alias=AliasChoices("gap_days", "gap"),
        description="a gap longer than this between epochs starts a new season",
    )
    drop_bad: bool = Field(True, description="drop points with catflags != 0 or NaN mag")


class ZtfConfig(LaneConfig):
    """ZTF lightcurves from IRSA's nph_light_curves API."""

    section_description: ClassVar[str] = "Zwicky Transient Facility via IRSA"

    base_url: str = Field(
        "https://irsa.ipac.caltech.edu", description="IRSA base URL", json_schema_extra=OPERATIONAL
    )
    rate_per_s: float = Field(
        5.0, gt=0, description="requests per second, at most, to IRSA", json_schema_extra=OPERATIONAL
    )
    # Lower than the lane's default: IRSA's answers are small, so a huge one is an error page
    # or a runaway cone, and it is cut before it fills the memory of the event loop's process.
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="largest IRSA answer read (lightcurve CSVs are 0.1-5 MB); a larger one fails the source",
        json_schema_extra=OPERATIONAL,
    )
    cone_search_radius_arcsec: float = Field(
        2.0,
        gt=0,
        validation_alias=AliasChoices("cone_search_radius_arcsec", "cone_search_radius"),
        description="cone radius; 0.003 × total proper motion (mas/yr) is added",
    )
    # ZTF observes from Palomar (latitude +33 deg) and covers the sky north of about -30 deg:
    # asking IRSA for a source further south would only spend a request of the rate budget.
    minimal_declination_deg: float = Field(
        -30.0,
        ge=-90,
        le=90,
        validation_alias=AliasChoices("minimal_declination_deg", "minimal_declination"),
        description="sources south of this are stored as 'no data' without a request",
    )
    limiting_magnitude: float = Field(
        20.5, description="sources fainter than this are stored as 'no data' without a request"
    )
    bad_catflags_mask: int = Field(
        32768, ge=0, description="IRSA BAD_CATFLAGS_MASK: epochs with these catflags bits are not returned"
    )
    collection: str | None = Field(
        None, description="IRSA COLLECTION, e.g. 'ztf_dr23' (None: the latest public release)"
    )
    # Nested, not flat: the reducer runs in the process pool and gets only this part, pickled.
    reducer: ZtfReducerConfig = Field(default_factory=ZtfReducerConfig, description="reduction parameters")
