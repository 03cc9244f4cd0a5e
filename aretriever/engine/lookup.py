"""Targets from an archive's own identifiers (TESS: TIC ids), filed under a catalog row if one is near."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import aiohttp

from aretriever.adapters.base import LooksUpIds, Target
from aretriever.catalogs.core import SearchableCatalog, chunk_to_targets
from aretriever.http import Lane
from aretriever.settings import Config, LaneConfig

log = logging.getLogger("aretriever.engine.core")  # the engine's logger: users filter on it

# Matching radius when the lane has no distance_thresh_arcsec of its own
DEFAULT_RADIUS_ARCSEC = 10.0


async def resolve_ids(
    cfg: Config,
    observatory: str,
    adapter: LooksUpIds,
    values: Sequence[str],
    catalog: SearchableCatalog | None,
) -> list[Target]:
    """The targets :meth:`Engine.fetch_by_ids` files these identifiers under, in ``values`` order.

    The look-ups are few and outside a run, so they use a session of their own, without the
    run's rate limiter.
    """
    lane_cfg: LaneConfig = cfg.observatories.section(observatory)
    radius = float(getattr(lane_cfg, "distance_thresh_arcsec", DEFAULT_RADIUS_ARCSEC))
    targets = []
    async with aiohttp.ClientSession() as session:
        lane = Lane(observatory, lane_cfg, session)
        for value in values:
            star = await adapter.lookup_id(value, lane)
            row = None if catalog is None else catalog.get_nearest_row(star.ra_deg, star.dec_deg, radius)
            if row is not None:
                (found,), _ = chunk_to_targets(row.to_frame().T, cfg.catalog.columns)
                # the catalog's name and position, the archive's ids: the lane fetches by id
                star = replace(found, ids=star.ids)
            log.info("%s: %s %s is filed under %s", observatory, adapter.id_key, value, star.name)
            targets.append(star)
    return targets
