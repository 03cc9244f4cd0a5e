"""One observatory's lane while the engine is open: its HTTP port, pipeline, queue and counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from anyio.streams.memory import MemoryObjectSendStream

from aretriever.adapters.base import Adapter
from aretriever.engine.histogram_file import HistogramFile
from aretriever.engine.pipeline import CpuRunner, SourcePipeline, Stores
from aretriever.engine.skipcheck import Decision, Products
from aretriever.engine.summary import RunSummary
from aretriever.http import Lane, LaneStats, make_limiter
from aretriever.settings import Config, LaneConfig
from aretriever.store import owners, paths


@dataclass(slots=True)
class LaneRuntime:
    """One observatory's open lane: its HTTP port, its pipeline and (during a run) its queue."""

    name: str
    cfg: LaneConfig
    adapter: Adapter
    http: Lane
    pipeline: SourcePipeline
    queue: MemoryObjectSendStream[Decision] | None = None  # decisions waiting for a fetcher


@dataclass(frozen=True, slots=True)
class LaneState:
    """A lane's counters and queue right now (for metrics)."""

    stats: LaneStats
    queued: int
    rate_per_s: float  # this process's share of the archive's limit (:meth:`Engine.lane_rate`)


def snapshot(stats: LaneStats) -> LaneStats:
    """A copy of ``stats``: the lane keeps counting into the original."""
    return LaneStats(
        requests=stats.requests,
        retries=stats.retries,
        bytes_in=stats.bytes_in,
        statuses=Counter(stats.statuses),
        errors=Counter(stats.errors),
        hedged=stats.hedged,
    )


def state_of(lane: LaneRuntime, rate_per_s: float) -> LaneState:
    """The lane's cumulative counters, the decisions waiting for its fetchers, and its rate."""
    queued = lane.queue.statistics().current_buffer_used if lane.queue is not None else 0
    return LaneState(snapshot(lane.http.stats), queued, rate_per_s)


def count_run(summary: RunSummary, lanes: Mapping[str, LaneRuntime], before: Mapping[str, LaneStats]) -> None:
    """Put each lane's requests of this run into ``summary``: its counters minus ``before``.

    A lane's counters run for as long as the engine is open (metrics read them), so a run's
    share is the difference from the snapshot taken when it started.
    """
    for name, lane in lanes.items():
        lane_summary, now, then = summary.lane(name), lane.http.stats, before[name]
        lane_summary.requests = now.requests - then.requests
        lane_summary.retries = now.retries - then.retries
        lane_summary.hedged = now.hedged - then.hedged
        lane_summary.statuses = dict(now.statuses - then.statuses)


def fresh_scratch(data_root: Path, lane: str) -> Path:
    """This process's scratch folder of the lane (other processes' folders are theirs)."""
    folder = paths.scratch_dir(data_root, lane, owners.owner_token())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True, slots=True)
class LaneParts:
    """What every lane's pipeline shares: the CPU stage, the writers and the products."""

    cpu: CpuRunner
    stores: Stores
    products: Products
    catalog: str
    histograms: HistogramFile | None


def connection_limit(cfg: LaneConfig) -> int:
    """Sockets of the lane's pool: one per fetcher, so a fetcher never waits on a socket...

    ...and with hedging on, one more per fetcher: a hedge must not queue for a socket behind the
    late request it is racing (at most one hedge per request, so this still bounds them).
    """
    return cfg.max_concurrency * (2 if cfg.hedge_after_p95 > 0 else 1)


async def open_lane(
    stack: AsyncExitStack, cfg: Config, name: str, adapter: Adapter, rate_per_s: float, parts: LaneParts
) -> LaneRuntime:
    """Lane ``name``: its HTTP session (closed by ``stack``), rate limiter and pipeline."""
    lane_cfg: LaneConfig = cfg.observatories.section(name)
    connector = aiohttp.TCPConnector(limit=connection_limit(lane_cfg))
    session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
    scratch = str(fresh_scratch(parts.stores.data_root, name))
    http = Lane(name, lane_cfg, session, limiter=make_limiter(rate_per_s), scratch_dir=scratch)
    pipeline = SourcePipeline(
        adapter=adapter,
        http=http,
        cpu=parts.cpu,
        stores=parts.stores,
        products=parts.products,
        catalog=parts.catalog,
        max_attempts=lane_cfg.max_attempts,
        analysis=cfg.analysis,
        histograms=parts.histograms,
    )
    return LaneRuntime(name, lane_cfg, adapter, http, pipeline)
