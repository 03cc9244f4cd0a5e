"""The demo observatory: simulated photometry, so the whole pipeline runs with no network.

Each source gets ``num_points`` epochs per filter over ``time_span_days``, at its catalog
magnitude (else ``mean_mag``) with Gaussian noise, at its catalog position with a few
milliarcseconds of scatter. Everything is drawn from a generator seeded by ``seed`` and the
source's name, so a source always gets the same data. The "archive answer" is the table as CSV,
so parsing, storing and reduction run exactly as for a real archive; ``wait_s`` simulates the
archive's latency (the lane's concurrency applies; no request is made, so no rate limit).
"""

from __future__ import annotations

import io
from typing import ClassVar, Final

import numpy as np
import pandas as pd

from aretriever.science.simulator import stable_rng

from .base import Fetched, HttpPort, ReducedLightcurve, Target
from .demo_config import DemoConfig

FIRST_MJD: Final = 58000.0
POSITION_SCATTER_DEG: Final = 0.005 / 3600.0  # 5 mas
COLUMNS: Final = {
    "mjd": "float64",
    "mag": "float64",
    "magerr": "float64",
    "filter": "str",
    "ra": "float64",
    "dec": "float64",
    "flag": "int64",
}


def simulate(target: Target, cfg: DemoConfig) -> pd.DataFrame:
    """The simulated raw table of ``target`` (pure, deterministic), ordered by time."""
    rng = stable_rng(cfg.seed, target.name)
    mag = cfg.mean_mag if target.mag is None or not np.isfinite(target.mag) else float(target.mag)
    parts = []
    for band in cfg.filters:
        n = cfg.num_points
        parts.append(
            pd.DataFrame(
                {
                    "mjd": FIRST_MJD + np.sort(rng.uniform(0.0, cfg.time_span_days, n)),
                    "mag": mag + rng.normal(0.0, cfg.noise_mag, n),
                    "magerr": np.full(n, max(cfg.noise_mag, 1e-3)),
                    "filter": band,
                    "ra": (target.ra_deg + rng.normal(0.0, POSITION_SCATTER_DEG, n)) % 360.0,
                    "dec": np.clip(target.dec_deg + rng.normal(0.0, POSITION_SCATTER_DEG, n), -90.0, 90.0),
                    "flag": np.zeros(n, dtype=np.int64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True).sort_values("mjd", kind="stable", ignore_index=True)


def parse_table(body: bytes) -> pd.DataFrame:
    """The CSV answer back as a table with the demo's columns and dtypes (pure)."""
    return pd.read_csv(io.BytesIO(body), dtype=COLUMNS)


def reduce_table(raw: pd.DataFrame) -> list[ReducedLightcurve]:
    """One lightcurve per filter, ordered by filter name (pure)."""
    curves = []
    for band, part in raw.groupby("filter", sort=True):
        data = part.sort_values("mjd", kind="stable", ignore_index=True)
        curves.append(
            ReducedLightcurve(
                data=data,
                filter=str(band),
                time_start_mjd=float(data["mjd"].iloc[0]),
                time_end_mjd=float(data["mjd"].iloc[-1]),
                meta={"num_points": len(data), "simulated": True},
            )
        )
    return curves


class DemoAdapter:
    """The simulated observatory (see the module docstring)."""

    name: ClassVar[str] = "demo"
    config_model: ClassVar[type[DemoConfig]] = DemoConfig  # validates observatories.demo

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg

    def no_data_reason(self, target: Target) -> str | None:
        return None

    async def fetch(self, target: Target, http: HttpPort) -> Fetched:
        if self.cfg.wait_s:
            await http.sleep(self.cfg.wait_s)
        body = simulate(target, self.cfg).to_csv(index=False).encode("utf-8")
        return Fetched(
            target, body, url=f"demo://{target.name}", meta={"simulated": True, "seed": self.cfg.seed}
        )

    def parse(self, fetched: Fetched) -> pd.DataFrame:
        return parse_table(fetched.body or b"")

    def reduce(self, raw: pd.DataFrame, target: Target) -> list[ReducedLightcurve]:
        return reduce_table(raw)

    def __repr__(self) -> str:
        return f"DemoAdapter(points={self.cfg.num_points}, filters={self.cfg.filters})"
