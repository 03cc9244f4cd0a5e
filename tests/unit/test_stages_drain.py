"""The engine tells a lane its work is drained exactly when no decision waits and none will come."""

from __future__ import annotations

from types import SimpleNamespace

import anyio

from aretriever.engine import stages
from aretriever.hedge import HedgePolicy, Hedger


class StubLane:
    """What ``stages.fetch`` uses of a lane: the pipeline, and the HTTP port's drain signal."""

    def __init__(self) -> None:
        self.hedger = Hedger(HedgePolicy())
        self.http = SimpleNamespace(
            work_drained=self.hedger.work_drained, expect_work=self.hedger.expect_work
        )
        self.seen: list[tuple[str, bool]] = []  # (decision, drained when it was handled)
        self.pipeline = SimpleNamespace(handle=self._handle)

    async def _handle(self, decision: str) -> str:
        self.seen.append((decision, self.hedger.drained))
        return decision


async def record(_: object) -> None:
    pass


async def test_drained_when_the_last_decision_is_taken_from_a_closed_stream() -> None:
    lane = StubLane()
    send, recv = anyio.create_memory_object_stream[str](10)
    async with send:
        await send.send("a")
        await send.send("b")
    await stages.fetch(lane, recv, record, anyio.Event())  # type: ignore[arg-type]
    assert lane.seen == [("a", False), ("b", True)]


async def test_not_drained_while_the_skip_checker_may_still_send() -> None:
    lane = StubLane()
    send, recv = anyio.create_memory_object_stream[str](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stages.fetch, lane, recv, record, anyio.Event())
        await send.send("a")
        await anyio.wait_all_tasks_blocked()  # "a" handled, the stream empty but open
        assert lane.seen == [("a", False)] and not lane.hedger.drained
        await send.aclose()
    assert lane.hedger.drained  # the fetcher found the stream's end


async def test_a_run_starts_undrained() -> None:
    lane = StubLane()
    lane.hedger.work_drained()

    async def no_batches():  # type: ignore[no-untyped-def]
        return
        yield

    lane.cfg = SimpleNamespace(max_concurrency=1)
    lane.name = "ztf"
    lane.queue = None
    expected: list[bool] = []

    async def check(_: str, batch: list[object]) -> list[object]:
        return batch

    async with anyio.create_task_group() as tg:
        stages.start_lanes(
            tg,
            {"ztf": lane},
            no_batches(),
            queue_size=1,
            check=check,
            record=record,
            stopping=anyio.Event(),  # type: ignore[dict-item]
        )
        expected.append(lane.hedger.drained)
    assert expected == [False] and lane.hedger.drained
