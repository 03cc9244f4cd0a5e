"""Hedged requests on a real lane against the fake archive, ordered by held answers, not by time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import anyio
import anyio.lowlevel
import pytest_asyncio
from aiolimiter import AsyncLimiter

from aretriever.adapters.base import Request
from aretriever.engine.lanes import count_run, snapshot
from aretriever.engine.summary import RunSummary
from aretriever.hedge import HedgePolicy, Hedger
from aretriever.http import Lane, LaneStats
from aretriever.settings import LaneConfig
from aretriever.testing.fake_archive import FakeArchive
from aretriever.testing.ztf_replay import ZTF_PATH


class CountingLimiter(AsyncLimiter):
    """The lane's limiter, counting the tokens taken."""

    def __init__(self) -> None:
        super().__init__(1000, 1)
        self.taken = 0

    async def acquire(self, amount: float = 1) -> None:
        self.taken += 1
        await super().acquire(amount)


async def no_wait(_: float) -> None:
    await anyio.lowlevel.checkpoint()


@pytest_asyncio.fixture
async def archive() -> AsyncIterator[FakeArchive]:
    async with FakeArchive() as fake:
        yield fake


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_lane(session: aiohttp.ClientSession, limiter: AsyncLimiter) -> Lane:
    # A p95 known in advance and no real wait before the hedge: the held answer alone decides.
    hedger = Hedger(HedgePolicy(after_p95=2.0, min_answers=20), sleep=no_wait)
    for _ in range(20):
        hedger.observe(0.01)
    cfg = LaneConfig(rate_per_s=1000.0, max_attempts=3, timeout_s=30.0)
    return Lane("ztf", cfg, session, limiter=limiter, hedger=hedger)


def ztf_request(url: str) -> Request:
    return Request("GET", url + ZTF_PATH, params=(("POS", "CIRCLE 10.0 20.0 0.0005"), ("FORMAT", "csv")))


async def test_the_hedge_of_a_held_request_wins_and_is_counted(
    archive: FakeArchive, session: aiohttp.ClientSession
) -> None:
    limiter = CountingLimiter()
    lane = make_lane(session, limiter)
    before = snapshot(lane.stats)
    held = archive.hold(ZTF_PATH)  # the first answer never comes; the second is at once
    lane.work_drained()
    port = lane.for_source()
    response = await port.send(ztf_request(archive.url))
    assert response.status == 200 and response.body.startswith(b"oid,")
    assert held.arrived.is_set() and not held.released.is_set()
    # the held request is recorded only when answered: the hedge's answer is the one counted
    assert archive.count(ZTF_PATH) == 1 and limiter.taken == 2  # the hedge took a token like any request
    assert (lane.stats.requests, lane.stats.hedged, lane.stats.retries) == (2, 1, 0)
    assert port.attempts.most() == 1  # a hedge is not an attempt

    summary = RunSummary()
    count_run(summary, {"ztf": SimpleNamespace(http=lane)}, {"ztf": before})  # type: ignore[dict-item]
    assert summary.lane("ztf").hedged == 1
    assert json.loads(json.dumps(summary.as_dict()))["observatories"]["ztf"]["hedged"] == 1
    header, row = summary.format_table().splitlines()[:2]
    assert header.split()[-1] == "hedged" and row.split()[-1] == "1"


async def test_no_hedge_while_new_sources_wait(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    limiter = CountingLimiter()
    lane = make_lane(session, limiter)  # its work is not drained
    held = archive.hold(ZTF_PATH)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.send, ztf_request(archive.url))
        await held.arrived.wait()
        await anyio.wait_all_tasks_blocked()  # the hedge's watcher had its chance
        assert archive.count(ZTF_PATH) == 0  # recorded when answered: nothing else arrived
        held.release()
    assert archive.count(ZTF_PATH) == 1 == limiter.taken
    assert (lane.stats.requests, lane.stats.hedged) == (1, 0)


async def test_a_failing_hedge_does_not_fail_the_original(
    archive: FakeArchive, session: aiohttp.ClientSession
) -> None:
    lane = make_lane(session, CountingLimiter())
    held = archive.hold(ZTF_PATH)
    archive.script(ZTF_PATH, [(503, "busy", {})])  # served to the hedge, which arrives second
    lane.work_drained()
    async with anyio.create_task_group() as tg:

        async def send() -> None:
            response = await lane.send(ztf_request(archive.url))
            assert response.status == 200

        tg.start_soon(send)
        await held.arrived.wait()
        while archive.count(ZTF_PATH) < 1:  # the hedge's 503 is recorded when served
            await anyio.lowlevel.checkpoint()
        held.release()
    assert (lane.stats.requests, lane.stats.hedged, lane.stats.retries) == (2, 1, 0)
    assert lane.stats.errors == {"http_503": 1}


def test_lane_stats_snapshot_keeps_hedged() -> None:
    stats = LaneStats(requests=3, hedged=1)
    assert snapshot(stats).hedged == 1
