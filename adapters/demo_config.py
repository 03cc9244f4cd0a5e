"""The ``observatories.demo`` section: the simulated observatory's parameters.

Apart from :mod:`.demo` so that :mod:`aretriever.settings` can build the section without importing
the adapter (numpy, pandas).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from aretriever.lane_config import OPERATIONAL, LaneConfig

__all__ = ["DemoConfig"]


class DemoConfig(LaneConfig):
    """A simulated observatory: the whole pipeline with no network."""

    section_description: ClassVar[str] = "simulated observatory"

    # No request leaves the machine, so the limit only keeps the lane's machinery in the path.
    rate_per_s: float = Field(
        1000.0, gt=0, description="simulated requests per second", json_schema_extra=OPERATIONAL
    )
    num_points: int = Field(100, ge=1, description="points per simulated lightcurve")
    time_span_days: float = Field(365.0, gt=0, description="time span of a simulated lightcurve")
    mean_mag: float = Field(18.0, description="mean magnitude when the catalog has none")
    noise_mag: float = Field(0.05, ge=0, description="Gaussian noise (mag)")
    filters: list[str] = Field(default_factory=lambda: ["g", "r"], description="simulated filters")
    wait_s: float = Field(
        0.0, ge=0, description="simulated archive latency, seconds", json_schema_extra=OPERATIONAL
    )
    seed: int = Field(0, description="random seed (with the source name) for reproducible data")
